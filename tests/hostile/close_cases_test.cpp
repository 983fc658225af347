// SPDX-License-Identifier: LGPL-2.1-or-later
// Hostile servers that hang up in transmission: mid write payload, mid read reply, idle.
#include "hostile_support.h"

#include <poll.h>

#include <vector>

namespace hostile {
namespace {

class CloseHostile : public HostileTest {};

// The server reads the header and 64 KiB of an 8 MiB write, then hangs up. The write
// fails (no SIGPIPE kills the process), the handle is dead.
TEST_F(CloseHostile, DuringWritePayload) {
  make();
  connect_ok([](FakeServer &s) {
    if (!s.handshake()) return;
    Request r;
    if (!s.read_request(r, 64 * 1024)) return;
    s.close();
  });
  std::vector<uint8_t> buf(8 << 20, 0x5a);
  Counted done;
  int64_t c = nbd_aio_pwrite(h_, buf.data(), buf.size(), 0, completion_of(done), 0);
  ASSERT_NE(c, -1) << last_error();
  EXPECT_EQ(wait_for(c), -1);
  EXPECT_ERRNO_IN(kGoneErrnos, nbd_get_errno());
  EXPECT_EQ(done.calls.load(), 1);
  expect_handle_finished();
  nbd_close(h_);
  h_ = nullptr;
  EXPECT_EQ(done.frees.load(), 1);
}

// The same with a blocking caller.
TEST_F(CloseHostile, DuringWritePayloadSync) {
  make();
  connect_ok([](FakeServer &s) {
    if (!s.handshake()) return;
    Request r;
    if (!s.read_request(r, 1000)) return;
    s.close();
  });
  std::vector<uint8_t> buf(8 << 20, 0x5a);
  EXPECT_EQ(nbd_pwrite(h_, buf.data(), buf.size(), 0, 0), -1);
  EXPECT_ERRNO_IN(kGoneErrnos, nbd_get_errno());
  expect_handle_finished();
}

// A 4 MiB structured read: the server sends the chunk header, the offset and 300 KiB of
// data (received straight into the caller's buffer), then hangs up.
TEST_F(CloseHostile, DuringReadReply) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes b = s.structured_header(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData,
                                  uint32_t(8 + r.length));
    put64(b, r.offset);
    b.resize(b.size() + 300 * 1024, 3);
    s.send(b);
    s.close();
  });
  std::vector<uint8_t> buf(4 << 20);
  Counted chunk, done;
  int64_t c = nbd_aio_pread_structured(h_, buf.data(), buf.size(), 0, chunk_of(chunk),
                                       completion_of(done), 0);
  ASSERT_NE(c, -1) << last_error();
  EXPECT_EQ(wait_for(c), -1);
  EXPECT_ERRNO_IN(kGoneErrnos, nbd_get_errno());
  EXPECT_EQ(chunk.calls.load(), 0) << "an incomplete chunk reached the chunk callback";
  EXPECT_EQ(done.calls.load(), 1);
  expect_handle_finished();
  nbd_close(h_);
  h_ = nullptr;
  EXPECT_EQ(chunk.frees.load(), 1);
  EXPECT_EQ(done.frees.load(), 1);
}

// A blocking read of 4 MiB, simple replies, the server stops half way.
TEST_F(CloseHostile, DuringReadReplySync) {
  make(ServerConfig{.structured = false});
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    s.simple_reply(r.cookie, 0, Bytes(size_t(r.length) / 2, 1));
    s.close();
  });
  std::vector<uint8_t> buf(4 << 20);
  EXPECT_EQ(nbd_pread(h_, buf.data(), buf.size(), 0, 0), -1);
  EXPECT_ERRNO_IN(kGoneErrnos, nbd_get_errno());
  expect_handle_finished();
}

// The server reads 8 requests and hangs up cleanly between replies: every command fails
// with ENOTCONN (nbd_aio_in_flight(3)) and the handle is closed.
TEST_F(CloseHostile, IdleWithCommandsInFlight) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_requests(8, r)) return;
    s.close();
  });
  std::vector<Counted> done(8);
  std::vector<int64_t> cookies;
  char buf[8][512];
  for (int i = 0; i < 8; i++) {
    int64_t c = nbd_aio_pread(h_, buf[i], 512, uint64_t(i) * 512, completion_of(done[size_t(i)]), 0);
    ASSERT_NE(c, -1) << last_error();
    cookies.push_back(c);
  }
  for (int64_t c : cookies) {
    EXPECT_EQ(wait_for(c), -1);
    EXPECT_EQ(nbd_get_errno(), ENOTCONN) << last_error();
  }
  expect_handle_finished();
  nbd_close(h_);
  h_ = nullptr;
  for (auto &d : done) {
    EXPECT_EQ(d.calls.load(), 1);
    EXPECT_EQ(d.frees.load(), 1);
  }
}

// A clean hang-up with nothing in flight: the handle is closed, later commands fail.
TEST_F(CloseHostile, IdleNothingInFlight) {
  make();
  connect_ok([](FakeServer &s) {
    if (!s.handshake()) return;
    s.close();
  });
  int r = 0;
  for (int i = 0; i < 50 && !nbd_aio_is_closed(h_) && !nbd_aio_is_dead(h_); i++) r = nbd_poll(h_, 100);
  (void)r;
  expect_handle_finished();
}

// Two threads drive one handle (notify_read / notify_write) while a third issues 32
// reads and writes; the server answers a few and hangs up mid-reply. Everything completes.
TEST_F(CloseHostile, TwoThreadDriversServerDiesMidReply) {
  make(ServerConfig{.structured = false});
  connect_ok([](FakeServer &s) {
    if (!s.handshake()) return;
    Request r;
    for (int i = 0; i < 5; i++) {
      if (!s.read_request(r)) return;
      s.ok_reply(r);
    }
    if (!s.read_request(r)) return;
    Bytes b;
    put32(b, nbd::kSimpleReplyMagic);
    put32(b, 0);
    put64(b, r.cookie);
    // A read's reply stops a third into its data, a write's in the middle of its header.
    if (r.type == nbd::kCmdRead)
      b.resize(b.size() + size_t(r.length) / 3);
    else
      b.resize(10);
    s.send(b);
    s.close();
  });
  const int fd = nbd_aio_get_fd(h_);
  ASSERT_GE(fd, 0) << last_error();
  std::atomic<bool> stop{false};
  auto finished = [&] { return stop.load() || nbd_aio_is_dead(h_) || nbd_aio_is_closed(h_); };
  std::thread reader([&] {
    while (!finished()) {
      struct pollfd p = {fd, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0 && nbd_aio_notify_read(h_) == -1) break;
    }
  });
  std::thread writer([&] {
    while (!finished()) {
      if (!(nbd_aio_get_direction(h_) & LIBNBD_AIO_DIRECTION_WRITE)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      struct pollfd p = {fd, POLLOUT, 0};
      if (::poll(&p, 1, 20) > 0 && nbd_aio_notify_write(h_) == -1) break;
    }
  });
  constexpr int n = 32;
  std::vector<Counted> done(n);
  std::vector<std::vector<uint8_t>> bufs(n, std::vector<uint8_t>(64 * 1024, 1));
  std::vector<int64_t> cookies;
  for (int i = 0; i < n; i++) {
    int64_t c = (i % 2) ? nbd_aio_pwrite(h_, bufs[size_t(i)].data(), bufs[size_t(i)].size(),
                                         uint64_t(i) * 65536, completion_of(done[size_t(i)]), 0)
                        : nbd_aio_pread(h_, bufs[size_t(i)].data(), bufs[size_t(i)].size(),
                                        uint64_t(i) * 65536, completion_of(done[size_t(i)]), 0);
    if (c == -1) {
      // The connection may already be gone: the closure is still freed exactly once.
      EXPECT_NE(nbd_get_errno(), 0) << last_error();
      continue;
    }
    cookies.push_back(c);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!finished() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stop = true;
  reader.join();
  writer.join();
  EXPECT_TRUE(nbd_aio_is_dead(h_) || nbd_aio_is_closed(h_));
  int ok = 0, failed = 0;
  for (int64_t c : cookies) {
    int r = nbd_aio_command_completed(h_, uint64_t(c));
    EXPECT_NE(r, 0) << "command " << c << " never completed";
    (r == 1 ? ok : failed)++;
  }
  EXPECT_LE(ok, 5);
  EXPECT_GE(failed, int(cookies.size()) - 5);
  nbd_close(h_);
  h_ = nullptr;
  for (auto &d : done) EXPECT_EQ(d.frees.load(), 1);
}

// A connection that dies lets go of its socket at once, as libnbd's does: the server sees
// the end of the stream while the handle is still open (not only at nbd_close).
TEST_F(CloseHostile, ADeadConnectionReleasesItsSocketBeforeClose) {
  make();
  std::atomic<bool> eof_seen{false};
  connect_ok([&eof_seen](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes junk(16, 0xee);  // no reply magic: the stream can no longer be trusted
    s.send(junk);
    for (int i = 0; i < 50 && !eof_seen; ++i) {
      if (!s.readable_within(100)) continue;
      Bytes b;
      if (!s.read_exact(b, 1)) eof_seen = true;  // end of stream (or reset)
    }
  });
  char buf[512];
  EXPECT_EQ(nbd_pread(h_, buf, sizeof buf, 0, 0), -1);
  EXPECT_EQ(nbd_aio_is_dead(h_), 1);
  for (int i = 0; i < 100 && !eof_seen; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(eof_seen.load()) << "the server still had an open connection 5 s after it died";
}

}  // namespace
}  // namespace hostile
