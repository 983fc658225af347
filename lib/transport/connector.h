// SPDX-License-Identifier: LGPL-2.1-or-later
// Non-blocking connection establishment, driven from the engine's poll loop.
#pragma once

#include <stdint.h>
#include <sys/socket.h>

#include <string>
#include <vector>

#include "core/status.h"
#include "transport/file_descriptor.h"

namespace duplexnbd::transport {

// One address to try, as getaddrinfo would describe it.
struct SocketAddress {
  struct sockaddr_storage storage = {};
  socklen_t length = 0;
  int protocol = 0;

  const struct sockaddr *get() const {
    return reinterpret_cast<const struct sockaddr *>(&storage);
  }
  int family() const { return storage.ss_family; }
};

// Establishes one stream connection without blocking (except getaddrinfo,
// which has no non-blocking form).
//
// Usage: call one start_*() or adopt().  If it fails, the connection failed.
// After adopt() done() is true; after a start_*() connecting() is (even when
// connect(2) succeeded at once, as libnbd waits for writability after every
// connect), and the caller polls fd() for POLLOUT and calls on_writable() when
// it fires, repeating until done() or an error.  Then take_fd() yields the
// connected, non-blocking, close-on-exec socket.
//
// With several addresses (start_tcp, start_addresses) each is tried in turn:
// a failure on one, immediate or reported through on_writable(), moves on to
// the next, and only when all have failed is the last error returned.
class Connector {
public:
  Connector() = default;
  Connector(Connector &&) = default;
  Connector &operator=(Connector &&) = default;

  Status start_unix(const std::string &path);
  // `port` may be a service name such as "nbd", as with getaddrinfo.
  Status start_tcp(const std::string &host, const std::string &port);
  Status start_vsock(uint32_t cid, uint32_t port);
  Status start_sockaddr(const struct sockaddr *addr, socklen_t addrlen);
  Status start_addresses(std::vector<SocketAddress> addresses);

  // Takes an already connected socket (nbd_connect_socket), making it
  // non-blocking.  Ownership passes only on success, as libnbd documents.
  Status adopt(int fd);

  bool done() const { return state_ == State::kDone; }
  bool connecting() const { return state_ == State::kConnecting; }
  // The socket to poll for POLLOUT while connecting(); -1 when idle.
  int fd() const { return fd_.get(); }

  // Called when fd() polls writable (or with POLLERR/POLLHUP).
  Status on_writable();

  // The connected socket, once done(); the connector returns to idle.
  FileDescriptor take_fd();

  // Blocking convenience: drives a started connection to completion.
  // timeout_ms < 0 waits forever; on timeout the error is ETIMEDOUT.
  Status wait(int timeout_ms = -1);

private:
  enum class State { kIdle, kConnecting, kDone };

  Status begin(std::vector<SocketAddress> addresses, bool check_at_once = false);
  // Starts connect() on addresses_[next_] onwards until one is in progress or
  // connected; returns the last error once all have failed.
  Status try_next(Error last_error);
  void reset();

  State state_ = State::kIdle;
  FileDescriptor fd_;
  std::vector<SocketAddress> addresses_;
  size_t next_ = 0;
  bool check_at_once_ = false;  // see start_tcp
};

}  // namespace duplexnbd::transport
