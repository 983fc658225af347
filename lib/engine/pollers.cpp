// SPDX-License-Identifier: LGPL-2.1-or-later
// Threads blocked in the library: nbd_poll rounds, and leader/follower waiting for blocking calls.
#include <poll.h>

#include <cerrno>
#include <string>

#include "engine/connection.h"
#include "handle/error.h"
#include "libnbd.h"

namespace duplexnbd {

Result<int> Connection::poll_once(int timeout_ms, int extra_fd) {
  const unsigned interrupts = pollers_.interrupt_count();
  // A signal left over from an earlier wait is stale: nothing can signal this thread for
  // this round before it registers below.
  if (transport::Wakeup *w = PollerRegistry::thread_wakeup()) w->drain_if_pending();
  // nbd_poll runs one completion callback per call (see CompletionQueue).
  CompletionQueue::Budget one;
  return poll_round(timeout_ms, extra_fd, &one, interrupts);
}

Result<int> Connection::poll_round(int timeout_ms, int extra_fd, CompletionQueue::Budget *budget,
                                   unsigned interrupts_at_start) {
  const int caller_timeout = timeout_ms;
  batching_.note_driver();
  expire_due();
  // Every round starts with what was handed off to the next driver: progress enough
  // without asking the kernel (the leader's own command may be among them).
  if (completions_.handed_off()) {
    finish_handed_off(budget);
    return 1;
  }
  // A broken stream the last round found behind its replies (see read_side): reported
  // now, without asking the kernel, where libnbd's next poll would find the bytes.
  if (broken_stream_to_report()) {
    Status s = read_side(budget);
    if (!s) return s.take_error();
    return 1;
  }
  // Only now, when the kernel is asked: requests issued between rounds leave together.
  flush_queued(Flush::Deferred);
  unsigned dir = direction();
  const int sock = fd();
  if (dir == 0 || sock < 0)
    return make_error(EINVAL, std::string("nothing to poll for in state ") + state_name(h_.state()));
  if (h_.state() == State::Ready && (dir & LIBNBD_AIO_DIRECTION_READ)) {
    // Bytes the TLS layer already took off the socket will never make it readable.
    transport::Transport *t = live_transport();
    if (t && t->pending_read()) {
      Status s = read_side(budget);
      if (!s) return s.take_error();
      return 1;
    }
  }
  // Registered before the direction is computed again, so that whatever another thread
  // publishes from now on either shows in it or wakes this thread (PollerRegistry).
  PollerRegistry::Poller me;
  me.wakeup = PollerRegistry::thread_wakeup();
  pollers_.enter(me);
  dir = direction();
  if (dir == 0 || broken_stream_to_report()) {
    // The state changed meanwhile, or a broken stream waits to be reported: the caller
    // looks again.
    pollers_.leave(me);
    return 1;
  }
  if (pollers_.interrupt_count() != interrupts_at_start) {
    // duplexnbd_interrupt before we registered (see PollerRegistry::interrupt).
    pollers_.leave(me);
    return make_error(EINTR, "interrupted");
  }
  if (dir & LIBNBD_AIO_DIRECTION_WRITE) me.polls_write.store(true, std::memory_order_relaxed);
  struct pollfd fds[3];
  nfds_t n = 0;
  fds[n++] = {sock, short(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                          ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)), 0};
  int wake_index = -1;
  if (me.wakeup) {
    wake_index = int(n);
    fds[n++] = {me.wakeup->fd(), POLLIN, 0};
  } else if (timeout_ms < 0 || timeout_ms > 10) {
    // No wake-up for this thread (eventfd and pipe both failed): look again often.
    timeout_ms = 10;
  }
  if (me.slot < 0 && (timeout_ms < 0 || timeout_ms > PollerRegistry::kUnslottedPollMs))
    timeout_ms = PollerRegistry::kUnslottedPollMs;  // interrupts cannot reach it otherwise
  if (extra_fd >= 0) fds[n++] = {extra_fd, POLLIN, 0};
  // Deadlines (duplexnbd_set_request_timeout, _connect_timeout) end the poll in time.
  timeout_ms = deadlines_.bound(timeout_ms);
  int r = ::poll(fds, n, timeout_ms);
  const int poll_errno = errno;
  pollers_.leave(me);
  if (pollers_.interrupt_count() != interrupts_at_start) {
    if (wake_index >= 0) me.wakeup->drain();
    return make_error(EINTR, "interrupted");
  }
  if (r == 0) {
    if (expire_due() && h_.state() == State::Dead) return fatal_error();
    // Only the caller's own timeout is a timeout; a shorter one of ours (a deadline, a
    // thread without a wake-up) ended a round the caller should simply repeat.
    return (caller_timeout >= 0 && timeout_ms >= caller_timeout) ? 0 : 1;
  }
  if (r < 0) {
    if (poll_errno == EINTR) return 0;
    return make_error(poll_errno, "poll");
  }
  const bool woken = wake_index >= 0 && (fds[wake_index].revents & POLLIN);
  if (woken) me.wakeup->drain();
  const short rev = fds[0].revents;
  // Both directions in one round: a single-threaded caller still gets full progress.
  if (rev & (POLLIN | POLLHUP | POLLERR)) {
    Status s = read_side(budget);
    if (!s) return s.take_error();
  }
  if ((rev & POLLOUT) || (woken && writer_.pending())) {
    // Woken for a request that waits for POLLOUT: try it now (a full socket just says
    // EAGAIN), so the thread that was woken is the one that makes the progress.
    if (direction() & LIBNBD_AIO_DIRECTION_WRITE) {
      Status s = write_side(budget);
      if (!s) return s.take_error();
    }
  } else if (woken) {
    finish_handed_off(budget);
  }
  return 1;
}

// ---------------------------------------------------------------------------
// Blocking callers.

void Connection::notify_waiters() {
  // Orders what the caller just published (a command's outcome, a state) before the
  // check, against a waiter that registers (an RMW on waiters_ too) and then checks its
  // condition: RMWs on one atomic are ordered, the later acquiring the earlier, so either
  // this sees the waiter or the waiter sees the outcome.
  if (waiters_.fetch_add(0, std::memory_order_acq_rel) == 0) return;
  // Outside transmission every change is a state change that every waiter must see.
  const bool all = h_.state() != State::Ready;
  transport::Wakeup *leader = nullptr;
  WaitList::Waiter *woken;
  {
    std::lock_guard lock(wait_mutex_);
    woken = followers_.take_done(all);
    // The leader is in poll(), or about to be; only interrupt it when it has something
    // to return for.  Its wake-up is its thread's, alive while it leads.
    if (leader_active_ && leader_id_ != std::this_thread::get_id() && (all || (*leader_done_)()))
      leader = leader_wakeup_;
    if (leader) leader->signal();
  }
  WaitList::post(woken);
}

Status Connection::wait_until(const std::function<bool()> &done) {
  const unsigned interrupts = pollers_.interrupt_count();
  waiters_.fetch_add(1, std::memory_order_acq_rel);
  transport::Wakeup *wakeup = PollerRegistry::thread_wakeup();
  std::unique_lock lock(wait_mutex_);
  Status result;
  bool leading = false;
  for (;;) {
    // Drained before the condition is checked: a signal sent after the check is kept and
    // ends the next poll (notify_waiters signals with wait_mutex_ held).
    if (leading && wakeup) wakeup->drain_if_pending();
    if (done()) break;
    if (pollers_.interrupt_count() != interrupts) {
      result = make_error(EINTR, "interrupted");
      break;
    }
    State s = h_.state();
    if (s == State::Dead) {
      result = fatal_error();
      break;
    }
    if (s == State::Closed || s == State::Created) {
      result = make_error(ENOTCONN, "the connection is closed");
      break;
    }
    if (!leader_active_) {
      leader_active_ = true;
      leader_id_ = std::this_thread::get_id();
      leader_done_ = &done;
      leader_wakeup_ = wakeup;
      leading = true;
      continue;  // drain, then check again, as the leader
    }
    if (!leading) {
      // Woken only when our condition holds, the state changed, or the lead is ours.
      WaitList::Waiter me(done);
      followers_.push(me);
      lock.unlock();
      me.sleep();
      lock.lock();
      followers_.woken_one_ran();
      continue;
    }
    // The leader keeps the lead until its own condition holds: handing it over after
    // every poll round would cost a wake-up per round.
    lock.unlock();
    auto r = (direction() == 0) ? Result<int>(0) : poll_round(-1, -1, nullptr, interrupts);
    lock.lock();
    // Followers sleep on semaphores, which an interrupt cannot reach from a signal
    // handler: the leader, woken through its slot, wakes them all to look for themselves.
    const unsigned now_interrupts = pollers_.interrupt_count();
    if (now_interrupts != followers_interrupts_) {
      followers_interrupts_ = now_interrupts;
      WaitList::post(followers_.take_done(true));
    }
    if (!r) {
      result = r.take_error();
      break;
    }
    if (direction() == 0 && !done() && h_.state() == State::Negotiating) {
      // Nothing can happen without the caller: negotiation waits for an opt_* call.
      result = make_error(EINVAL, "the handle is waiting for an option in opt mode");
      break;
    }
  }
  if (leading) {
    leader_active_ = false;
    leader_id_ = {};
    leader_done_ = nullptr;
    leader_wakeup_ = nullptr;
  }
  // Whoever leaves while nobody leads hands the lead to one follower, so followers never
  // all sleep without a leader (a follower woken to lead may itself be done and leave).
  WaitList::Waiter *successor = leader_active_ ? nullptr : followers_.take_successor();
  lock.unlock();
  WaitList::post(successor);
  waiters_.fetch_sub(1, std::memory_order_acq_rel);
  return result;
}

}  // namespace duplexnbd
