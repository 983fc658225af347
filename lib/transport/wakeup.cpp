// SPDX-License-Identifier: LGPL-2.1-or-later
// Wakeup: eventfd with a pipe fallback, and a flag to coalesce redundant signals.
#include "transport/wakeup.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace duplexnbd::transport {

Result<Wakeup> Wakeup::create() {
  Wakeup w;
  int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd >= 0) {
    w.read_fd_.reset(efd);
    return w;
  }
  // Only a kernel without eventfd justifies the fallback; other errors
  // (EMFILE, ENOMEM) would hit pipe2 just the same.
  if (errno != ENOSYS && errno != EINVAL)
    return errno_error("eventfd");
  int p[2];
  if (::pipe2(p, O_NONBLOCK | O_CLOEXEC) == -1)
    return errno_error("pipe2");
  w.read_fd_.reset(p[0]);
  w.write_fd_.reset(p[1]);
  return w;
}

// Moves happen only while no other thread uses the object.
Wakeup::Wakeup(Wakeup &&other) noexcept
    : read_fd_(std::move(other.read_fd_)),
      write_fd_(std::move(other.write_fd_)),
      pending_(other.pending_.load()) {}

Wakeup &Wakeup::operator=(Wakeup &&other) noexcept {
  read_fd_ = std::move(other.read_fd_);
  write_fd_ = std::move(other.write_fd_);
  pending_.store(other.pending_.load());
  return *this;
}

void Wakeup::signal() {
  // Someone already signalled and the waiter has not yet drained: the
  // descriptor is still readable, nothing to add.
  if (pending_.exchange(true))
    return;
  if (write_fd_.valid()) {
    char byte = 0;
    // EAGAIN means the pipe is full, i.e. already readable: fine.
    while (::write(write_fd_.get(), &byte, 1) == -1 && errno == EINTR) {
    }
  } else {
    uint64_t one = 1;
    while (::write(read_fd_.get(), &one, sizeof one) == -1 && errno == EINTR) {
    }
  }
}

void Wakeup::drain() {
  // Read before clearing the flag.  A signal() that still sees the flag set
  // skips its write, which is safe because the waiter has not yet looked at
  // the shared state; one that sees it cleared writes, so the next poll wakes.
  if (write_fd_.valid()) {
    char buf[64];
    for (;;) {
      ssize_t r = ::read(read_fd_.get(), buf, sizeof buf);
      if (r > 0 || (r == -1 && errno == EINTR))
        continue;
      break;
    }
  } else {
    uint64_t value;
    while (::read(read_fd_.get(), &value, sizeof value) == -1 && errno == EINTR) {
    }
  }
  pending_.store(false);
}

}  // namespace duplexnbd::transport
