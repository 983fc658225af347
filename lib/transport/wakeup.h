// SPDX-License-Identifier: LGPL-2.1-or-later
// Waking a thread blocked in poll() from another thread (commands queued, shutdown).
#pragma once

#include <atomic>

#include "core/status.h"
#include "transport/file_descriptor.h"

namespace duplexnbd::transport {

// An eventfd (or, without one, a self-pipe) that becomes readable when
// signalled.  Signals coalesce: any number of signal() calls before the next
// drain() produce one wake-up and, thanks to a flag, at most one system call.
//
// Protocol for the waiting thread, which makes lost wake-ups impossible:
// poll fd() for POLLIN together with its other descriptors; when it fires,
// drain() FIRST and only then look at the shared state (queues) that the
// signalling threads update BEFORE calling signal().
class Wakeup {
public:
  static Result<Wakeup> create();

  Wakeup(Wakeup &&other) noexcept;
  Wakeup &operator=(Wakeup &&other) noexcept;
  Wakeup(const Wakeup &) = delete;
  Wakeup &operator=(const Wakeup &) = delete;

  int fd() const { return read_fd_.get(); }

  // Callable from any thread, including concurrently with drain().
  void signal();

  // Consumes pending signals so that fd() stops being readable.
  void drain();
  // drain(), only when a signal is pending: no system call otherwise.  A waiter that
  // calls it before looking at the shared state may then poll without missing anything.
  void drain_if_pending() {
    if (pending_.load(std::memory_order_acquire)) drain();
  }

private:
  Wakeup() = default;

  FileDescriptor read_fd_;
  FileDescriptor write_fd_;  // invalid for eventfd, which is read and written via read_fd_
  std::atomic<bool> pending_{false};
};

}  // namespace duplexnbd::transport
