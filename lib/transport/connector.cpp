// SPDX-License-Identifier: LGPL-2.1-or-later
// Connector: socket() + non-blocking connect() over a list of candidate addresses.
#include "transport/connector.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/un.h>
#include <time.h>

#include <cerrno>
#include <cstring>

// Older libcs lack the header; the kernel ABI is stable, so define what we use.
#if __has_include(<linux/vm_sockets.h>)
#include <linux/vm_sockets.h>
#else
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
struct sockaddr_vm {
  sa_family_t svm_family;
  unsigned short svm_reserved1;
  unsigned int svm_port;
  unsigned int svm_cid;
  unsigned char svm_zero[sizeof(struct sockaddr) - sizeof(sa_family_t) -
                         sizeof(unsigned short) - 2 * sizeof(unsigned int)];
};
#endif

namespace duplexnbd::transport {

Status Connector::start_unix(const std::string &path) {
  SocketAddress a;
  auto *sun = reinterpret_cast<struct sockaddr_un *>(&a.storage);
  // sun_path needs room for the terminating NUL as well.
  if (path.size() >= sizeof sun->sun_path)
    return make_error(ENAMETOOLONG, "socket name too long: " + path);
  sun->sun_family = AF_UNIX;
  std::memcpy(sun->sun_path, path.c_str(), path.size() + 1);
  a.length = sizeof *sun;
  std::vector<SocketAddress> v;
  v.push_back(a);
  return begin(std::move(v));
}

Status Connector::start_tcp(const std::string &host, const std::string &port) {
  struct addrinfo hints = {};
  // No AI_ADDRCONFIG: it hides ::1 on hosts whose only IPv6 address is the
  // loopback, and an unusable family just fails over to the next address.
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo *result = nullptr;
  int r = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &result);
  if (r != 0) {
    std::string where = "getaddrinfo: " + host + ":" + port;
    if (r == EAI_SYSTEM)
      return errno_error(std::move(where));
    return make_error(r == EAI_MEMORY ? ENOMEM : 0, where + ": " + ::gai_strerror(r));
  }
  std::vector<SocketAddress> v;
  for (const struct addrinfo *ai = result; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(struct sockaddr_storage))
      continue;
    SocketAddress a;
    std::memcpy(&a.storage, ai->ai_addr, ai->ai_addrlen);
    a.length = ai->ai_addrlen;
    a.protocol = ai->ai_protocol;
    v.push_back(a);
  }
  ::freeaddrinfo(result);
  if (v.empty())
    return make_error(EADDRNOTAVAIL, "getaddrinfo: " + host + ":" + port + ": no usable address");
  // As libnbd's TCP connect: every address that has already failed is skipped within the
  // call, and when all have, the call fails and the handle can try again.
  return begin(std::move(v), /*check_at_once=*/true);
}

Status Connector::start_vsock(uint32_t cid, uint32_t port) {
  SocketAddress a;
  auto *svm = reinterpret_cast<struct sockaddr_vm *>(&a.storage);
  svm->svm_family = AF_VSOCK;
  svm->svm_cid = cid;
  svm->svm_port = port;
  a.length = sizeof *svm;
  std::vector<SocketAddress> v;
  v.push_back(a);
  return begin(std::move(v));
}

Status Connector::start_sockaddr(const struct sockaddr *addr, socklen_t addrlen) {
  if (addr == nullptr || addrlen > sizeof(struct sockaddr_storage))
    return make_error(EINVAL, "invalid socket address length");
  // Too short to name a family: libnbd 1.22 copies nothing, so its socket(2) gets family 0.
  if (addrlen < sizeof(sa_family_t))
    return make_error(EAFNOSUPPORT, "socket: address too short to name a family");
  SocketAddress a;
  std::memcpy(&a.storage, addr, addrlen);
  a.length = addrlen;
  std::vector<SocketAddress> v;
  v.push_back(a);
  return begin(std::move(v));
}

Status Connector::start_addresses(std::vector<SocketAddress> addresses) {
  if (addresses.empty())
    return make_error(EINVAL, "no address to connect to");
  return begin(std::move(addresses));
}

Status Connector::adopt(int fd) {
  reset();
  int flags = ::fcntl(fd, F_GETFL);
  if (flags == -1)
    return errno_error("fcntl");
  if (!(flags & O_NONBLOCK) && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1)
    return errno_error("fcntl");
  fd_.reset(fd);
  state_ = State::kDone;
  return {};
}

Status Connector::begin(std::vector<SocketAddress> addresses, bool check_at_once) {
  reset();
  check_at_once_ = check_at_once;
  addresses_ = std::move(addresses);
  return try_next(make_error(ECONNREFUSED, "connect"));
}

Status Connector::try_next(Error last_error) {
  fd_.reset();
  while (next_ < addresses_.size()) {
    const SocketAddress &a = addresses_[next_++];
    int s = ::socket(a.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, a.protocol);
    if (s == -1) {
      int e = errno;
      if (a.family() == AF_VSOCK && (e == EAFNOSUPPORT || e == EINVAL))
        last_error = make_error(e, "socket: AF_VSOCK (this kernel has no vsock support loaded)");
      else
        last_error = make_error(e, "socket");
      continue;
    }
    fd_.reset(s);
    // Even a connect that completes at once is reported through on_writable(): libnbd
    // waits for the socket to be writable after every connect(2), so that is the
    // direction a caller sees right after an aio connect call, and nbd_poll's first
    // round finishes the connect.  (EINTR on a non-blocking connect means it carries on
    // in the background, exactly like EINPROGRESS.)
    if (::connect(s, a.get(), a.length) == 0 || errno == EINPROGRESS || errno == EINTR) {
      if (check_at_once_) {
        // A refusal the kernel already knows (the loopback answers within connect(2))
        // fails this address now, so that start_tcp reports it from the call itself.
        int err = 0;
        socklen_t len = sizeof err;
        if (::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
          last_error = make_error(err, "connect");
          fd_.reset();
          continue;
        }
      }
      state_ = State::kConnecting;
      return {};
    }
    last_error = errno_error("connect");
    fd_.reset();
  }
  reset();
  return last_error;
}

Status Connector::on_writable() {
  if (state_ == State::kDone)
    return {};
  if (state_ != State::kConnecting)
    return make_error(ENOTCONN, "connect: no connection in progress");

  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
    Error e = errno_error("getsockopt: SO_ERROR");
    reset();
    return e;
  }
  if (err == 0) {
    // Guard against a spurious wakeup: a pending connection has no peer yet.
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    if (::getpeername(fd_.get(), reinterpret_cast<struct sockaddr *>(&peer), &peer_len) == -1 &&
        errno == ENOTCONN)
      return {};
    state_ = State::kDone;
    return {};
  }
  return try_next(make_error(err, "connect"));
}

FileDescriptor Connector::take_fd() {
  if (state_ != State::kDone)
    return FileDescriptor();
  FileDescriptor fd = std::move(fd_);
  reset();
  return fd;
}

Status Connector::wait(int timeout_ms) {
  struct timespec start;
  ::clock_gettime(CLOCK_MONOTONIC, &start);
  while (state_ == State::kConnecting) {
    int remaining = -1;
    if (timeout_ms >= 0) {
      struct timespec now;
      ::clock_gettime(CLOCK_MONOTONIC, &now);
      long long elapsed = (now.tv_sec - start.tv_sec) * 1000LL + (now.tv_nsec - start.tv_nsec) / 1000000;
      remaining = elapsed >= timeout_ms ? 0 : static_cast<int>(timeout_ms - elapsed);
    }
    struct pollfd pfd = {fd_.get(), POLLOUT, 0};
    int r = ::poll(&pfd, 1, remaining);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      Error e = errno_error("poll");
      reset();
      return e;
    }
    if (r == 0) {
      reset();
      return make_error(ETIMEDOUT, "connect");
    }
    if (Status s = on_writable(); !s)
      return s;
  }
  if (state_ != State::kDone)
    return make_error(ENOTCONN, "connect: no connection in progress");
  return {};
}

void Connector::reset() {
  state_ = State::kIdle;
  fd_.reset();
  addresses_.clear();
  next_ = 0;
  check_at_once_ = false;
}

}  // namespace duplexnbd::transport
