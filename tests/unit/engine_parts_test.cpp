// SPDX-License-Identifier: LGPL-2.1-or-later
// The engine's small parts on their own: send batching rules, the reader slot, the poller registry.
#include <poll.h>

#include <gtest/gtest.h>

#include <thread>

#include "core/status.h"
#include "engine/poller_registry.h"
#include "engine/reader_slot.h"
#include "engine/send_batching.h"

namespace duplexnbd {
namespace {

// ---------------------------------------------------------------- SendBatching

SendBatching::QueueView idle_with_reply_awaited() {
  // One request sent and awaiting its reply, the new one counted but not queued yet.
  return {.half_sent = false, .deferred_bytes = 0, .queued = 0, .awaiting_reply = 2,
          .anyone_polling = false};
}

void drive_alone(SendBatching &b, unsigned calls = SendBatching::kSoloCalls + 1) {
  for (unsigned i = 0; i < calls; ++i) b.note_driver();
}

TEST(SendBatching, DefersOnlyForAThreadThatDrivesAlone) {
  SendBatching b;
  EXPECT_FALSE(b.may_defer(4096, idle_with_reply_awaited()));  // never drove
  drive_alone(b, SendBatching::kSoloCalls - 1);
  EXPECT_FALSE(b.may_defer(4096, idle_with_reply_awaited()));  // not long enough
  drive_alone(b, 2);
  EXPECT_TRUE(b.may_defer(4096, idle_with_reply_awaited()));
  // Another thread drives once: this one no longer drives alone.
  std::thread([&] { b.note_driver(); }).join();
  EXPECT_FALSE(b.may_defer(4096, idle_with_reply_awaited()));
}

TEST(SendBatching, NeverDefersWhenSomeoneElseWaitsOrNothingIsAwaited) {
  SendBatching b;
  drive_alone(b);
  auto q = idle_with_reply_awaited();
  q.anyone_polling = true;
  EXPECT_FALSE(b.may_defer(4096, q));
  q = idle_with_reply_awaited();
  q.half_sent = true;  // the socket is full anyway
  EXPECT_FALSE(b.may_defer(4096, q));
  q = idle_with_reply_awaited();
  q.awaiting_reply = 1;  // only the new command: nothing brings the caller back
  EXPECT_FALSE(b.may_defer(4096, q));
  q = idle_with_reply_awaited();
  q.queued = 1;  // the one awaited is itself still queued
  EXPECT_FALSE(b.may_defer(4096, q));
}

TEST(SendBatching, DefersSmallRequestsUpToALimit) {
  SendBatching b;
  drive_alone(b);
  auto q = idle_with_reply_awaited();
  EXPECT_TRUE(b.may_defer(SendBatching::kMaxDeferredBytes, q));
  EXPECT_FALSE(b.may_defer(SendBatching::kMaxDeferredBytes + 1, q));
  q.deferred_bytes = SendBatching::kMaxDeferredBytes - 100;
  q.queued = 3;
  q.awaiting_reply = 5;
  EXPECT_TRUE(b.may_defer(100, q));
  EXPECT_FALSE(b.may_defer(101, q));
}

TEST(SendBatching, RefillsOncePerStretchOfAnsweredBytes) {
  SendBatching b;
  EXPECT_FALSE(b.refill_due(SendBatching::kRefillBytes - 1));
  EXPECT_TRUE(b.refill_due(SendBatching::kRefillBytes));
  EXPECT_FALSE(b.refill_due(SendBatching::kRefillBytes + 10));
  EXPECT_TRUE(b.refill_due(2 * SendBatching::kRefillBytes + 10));
}

// ---------------------------------------------------------------- ReaderSlot

TEST(ReaderSlot, ASecondReaderFindsItTaken) {
  ReaderSlot s;
  ASSERT_TRUE(s.try_acquire());
  EXPECT_FALSE(s.try_acquire());  // another thread, or a callback of the owner
  EXPECT_FALSE(s.release_or_owed());
  EXPECT_TRUE(s.try_acquire());
  EXPECT_FALSE(s.release_or_owed());
}

TEST(ReaderSlot, AReapThatFindsItTakenIsOwedToTheOwner) {
  ReaderSlot s;
  ASSERT_TRUE(s.try_acquire());
  EXPECT_FALSE(s.acquire_or_owe(ReaderSlot::kReap));  // the owner will do it
  EXPECT_FALSE(s.try_acquire());
  EXPECT_EQ(s.release_or_owed(), ReaderSlot::kReap);  // so the owner keeps the slot and reaps
  EXPECT_FALSE(s.try_acquire());          // still held meanwhile
  EXPECT_FALSE(s.release_or_owed());      // owed once, done once
  EXPECT_TRUE(s.acquire_or_owe(ReaderSlot::kReap));   // free: the reaper takes it itself
  EXPECT_FALSE(s.release_or_owed());
}

TEST(ReaderSlot, OwedWorkAccumulates) {
  ReaderSlot s;
  ASSERT_TRUE(s.try_acquire());
  EXPECT_FALSE(s.acquire_or_owe(ReaderSlot::kAbandon));
  EXPECT_FALSE(s.acquire_or_owe(ReaderSlot::kReap));
  EXPECT_EQ(s.release_or_owed(), ReaderSlot::kAbandon | ReaderSlot::kReap);
  EXPECT_EQ(s.release_or_owed(), 0u);
}

TEST(ReaderSlot, EveryOwedReapIsDoneUnderContention) {
  ReaderSlot s;
  std::atomic<int> owed{0}, done{0};
  auto reaper = [&] {
    for (int i = 0; i < 20000; ++i) {
      owed++;
      if (!s.acquire_or_owe(ReaderSlot::kReap)) continue;
      do done++; while (s.release_or_owed());
    }
  };
  auto reader = [&] {
    for (int i = 0; i < 20000; ++i) {
      if (!s.try_acquire()) continue;
      while (s.release_or_owed()) done++;
    }
  };
  std::thread a(reaper), b(reaper), c(reader);
  a.join();
  b.join();
  c.join();
  // Owed reaps coalesce (two owed while one owner runs make one reap), but at least one
  // reap follows every request: the last request's reap has happened.
  EXPECT_GT(done.load(), 0);
  EXPECT_LE(done.load(), owed.load());
  EXPECT_TRUE(s.try_acquire());
  EXPECT_FALSE(s.release_or_owed());
}

// ---------------------------------------------------------------- PollerRegistry

bool readable(transport::Wakeup &w) {
  struct pollfd p = {w.fd(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

TEST(PollerRegistry, NobodyRegisteredMeansNoSignal) {
  PollerRegistry r;
  EXPECT_FALSE(r.anyone_polling());
  r.wake(PollerRegistry::Why::Progress);  // no lock, no system call, nothing to check but no crash
}

// Two pollers registered, each with a wake-up of its own.
class TwoPollers : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_TRUE(a_ && b_);
    pa_.wakeup = &*a_;
    pb_.wakeup = &*b_;
    r_.enter(pa_);
    r_.enter(pb_);
  }
  void TearDown() override {
    if (a_in_) r_.leave(pa_);
    if (b_in_) r_.leave(pb_);
  }
  void leave_b() {
    r_.leave(pb_);
    b_in_ = false;
  }
  Result<transport::Wakeup> a_ = transport::Wakeup::create(), b_ = transport::Wakeup::create();
  PollerRegistry r_;
  PollerRegistry::Poller pa_, pb_;
  bool a_in_ = true, b_in_ = true;
};

TEST_F(TwoPollers, EachIsWokenThroughItsOwnWakeup) {
  EXPECT_TRUE(r_.anyone_polling());
  r_.wake(PollerRegistry::Why::Progress);
  // Both are woken: one draining its wake-up cannot take the other's.
  EXPECT_TRUE(readable(*a_));
  EXPECT_TRUE(readable(*b_));
  a_->drain();
  EXPECT_FALSE(readable(*a_));
  EXPECT_TRUE(readable(*b_));
}

TEST_F(TwoPollers, AQueuedWriteSkipsPollersThatPollForWriting) {
  pa_.polls_write = true;
  r_.wake(PollerRegistry::Why::QueuedWrite);
  EXPECT_FALSE(readable(*a_));  // its POLLOUT brings it back anyway
  EXPECT_TRUE(readable(*b_));
  leave_b();
  b_->drain();
  r_.wake(PollerRegistry::Why::Progress);
  EXPECT_TRUE(readable(*a_));
  EXPECT_FALSE(readable(*b_));  // gone: not signalled any more
}

TEST_F(TwoPollers, InterruptReachesEveryRegisteredPollerAndCounts) {
  EXPECT_GE(pa_.slot, 0);
  EXPECT_GE(pb_.slot, 0);
  const unsigned before = r_.interrupt_count();
  r_.interrupt();
  EXPECT_EQ(r_.interrupt_count(), before + 1);
  EXPECT_TRUE(readable(*a_));
  EXPECT_TRUE(readable(*b_));
  a_->drain();
  b_->drain();
  leave_b();
  r_.interrupt();  // a poller that left has no slot any more
  EXPECT_TRUE(readable(*a_));
  EXPECT_FALSE(readable(*b_));
}

TEST(PollerRegistry, TheThreadWakeupIsPerThreadAndKept) {
  transport::Wakeup *mine = PollerRegistry::thread_wakeup();
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ(PollerRegistry::thread_wakeup(), mine);
  transport::Wakeup *other = nullptr;
  std::thread([&] { other = PollerRegistry::thread_wakeup(); }).join();
  EXPECT_NE(other, mine);
}

}  // namespace
}  // namespace duplexnbd
