// SPDX-License-Identifier: LGPL-2.1-or-later
// When requests reach the wire: batched until the driving thread polls, never stranded.
//
// Not a misbehaving server: the fake server is the only way to see what the client has
// sent at a given moment, which no real server reports.
#include "hostile_support.h"

#include <poll.h>

#include <condition_variable>
#include <mutex>

namespace hostile {
namespace {

// A one-shot event between the test and the server script, with a bounded wait.
class Step {
public:
  void done() {
    {
      std::lock_guard lock(m_);
      set_ = true;
    }
    cv_.notify_all();
  }
  bool wait() {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [this] { return set_; });
  }

private:
  std::mutex m_;
  std::condition_variable cv_;
  bool set_ = false;
};

class SendBatching : public HostileTest {
protected:
  int64_t read_512(uint64_t offset) {
    int64_t c = nbd_aio_pread(h_, buf_ + offset, 512, offset, NBD_NULL_COMPLETION, 0);
    EXPECT_NE(c, -1) << last_error();
    return c;
  }

  // What a single-threaded main loop looks like to the library: only this thread asks
  // for the direction, again and again (requests wait only for a thread that does).
  void drive_alone() {
    for (int i = 0; i < 100; i++) ASSERT_NE(nbd_aio_get_direction(h_), 0u);
  }

  char buf_[4096] = {};
};

// One thread drives the handle (get_direction, poll, notify) and issues between its
// polls.  While a sent request awaits its reply, the requests issued next wait for the
// thread's next nbd_aio_get_direction and leave together; the handle meanwhile says
// WRITE, is still "ready" (nothing is half sent) and counts them in flight.
TEST_F(SendBatching, RequestsIssuedBetweenPollsLeaveAtGetDirection) {
  make();
  Step first_read, issued, checked, asked;
  std::atomic<bool> early{true}, both{false};
  connect_ok([&](FakeServer &s) {
    Request a, b, c;
    if (!s.handshake_then_request(a)) return;
    first_read.done();
    if (!issued.wait()) return;
    early = s.readable_within(100);
    checked.done();
    if (!asked.wait()) return;
    both = s.read_request(b) && s.read_request(c);
    s.ok_reply(a);
    if (both) {
      s.ok_reply(b);
      s.ok_reply(c);
    }
    s.drain();
  });
  int64_t a = read_512(0);
  ASSERT_TRUE(first_read.wait());
  drive_alone();
  int64_t b = read_512(512);
  int64_t c = read_512(1024);
  EXPECT_EQ(nbd_aio_in_flight(h_), 3);
  issued.done();
  ASSERT_TRUE(checked.wait());
  if (is_duplexnbd()) {
    EXPECT_FALSE(early.load()) << "requests left before the driving thread polled again";
    EXPECT_EQ(nbd_aio_is_ready(h_), 1);
    EXPECT_EQ(nbd_aio_is_processing(h_), 0);
  }
  unsigned dir = nbd_aio_get_direction(h_);
  // Sent now: nothing left to write.
  EXPECT_EQ(dir, unsigned(LIBNBD_AIO_DIRECTION_READ));
  asked.done();
  EXPECT_EQ(wait_for(a), 1) << last_error();
  EXPECT_EQ(wait_for(b), 1) << last_error();
  EXPECT_EQ(wait_for(c), 1) << last_error();
  EXPECT_TRUE(both.load()) << "the server did not get both later requests after get_direction";
}

// A caller that, against the documentation, polls only for POLLIN after issuing (never
// asking the direction) still gets every request out: processing the earlier reply
// sends what waited, so such a caller is slower but never stuck.
TEST_F(SendBatching, PollingOnlyForRepliesStillSendsEverything) {
  make();
  Step first_read;
  std::atomic<bool> second{false};
  connect_ok([&](FakeServer &s) {
    Request a, b;
    if (!s.handshake_then_request(a)) return;
    first_read.done();
    // Nothing more arrives until the first reply was processed.
    s.ok_reply(a);
    second = s.read_request(b);
    if (second) s.ok_reply(b);
    s.drain();
  });
  int64_t a = read_512(0);
  ASSERT_TRUE(first_read.wait());
  drive_alone();
  int64_t b = read_512(512);
  const int fd = nbd_aio_get_fd(h_);
  ASSERT_GE(fd, 0) << last_error();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (nbd_aio_command_completed(h_, uint64_t(b)) == 0 && !nbd_aio_is_dead(h_)) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the second request was stranded";
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      ASSERT_NE(nbd_aio_notify_read(h_), -1) << last_error();
    }
  }
  EXPECT_EQ(nbd_aio_command_completed(h_, uint64_t(a)), 1) << last_error();
  EXPECT_TRUE(second.load());
}

// While another thread is blocked in the library's poll (here a blocking read), it does
// not poll for POLLOUT: a request issued now must go out without the issuing thread
// polling again, even if that thread drove the handle before.  (The server withholds
// the blocking read's reply until then, so a stranded request fails the test.)
TEST_F(SendBatching, NoWaitingWhileAnotherThreadPolls) {
  make();
  // libnbd holds the handle's lock while a blocking call polls: the second call would
  // wait for the first, which waits for the second's request.
  if (!is_duplexnbd()) GTEST_SKIP() << "libnbd serialises calls on one handle";
  Step first_read;
  std::atomic<bool> second{false};
  connect_ok([&](FakeServer &s) {
    Request a, b;
    if (!s.handshake_then_request(a)) return;
    first_read.done();
    // The blocking read stays unanswered until the second request has arrived.
    second = s.read_request(b);
    if (second) s.ok_reply(b);
    s.ok_reply(a);
    s.drain();
  });
  int blocking_result = -2;
  std::thread reader([&] {
    char b[512];
    blocking_result = nbd_pread(h_, b, sizeof b, 0, 0);
  });
  ASSERT_TRUE(first_read.wait());
  // Let the blocking caller reach its poll, then drive the handle from here once more:
  // this thread is the last to have asked, and still its request must not wait for it.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  drive_alone();
  int64_t b = read_512(512);
  reader.join();
  EXPECT_EQ(blocking_result, 0) << last_error();
  EXPECT_EQ(wait_for(b), 1) << last_error();
  EXPECT_TRUE(second.load());
}

// nbd_shutdown with LIBNBD_SHUTDOWN_ABANDON_PENDING abandons only requests libnbd would not
// have sent yet: a request that waits for the driving thread's next poll goes out first.
TEST_F(SendBatching, ShutdownAbandoningPendingStillSendsWaitingRequests) {
  make();
  Step first_read;
  std::atomic<bool> second{false};
  connect_ok([&](FakeServer &s) {
    Request a, b, disc;
    if (!s.handshake_then_request(a)) return;
    first_read.done();
    second = s.read_request(b) && b.type == nbd::kCmdRead;
    s.ok_reply(a);
    if (second) s.ok_reply(b);
    if (s.read_request(disc) && disc.type == nbd::kCmdDisc) s.close();
  });
  int64_t a = read_512(0);
  ASSERT_TRUE(first_read.wait());
  drive_alone();
  int64_t b = read_512(512);
  ASSERT_NE(nbd_shutdown(h_, LIBNBD_SHUTDOWN_ABANDON_PENDING), -1) << last_error();
  EXPECT_TRUE(second.load()) << "the waiting request was abandoned instead of sent";
  EXPECT_EQ(nbd_aio_command_completed(h_, uint64_t(a)), 1) << last_error();
  EXPECT_EQ(nbd_aio_command_completed(h_, uint64_t(b)), 1) << last_error();
}

// Closing the handle abandons what is in flight, but a request that only waited for the
// driving thread's next poll still reaches the server, as it would have with libnbd.
TEST_F(SendBatching, CloseStillSendsWaitingRequests) {
  make();
  Step first_read;
  std::atomic<bool> second{false};
  connect_ok([&](FakeServer &s) {
    Request a, b;
    if (!s.handshake_then_request(a)) return;
    first_read.done();
    second = s.read_request(b) && b.type == nbd::kCmdWrite && b.payload.size() == 512;
    s.drain();
  });
  read_512(0);
  ASSERT_TRUE(first_read.wait());
  drive_alone();
  char data[512] = {};
  ASSERT_NE(nbd_aio_pwrite(h_, data, sizeof data, 512, NBD_NULL_COMPLETION, 0), -1)
      << last_error();
  nbd_close(h_);
  h_ = nullptr;
  server_->join();
  EXPECT_TRUE(second.load()) << "the waiting write never reached the server";
}

}  // namespace
}  // namespace hostile
