// SPDX-License-Identifier: LGPL-2.1-or-later
// Per-handle settings (export, TLS, requests, modes, URI limits), state queries, statistics.
#include <sys/types.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "api_impl.h"
#include "engine/connection.h"
#include "handle/error.h"
#include "handle/handle.h"
#include "handshake/handshake.h"
#include "tls/tls_config.h"
#include "wire/protocol.h"

namespace duplexnbd::api {
namespace {

// Returned strings belong to the caller, who releases them with free(3).
char *malloc_copy(const std::string &s) {
  char *p = static_cast<char *>(malloc(s.size() + 1));
  if (p == nullptr) {
    set_error(ENOMEM, "malloc");
    return nullptr;
  }
  memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

// Runs `f` on the settings with their lock held; the lock is never held across I/O or
// a caller's callback, so this cannot deadlock against the engine.
template <typename F>
auto with_settings(Handle &h, F &&f) {
  std::lock_guard lock(h.settings_mutex);
  return f(h.settings);
}

// The connection, once a connect call created it. Checking the published state first
// gives us a happens-before edge with the thread that created it; in the created state
// the pointer may be being assigned right now by a concurrent connect call.
Connection *live_connection(Handle &h) {
  if (h.state() == State::Created) return nullptr;
  return h.connection.get();
}

// Names in the protocol (export names, context names) are capped at 4096 bytes; a
// longer one could only make the server drop the connection later, so refuse it now.
bool fits_protocol(const char *s) {
  return strnlen(s, wire::kMaxStringSize + 1) <= wire::kMaxStringSize;
}

}  // namespace

// ---- export name ----------------------------------------------------------------------

int set_export_name(Handle &h, const char *export_name) {
  if (!fits_protocol(export_name)) {
    set_error(ENAMETOOLONG, "export name too long for NBD protocol");
    return -1;
  }
  std::string name(export_name);
  const bool changed = with_settings(h, [&](Settings &s) {
    if (s.export_name == name) return false;
    s.export_name = name;
    return true;
  });
  // While negotiating, the size, flags and contexts learnt so far belong to the old
  // export: they go now, not at the next option, so the getters cannot report them
  // as this export's.  Setting the same name again keeps them.
  if (changed) {
    if (Connection *conn = live_connection(h); conn != nullptr) {
      std::lock_guard lock(conn->handshake_mutex());
      if (handshake::Handshake *hs = conn->handshake(); hs != nullptr) hs->select_export(name);
    }
  }
  return 0;
}

char *get_export_name(Handle &h) {
  return malloc_copy(with_settings(h, [](Settings &s) { return s.export_name; }));
}

// ---- what NBD_OPT_GO / NBD_OPT_INFO ask for ---------------------------------------------

int set_request_block_size(Handle &h, bool request) {
  with_settings(h, [&](Settings &s) { s.request_block_size = request; });
  return 0;
}

int get_request_block_size(Handle &h) {
  return with_settings(h, [](Settings &s) { return s.request_block_size; }) ? 1 : 0;
}

int set_full_info(Handle &h, bool request) {
  with_settings(h, [&](Settings &s) { s.full_info = request; });
  return 0;
}

int get_full_info(Handle &h) {
  return with_settings(h, [](Settings &s) { return s.full_info; }) ? 1 : 0;
}

// ---- TLS ----------------------------------------------------------------------------------

int set_tls(Handle &h, int tls) {
  // The entry point has already rejected values outside LIBNBD_TLS_*.
  if (tls != LIBNBD_TLS_DISABLE && !DUPLEXNBD_HAVE_TLS) {
    set_error(ENOTSUP, "this build of the library has no TLS support");
    return -1;
  }
  with_settings(h, [&](Settings &s) { s.tls = tls; });
  return 0;
}

int get_tls(Handle &h) {
  return with_settings(h, [](Settings &s) { return s.tls; });
}

// The TLS file settings are accepted even without TLS support: they are inert until
// nbd_set_tls asks for TLS, and programs set them unconditionally.
int set_tls_certificates(Handle &h, const char *dir) {
  std::string value(dir);
  with_settings(h, [&](Settings &s) { s.tls_certificates = std::move(value); });
  return 0;
}

int set_tls_verify_peer(Handle &h, bool verify) {
  with_settings(h, [&](Settings &s) { s.tls_verify_peer = verify; });
  return 0;
}

int get_tls_verify_peer(Handle &h) {
  return with_settings(h, [](Settings &s) { return s.tls_verify_peer; }) ? 1 : 0;
}

int set_tls_username(Handle &h, const char *username) {
  std::string value(username);
  with_settings(h, [&](Settings &s) { s.tls_username = std::move(value); });
  return 0;
}

char *get_tls_username(Handle &h) {
  std::optional<std::string> set = with_settings(h, [](Settings &s) { return s.tls_username; });
  if (set) return malloc_copy(*set);
  // The name PSK would use: $LOGNAME, else getlogin_r, whose error (ENXIO without a
  // controlling terminal) is the call's, as in libnbd.
  Result<std::string> user = tls::default_tls_username();
  if (!user) {
    set_error(user.error());
    return nullptr;
  }
  return malloc_copy(*user);
}

int set_tls_hostname(Handle &h, const char *hostname) {
  std::string value(hostname);
  with_settings(h, [&](Settings &s) { s.tls_hostname = std::move(value); });
  return 0;
}

char *get_tls_hostname(Handle &h) {
  // The name in effect: the one set, else the host given to nbd_connect_tcp, else ""
  // (not an error).
  return malloc_copy(with_settings(h, [](Settings &s) {
    if (s.tls_hostname) return *s.tls_hostname;
    return s.tcp_hostname.value_or("");
  }));
}

int set_tls_psk_file(Handle &h, const char *filename) {
  std::string value(filename);
  with_settings(h, [&](Settings &s) { s.tls_psk_file = std::move(value); });
  return 0;
}

// Kept as given: GnuTLS parses it when a TLS session starts, and a string it rejects
// fails that connection then (libnbd does not check it here either).
int set_tls_priority(Handle &h, const char *priority) {
  std::string value(priority);
  with_settings(h, [&](Settings &s) { s.tls_priority = std::move(value); });
  return 0;
}

char *get_tls_priority(Handle &h) {
  return malloc_copy(
      with_settings(h, [](Settings &s) { return s.tls_priority.value_or(tls::kDefaultPriority); }));
}

// ---- protocol extensions requested automatically -------------------------------------------

int set_request_extended_headers(Handle &h, bool request) {
  with_settings(h, [&](Settings &s) { s.request_extended_headers = request; });
  return 0;
}

int get_request_extended_headers(Handle &h) {
  return with_settings(h, [](Settings &s) { return s.request_extended_headers; }) ? 1 : 0;
}

int set_request_structured_replies(Handle &h, bool request) {
  with_settings(h, [&](Settings &s) { s.request_structured_replies = request; });
  return 0;
}

int get_request_structured_replies(Handle &h) {
  return with_settings(h, [](Settings &s) { return s.request_structured_replies; }) ? 1 : 0;
}

int set_request_meta_context(Handle &h, bool request) {
  with_settings(h, [&](Settings &s) { s.request_meta_context = request; });
  return 0;
}

int get_request_meta_context(Handle &h) {
  return with_settings(h, [](Settings &s) { return s.request_meta_context; }) ? 1 : 0;
}

// ---- handshake and strictness ------------------------------------------------------------

int set_handshake_flags(Handle &h, uint32_t flags) {
  with_settings(h, [&](Settings &s) { s.handshake_flags = flags; });
  return 0;
}

uint32_t get_handshake_flags(Handle &h) {
  uint32_t wanted = with_settings(h, [](Settings &s) { return s.handshake_flags; });
  // Once the server's greeting has been read the answer is what both sides agreed on.
  // The greeting fields are written once, before the handshake publishes any of these
  // states, and never again, so reading them here does not race with the handshake.
  State st = h.state();
  if (st == State::Negotiating || st == State::Ready || st == State::Closed || st == State::Dead) {
    if (Connection *c = live_connection(h)) {
      const Negotiated &n = c->negotiated();
      if (!n.protocol.empty()) return wanted & n.gflags;
    }
  }
  return wanted;
}

int set_pread_initialize(Handle &h, bool request) {
  with_settings(h, [&](Settings &s) { s.pread_initialize = request; });
  return 0;
}

int get_pread_initialize(Handle &h) {
  return with_settings(h, [](Settings &s) { return s.pread_initialize; }) ? 1 : 0;
}

// An atomic rather than a setting: every command checks it on the hot path.
int set_strict_mode(Handle &h, uint32_t flags) {
  h.strict.store(flags, std::memory_order_relaxed);
  return 0;
}

uint32_t get_strict_mode(Handle &h) { return h.strict.load(std::memory_order_relaxed); }

int set_opt_mode(Handle &h, bool enable) {
  with_settings(h, [&](Settings &s) { s.opt_mode = enable; });
  return 0;
}

int get_opt_mode(Handle &h) {
  return with_settings(h, [](Settings &s) { return s.opt_mode; }) ? 1 : 0;
}

// ---- the list of meta contexts to request --------------------------------------------------

int add_meta_context(Handle &h, const char *name) {
  if (!fits_protocol(name)) {
    set_error(ENAMETOOLONG, "meta context name too long for NBD protocol");
    return -1;
  }
  std::string value(name);
  with_settings(h, [&](Settings &s) { s.meta_contexts.push_back(std::move(value)); });
  return 0;
}

ssize_t get_nr_meta_contexts(Handle &h) {
  return ssize_t(with_settings(h, [](Settings &s) { return s.meta_contexts.size(); }));
}

char *get_meta_context(Handle &h, size_t i) {
  auto name = with_settings(h, [&](Settings &s) -> std::optional<std::string> {
    if (i >= s.meta_contexts.size()) return std::nullopt;
    return s.meta_contexts[i];
  });
  if (!name) {
    set_error(EINVAL, "meta context request out of range");
    return nullptr;
  }
  return malloc_copy(*name);
}

int clear_meta_contexts(Handle &h) {
  with_settings(h, [](Settings &s) { s.meta_contexts.clear(); });
  return 0;
}

// ---- limits on what a URI may do ------------------------------------------------------------

int set_uri_allow_transports(Handle &h, uint32_t mask) {
  with_settings(h, [&](Settings &s) { s.uri_allow_transports = mask; });
  return 0;
}

int set_uri_allow_tls(Handle &h, int tls) {
  with_settings(h, [&](Settings &s) { s.uri_allow_tls = tls; });
  return 0;
}

int set_uri_allow_tls_priority(Handle &h, bool allow) {
  with_settings(h, [&](Settings &s) { s.uri_allow_tls_priority = allow; });
  return 0;
}

int set_uri_allow_local_file(Handle &h, bool allow) {
  with_settings(h, [&](Settings &s) { s.uri_allow_local_file = allow; });
  return 0;
}

// ---- socket activation ----------------------------------------------------------------------

// The name ends up in LISTEN_FDNAMES, where ':' separates names and systemd limits them
// to short printable strings; the man page asks for "a short alphanumeric string", so
// we accept exactly that (at most 32 ASCII letters and digits) or "" for the default.
int set_socket_activation_name(Handle &h, const char *socket_name) {
  constexpr size_t kMaxName = 32;
  size_t len = strlen(socket_name);
  if (len > kMaxName) {
    set_error(ENAMETOOLONG, "socket activation name must be at most %zu characters", kMaxName);
    return -1;
  }
  for (size_t i = 0; i < len; i++) {
    char c = socket_name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum) {
      set_error(EINVAL, "socket activation name must contain only ASCII letters and digits");
      return -1;
    }
  }
  std::string value(socket_name, len);
  with_settings(h, [&](Settings &s) { s.socket_activation_name = std::move(value); });
  return 0;
}

char *get_socket_activation_name(Handle &h) {
  return malloc_copy(with_settings(h, [](Settings &s) { return s.socket_activation_name; }));
}

// ---- state queries -------------------------------------------------------------------------

int aio_is_created(Handle &h) { return h.state() == State::Created ? 1 : 0; }
int aio_is_connecting(Handle &h) { return h.state() == State::Connecting ? 1 : 0; }
int aio_is_negotiating(Handle &h) { return h.state() == State::Negotiating ? 1 : 0; }

// In transmission the handle is "ready" when idle (commands may still be in flight at
// the server) and "processing" while a request is part written or a reply part read;
// exactly one of the two is true in that phase.
int aio_is_processing(Handle &h) {
  if (h.state() != State::Ready) return 0;
  Connection *c = live_connection(h);
  return c != nullptr && c->processing() ? 1 : 0;
}

int aio_is_ready(Handle &h) {
  if (h.state() != State::Ready) return 0;
  Connection *c = live_connection(h);
  return c != nullptr && c->processing() ? 0 : 1;
}

int aio_is_dead(Handle &h) { return h.state() == State::Dead ? 1 : 0; }
int aio_is_closed(Handle &h) { return h.state() == State::Closed ? 1 : 0; }

// For debugging only (the man page says not to rely on it): "NAME: description", the
// names following libnbd's for the states both libraries have.
const char *connection_state(Handle &h) {
  switch (h.state()) {
    case State::Created:
      return "START: Handle created, no connection attempted yet";
    case State::Connecting: {
      Connection *c = live_connection(h);
      if (c == nullptr || c->fd() < 0) return "CONNECT.START: Connecting to the server";
      return "HANDSHAKE: Exchanging the handshake with the server";
    }
    case State::Negotiating:
      return "NEGOTIATING: Waiting for the next option request from the caller";
    case State::Ready: {
      Connection *c = live_connection(h);
      if (c != nullptr && c->processing())
        return "PROCESSING: Sending a request or receiving a reply";
      return "READY: Connection is idle, ready to issue commands";
    }
    case State::Closed:
      return "CLOSED: The connection was shut down cleanly";
    case State::Dead:
      return "DEAD: The connection failed; the handle can only be closed";
  }
  return "UNKNOWN: Unknown state";
}

// ---- statistics -----------------------------------------------------------------------------

// The counters live in the connection; before one exists nothing was sent or received.
uint64_t stats_bytes_sent(Handle &h) {
  Connection *c = live_connection(h);
  return c ? c->bytes_sent.load(std::memory_order_relaxed) : 0;
}

uint64_t stats_chunks_sent(Handle &h) {
  Connection *c = live_connection(h);
  return c ? c->chunks_sent.load(std::memory_order_relaxed) : 0;
}

uint64_t stats_bytes_received(Handle &h) {
  Connection *c = live_connection(h);
  return c ? c->bytes_received.load(std::memory_order_relaxed) : 0;
}

uint64_t stats_chunks_received(Handle &h) {
  Connection *c = live_connection(h);
  return c ? c->chunks_received.load(std::memory_order_relaxed) : 0;
}

}  // namespace duplexnbd::api
