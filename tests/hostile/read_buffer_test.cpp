// SPDX-License-Identifier: LGPL-2.1-or-later
// Read buffers after a read ends (set_pread_initialize): server data or zeroes, never stale.
//
// The fake server is needed to fail a read halfway, scatter its chunks out of order or
// cut it short, which a real server does not do on demand.
#include "hostile_support.h"

#include <algorithm>
#include <tuple>
#include <vector>

namespace hostile {
namespace {

constexpr uint8_t kStale = 0xee;  // what the caller's buffer held before the read
constexpr uint8_t kData = 0x55;   // what the server sends
constexpr uint8_t kData2 = 0x66;

// The completion callback's view of the buffer: a copy taken when it ran.
struct Seen {
  const std::vector<uint8_t> *buf = nullptr;
  std::vector<uint8_t> at_completion;
  int calls = 0;
  int error = -1;
};

nbd_completion_callback snapshot_of(Seen &s) {
  return nbd_completion_callback{[](void *ud, int *error) {
                                   auto *k = static_cast<Seen *>(ud);
                                   k->at_completion = *k->buf;
                                   k->error = *error;
                                   k->calls++;
                                   return 0;
                                 },
                                 &s, nullptr};
}

// What the buffer must hold: `fill` over [from, to), zero elsewhere.
std::vector<uint8_t> expected(size_t size, std::initializer_list<std::tuple<size_t, size_t, uint8_t>> runs) {
  std::vector<uint8_t> v(size, 0);
  for (auto [from, to, fill] : runs) std::fill(v.begin() + long(from), v.begin() + long(to), fill);
  return v;
}

// A data chunk of `len` bytes of `fill` at `offset` (absolute).
void data_chunk(FakeServer &s, uint64_t cookie, uint16_t flags, uint64_t offset, size_t len,
                uint8_t fill) {
  Bytes p;
  put64(p, offset);
  put_bytes(p, Bytes(len, fill).data(), len);
  s.chunk(cookie, flags, nbd::kReplyOffsetData, p);
}

void error_chunk(FakeServer &s, uint64_t cookie) {
  s.chunk(cookie, nbd::kReplyFlagDone, nbd::kReplyError, error_payload(nbd::kEio));
}

// Where a mismatch is, for the failure message.
std::string first_difference(const std::vector<uint8_t> &got, const std::vector<uint8_t> &want) {
  auto m = std::mismatch(got.begin(), got.end(), want.begin());
  if (m.first == got.end()) return "none";
  char b[96];
  snprintf(b, sizeof b, "at %ld: 0x%02x, expected 0x%02x", long(m.first - got.begin()), *m.first,
           *m.second);
  return b;
}

class ReadBuffer : public HostileTest {
protected:
  // Issues an aio read of buf_ at offset 0 with the snapshot callback, waits for it,
  // and checks its outcome and what the buffer holds, both in the callback and after.
  void read_and_expect(int want_result, const std::vector<uint8_t> &want) {
    seen_.buf = &buf_;
    int64_t c = nbd_aio_pread(h_, buf_.data(), buf_.size(), 0, snapshot_of(seen_), 0);
    ASSERT_NE(c, -1) << last_error();
    EXPECT_EQ(wait_for(c), want_result) << last_error();
    EXPECT_EQ(seen_.calls, 1);
    EXPECT_TRUE(seen_.at_completion == want)
        << "in the completion callback: " << first_difference(seen_.at_completion, want);
    EXPECT_TRUE(buf_ == want) << "after completion: " << first_difference(buf_, want);
  }

  // The server sends data for the second half of the read, then an error chunk.
  void connect_second_half_then_error() {
    make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    data_chunk(s, r.cookie, 0, r.offset + r.length / 2, size_t(r.length) / 2, kData);
    error_chunk(s, r.cookie);
    s.drain();
  });
  }

  std::vector<uint8_t> buf_ = std::vector<uint8_t>(64 * 1024, kStale);
  Seen seen_;
};

TEST_F(ReadBuffer, SimpleErrorReplyLeavesZeroes) {
  make(ServerConfig{.structured = false});
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    s.simple_reply(r.cookie, nbd::kEio);
    s.drain();
  });
  read_and_expect(-1, expected(buf_.size(), {}));
}

TEST_F(ReadBuffer, FirstHalfThenErrorZeroesTheRest) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    data_chunk(s, r.cookie, 0, r.offset, size_t(r.length) / 2, kData);
    error_chunk(s, r.cookie);
    s.drain();
  });
  const size_t half = buf_.size() / 2;
  read_and_expect(-1, expected(buf_.size(), {{0, half, kData}}));
}

TEST_F(ReadBuffer, SecondHalfThenErrorZeroesTheFirst) {
  connect_second_half_then_error();
  const size_t half = buf_.size() / 2;
  read_and_expect(-1, expected(buf_.size(), {{half, buf_.size(), kData}}));
}

// Chunks in the order 0, 2, 1, 3 (quarters): once the order breaks, nothing the server
// already sent or sends later may be lost to zeroing.
TEST_F(ReadBuffer, ChunksOutOfOrderAllKept) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    const uint64_t q = r.length / 4;
    data_chunk(s, r.cookie, 0, r.offset, size_t(q), kData);
    data_chunk(s, r.cookie, 0, r.offset + 2 * q, size_t(q), kData2);
    data_chunk(s, r.cookie, 0, r.offset + q, size_t(q), kData2);
    data_chunk(s, r.cookie, nbd::kReplyFlagDone, r.offset + 3 * q, size_t(q), kData);
    s.drain();
  });
  const size_t q = buf_.size() / 4;
  read_and_expect(1, expected(buf_.size(), {{0, q, kData}, {q, 3 * q, kData2}, {3 * q, 4 * q, kData}}));
}

TEST_F(ReadBuffer, HoleThenData) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes hole;
    put64(hole, r.offset);
    put32(hole, uint32_t(r.length / 2));
    s.chunk(r.cookie, 0, nbd::kReplyOffsetHole, hole);
    data_chunk(s, r.cookie, nbd::kReplyFlagDone, r.offset + r.length / 2, size_t(r.length) / 2,
               kData);
    s.drain();
  });
  const size_t half = buf_.size() / 2;
  read_and_expect(1, expected(buf_.size(), {{half, buf_.size(), kData}}));
}

// The payload stops halfway (received straight into the caller's buffer at this size):
// what arrived stays, as libnbd 1.22.2 leaves it, the rest is zero, nothing stale remains.
TEST_F(ReadBuffer, ConnectionLostMidPayload) {
  make(ServerConfig{.structured = false});
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    s.simple_reply(r.cookie, 0, Bytes(size_t(r.length) / 2, kData));
    s.close();
  });
  seen_.buf = &buf_;
  int64_t c = nbd_aio_pread(h_, buf_.data(), buf_.size(), 0, snapshot_of(seen_), 0);
  ASSERT_NE(c, -1) << last_error();
  EXPECT_EQ(wait_for(c), -1);
  EXPECT_ERRNO_IN(kGoneErrnos, nbd_get_errno());
  EXPECT_EQ(seen_.calls, 1);
  EXPECT_EQ(std::count(seen_.at_completion.begin(), seen_.at_completion.end(), kStale), 0);
  EXPECT_EQ(std::count(buf_.begin(), buf_.end(), kStale), 0);
  const size_t half = buf_.size() / 2;
  EXPECT_EQ(std::count(buf_.begin(), buf_.begin() + long(half), kData), long(half));
  EXPECT_EQ(std::count(buf_.begin() + long(half), buf_.end(), 0), long(half));
}

// Closing the handle abandons the read.  Its completion callback runs (libnbd 1.18+) with
// ENOTCONN, which says the buffer holds no data; nbd_close itself never writes into the
// buffer, as libnbd (which zeroes it once, when the read is issued) never does: by then
// the caller may have handed the memory on.
TEST_F(ReadBuffer, CloseWithReadInFlightLeavesTheBufferAlone) {
  make();
  std::atomic<bool> got_request{false};
  connect_ok([&got_request](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    got_request = true;
    s.drain();
  });
  std::vector<uint8_t> small(512, kStale);
  Counted done;
  int64_t c = nbd_aio_pread(h_, small.data(), small.size(), 0, completion_of(done), 0);
  ASSERT_NE(c, -1) << last_error();
  for (int i = 0; i < 100 && !got_request; i++) nbd_poll(h_, 50);
  ASSERT_TRUE(got_request.load());
  nbd_close(h_);
  h_ = nullptr;
  EXPECT_EQ(done.calls.load(), 1);
  EXPECT_EQ(done.error.load(), ENOTCONN);
  EXPECT_EQ(done.frees.load(), 1);
  EXPECT_EQ(std::count(small.begin(), small.end(), kStale), long(small.size()));
}

// With set_pread_initialize(false) the library writes only what the server sent.
TEST_F(ReadBuffer, InitializeOffLeavesTheRestAlone) {
  connect_second_half_then_error();
  ASSERT_NE(nbd_set_pread_initialize(h_, false), -1) << last_error();
  const size_t half = buf_.size() / 2;
  read_and_expect(-1, expected(buf_.size(), {{0, half, kStale}, {half, buf_.size(), kData}}));
}

// A read refused before it is sent zeroes the buffer (the aio form; with initialize off,
// libnbd's own test checks it stays untouched).
TEST_F(ReadBuffer, RefusedAioReadZeroes) {
  make();
  connect_ok([](FakeServer &s) {
    if (!s.handshake()) return;
    s.drain();
  });
  EXPECT_EQ(nbd_aio_pread(h_, buf_.data(), buf_.size(), UINT64_MAX - 4096, NBD_NULL_COMPLETION, 0),
            -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL) << last_error();
  EXPECT_EQ(std::count(buf_.begin(), buf_.end(), 0), long(buf_.size()));
}

}  // namespace
}  // namespace hostile
