// SPDX-License-Identifier: LGPL-2.1-or-later
// The sleeping followers of leader/follower waiting (Connection::wait_until): one
// semaphore per waiting thread, so a completion wakes only the thread whose condition it
// made true, and a departing leader wakes exactly one successor. A shared condition
// variable woke every follower on every completion (a thundering herd: with 16 blocking
// threads, 15 context switches for nothing per reply).
//
// Waking is two steps: take the waiters out of the list with the wait mutex held, then
// post their semaphores after dropping it, so a woken thread does not run straight into
// the mutex its waker still holds.
#pragma once

#include <semaphore.h>

#include <cerrno>
#include <functional>

namespace duplexnbd {

class WaitList {
public:
  // Lives on the waiting thread's stack; it stays there until its semaphore is acquired,
  // so a waker may post it after dropping the mutex.
  // A POSIX semaphore rather than std::binary_semaphore, whose acquire spins through
  // sched_yield first: measurably more CPU here, where the wait is usually a round trip.
  struct Waiter {
    explicit Waiter(const std::function<bool()> &d) : done(d) { sem_init(&sem, 0, 0); }
    ~Waiter() { sem_destroy(&sem); }
    Waiter(const Waiter &) = delete;
    Waiter &operator=(const Waiter &) = delete;
    void sleep() {
      while (sem_wait(&sem) != 0 && errno == EINTR) {
      }
    }
    const std::function<bool()> &done;
    sem_t sem;
    Waiter *prev = nullptr;
    Waiter *next = nullptr;
    Waiter *next_woken = nullptr;
  };

  // The members below require the caller's wait mutex, which also guards the waiters.
  void push(Waiter &w) {
    w.prev = tail_;
    w.next = nullptr;
    if (tail_)
      tail_->next = &w;
    else
      head_ = &w;
    tail_ = &w;
  }

  // A woken follower calls this once it holds the mutex again.
  void woken_one_ran() { pending_woken_--; }

  // Takes out every follower whose condition now holds, or every follower when `all` (a
  // state change such as the connection dying, which every waiter must see).
  Waiter *take_done(bool all) {
    Waiter *chain = nullptr;
    for (Waiter *w = head_; w;) {
      Waiter *next = w->next;
      if (all || w->done()) take(*w, chain);
      w = next;
    }
    return chain;
  }

  // Takes out one follower to lead, unless one is already on its way: a woken follower
  // always re-checks, and either leads or passes the lead on when it leaves.
  Waiter *take_successor() {
    Waiter *chain = nullptr;
    if (pending_woken_ == 0 && head_) take(*head_, chain);
    return chain;
  }

  // Without the mutex: wakes the waiters taken out.
  static void post(Waiter *chain) {
    while (chain) {
      Waiter *next = chain->next_woken;  // read first: once posted, the waiter may be gone
      sem_post(&chain->sem);
      chain = next;
    }
  }

private:
  void take(Waiter &w, Waiter *&chain) {
    if (w.prev)
      w.prev->next = w.next;
    else
      head_ = w.next;
    if (w.next)
      w.next->prev = w.prev;
    else
      tail_ = w.prev;
    w.next_woken = chain;
    chain = &w;
    pending_woken_++;
  }

  Waiter *head_ = nullptr;
  Waiter *tail_ = nullptr;
  int pending_woken_ = 0;  // taken out and posted (or about to be), not yet running
};

}  // namespace duplexnbd
