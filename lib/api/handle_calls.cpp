// SPDX-License-Identifier: LGPL-2.1-or-later
// Handle lifetime, error retrieval, debugging, naming, private data and build facts.
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <utility>

#include "api_impl.h"
#include "build_info.h"
#include "engine/connection.h"
#include "handle/debug.h"
#include "handle/error.h"
#include "handle/handle.h"

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

}  // namespace

// ---- lifetime ---------------------------------------------------------------------

struct nbd_handle *create() {
  // std::bad_alloc from here is turned into ENOMEM by the entry point.
  auto *h = new nbd_handle();
  // Only LIBNBD_DEBUG=1 can have switched debugging on this early.
  debug(*h, "opening handle");
  return h;
}

void close(Handle *h) {
  if (h == nullptr) return;
  debug(*h, "closing handle");
  // The destructor drops the connection first (it is the last member), so anything it
  // logs while tearing down still reaches the debug callback, which goes (and is
  // freed) afterwards.
  delete h;
}

// ---- errors -----------------------------------------------------------------------

// Both only read this thread's record: a successful call never clears it, so the
// message of the last failure stays available until the next failure.
const char *get_error() { return last_error(); }
int get_errno() { return last_errno(); }

// ---- debugging --------------------------------------------------------------------

int set_debug(Handle &h, bool debug) {
  h.debug.store(debug, std::memory_order_relaxed);
  return 0;
}

int get_debug(Handle &h) { return h.debug.load(std::memory_order_relaxed) ? 1 : 0; }

int set_debug_callback(Handle &h, Closure<nbd_debug_callback> &&debug_callback) {
  Closure<nbd_debug_callback> old;
  {
    std::lock_guard lock(h.debug_mutex);
    old = std::exchange(h.debug_callback, std::move(debug_callback));
  }
  // `old` is freed here, outside the lock, so its free function may log or block freely.
  return 0;
}

int clear_debug_callback(Handle &h) {
  Closure<nbd_debug_callback> old;
  {
    std::lock_guard lock(h.debug_mutex);
    old = std::move(h.debug_callback);
  }
  return 0;
}

// ---- naming and private data --------------------------------------------------------

int set_handle_name(Handle &h, const char *handle_name) {
  std::string name(handle_name);
  std::lock_guard lock(h.settings_mutex);
  h.settings.handle_name = std::move(name);
  return 0;
}

char *get_handle_name(Handle &h) {
  std::string name;
  {
    std::lock_guard lock(h.settings_mutex);
    name = h.settings.handle_name;
  }
  return malloc_copy(name);
}

uintptr_t set_private_data(Handle &h, uintptr_t private_data) {
  return h.private_data.exchange(private_data, std::memory_order_relaxed);
}

uintptr_t get_private_data(Handle &h) { return h.private_data.load(std::memory_order_relaxed); }

// ---- memory estimate ----------------------------------------------------------------

// For garbage-collected bindings deciding when to close a handle: what this handle keeps
// allocated now. The debug callback and the buffers the caller lent us are not counted.
ssize_t get_handle_size(Handle &h) {
  size_t bytes = sizeof(nbd_handle);
  {
    std::lock_guard lock(h.settings_mutex);
    bytes += h.settings.heap_bytes();
  }
  // The connection pointer is assigned by the first connect call; the published state
  // tells us it is complete (as live_connection() does in settings_calls.cpp).
  if (h.state() != State::Created && h.connection) bytes += h.connection->memory_estimate();
  return ssize_t(bytes);
}

// ---- build facts --------------------------------------------------------------------

// We report our own name so that logs and bug reports show which library answered.
const char *get_package_name(Handle &) { return "duplexnbd"; }

// The version is the libnbd release whose API we implement (CMake's PROJECT_VERSION,
// 1.24.0), not a separate duplexnbd number: programs compare it against the libnbd
// version they need, and they must keep passing.
const char *get_version(Handle &) { return DUPLEXNBD_VERSION; }

// The packager's text (CMake cache variable DUPLEXNBD_VERSION_EXTRA), "" by default.
const char *get_version_extra(Handle &) { return DUPLEXNBD_VERSION_EXTRA; }

int supports_tls(Handle &) { return DUPLEXNBD_HAVE_TLS ? 1 : 0; }

// Like libnbd, this reports compile-time support only: whether the running kernel
// has vsock (or vsock_loopback) is discovered when connecting.
int supports_vsock(Handle &) {
#ifdef AF_VSOCK
  return 1;
#else
  return 0;
#endif
}

// Our URI parser is built in, with no optional dependency.
int supports_uri(Handle &) { return 1; }

}  // namespace duplexnbd::api
