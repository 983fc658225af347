// SPDX-License-Identifier: LGPL-2.1-or-later
// Socket implementation of the Transport interface.
#include "transport/transport.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

namespace duplexnbd::transport {

Transport::~Transport() = default;

namespace {

// writev() on a pipe or FIFO whose reader is gone raises SIGPIPE, and unlike
// sendmsg() there is no flag to prevent it.  Block the signal in this thread
// for the duration and swallow the one we caused, so the caller sees EPIPE.
ssize_t writev_no_sigpipe(int fd, const struct iovec *iov, int iovcnt) {
  sigset_t pipe_set, old_mask;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  if (pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask) != 0)
    return ::writev(fd, iov, iovcnt);

  // If SIGPIPE was already pending for another reason it is not ours to eat.
  sigset_t pending;
  sigemptyset(&pending);
  sigpending(&pending);
  bool already_pending = sigismember(&pending, SIGPIPE) == 1;

  ssize_t r;
  do {
    r = ::writev(fd, iov, iovcnt);
  } while (r == -1 && errno == EINTR);
  int saved_errno = errno;

  if (r == -1 && saved_errno == EPIPE && !already_pending &&
      sigismember(&old_mask, SIGPIPE) != 1) {
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, nullptr, &zero) == -1 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  errno = saved_errno;
  return r;
}

}  // namespace

SocketTransport::SocketTransport(FileDescriptor fd) : fd_(std::move(fd)) {
  struct stat st;
  if (fd_.valid() && ::fstat(fd_.get(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
    is_socket_ = false;
    // Without MSG_DONTWAIT the fallback path relies on the descriptor itself
    // being non-blocking.
    int flags = ::fcntl(fd_.get(), F_GETFL);
    if (flags != -1 && !(flags & O_NONBLOCK))
      ::fcntl(fd_.get(), F_SETFL, flags | O_NONBLOCK);
  }
}

SocketTransport::~SocketTransport() = default;

ssize_t SocketTransport::send(const struct iovec *iov, int iovcnt, bool more) {
  if (!fd_.valid()) {
    errno = EBADF;
    return -1;
  }
  // A partial send is always allowed, so an oversized vector is simply cut.
  if (iovcnt > IOV_MAX)
    iovcnt = IOV_MAX;
  if (!is_socket_)
    return writev_no_sigpipe(fd_.get(), iov, iovcnt);

  struct msghdr msg = {};
  msg.msg_iov = const_cast<struct iovec *>(iov);
  msg.msg_iovlen = static_cast<size_t>(iovcnt);
  int flags = MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0);
  ssize_t r;
  do {
    r = ::sendmsg(fd_.get(), &msg, flags);
  } while (r == -1 && errno == EINTR);
  return r;
}

ssize_t SocketTransport::recv(void *buf, size_t len) {
  if (!fd_.valid()) {
    errno = EBADF;
    return -1;
  }
  ssize_t r;
  do {
    r = is_socket_ ? ::recv(fd_.get(), buf, len, MSG_DONTWAIT) : ::read(fd_.get(), buf, len);
  } while (r == -1 && errno == EINTR);
  return r;
}

void SocketTransport::shutdown_write() {
  // A non-socket cannot be half-closed; the peer will see EOF at close().
  if (fd_.valid() && is_socket_)
    ::shutdown(fd_.get(), SHUT_WR);
}

void SocketTransport::close() { fd_.reset(); }

}  // namespace duplexnbd::transport
