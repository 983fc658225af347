// SPDX-License-Identifier: LGPL-2.1-or-later
// When requests reach the wire: batched until the driving thread polls, never stranded.
//
// Not a misbehaving server: the fake server is the only way to see what the client has
// sent at a given moment, which no real server reports.
#include "hostile_support.h"

#include <poll.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <vector>

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

  // The common opening: a 512-byte read at 0 goes out at once (nothing awaits a reply
  // yet), the server reads it and goes on with `rest`, and this thread then drives the
  // handle alone, so what it issues next may wait.  Sets first_.
  void open_with_one_awaiting(std::function<void(FakeServer &, const Request &)> rest) {
    make();
    connect_ok([this, rest](FakeServer &s) {
      Request a;
      if (!s.handshake_then_request(a)) return;
      first_read_.done();
      rest(s, a);
    });
    first_ = read_512(0);
    ASSERT_TRUE(first_read_.wait());
    drive_alone();
  }

  // Shared with the server script, so they outlive any early return of the test body
  // (TearDown joins the script first).
  Step first_read_, issued_, checked_, asked_, measured_;
  std::atomic<bool> early_{true};  // requests arrived before the client polled again
  std::atomic<bool> got_{false};   // the server got what the case expects
  // Bytes the client had sent that the server had not read yet, at two moments.
  std::atomic<size_t> unread_at_reply_{0}, unread_after_{0};
  int64_t first_ = -1;
  char buf_[4096] = {};
};

// One thread drives the handle (get_direction, poll, notify) and issues between its
// polls.  While a sent request awaits its reply, the requests issued next wait for the
// thread's next nbd_aio_get_direction and leave together; the handle meanwhile says
// WRITE, is still "ready" (nothing is half sent) and counts them in flight.
TEST_F(SendBatching, RequestsIssuedBetweenPollsLeaveAtGetDirection) {
  ASSERT_NO_FATAL_FAILURE(open_with_one_awaiting([this](FakeServer &s, const Request &a) {
    Request b, c;
    if (!issued_.wait()) return;
    early_ = s.readable_within(100);
    checked_.done();
    if (!asked_.wait()) return;
    got_ = s.read_request(b) && s.read_request(c);
    s.ok_reply(a);
    if (got_) {
      s.ok_reply(b);
      s.ok_reply(c);
    }
    s.drain();
  }));
  int64_t b = read_512(512);
  int64_t c = read_512(1024);
  EXPECT_EQ(nbd_aio_in_flight(h_), 3);
  issued_.done();
  ASSERT_TRUE(checked_.wait());
  if (is_duplexnbd()) {
    EXPECT_FALSE(early_.load()) << "requests left before the driving thread polled again";
    EXPECT_EQ(nbd_aio_is_ready(h_), 1);
    EXPECT_EQ(nbd_aio_is_processing(h_), 0);
  }
  unsigned dir = nbd_aio_get_direction(h_);
  // Sent now: nothing left to write.
  EXPECT_EQ(dir, unsigned(LIBNBD_AIO_DIRECTION_READ));
  asked_.done();
  EXPECT_EQ(wait_for(first_), 1) << last_error();
  EXPECT_EQ(wait_for(b), 1) << last_error();
  EXPECT_EQ(wait_for(c), 1) << last_error();
  EXPECT_TRUE(got_.load()) << "the server did not get both later requests after get_direction";
}

// A caller that, against the documentation, polls only for POLLIN after issuing (never
// asking the direction) still gets every request out: processing the earlier reply
// sends what waited, so such a caller is slower but never stuck.
TEST_F(SendBatching, PollingOnlyForRepliesStillSendsEverything) {
  ASSERT_NO_FATAL_FAILURE(open_with_one_awaiting([this](FakeServer &s, const Request &a) {
    Request b;
    // Nothing more arrives until the first reply was processed.
    s.ok_reply(a);
    got_ = s.read_request(b);
    if (got_) s.ok_reply(b);
    s.drain();
  }));
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
  EXPECT_EQ(nbd_aio_command_completed(h_, uint64_t(first_)), 1) << last_error();
  EXPECT_TRUE(got_.load());
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
  connect_ok([this](FakeServer &s) {
    Request a, b;
    if (!s.handshake_then_request(a)) return;
    first_read_.done();
    // The blocking read stays unanswered until the second request has arrived.
    got_ = s.read_request(b);
    if (got_) s.ok_reply(b);
    s.ok_reply(a);
    s.drain();
  });
  int blocking_result = -2;
  std::thread reader([&] {
    char b[512];
    blocking_result = nbd_pread(h_, b, sizeof b, 0, 0);
  });
  ASSERT_TRUE(first_read_.wait());
  // Let the blocking caller reach its poll, then drive the handle from here once more:
  // this thread is the last to have asked, and still its request must not wait for it.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  drive_alone();
  int64_t b = read_512(512);
  reader.join();
  EXPECT_EQ(blocking_result, 0) << last_error();
  EXPECT_EQ(wait_for(b), 1) << last_error();
  EXPECT_TRUE(got_.load());
}

// A thread blocked in nbd_poll while it waits only for a reply must be woken when
// another thread's request overflows the socket: the rest needs a POLLOUT poll.  The
// server here answers nothing until it has the whole request, so a poller left asleep
// sees its poll time out (and only then, computing its direction again, sends the rest).
TEST_F(SendBatching, AThreadInNbdPollIsWokenToSendWhatAFullSocketLeft) {
  make();
  if (!is_duplexnbd()) GTEST_SKIP() << "libnbd holds the handle's lock while nbd_poll waits";
  constexpr size_t kBig = 4 << 20;  // far beyond a socket buffer
  connect_ok([this](FakeServer &s) {
    Request a, b;
    if (!s.handshake_then_request(a)) return;
    first_read_.done();
    got_ = s.read_request(b) && b.type == nbd::kCmdWrite && b.payload.size() == kBig;
    if (got_) s.ok_reply(b);
    s.ok_reply(a);
    s.drain();
  });
  first_ = read_512(0);
  ASSERT_TRUE(first_read_.wait());
  std::atomic<int> timeouts{0}, failures{0};
  std::thread poller([&] {
    // The read completes only after the write has arrived whole.
    while (nbd_aio_in_flight(h_) > 0) {
      int r = nbd_poll(h_, 2000);
      if (r == 0) timeouts++;
      if (r == -1 && ++failures > 3) break;
    }
  });
  // Let the poller block with nothing to send, so its poll lacks POLLOUT.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::vector<char> data(kBig, 'w');
  int64_t b = nbd_aio_pwrite(h_, data.data(), data.size(), 0, NBD_NULL_COMPLETION, 0);
  EXPECT_NE(b, -1) << last_error();
  poller.join();
  EXPECT_EQ(timeouts.load(), 0) << "the poller was not woken for the queued rest";
  EXPECT_EQ(failures.load(), 0) << last_error();
  EXPECT_TRUE(got_.load());
  EXPECT_EQ(nbd_aio_command_completed(h_, uint64_t(first_)), 1) << last_error();
  EXPECT_EQ(nbd_aio_command_completed(h_, uint64_t(b)), 1) << last_error();
}

// nbd_shutdown with LIBNBD_SHUTDOWN_ABANDON_PENDING abandons only requests libnbd would not
// have sent yet: a request that waits for the driving thread's next poll goes out first.
TEST_F(SendBatching, ShutdownAbandoningPendingStillSendsWaitingRequests) {
  ASSERT_NO_FATAL_FAILURE(open_with_one_awaiting([this](FakeServer &s, const Request &a) {
    Request b, disc;
    got_ = s.read_request(b) && b.type == nbd::kCmdRead;
    s.ok_reply(a);
    if (got_) s.ok_reply(b);
    if (s.read_request(disc) && disc.type == nbd::kCmdDisc) s.close();
  }));
  int64_t b = read_512(512);
  ASSERT_NE(nbd_shutdown(h_, LIBNBD_SHUTDOWN_ABANDON_PENDING), -1) << last_error();
  EXPECT_TRUE(got_.load()) << "the waiting request was abandoned instead of sent";
  EXPECT_EQ(nbd_aio_command_completed(h_, uint64_t(first_)), 1) << last_error();
  EXPECT_EQ(nbd_aio_command_completed(h_, uint64_t(b)), 1) << last_error();
}

// Closing the handle abandons what is in flight, but a request that only waited for the
// driving thread's next poll still reaches the server, as it would have with libnbd.
TEST_F(SendBatching, CloseStillSendsWaitingRequests) {
  ASSERT_NO_FATAL_FAILURE(open_with_one_awaiting([this](FakeServer &s, const Request &) {
    Request b;
    got_ = s.read_request(b) && b.type == nbd::kCmdWrite && b.payload.size() == 512;
    s.drain();
  }));
  char data[512] = {};
  ASSERT_NE(nbd_aio_pwrite(h_, data, sizeof data, 512, NBD_NULL_COMPLETION, 0), -1)
      << last_error();
  nbd_close(h_);
  h_ = nullptr;
  server_->join();
  EXPECT_TRUE(got_.load()) << "the waiting write never reached the server";
}

// Writes queued behind a full socket are topped up when a reply is processed, not only
// when POLLOUT comes: a reply means the server read its request, so the socket has room,
// and a Unix socket reports POLLOUT only once its queue is down to a quarter of the send
// buffer, by which time the server may be waiting.  (libnbd 1.14 leaves them for
// POLLOUT: there the notify_read sends nothing, so the check is ours only.)
TEST_F(SendBatching, ProcessingAReplyRefillsAFullSocket) {
  make();
  // What the client had sent beyond the first write when that write's reply went out,
  // and once the client had processed the reply.
  connect_ok([this](FakeServer &s) {
    Request a;
    if (!s.handshake() || !issued_.wait()) return;
    got_ = s.read_request(a);
    if (got_) s.ok_reply(a);
    unread_at_reply_ = s.unread_bytes();
    checked_.done();
    if (!asked_.wait()) return;
    unread_after_ = s.unread_bytes();
    measured_.done();
    s.drain();
  });
  constexpr uint64_t kSize = 64 * 1024;
  static const std::vector<char> payload(kSize, 'w');
  std::vector<int64_t> cookies;
  for (uint64_t i = 0; i < 32; i++) {
    int64_t c = nbd_aio_pwrite(h_, payload.data(), kSize, i * kSize, NBD_NULL_COMPLETION, 0);
    ASSERT_NE(c, -1) << last_error();
    cookies.push_back(c);
  }
  ASSERT_TRUE(nbd_aio_get_direction(h_) & LIBNBD_AIO_DIRECTION_WRITE)
      << "2 MiB of writes should be more than the socket holds";
  issued_.done();
  ASSERT_TRUE(checked_.wait());
  ASSERT_TRUE(got_.load()) << "the server did not get the first write";
  struct pollfd p = {nbd_aio_get_fd(h_), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 5000), 1) << "the reply did not arrive";
  ASSERT_NE(nbd_aio_notify_read(h_), -1) << last_error();
  EXPECT_EQ(nbd_aio_command_completed(h_, uint64_t(cookies[0])), 1) << last_error();
  asked_.done();
  ASSERT_TRUE(measured_.wait());
  if (is_duplexnbd()) {
    EXPECT_GT(unread_after_.load(), unread_at_reply_.load())
        << "processing the reply did not send any of the queued writes";
  }
}

}  // namespace
}  // namespace hostile
