// SPDX-License-Identifier: LGPL-2.1-or-later
// Tests for the handle basics and settings through the public C API (lib/api).
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "libnbd.h"
#include "test_pki.h"
#include "test_sockets.h"

namespace {

// Owns a handle for the duration of a test.
struct HandleDeleter {
  void operator()(nbd_handle *h) const { nbd_close(h); }
};
using HandlePtr = std::unique_ptr<nbd_handle, HandleDeleter>;

HandlePtr make_handle() {
  HandlePtr h(nbd_create());
  EXPECT_NE(h, nullptr) << nbd_get_error();
  return h;
}

// Takes ownership of a malloc'd string returned by the library.
std::optional<std::string> take(char *s) {
  if (s == nullptr) return std::nullopt;
  std::string out(s);
  free(s);
  return out;
}

bool starts_with(const char *s, const std::string &prefix) {
  return s != nullptr && std::string(s).compare(0, prefix.size(), prefix) == 0;
}

// The last call failed with `errnum` and an error message naming `call`.
void expect_failed(const char *call, int errnum) {
  EXPECT_EQ(nbd_get_errno(), errnum);
  const char *msg = nbd_get_error();
  ASSERT_NE(msg, nullptr);
  EXPECT_TRUE(starts_with(msg, std::string(call) + ": ")) << msg;
}

// Sets or unsets an environment variable for one scope.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    if (const char *old = getenv(name)) old_ = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

private:
  const char *name_;
  std::optional<std::string> old_;
};

// Swallows debug messages so tests that turn debugging on keep their output quiet.
void install_quiet_debug(nbd_handle *h) {
  nbd_debug_callback quiet = {[](void *, const char *, const char *) { return 0; }, nullptr,
                              nullptr};
  EXPECT_EQ(nbd_set_debug_callback(h, quiet), 0);
}

}  // namespace

// Every default below was checked by hand against Debian's libnbd 1.14.2 through
// python3-libnbd (nbd.NBD().get_*()). Calls newer than 1.14 are checked against the
// libnbd 1.16-1.22 man pages. The one intended difference is get_strict_mode: 1.14.2
// reports 0x1f, its whole mask; 1.22 (and we) enable every bit of a larger mask.
TEST(HandleDefaults, MatchLibnbd) {
  ScopedEnv no_debug("LIBNBD_DEBUG", nullptr);
  HandlePtr h = make_handle();
  nbd_handle *p = h.get();

  EXPECT_EQ(take(nbd_get_export_name(p)), "");
  EXPECT_EQ(nbd_get_request_block_size(p), 1);
  EXPECT_EQ(nbd_get_full_info(p), 0);
  EXPECT_EQ(nbd_get_tls(p), LIBNBD_TLS_DISABLE);
  EXPECT_EQ(nbd_get_tls_verify_peer(p), 1);
  EXPECT_EQ(nbd_get_request_structured_replies(p), 1);
  EXPECT_EQ(nbd_get_handshake_flags(p), LIBNBD_HANDSHAKE_FLAG_MASK);
  EXPECT_EQ(nbd_get_handshake_flags(p), 3u);
  EXPECT_EQ(nbd_get_pread_initialize(p), 1);
  EXPECT_EQ(nbd_get_strict_mode(p), LIBNBD_STRICT_MASK);
  EXPECT_EQ(nbd_get_strict_mode(p) & 0x1fu, 0x1fu);
  EXPECT_EQ(nbd_get_opt_mode(p), 0);
  EXPECT_EQ(nbd_get_nr_meta_contexts(p), 0);
  EXPECT_EQ(nbd_get_debug(p), 0);
  EXPECT_EQ(nbd_get_private_data(p), 0u);

  // 1.16 - 1.22 additions.
  EXPECT_EQ(nbd_get_request_meta_context(p), 1);
  EXPECT_EQ(nbd_get_request_extended_headers(p), 1);
  EXPECT_EQ(take(nbd_get_socket_activation_name(p)), "");
  EXPECT_EQ(take(nbd_get_tls_hostname(p)), "");
  EXPECT_EQ(nbd_stats_bytes_sent(p), 0u);
  EXPECT_EQ(nbd_stats_chunks_sent(p), 0u);
  EXPECT_EQ(nbd_stats_bytes_received(p), 0u);
  EXPECT_EQ(nbd_stats_chunks_received(p), 0u);

  EXPECT_STREQ(nbd_get_package_name(p), "duplexnbd");
  EXPECT_STREQ(nbd_get_version(p), "1.24.0");
  EXPECT_EQ(nbd_supports_uri(p), 1);
  EXPECT_EQ(nbd_supports_vsock(p), 1);
  EXPECT_TRUE(nbd_supports_tls(p) == 0 || nbd_supports_tls(p) == 1);
}

TEST(HandleDefaults, DebugFollowsEnvironment) {
  {
    ScopedEnv env("LIBNBD_DEBUG", "1");
    HandlePtr h = make_handle();
    install_quiet_debug(h.get());
    EXPECT_EQ(nbd_get_debug(h.get()), 1);
  }
  {
    ScopedEnv env("LIBNBD_DEBUG", "0");
    HandlePtr h = make_handle();
    EXPECT_EQ(nbd_get_debug(h.get()), 0);
  }
}

TEST(HandleState, FreshHandle) {
  HandlePtr h = make_handle();
  nbd_handle *p = h.get();
  EXPECT_EQ(nbd_aio_is_created(p), 1);
  EXPECT_EQ(nbd_aio_is_connecting(p), 0);
  EXPECT_EQ(nbd_aio_is_negotiating(p), 0);
  EXPECT_EQ(nbd_aio_is_ready(p), 0);
  EXPECT_EQ(nbd_aio_is_processing(p), 0);
  EXPECT_EQ(nbd_aio_is_dead(p), 0);
  EXPECT_EQ(nbd_aio_is_closed(p), 0);
  const char *st = nbd_connection_state(p);
  ASSERT_NE(st, nullptr);
  EXPECT_TRUE(starts_with(st, "START: ")) << st;
}

TEST(HandleLifetime, CloseNullIsHarmless) { nbd_close(nullptr); }

TEST(HandleNames, DefaultNamesIncrease) {
  HandlePtr a = make_handle();
  HandlePtr b = make_handle();
  std::string na = *take(nbd_get_handle_name(a.get()));
  std::string nb = *take(nbd_get_handle_name(b.get()));
  ASSERT_EQ(na.rfind("nbd", 0), 0u) << na;
  ASSERT_EQ(nb.rfind("nbd", 0), 0u) << nb;
  unsigned long ia = std::stoul(na.substr(3));
  unsigned long ib = std::stoul(nb.substr(3));
  EXPECT_GE(ia, 1u);
  EXPECT_GT(ib, ia);
}

TEST(HandleNames, SetAndGet) {
  HandlePtr h = make_handle();
  EXPECT_EQ(nbd_set_handle_name(h.get(), "my handle"), 0);
  EXPECT_EQ(take(nbd_get_handle_name(h.get())), "my handle");
  // The header marks the argument nonnull; call through a plain pointer so neither the
  // compiler nor UBSan's nonnull-attribute check objects to the deliberate NULL.
  int (*volatile set_name)(nbd_handle *, const char *) = nbd_set_handle_name;
  EXPECT_EQ(set_name(h.get(), nullptr), -1);
  expect_failed("nbd_set_handle_name", EFAULT);
  EXPECT_EQ(take(nbd_get_handle_name(h.get())), "my handle");
}

TEST(HandlePrivateData, SetReturnsOldValue) {
  HandlePtr h = make_handle();
  int object = 0;
  auto ptr = reinterpret_cast<uintptr_t>(&object);
  EXPECT_EQ(nbd_set_private_data(h.get(), 42), 0u);
  EXPECT_EQ(nbd_get_private_data(h.get()), 42u);
  EXPECT_EQ(nbd_set_private_data(h.get(), ptr), 42u);
  EXPECT_EQ(nbd_get_private_data(h.get()), ptr);
  EXPECT_EQ(nbd_set_private_data(h.get(), 0), ptr);
  EXPECT_EQ(nbd_get_private_data(h.get()), 0u);
}

TEST(HandleSettings, RoundTrips) {
  HandlePtr h = make_handle();
  nbd_handle *p = h.get();

  EXPECT_EQ(nbd_set_export_name(p, "disk"), 0);
  EXPECT_EQ(take(nbd_get_export_name(p)), "disk");
  std::string longest(4096, 'x');
  EXPECT_EQ(nbd_set_export_name(p, longest.c_str()), 0);
  EXPECT_EQ(take(nbd_get_export_name(p)), longest);

  EXPECT_EQ(nbd_set_request_block_size(p, false), 0);
  EXPECT_EQ(nbd_get_request_block_size(p), 0);
  EXPECT_EQ(nbd_set_full_info(p, true), 0);
  EXPECT_EQ(nbd_get_full_info(p), 1);
  EXPECT_EQ(nbd_set_tls_verify_peer(p, false), 0);
  EXPECT_EQ(nbd_get_tls_verify_peer(p), 0);
  EXPECT_EQ(nbd_set_tls_certificates(p, "/nonexistent/certs"), 0);
  EXPECT_EQ(nbd_set_tls_psk_file(p, "/nonexistent/keys.psk"), 0);
  EXPECT_EQ(nbd_set_tls_username(p, "alice"), 0);
  EXPECT_EQ(take(nbd_get_tls_username(p)), "alice");
  EXPECT_EQ(nbd_set_tls_hostname(p, "server.example.com"), 0);
  EXPECT_EQ(take(nbd_get_tls_hostname(p)), "server.example.com");
  EXPECT_EQ(nbd_set_request_structured_replies(p, false), 0);
  EXPECT_EQ(nbd_get_request_structured_replies(p), 0);
  EXPECT_EQ(nbd_set_request_meta_context(p, false), 0);
  EXPECT_EQ(nbd_get_request_meta_context(p), 0);
  EXPECT_EQ(nbd_set_request_extended_headers(p, false), 0);
  EXPECT_EQ(nbd_get_request_extended_headers(p), 0);
  EXPECT_EQ(nbd_set_handshake_flags(p, LIBNBD_HANDSHAKE_FLAG_NO_ZEROES), 0);
  EXPECT_EQ(nbd_get_handshake_flags(p), LIBNBD_HANDSHAKE_FLAG_NO_ZEROES);
  EXPECT_EQ(nbd_set_handshake_flags(p, 0), 0);
  EXPECT_EQ(nbd_get_handshake_flags(p), 0u);
  EXPECT_EQ(nbd_set_pread_initialize(p, false), 0);
  EXPECT_EQ(nbd_get_pread_initialize(p), 0);
  EXPECT_EQ(nbd_set_strict_mode(p, 0), 0);
  EXPECT_EQ(nbd_get_strict_mode(p), 0u);
  EXPECT_EQ(nbd_set_strict_mode(p, LIBNBD_STRICT_BOUNDS | LIBNBD_STRICT_ALIGN), 0);
  EXPECT_EQ(nbd_get_strict_mode(p), LIBNBD_STRICT_BOUNDS | LIBNBD_STRICT_ALIGN);
  EXPECT_EQ(nbd_set_opt_mode(p, true), 0);
  EXPECT_EQ(nbd_get_opt_mode(p), 1);
  install_quiet_debug(p);
  EXPECT_EQ(nbd_set_debug(p, true), 0);
  EXPECT_EQ(nbd_get_debug(p), 1);
  EXPECT_EQ(nbd_set_debug(p, false), 0);
  EXPECT_EQ(nbd_get_debug(p), 0);

  EXPECT_EQ(nbd_set_uri_allow_transports(p, LIBNBD_ALLOW_TRANSPORT_UNIX), 0);
  EXPECT_EQ(nbd_set_uri_allow_transports(p, 0), 0);
  EXPECT_EQ(nbd_set_uri_allow_tls(p, LIBNBD_TLS_REQUIRE), 0);
  EXPECT_EQ(nbd_set_uri_allow_local_file(p, true), 0);

  EXPECT_EQ(nbd_set_socket_activation_name(p, "nbd0Socket"), 0);
  EXPECT_EQ(take(nbd_get_socket_activation_name(p)), "nbd0Socket");
  EXPECT_EQ(nbd_set_socket_activation_name(p, ""), 0);
  EXPECT_EQ(take(nbd_get_socket_activation_name(p)), "");
}

TEST(HandleSettings, Tls) {
  HandlePtr h = make_handle();
  nbd_handle *p = h.get();
  EXPECT_EQ(nbd_set_tls(p, LIBNBD_TLS_DISABLE), 0);
  for (int level : {LIBNBD_TLS_ALLOW, LIBNBD_TLS_REQUIRE}) {
    if (nbd_supports_tls(p)) {
      EXPECT_EQ(nbd_set_tls(p, level), 0) << nbd_get_error();
      EXPECT_EQ(nbd_get_tls(p), level);
    } else {
      EXPECT_EQ(nbd_set_tls(p, level), -1);
      expect_failed("nbd_set_tls", ENOTSUP);
      EXPECT_EQ(nbd_get_tls(p), LIBNBD_TLS_DISABLE);
    }
  }
}

TEST(HandleSettings, TlsUsernameDefaultsToLoginName) {
  HandlePtr h = make_handle();
  {
    ScopedEnv env("LOGNAME", "fred");
    EXPECT_EQ(take(nbd_get_tls_username(h.get())), "fred");
  }
  {
    // Without $LOGNAME: getlogin_r, and its error when it fails (ENXIO without a
    // controlling terminal), as libnbd 1.22.2 does; no other source is tried.
    ScopedEnv env("LOGNAME", nullptr);
    char login[256];
    const int login_err = getlogin_r(login, sizeof login);
    char *name = nbd_get_tls_username(h.get());
    if (login_err == 0) {
      ASSERT_NE(name, nullptr) << nbd_get_error();
      EXPECT_STREQ(name, login);
      free(name);
    } else {
      EXPECT_EQ(name, nullptr);
      expect_failed("nbd_get_tls_username", login_err);
    }
  }
  EXPECT_EQ(nbd_set_tls_username(h.get(), "bob"), 0);
  ScopedEnv env("LOGNAME", "fred");
  EXPECT_EQ(take(nbd_get_tls_username(h.get())), "bob");
}

TEST(HandleSettings, MetaContextList) {
  HandlePtr h = make_handle();
  nbd_handle *p = h.get();
  EXPECT_EQ(nbd_add_meta_context(p, LIBNBD_CONTEXT_BASE_ALLOCATION), 0);
  EXPECT_EQ(nbd_add_meta_context(p, "qemu:dirty-bitmap:b0"), 0);
  EXPECT_EQ(nbd_get_nr_meta_contexts(p), 2);
  EXPECT_EQ(take(nbd_get_meta_context(p, 0)), "base:allocation");
  EXPECT_EQ(take(nbd_get_meta_context(p, 1)), "qemu:dirty-bitmap:b0");

  EXPECT_EQ(nbd_get_meta_context(p, 2), nullptr);
  expect_failed("nbd_get_meta_context", EINVAL);
  // Same text as libnbd 1.14.2.
  EXPECT_STREQ(nbd_get_error(),
               "nbd_get_meta_context: meta context request out of range: Invalid argument");

  EXPECT_EQ(nbd_clear_meta_contexts(p), 0);
  EXPECT_EQ(nbd_get_nr_meta_contexts(p), 0);
  EXPECT_EQ(nbd_get_meta_context(p, 0), nullptr);
  expect_failed("nbd_get_meta_context", EINVAL);
}

TEST(HandleSettings, ProtocolStringLimits) {
  HandlePtr h = make_handle();
  std::string too_long(4097, 'x');
  EXPECT_EQ(nbd_set_export_name(h.get(), "kept"), 0);
  EXPECT_EQ(nbd_set_export_name(h.get(), too_long.c_str()), -1);
  expect_failed("nbd_set_export_name", ENAMETOOLONG);
  EXPECT_EQ(take(nbd_get_export_name(h.get())), "kept");

  EXPECT_EQ(nbd_add_meta_context(h.get(), too_long.c_str()), -1);
  expect_failed("nbd_add_meta_context", ENAMETOOLONG);
  EXPECT_EQ(nbd_get_nr_meta_contexts(h.get()), 0);
}

TEST(HandleSettings, SocketActivationNameValidation) {
  HandlePtr h = make_handle();
  nbd_handle *p = h.get();
  EXPECT_EQ(nbd_set_socket_activation_name(p, "good1"), 0);
  EXPECT_EQ(nbd_set_socket_activation_name(p, std::string(32, 'a').c_str()), 0);
  EXPECT_EQ(nbd_set_socket_activation_name(p, std::string(33, 'a').c_str()), -1);
  expect_failed("nbd_set_socket_activation_name", ENAMETOOLONG);
  for (const char *bad : {"a:b", "with space", "dash-ed", "tab\t", "caf\xc3\xa9"}) {
    EXPECT_EQ(nbd_set_socket_activation_name(p, bad), -1) << bad;
    expect_failed("nbd_set_socket_activation_name", EINVAL);
  }
  // Failed calls leave the earlier value.
  EXPECT_EQ(take(nbd_get_socket_activation_name(p)), std::string(32, 'a'));
}

// Same messages and errnos as libnbd 1.14.2 for out-of-range enums and flags.
TEST(HandleSettings, InvalidEnumsAndFlags) {
  HandlePtr h = make_handle();
  nbd_handle *p = h.get();

  EXPECT_EQ(nbd_set_tls(p, 5), -1);
  expect_failed("nbd_set_tls", EINVAL);
  EXPECT_EQ(nbd_set_tls(p, -1), -1);
  expect_failed("nbd_set_tls", EINVAL);
  EXPECT_EQ(nbd_get_tls(p), LIBNBD_TLS_DISABLE);

  EXPECT_EQ(nbd_set_uri_allow_tls(p, 7), -1);
  expect_failed("nbd_set_uri_allow_tls", EINVAL);

  EXPECT_EQ(nbd_set_handshake_flags(p, LIBNBD_HANDSHAKE_FLAG_MASK + 1), -1);
  expect_failed("nbd_set_handshake_flags", EINVAL);
  EXPECT_EQ(nbd_get_handshake_flags(p), LIBNBD_HANDSHAKE_FLAG_MASK);

  EXPECT_EQ(nbd_set_strict_mode(p, LIBNBD_STRICT_MASK + 1), -1);
  expect_failed("nbd_set_strict_mode", EINVAL);
  EXPECT_EQ(nbd_get_strict_mode(p), LIBNBD_STRICT_MASK);

  EXPECT_EQ(nbd_set_uri_allow_transports(p, LIBNBD_ALLOW_TRANSPORT_MASK + 1), -1);
  expect_failed("nbd_set_uri_allow_transports", EINVAL);
}

namespace {

struct DebugLog {
  std::vector<std::string> lines;  // "context: msg"
  int frees = 0;
};

nbd_debug_callback logging_callback(DebugLog *log) {
  return {[](void *ud, const char *context, const char *msg) {
            static_cast<DebugLog *>(ud)->lines.push_back(std::string(context) + ": " + msg);
            return 0;
          },
          log, [](void *ud) { static_cast<DebugLog *>(ud)->frees++; }};
}

bool contains(const std::vector<std::string> &lines, const std::string &line) {
  for (const auto &l : lines)
    if (l == line) return true;
  return false;
}

}  // namespace

TEST(HandleDebug, CallbackReceivesEnterAndLeave) {
  DebugLog log;
  HandlePtr h = make_handle();
  ASSERT_EQ(nbd_set_debug_callback(h.get(), logging_callback(&log)), 0);
  ASSERT_EQ(nbd_set_debug(h.get(), true), 0);
  EXPECT_EQ(nbd_set_export_name(h.get(), "e"), 0);
  EXPECT_TRUE(contains(log.lines, "nbd_set_export_name: enter: export_name=\"e\""));
  EXPECT_TRUE(contains(log.lines, "nbd_set_export_name: leave: ret=0"));

  // A failing call reports the error on leave.
  EXPECT_EQ(nbd_set_tls(h.get(), 9), -1);
  bool saw_error = false;
  for (const auto &l : log.lines)
    if (l.rfind("nbd_set_tls: leave: error=", 0) == 0) saw_error = true;
  EXPECT_TRUE(saw_error);

  // Nothing is produced with debugging off.
  ASSERT_EQ(nbd_set_debug(h.get(), false), 0);
  size_t before = log.lines.size();
  EXPECT_EQ(nbd_get_opt_mode(h.get()), 0);
  EXPECT_EQ(log.lines.size(), before);

  // Closing with debugging on says so, then frees the callback exactly once.
  ASSERT_EQ(nbd_set_debug(h.get(), true), 0);
  h.reset();
  EXPECT_TRUE(contains(log.lines, "nbd_close: closing handle"));
  EXPECT_EQ(log.frees, 1);
}

TEST(HandleDebug, FreeRunsOnceOnReplaceClearAndClose) {
  DebugLog first, second, third;
  HandlePtr h = make_handle();

  ASSERT_EQ(nbd_set_debug_callback(h.get(), logging_callback(&first)), 0);
  EXPECT_EQ(first.frees, 0);
  ASSERT_EQ(nbd_set_debug_callback(h.get(), logging_callback(&second)), 0);
  EXPECT_EQ(first.frees, 1);  // replaced
  EXPECT_EQ(second.frees, 0);

  ASSERT_EQ(nbd_clear_debug_callback(h.get()), 0);
  EXPECT_EQ(second.frees, 1);  // cleared
  ASSERT_EQ(nbd_clear_debug_callback(h.get()), 0);  // nothing installed: harmless
  EXPECT_EQ(second.frees, 1);

  ASSERT_EQ(nbd_set_debug_callback(h.get(), logging_callback(&third)), 0);
  h.reset();
  EXPECT_EQ(third.frees, 1);  // closed
  EXPECT_EQ(first.frees, 1);
  EXPECT_EQ(second.frees, 1);
}

// As libnbd 1.14 does: a closure without a function is accepted (never called) and its
// .free still runs exactly once, when the handle lets go of it.
TEST(HandleDebug, NullCallbackIsAcceptedAndFreedOnce) {
  DebugLog log;
  HandlePtr h = make_handle();
  nbd_debug_callback cb = logging_callback(&log);
  cb.callback = nullptr;
  EXPECT_EQ(nbd_set_debug_callback(h.get(), cb), 0);
  EXPECT_EQ(nbd_set_debug(h.get(), true), 0);
  EXPECT_EQ(nbd_set_export_name(h.get(), "x"), 0);
  EXPECT_EQ(log.frees, 0);
  h.reset();
  EXPECT_EQ(log.frees, 1);
}

TEST(HandleErrors, FreshThreadHasNoError) {
  const char *seen = reinterpret_cast<const char *>(1);
  int seen_errno = -1;
  std::thread t([&] {
    seen = nbd_get_error();
    seen_errno = nbd_get_errno();
  });
  t.join();
  EXPECT_EQ(seen, nullptr);
  EXPECT_EQ(seen_errno, 0);
}

TEST(HandleErrors, SuccessDoesNotClear) {
  HandlePtr h = make_handle();
  EXPECT_EQ(nbd_set_tls(h.get(), 42), -1);
  std::string msg = nbd_get_error();
  EXPECT_EQ(nbd_set_export_name(h.get(), "fine"), 0);
  EXPECT_EQ(nbd_get_opt_mode(h.get()), 0);
  EXPECT_EQ(msg, nbd_get_error());
  EXPECT_EQ(nbd_get_errno(), EINVAL);
}

TEST(HandleErrors, PerThread) {
  HandlePtr h = make_handle();
  std::string err_a, err_b;
  int errno_a = 0, errno_b = 0;
  // Each thread fails a different way, waits for the other to fail too, then reads.
  std::atomic<int> failed{0};
  auto wait_both = [&] {
    failed++;
    while (failed.load() < 2) std::this_thread::yield();
  };
  std::thread a([&] {
    EXPECT_EQ(nbd_get_meta_context(h.get(), 99), nullptr);
    wait_both();
    err_a = nbd_get_error();
    errno_a = nbd_get_errno();
  });
  std::thread b([&] {
    EXPECT_EQ(nbd_set_export_name(h.get(), std::string(5000, 'y').c_str()), -1);
    wait_both();
    err_b = nbd_get_error();
    errno_b = nbd_get_errno();
  });
  a.join();
  b.join();
  EXPECT_TRUE(starts_with(err_a.c_str(), "nbd_get_meta_context: ")) << err_a;
  EXPECT_EQ(errno_a, EINVAL);
  EXPECT_TRUE(starts_with(err_b.c_str(), "nbd_set_export_name: ")) << err_b;
  EXPECT_EQ(errno_b, ENAMETOOLONG);
}

TEST(HandleConnect, BadSocketLeavesTheHandleCreated) {
  // As libnbd 1.22 (found by the call_states differential run): the descriptor is checked
  // before the handle leaves the created state, so another connect may follow.
  HandlePtr h = make_handle();
  EXPECT_EQ(nbd_aio_connect_socket(h.get(), -1), -1);
  expect_failed("nbd_aio_connect_socket", EBADF);
  EXPECT_EQ(nbd_aio_is_created(h.get()), 1);
  EXPECT_EQ(nbd_connect_socket(h.get(), 1000), -1);
  EXPECT_EQ(nbd_get_errno(), EBADF);
  EXPECT_EQ(nbd_aio_is_created(h.get()), 1);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  EXPECT_EQ(nbd_aio_connect_socket(h.get(), sv[0]), 0) << nbd_get_error();
  EXPECT_EQ(nbd_aio_is_connecting(h.get()), 1);
  h.reset();
  close(sv[1]);
}

TEST(HandleConnect, UnresolvableTcpNameLeavesTheHandleCreated) {
  // As libnbd 1.22 (found by call_states): a failed lookup returns the handle to created.
  HandlePtr h = make_handle();
  EXPECT_EQ(nbd_aio_connect_tcp(h.get(), "", "1"), -1);
  EXPECT_NE(nbd_get_error(), nullptr);
  EXPECT_EQ(nbd_aio_is_created(h.get()), 1);
  EXPECT_EQ(nbd_connect_tcp(h.get(), "127.0.0.1", "notaport"), -1);
  EXPECT_EQ(nbd_aio_is_created(h.get()), 1);
}

TEST(HandleConnect, RefusedTcpConnectLeavesTheHandleCreated) {
  // As libnbd 1.22.2 (found by call_states): a refusal the kernel reports within the call
  // fails the call itself, and the handle may connect again.
  uint16_t port_number = 0;
  duplexnbd::transport::FileDescriptor refusing =
      duplexnbd::transport::tcp_socket(AF_INET, "127.0.0.1", /*do_listen=*/false, &port_number);
  ASSERT_TRUE(refusing.valid());
  const std::string port = std::to_string(port_number);
  HandlePtr h = make_handle();
  EXPECT_EQ(nbd_aio_connect_tcp(h.get(), "127.0.0.1", port.c_str()), -1);
  expect_failed("nbd_aio_connect_tcp", ECONNREFUSED);
  EXPECT_EQ(nbd_aio_is_created(h.get()), 1);
  EXPECT_EQ(nbd_connect_tcp(h.get(), "127.0.0.1", port.c_str()), -1);
  EXPECT_EQ(nbd_get_errno(), ECONNREFUSED);
  EXPECT_EQ(nbd_aio_is_created(h.get()), 1);
  const std::string uri = "nbd://127.0.0.1:" + port + "/";
  EXPECT_EQ(nbd_connect_uri(h.get(), uri.c_str()), -1);
  EXPECT_EQ(nbd_get_errno(), ECONNREFUSED);
  EXPECT_EQ(nbd_aio_is_created(h.get()), 1);
  // Now one that listens: the connect starts.
  ASSERT_EQ(listen(refusing.get(), 1), 0);
  EXPECT_EQ(nbd_aio_connect_tcp(h.get(), "127.0.0.1", port.c_str()), 0) << nbd_get_error();
  EXPECT_EQ(nbd_aio_is_connecting(h.get()), 1);
}

TEST(HandleConnect, ConnectWaitsForWritabilityFirst) {
  // As libnbd 1.22.2 (found by call_states): right after an aio connect, even one that
  // connect(2) completed at once, the handle waits to write; a read notification is
  // refused then; the first nbd_poll finishes the connect, and the handshake then waits
  // for the server's greeting.
  duplexnbd::tls_testing::TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string path = dir / "sock";
  duplexnbd::transport::FileDescriptor listener = duplexnbd::transport::unix_listener(path);
  HandlePtr h = make_handle();
  ASSERT_EQ(nbd_aio_connect_unix(h.get(), path.c_str()), 0) << nbd_get_error();
  EXPECT_EQ(nbd_aio_is_connecting(h.get()), 1);
  EXPECT_EQ(nbd_aio_get_direction(h.get()), unsigned(LIBNBD_AIO_DIRECTION_WRITE));
  EXPECT_EQ(nbd_aio_notify_read(h.get()), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(nbd_poll(h.get(), 0), 1) << nbd_get_error();
  EXPECT_EQ(nbd_aio_is_connecting(h.get()), 1);
  EXPECT_EQ(nbd_aio_get_direction(h.get()), unsigned(LIBNBD_AIO_DIRECTION_READ));
}
