// SPDX-License-Identifier: LGPL-2.1-or-later
// The calls libnbd 1.24 added: defaults, the state each accepts, errors, and the memory estimate.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "build_info.h"
#include "handle/handle.h"
#include "libnbd.h"
#include "nbdkit_fixture.h"
#include "tls/tls_config.h"

#if !defined(LIBNBD_HAVE_NBD_GET_HANDLE_SIZE) || !defined(LIBNBD_HAVE_NBD_SET_TLS_PRIORITY) || \
    !defined(LIBNBD_HAVE_NBD_GET_TLS_PRIORITY) ||                                              \
    !defined(LIBNBD_HAVE_NBD_SET_URI_ALLOW_TLS_PRIORITY) ||                                    \
    !defined(LIBNBD_HAVE_NBD_GET_VERSION_EXTRA)
#error "libnbd.h lacks a LIBNBD_HAVE_* macro of a 1.24 call"
#endif

namespace {

using duplexnbd::testing::NbdkitServer;

struct Closer {
  void operator()(nbd_handle *h) const { nbd_close(h); }
};
using HandlePtr = std::unique_ptr<nbd_handle, Closer>;

#define SKIP_WITHOUT_NBDKIT()                                                  \
  do {                                                                         \
    if (!NbdkitServer::available()) GTEST_SKIP() << "nbdkit is not installed"; \
  } while (0)

std::string last_error() {
  const char *e = nbd_get_error();
  return e ? e : "(none)";
}

std::optional<std::string> take(char *s) {
  if (s == nullptr) return std::nullopt;
  std::string out(s);
  free(s);
  return out;
}

// The last call failed with `errnum`, and its message starts with "<call>: " and holds `text`.
void expect_failed(const char *call, int errnum, const std::string &text) {
  EXPECT_EQ(nbd_get_errno(), errnum) << last_error();
  const std::string msg = last_error();
  EXPECT_EQ(msg.rfind(std::string(call) + ": ", 0), 0u) << msg;
  EXPECT_NE(msg.find(text), std::string::npos) << msg;
}

// A handle brought to one state, with whatever keeps it there (server, socket peer).
struct HandleInState {
  std::string state;
  HandlePtr h;
  std::unique_ptr<NbdkitServer> server;
  int peer = -1;  // the silent "server" end of a socketpair

  HandleInState() = default;
  HandleInState(HandleInState &&o) noexcept
      : state(std::move(o.state)), h(std::move(o.h)), server(std::move(o.server)),
        peer(std::exchange(o.peer, -1)) {}
  ~HandleInState() {
    h.reset();
    if (peer >= 0) ::close(peer);
  }
};

// `prepare` runs while the handle is still created (it sets what later states keep).
using Prepare = std::function<void(nbd_handle *)>;

HandleInState make_created(const Prepare &prepare) {
  HandleInState s;
  s.state = "created";
  s.h.reset(nbd_create());
  prepare(s.h.get());
  return s;
}

// Connecting: the handshake waits for a greeting that never comes.
HandleInState make_connecting(const Prepare &prepare) {
  HandleInState s = make_created(prepare);
  s.state = "connecting";
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  s.peer = sv[1];
  EXPECT_EQ(nbd_aio_connect_socket(s.h.get(), sv[0]), 0) << last_error();
  EXPECT_EQ(nbd_aio_is_connecting(s.h.get()), 1);
  return s;
}

// Dead: the "server" hangs up in the middle of the handshake.
HandleInState make_dead(const Prepare &prepare) {
  HandleInState s = make_connecting(prepare);
  s.state = "dead";
  ::close(std::exchange(s.peer, -1));
  for (int i = 0; i < 100 && nbd_aio_is_dead(s.h.get()) == 0; i++)
    if (nbd_poll(s.h.get(), 1000) == -1) break;
  EXPECT_EQ(nbd_aio_is_dead(s.h.get()), 1);
  return s;
}

HandleInState make_with_server(const std::string &state, const Prepare &prepare) {
  HandleInState s = make_created(prepare);
  s.state = state;
  s.server = std::make_unique<NbdkitServer>(std::vector<std::string>{"memory", "1M"});
  EXPECT_TRUE(s.server->ok()) << s.server->error();
  nbd_handle *h = s.h.get();
  if (state == "negotiating") {
    EXPECT_EQ(nbd_set_opt_mode(h, true), 0);
  }
  EXPECT_EQ(nbd_connect_unix(h, s.server->socket().c_str()), 0) << last_error();
  if (state == "negotiating") {
    EXPECT_EQ(nbd_aio_is_negotiating(h), 1);
  }
  if (state == "connected") {
    EXPECT_EQ(nbd_aio_is_ready(h), 1);
  }
  if (state == "closed") {
    EXPECT_EQ(nbd_shutdown(h, 0), 0) << last_error();
    EXPECT_EQ(nbd_aio_is_closed(h), 1);
  }
  return s;
}

// Every state but "created", each prepared by `prepare` first.
std::vector<HandleInState> handles_past_created(const Prepare &prepare) {
  std::vector<HandleInState> v;
  v.push_back(make_connecting(prepare));
  v.push_back(make_with_server("negotiating", prepare));
  v.push_back(make_with_server("connected", prepare));
  v.push_back(make_with_server("closed", prepare));
  v.push_back(make_dead(prepare));
  return v;
}

}  // namespace

// ---- defaults ----------------------------------------------------------------------------

TEST(Libnbd124Defaults, MatchTheManPages) {
  HandlePtr h(nbd_create());
  nbd_handle *p = h.get();
  // "NORMAL" unless the build chose another (CMake cache variable DUPLEXNBD_TLS_PRIORITY).
  EXPECT_EQ(take(nbd_get_tls_priority(p)), DUPLEXNBD_TLS_PRIORITY_DEFAULT);
  // "" unless a packager set DUPLEXNBD_VERSION_EXTRA; a static string, the same each time.
  const char *extra = nbd_get_version_extra(p);
  ASSERT_NE(extra, nullptr);
  EXPECT_STREQ(extra, DUPLEXNBD_VERSION_EXTRA);
  EXPECT_EQ(nbd_get_version_extra(p), extra);
  EXPECT_GT(nbd_get_handle_size(p), 0);
}

TEST(Libnbd124Defaults, VersionIs124) {
  HandlePtr h(nbd_create());
  const std::string v = nbd_get_version(h.get());
  EXPECT_EQ(v.rfind("1.24.", 0), 0u) << v;
  EXPECT_STREQ(nbd_get_package_name(h.get()), "duplexnbd");
}

// ---- nbd_set_tls_priority / nbd_get_tls_priority ------------------------------------------

TEST(Libnbd124TlsPriority, SetAndGetWhileCreated) {
  HandlePtr h(nbd_create());
  nbd_handle *p = h.get();
  // Accepted whether or not TLS is built in, and not checked until TLS starts.
  EXPECT_EQ(nbd_set_tls_priority(p, "NORMAL:-VERS-ALL:+VERS-TLS1.3"), 0) << last_error();
  EXPECT_EQ(take(nbd_get_tls_priority(p)), "NORMAL:-VERS-ALL:+VERS-TLS1.3");
  EXPECT_EQ(nbd_set_tls_priority(p, "not a priority string"), 0) << last_error();
  EXPECT_EQ(take(nbd_get_tls_priority(p)), "not a priority string");
  EXPECT_EQ(nbd_set_tls_priority(p, ""), 0) << last_error();
  EXPECT_EQ(take(nbd_get_tls_priority(p)), "");
  // Each call returns a fresh copy.
  char *a = nbd_get_tls_priority(p);
  char *b = nbd_get_tls_priority(p);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  free(a);
  free(b);
}

TEST(Libnbd124TlsPriority, NullPriorityIsRefused) {
  HandlePtr h(nbd_create());
  // The header marks it nonnull; a plain pointer keeps the compiler and UBSan out of it.
  int (*volatile set_priority)(nbd_handle *, const char *) = nbd_set_tls_priority;
  EXPECT_EQ(set_priority(h.get(), nullptr), -1);
  expect_failed("nbd_set_tls_priority", EFAULT, "priority");
  EXPECT_EQ(take(nbd_get_tls_priority(h.get())), DUPLEXNBD_TLS_PRIORITY_DEFAULT);
}

TEST(Libnbd124TlsPriority, SetOnlyWhileCreatedGetInAnyState) {
  SKIP_WITHOUT_NBDKIT();
  auto prepare = [](nbd_handle *h) { ASSERT_EQ(nbd_set_tls_priority(h, "SECURE256"), 0); };
  for (HandleInState &s : handles_past_created(prepare)) {
    SCOPED_TRACE(s.state);
    nbd_handle *h = s.h.get();
    EXPECT_EQ(nbd_set_tls_priority(h, "NORMAL"), -1);
    expect_failed("nbd_set_tls_priority", EINVAL, "invalid state");
    EXPECT_EQ(take(nbd_get_tls_priority(h)), "SECURE256");
  }
}

// What the TLS session will be given (applying it is the GnuTLS code's business).
TEST(Libnbd124TlsPriority, ReachesTheTlsConfig) {
  using duplexnbd::tls::TlsConfig;
  HandlePtr h(nbd_create());
  nbd_handle *p = h.get();
  EXPECT_EQ(TlsConfig::from_settings(p->settings).priority,
            DUPLEXNBD_TLS_PRIORITY_DEFAULT);
  EXPECT_STREQ(duplexnbd::tls::kDefaultPriority, DUPLEXNBD_TLS_PRIORITY_DEFAULT);
  ASSERT_EQ(nbd_set_tls_priority(p, "SECURE128:-VERS-TLS1.2"), 0);
  EXPECT_EQ(TlsConfig::from_settings(p->settings).priority,
            "SECURE128:-VERS-TLS1.2");
  EXPECT_EQ(TlsConfig().priority, DUPLEXNBD_TLS_PRIORITY_DEFAULT);
}

// ---- nbd_set_uri_allow_tls_priority --------------------------------------------------------

// libnbd 1.24 has no getter; the setting is kept for the URI parser (off by default).
TEST(Libnbd124UriAllowTlsPriority, SetWhileCreated) {
  HandlePtr h(nbd_create());
  EXPECT_FALSE(h->settings.uri_allow_tls_priority);
  EXPECT_EQ(nbd_set_uri_allow_tls_priority(h.get(), true), 0) << last_error();
  EXPECT_TRUE(h->settings.uri_allow_tls_priority);
  EXPECT_EQ(nbd_set_uri_allow_tls_priority(h.get(), false), 0) << last_error();
  EXPECT_FALSE(h->settings.uri_allow_tls_priority);
}

TEST(Libnbd124UriAllowTlsPriority, RefusedOnceConnecting) {
  SKIP_WITHOUT_NBDKIT();
  for (HandleInState &s : handles_past_created([](nbd_handle *) {})) {
    SCOPED_TRACE(s.state);
    EXPECT_EQ(nbd_set_uri_allow_tls_priority(s.h.get(), true), -1);
    expect_failed("nbd_set_uri_allow_tls_priority", EINVAL, "invalid state");
  }
}

// ---- nbd_get_version_extra and nbd_get_handle_size in every state ---------------------------

TEST(Libnbd124AnyState, VersionExtraAndHandleSize) {
  SKIP_WITHOUT_NBDKIT();
  for (HandleInState &s : handles_past_created([](nbd_handle *) {})) {
    SCOPED_TRACE(s.state);
    EXPECT_STREQ(nbd_get_version_extra(s.h.get()), DUPLEXNBD_VERSION_EXTRA);
    EXPECT_GT(nbd_get_handle_size(s.h.get()), 0) << last_error();
  }
}

// ---- what nbd_get_handle_size counts ---------------------------------------------------------

TEST(Libnbd124HandleSize, GrowsWithTheSettingsStrings) {
  HandlePtr h(nbd_create());
  nbd_handle *p = h.get();
  const ssize_t fresh = nbd_get_handle_size(p);
  ASSERT_GT(fresh, 0);
  EXPECT_EQ(nbd_get_handle_size(p), fresh);  // nothing changed, nothing moves

  const std::string name(4000, 'e');
  ASSERT_EQ(nbd_set_export_name(p, name.c_str()), 0);
  const ssize_t with_name = nbd_get_handle_size(p);
  EXPECT_GE(with_name, fresh + 4000);

  const std::string priority(3000, 'N');
  ASSERT_EQ(nbd_set_tls_priority(p, priority.c_str()), 0);
  const ssize_t with_priority = nbd_get_handle_size(p);
  EXPECT_GE(with_priority, with_name + 3000);

  for (int i = 0; i < 20; i++) {
    const std::string ctx = "x-test:" + std::string(200, char('a' + i));
    ASSERT_EQ(nbd_add_meta_context(p, ctx.c_str()), 0);
  }
  const ssize_t with_contexts = nbd_get_handle_size(p);
  EXPECT_GE(with_contexts, with_priority + 20 * 200);

  ASSERT_EQ(nbd_clear_meta_contexts(p), 0);
  ASSERT_EQ(nbd_set_export_name(p, ""), 0);
  // Cleared strings keep their capacity (std::string and std::vector never shrink by
  // themselves), so the estimate may stay where it was, but it never grows.
  EXPECT_LE(nbd_get_handle_size(p), with_contexts);
}

TEST(Libnbd124HandleSize, CountsTheConnectionAndCommandsInFlight) {
  SKIP_WITHOUT_NBDKIT();
  // Every read is held back 1 s by the server (with a thread for each), so the commands
  // stay in flight while we look.
  NbdkitServer server({"-t", "64", "--filter=delay", "memory", "1M", "rdelay=1"});
  ASSERT_TRUE(server.ok()) << server.error();
  HandlePtr h(nbd_create());
  nbd_handle *p = h.get();
  const ssize_t unconnected = nbd_get_handle_size(p);
  ASSERT_EQ(nbd_connect_unix(p, server.socket().c_str()), 0) << last_error();
  const ssize_t connected = nbd_get_handle_size(p);
  // At least the 256 KiB receive buffer.
  EXPECT_GE(connected, unconnected + 256 * 1024);

  constexpr int kCommands = 64;
  std::vector<char> buf(512 * kCommands);
  std::vector<int64_t> cookies;
  for (int i = 0; i < kCommands; i++) {
    int64_t c = nbd_aio_pread(p, buf.data() + 512 * i, 512, 512 * uint64_t(i),
                              NBD_NULL_COMPLETION, 0);
    ASSERT_GT(c, 0) << last_error();
    cookies.push_back(c);
  }
  ASSERT_EQ(nbd_aio_in_flight(p), kCommands);
  const ssize_t busy = nbd_get_handle_size(p);
  // A command is far more than 64 bytes; the caller's buffers are not counted.
  EXPECT_GE(busy, connected + kCommands * 64);
  EXPECT_LT(busy, connected + ssize_t(buf.size()) + kCommands * 4096);

  // Retired commands are no longer counted (the table keeps its slots, so allow for them).
  for (int64_t c : cookies) {
    int r;
    while ((r = nbd_aio_command_completed(p, uint64_t(c))) == 0)
      ASSERT_NE(nbd_poll(p, 10000), -1) << last_error();
    ASSERT_EQ(r, 1) << last_error();
  }
  const ssize_t idle = nbd_get_handle_size(p);
  EXPECT_LT(idle, busy - kCommands * 64);
  EXPECT_GE(idle, connected);
}
