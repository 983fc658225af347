// SPDX-License-Identifier: LGPL-2.1-or-later
// Hostile servers in transmission: bad magic, wrong cookies, bad chunks, extents and lengths.
#include "hostile_support.h"

#include <algorithm>
#include <vector>

namespace hostile {
namespace {

class ReplyHostile : public HostileTest {
protected:
  // Reads the next request and answers it correctly (for "the handle is still usable").
  static void answer_next(FakeServer &s) {
    Request r;
    if (s.read_request(r)) s.ok_reply(r);
  }

  // Closes the handle now and checks every closure was freed exactly once.
  void close_and_check_frees(std::initializer_list<Counted *> closures) {
    nbd_close(h_);
    h_ = nullptr;
    for (Counted *c : closures) EXPECT_EQ(c->frees.load(), 1) << "a closure was not freed exactly once";
  }

  // What a rejected chunk ends: the command alone (a chunk that breaks the command's rules,
  // the connection stays usable), or the connection (a chunk placed outside its request:
  // the framing is intact, but the server has lost track of the request, and libnbd 1.22.2
  // ends the connection; the read then fails with ENOTCONN like everything in flight).
  enum class Ends { Command, Connection };

  // A structured read of [offset, offset+count) whose one chunk is built by `bad`. Either
  // way neither the caller's buffer nor the chunk callback sees anything of the chunk.
  void expect_bad_read_chunk(uint64_t offset, uint32_t count, Ends ends,
                             std::function<void(FakeServer &, const Request &)> bad) {
    make();
    connect_ok([bad](FakeServer &s) {
      if (!s.handshake()) return;
      Request r;
      if (!s.read_request(r)) return;
      bad(s, r);
      answer_next(s);
      s.drain();
    });
    // Not zeroed first (nbd_set_pread_initialize), so any write by the library shows.
    ASSERT_NE(nbd_set_pread_initialize(h_, false), -1) << last_error();
    std::vector<uint8_t> buf(count, 0xa5);
    Counted chunk, done;
    int64_t c = nbd_aio_pread_structured(h_, buf.data(), count, offset, chunk_of(chunk),
                                         completion_of(done), 0);
    ASSERT_NE(c, -1) << last_error();
    const int want = ends == Ends::Command ? EPROTO : ENOTCONN;
    EXPECT_EQ(wait_for(c), -1);
    EXPECT_EQ(nbd_get_errno(), want) << last_error();
    EXPECT_EQ(chunk.calls.load(), 0) << "the chunk callback saw a chunk that broke the rules";
    EXPECT_EQ(done.calls.load(), 1);
    EXPECT_EQ(done.error.load(), want);
    for (uint8_t b : buf) {
      if (b != 0xa5) {
        ADD_FAILURE() << "a rejected chunk wrote into the caller's buffer";
        break;
      }
    }
    if (ends == Ends::Command)
      expect_handle_usable();
    else
      expect_handle_finished();
    close_and_check_frees({&chunk, &done});
  }

  // A block status request whose reply is built by `bad`; the command fails with EPROTO,
  // the extent callback never sees the bad extents, the connection stays usable.
  // Extents the extent callback was handed, call by call, with the error it was given.
  struct SeenExtents {
    std::vector<std::vector<uint32_t>> calls;
    std::vector<int> errors;
    int frees = 0;
  };

  // A block status request whose reply is built by `reply`: the command's result (errno
  // in *err) and what the extent callback saw; the connection must stay usable.
  int block_status_with(ServerConfig cfg, std::function<void(FakeServer &, const Request &)> reply,
                        SeenExtents &seen, int *err) {
    make(cfg);
    connect_ok([reply](FakeServer &s) {
      if (!s.handshake()) return;
      Request r;
      if (!s.read_request(r)) return;
      reply(s, r);
      answer_next(s);
      s.drain();
    });
    EXPECT_EQ(nbd_can_meta_context(h_, "base:allocation"), 1) << last_error();
    nbd_extent_callback cb{[](void *ud, const char *, uint64_t, uint32_t *e, size_t n, int *error) {
                             auto *k = static_cast<SeenExtents *>(ud);
                             k->calls.emplace_back(e, e + n);
                             k->errors.push_back(*error);
                             return 0;
                           },
                           &seen, [](void *ud) { static_cast<SeenExtents *>(ud)->frees++; }};
    int r = nbd_block_status(h_, 4096, 0, cb, 0);
    *err = r == -1 ? nbd_get_errno() : 0;
    expect_handle_usable();
    nbd_close(h_);
    h_ = nullptr;
    EXPECT_EQ(seen.frees, 1);
    return r;
  }

  void expect_bad_block_status(ServerConfig cfg,
                               std::function<void(FakeServer &, const Request &)> bad) {
    make(cfg);
    connect_ok([bad](FakeServer &s) {
      if (!s.handshake()) return;
      Request r;
      if (!s.read_request(r)) return;
      bad(s, r);
      answer_next(s);
      s.drain();
    });
    ASSERT_EQ(nbd_can_meta_context(h_, "base:allocation"), 1) << last_error();
    Counted extents, done;
    int64_t c = nbd_aio_block_status(h_, 4096, 0, extent_of(extents), completion_of(done), 0);
    ASSERT_NE(c, -1) << last_error();
    EXPECT_EQ(wait_for(c), -1);
    EXPECT_ERRNO_IN(kProtocolErrnos, nbd_get_errno());
    EXPECT_EQ(extents.calls.load(), 0) << "the extent callback saw invalid extents";
    EXPECT_EQ(done.calls.load(), 1);
    expect_handle_usable();
    close_and_check_frees({&extents, &done});
  }

  // Simple replies only; the first request is answered twice, then the server waits for
  // the client to hang up, or hangs up itself.
  void connect_to_duplicate_replier(bool then_hang_up) {
    make(ServerConfig{.structured = false});
    connect_ok([then_hang_up](FakeServer &s) {
      Request r;
      if (!s.handshake_then_request(r)) return;
      s.simple_reply(r.cookie, 0);
      s.simple_reply(r.cookie, 0);
      if (then_hang_up)
        s.close();
      else
        s.drain();
    });
  }

  // The connection must die: `n` aio reads all complete with an error, each closure
  // called once and freed once, the handle ends dead or closed.
  void expect_fatal_for_reads(int n, uint32_t count, const std::set<int> &errnos) {
    std::vector<std::vector<uint8_t>> bufs(static_cast<size_t>(n), std::vector<uint8_t>(count));
    std::vector<Counted> chunk(static_cast<size_t>(n)), done(static_cast<size_t>(n));
    std::vector<int64_t> cookies;
    for (int i = 0; i < n; i++) {
      int64_t c = nbd_aio_pread_structured(h_, bufs[size_t(i)].data(), count, uint64_t(i) * count,
                                           chunk_of(chunk[size_t(i)]),
                                           completion_of(done[size_t(i)]), 0);
      ASSERT_NE(c, -1) << last_error();
      cookies.push_back(c);
    }
    for (int64_t c : cookies) {
      EXPECT_EQ(wait_for(c), -1);
      EXPECT_ERRNO_IN(errnos, nbd_get_errno());
    }
    for (auto &d : done) {
      EXPECT_EQ(d.calls.load(), 1);
      EXPECT_NE(d.error.load(), 0);
    }
    expect_handle_finished();
    nbd_close(h_);
    h_ = nullptr;
    for (auto &k : chunk) EXPECT_EQ(k.frees.load(), 1);
    for (auto &k : done) EXPECT_EQ(k.frees.load(), 1);
  }
};

// ---- Wrong magic -----------------------------------------------------------------------

TEST_F(ReplyHostile, SimpleReplyWrongMagic) {
  make(ServerConfig{.structured = false});
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes b;
    put32(b, 0x67446699);  // one bit off
    put32(b, 0);
    put64(b, r.cookie);
    s.send(b);
    s.drain();
  });
  expect_blocking_read_fails_fatally();
}

TEST_F(ReplyHostile, StructuredReplyWrongMagic) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_requests(4, r)) return;
    Bytes b = s.structured_header(r.cookie, nbd::kReplyFlagDone, nbd::kReplyNone, 0);
    b[0] ^= 0x80;
    s.send(b);
    s.drain();
  });
  expect_fatal_for_reads(4, 512, {ENOTCONN, EPROTO});
}

// A 64-bit (extended) reply header when extended headers were not negotiated.
TEST_F(ReplyHostile, ExtendedHeaderNotNegotiated) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    s.send(s.extended_header(r.cookie, nbd::kReplyFlagDone, nbd::kReplyNone, 0, 0));
    s.drain();
  });
  expect_fatal_for_reads(1, 512, {ENOTCONN, EPROTO});
}

// A structured reply when structured replies were not negotiated.
TEST_F(ReplyHostile, StructuredReplyNotNegotiated) {
  make(ServerConfig{.structured = false});
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    s.send(s.structured_header(r.cookie, nbd::kReplyFlagDone, nbd::kReplyNone, 0));
    s.drain();
  });
  expect_blocking_read_fails_fatally(kProtocolErrnos);  // EPROTO here, as libnbd 1.22.2
}

// ---- Cookies -------------------------------------------------------------------------

// An empty chunk (NONE, DONE) for a cookie that is not in flight, then the real reply:
// it leaves the stream whole, so it is skipped (as libnbd 1.22.2 does) and the read
// succeeds.
TEST_F(ReplyHostile, ReplyForUnknownCookie) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    s.chunk(r.cookie + 1000, nbd::kReplyFlagDone, nbd::kReplyNone, {});
    s.ok_reply(r);
    answer_next(s);
    s.drain();
  });
  char buf[512];
  EXPECT_EQ(nbd_pread(h_, buf, sizeof buf, 0, 0), 0) << last_error();
  expect_handle_usable();
}

// An error chunk (with a payload) for cookie 0, never handed out (the in-flight table
// uses it to mark empty slots): fatal, as in libnbd 1.22.2.
TEST_F(ReplyHostile, ReplyWithCookieZero) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    s.chunk(0, nbd::kReplyFlagDone, nbd::kReplyError, error_payload(nbd::kEio));
    s.ok_reply(r);
    s.drain();
  });
  expect_blocking_read_fails_fatally();
}

// A data chunk for a cookie not in flight claiming an absurd length: fatal at once.
TEST_F(ReplyHostile, ReplyForUnknownCookieHugeLength) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    s.send(s.structured_header(r.cookie + 1000, nbd::kReplyFlagDone, nbd::kReplyOffsetData, 0xfffffff0u));
    s.drain();
  });
  expect_fatal_for_reads(1, 512, {ENOTCONN, EPROTO});
}

// A reply arrives while the client has sent nothing at all.
TEST_F(ReplyHostile, ReplyForCommandNeverSent) {
  make(ServerConfig{.structured = false});
  connect_ok([](FakeServer &s) {
    if (!s.handshake()) return;
    s.simple_reply(42, 0);
    s.drain();
  });
  // The client notices on its next poll.
  int r = 0;
  for (int i = 0; i < 50 && r != -1; i++) r = nbd_poll(h_, 100);
  EXPECT_EQ(r, -1) << "the unsolicited reply was not noticed";
  EXPECT_NE(nbd_get_error(), nullptr);
  EXPECT_ERRNO_IN(kProtocolErrnos, nbd_get_errno());  // a simple reply: EPROTO, as libnbd 1.22.2
  expect_handle_finished();
}

// The same reply twice: the command completes once (successfully), then the second copy,
// which is for a command no longer in flight, kills the connection.
TEST_F(ReplyHostile, DuplicateReply) {
  connect_to_duplicate_replier(/*then_hang_up=*/false);
  char buf[512] = {};
  Counted done;
  int64_t c = nbd_aio_pwrite(h_, buf, sizeof buf, 0, completion_of(done), 0);
  ASSERT_NE(c, -1) << last_error();
  EXPECT_EQ(wait_for(c), 1) << last_error();
  EXPECT_EQ(done.calls.load(), 1);
  EXPECT_EQ(done.error.load(), 0);
  // As libnbd 1.22.2 (one reply per nbd_poll): the poll that completed the write did not
  // also report the duplicate behind it; the next one does.
  EXPECT_EQ(nbd_aio_is_dead(h_), 0);
  EXPECT_EQ(nbd_poll(h_, 5000), -1);
  EXPECT_EQ(nbd_get_errno(), EPROTO) << last_error();
  EXPECT_TRUE(nbd_aio_is_dead(h_));
  expect_handle_finished();
  close_and_check_frees({&done});
}

// The duplicate reply is left for the next nbd_poll to report, but the connection ends
// another way first (the server hung up, and the next write finds the socket gone): that
// nbd_poll must say so, not keep returning 1 for a report that no longer applies.
TEST_F(ReplyHostile, DuplicateReplyThenHangUpDoesNotSpin) {
  connect_to_duplicate_replier(/*then_hang_up=*/true);
  char buf[512] = {};
  int64_t c = nbd_aio_pwrite(h_, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0);
  ASSERT_NE(c, -1) << last_error();
  EXPECT_EQ(wait_for(c), 1) << last_error();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the hang-up has happened
  (void)nbd_aio_pwrite(h_, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0);
  int r = 1;
  for (int i = 0; i < 5 && r == 1; i++) r = nbd_poll(h_, 1000);
  EXPECT_EQ(r, -1) << "nbd_poll kept returning 1";
  EXPECT_TRUE(nbd_aio_is_dead(h_) || nbd_aio_is_closed(h_));
}

// A data chunk for a read that already had its final (DONE) chunk.
TEST_F(ReplyHostile, DataChunkAfterDone) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes p;
    put64(p, r.offset);
    put_bytes(p, Bytes(size_t(r.length), 7).data(), size_t(r.length));
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData, p);
    s.chunk(r.cookie, 0, nbd::kReplyOffsetData, p);
    s.drain();
  });
  std::vector<uint8_t> buf(512);
  Counted chunk, done;
  int64_t c = nbd_aio_pread_structured(h_, buf.data(), buf.size(), 0, chunk_of(chunk),
                                       completion_of(done), 0);
  ASSERT_NE(c, -1) << last_error();
  EXPECT_EQ(wait_for(c), 1) << last_error();
  EXPECT_EQ(chunk.calls.load(), 1);
  EXPECT_EQ(buf[0], 7);
  // The next nbd_poll reports the chunk after DONE (errno 0, as libnbd 1.22.2).
  EXPECT_EQ(nbd_aio_is_dead(h_), 0);
  EXPECT_EQ(nbd_poll(h_, 5000), -1);
  EXPECT_EQ(nbd_get_errno(), 0) << last_error();
  EXPECT_TRUE(nbd_aio_is_dead(h_));
  expect_handle_finished();
  close_and_check_frees({&chunk, &done});
}

// ---- Chunk lengths and offsets -----------------------------------------------------------

// 1024 bytes of data for a 512-byte read.
TEST_F(ReplyHostile, ChunkLongerThanRequest) {
  expect_bad_read_chunk(0, 512, Ends::Connection, [](FakeServer &s, const Request &r) {
    Bytes p;
    put64(p, r.offset);
    put_bytes(p, Bytes(1024, 1).data(), 1024);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData, p);
  });
}

// A data chunk claiming almost 4 GiB for a 512-byte read: the connection is dropped
// instead of waiting for (or allocating) that much.
TEST_F(ReplyHostile, ChunkLongerThanMaximum) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes b = s.structured_header(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData, 0xfffffff0u);
    put64(b, r.offset);
    s.send(b);
    s.drain();
  });
  expect_fatal_for_reads(1, 512, {ENOTCONN, EPROTO});
}

// A non-data chunk (error) claiming a 1 GiB payload.
TEST_F(ReplyHostile, ErrorChunkHugeLength) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes b = s.structured_header(r.cookie, nbd::kReplyFlagDone, nbd::kReplyError, 1u << 30);
    put32(b, nbd::kEio);
    put16(b, 0);
    s.send(b);
    s.drain();
  });
  expect_fatal_for_reads(1, 512, {ENOTCONN, EPROTO});
}

// With extended headers: a chunk claiming 2^40 bytes.
TEST_F(ReplyHostile, ExtendedChunk64BitLength) {
  make(ServerConfig{.extended = true});
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes b = s.extended_header(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData, r.offset,
                                1ull << 40);
    put64(b, r.offset);
    s.send(b);
    s.drain();
  });
  using GetExt = int (*)(nbd_handle *);
  auto negotiated = optional_call<GetExt>("nbd_get_extended_headers_negotiated");
  if (!negotiated || negotiated(h_) != 1) GTEST_SKIP() << "library does not speak extended headers";
  expect_fatal_for_reads(1, 512, {ENOTCONN, EPROTO});
}

TEST_F(ReplyHostile, DataOffsetBeforeRequest) {
  expect_bad_read_chunk(4096, 512, Ends::Connection, [](FakeServer &s, const Request &r) {
    Bytes p;
    put64(p, r.offset - 256);
    put_bytes(p, Bytes(512, 1).data(), 512);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData, p);
  });
}

TEST_F(ReplyHostile, DataOffsetPastRequest) {
  expect_bad_read_chunk(4096, 512, Ends::Connection, [](FakeServer &s, const Request &r) {
    Bytes p;
    put64(p, r.offset + 256);
    put_bytes(p, Bytes(512, 1).data(), 512);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData, p);
  });
}

// An offset so large that offset + length wraps around 2^64.
TEST_F(ReplyHostile, DataOffsetWraps) {
  expect_bad_read_chunk(4096, 512, Ends::Connection, [](FakeServer &s, const Request &r) {
    Bytes p;
    put64(p, ~0ull - 100);
    put_bytes(p, Bytes(256, 1).data(), 256);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData, p);
  });
}

TEST_F(ReplyHostile, HoleOutsideRequest) {
  expect_bad_read_chunk(4096, 512, Ends::Connection, [](FakeServer &s, const Request &r) {
    Bytes p;
    put64(p, r.offset + 256);
    put32(p, 512);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetHole, p);
  });
}

// libnbd 1.22.2 hands a zero-length hole to the chunk callback (count 0); the read then
// fails with EPROTO because nothing covered it. (libnbd's completion callback is told 0
// there, its bug: tests/differential/known-differences.txt.)
TEST_F(ReplyHostile, ZeroLengthHole) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes p;
    put64(p, r.offset);
    put32(p, 0);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetHole, p);
    answer_next(s);
    s.drain();
  });
  std::vector<uint8_t> buf(512);
  Counted chunk;
  EXPECT_EQ(nbd_pread_structured(h_, buf.data(), buf.size(), 4096, chunk_of(chunk), 0), -1);
  EXPECT_EQ(nbd_get_errno(), EPROTO) << last_error();
  EXPECT_EQ(chunk.calls.load(), 1);
  expect_handle_usable();
}

// A data chunk carrying only its offset, then the data: libnbd accepts an empty data
// chunk (the spec calls zero-length replies broken, but they are harmless), and so do we.
TEST_F(ReplyHostile, EmptyDataChunkThenData) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes empty;
    put64(empty, r.offset);
    s.chunk(r.cookie, 0, nbd::kReplyOffsetData, empty);
    Bytes p;
    put64(p, r.offset);
    Bytes data(size_t(r.length), 0x3c);
    put_bytes(p, data.data(), data.size());
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData, p);
    answer_next(s);
    s.drain();
  });
  Bytes buf(512, 0);
  Counted chunks;
  ASSERT_EQ(nbd_pread_structured(h_, buf.data(), buf.size(), 0, chunk_of(chunks), 0), 0)
      << last_error();
  EXPECT_EQ(std::count(buf.begin(), buf.end(), 0x3c), long(buf.size()));
  EXPECT_EQ(chunks.calls.load(), 2);  // the empty chunk is reported too, with count 0
  expect_handle_usable();
}

// A data chunk for a write.
TEST_F(ReplyHostile, DataChunkForWrite) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes p;
    put64(p, r.offset);
    put_bytes(p, Bytes(16, 1).data(), 16);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData, p);
    answer_next(s);
    s.drain();
  });
  char buf[512] = {};
  EXPECT_EQ(nbd_pwrite(h_, buf, sizeof buf, 0, 0), -1);
  EXPECT_ERRNO_IN(kProtocolErrnos, nbd_get_errno());
  expect_handle_usable();
}

// An error chunk whose message length runs past the chunk: the server's error (EIO)
// still fails the read, as in libnbd 1.22.2; the stream goes on.
TEST_F(ReplyHostile, ErrorChunkImpossibleMessageLength) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes p;
    put32(p, nbd::kEio);
    put16(p, 1000);  // but only 10 bytes follow
    put_string(p, "0123456789");
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyError, p);
    answer_next(s);
    s.drain();
  });
  std::vector<uint8_t> buf(512);
  Counted chunk;
  EXPECT_EQ(nbd_pread_structured(h_, buf.data(), buf.size(), 0, chunk_of(chunk), 0), -1);
  EXPECT_EQ(nbd_get_errno(), EIO) << last_error();
  EXPECT_EQ(chunk.calls.load(), 0);
  expect_handle_usable();
}

// An error chunk with error 0 (the spec: MUST be nonzero).
TEST_F(ReplyHostile, ErrorChunkWithoutError) {
  expect_bad_read_chunk(0, 512, Ends::Command, [](FakeServer &s, const Request &r) {
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyError, error_payload(0));
  });
}

// ---- Block status ---------------------------------------------------------------------

// Extents for a context never agreed are ignored (libnbd 1.22.2): the command succeeds,
// the callback sees nothing.
TEST_F(ReplyHostile, BlockStatusUnrequestedContext) {
  SeenExtents seen;
  int err = 0;
  EXPECT_EQ(block_status_with({}, [](FakeServer &s, const Request &r) {
    Bytes p;
    put32(p, 99);  // never agreed
    put32(p, 4096);
    put32(p, 0);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyBlockStatus, p);
  }, seen, &err), 0) << err;
  EXPECT_TRUE(seen.calls.empty());
}

// A zero-length extent (the spec: MUST NOT) after a good one: the callback gets the
// extents before it, and the command succeeds (libnbd 1.22.2).
TEST_F(ReplyHostile, BlockStatusZeroLengthExtent) {
  SeenExtents seen;
  int err = 0;
  EXPECT_EQ(block_status_with({}, [](FakeServer &s, const Request &r) {
    Bytes p;
    put32(p, s.context_id("base:allocation"));
    put32(p, 2048);
    put32(p, 0);
    put32(p, 0);  // zero length
    put32(p, 3);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyBlockStatus, p);
  }, seen, &err), 0) << err;
  ASSERT_EQ(seen.calls.size(), 1u);
  EXPECT_EQ(seen.calls[0], (std::vector<uint32_t>{2048, 0}));
  EXPECT_EQ(seen.errors[0], 0);
}

// Extents that run far past the end of the 64 MiB export: the callback is handed the
// first cut at the end of the export with *error EPROTO, and the command fails with it.
TEST_F(ReplyHostile, BlockStatusExtentsPastEndOfExport) {
  SeenExtents seen;
  int err = 0;
  EXPECT_EQ(block_status_with({}, [](FakeServer &s, const Request &r) {
    Bytes p;
    put32(p, s.context_id("base:allocation"));
    put32(p, 0xfffff000u);
    put32(p, 0);
    put32(p, 0xfffff000u);
    put32(p, 3);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyBlockStatus, p);
  }, seen, &err), -1);
  EXPECT_EQ(err, EPROTO);
  ASSERT_EQ(seen.calls.size(), 1u);
  EXPECT_EQ(seen.calls[0], (std::vector<uint32_t>{64u << 20, 0}));
  EXPECT_EQ(seen.errors[0], EPROTO);
}

// With extended headers: 64-bit extents whose sum wraps around 2^64; as above.
TEST_F(ReplyHostile, BlockStatusExtentsOverflow64) {
  SeenExtents seen;
  int err = 0;
  EXPECT_EQ(block_status_with(ServerConfig{.extended = true}, [](FakeServer &s, const Request &r) {
    Bytes p;
    put32(p, s.context_id("base:allocation"));
    put32(p, 2);
    put64(p, 1ull << 63);
    put64(p, 0);
    put64(p, 1ull << 63);
    put64(p, 3);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyBlockStatusExt, p);
  }, seen, &err), -1);
  EXPECT_EQ(err, EPROTO);
  ASSERT_EQ(seen.calls.size(), 1u);
  EXPECT_EQ(seen.calls[0], (std::vector<uint32_t>{64u << 20, 0}));
}

// A block status chunk in answer to a read.
TEST_F(ReplyHostile, BlockStatusForRead) {
  expect_bad_read_chunk(0, 512, Ends::Command, [](FakeServer &s, const Request &r) {
    Bytes p;
    put32(p, s.context_id("base:allocation"));
    put32(p, 512);
    put32(p, 0);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyBlockStatus, p);
  });
}

// A block status payload that is not 4 + a multiple of 8 bytes.
TEST_F(ReplyHostile, BlockStatusRaggedPayload) {
  expect_bad_block_status({}, [](FakeServer &s, const Request &r) {
    Bytes p;
    put32(p, s.context_id("base:allocation"));
    put32(p, 4096);
    put32(p, 0);
    put16(p, 0);
    s.chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyBlockStatus, p);
  });
}

// ---- Truncated streams -------------------------------------------------------------------

TEST_F(ReplyHostile, TruncatedMidHeader) {
  make(ServerConfig{.structured = false});
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    Bytes b;
    put32(b, nbd::kSimpleReplyMagic);
    put32(b, 0);
    put16(b, 0);  // 10 of 16 bytes
    s.send(b);
    s.close();
  });
  char buf[512];
  EXPECT_EQ(nbd_pread(h_, buf, sizeof buf, 0, 0), -1);
  EXPECT_ERRNO_IN(kGoneErrnos, nbd_get_errno());
  expect_handle_finished();
}

TEST_F(ReplyHostile, TruncatedMidPayload) {
  make(ServerConfig{.structured = false});
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_request(r)) return;
    s.simple_reply(r.cookie, 0, Bytes(size_t(r.length) / 2, 9));
    s.close();
  });
  std::vector<uint8_t> buf(4096, 0xee);
  EXPECT_EQ(nbd_pread(h_, buf.data(), buf.size(), 0, 0), -1);
  EXPECT_ERRNO_IN(kGoneErrnos, nbd_get_errno());
  expect_handle_finished();
  // As libnbd leaves it: what the server sent stays, what never came is zeroed, nothing stale.
  EXPECT_EQ(std::count(buf.begin(), buf.begin() + 2048, 9), 2048);
  EXPECT_EQ(std::count(buf.begin() + 2048, buf.end(), 0), 2048);
}

TEST_F(ReplyHostile, TruncatedMidChunkHeader) {
  make();
  connect_ok([](FakeServer &s) {
    Request r;
    if (!s.handshake_then_requests(3, r)) return;
    Bytes b = s.structured_header(r.cookie, 0, nbd::kReplyOffsetData, 8 + 512);
    b.resize(13);
    s.send(b);
    s.close();
  });
  expect_fatal_for_reads(3, 512, kGoneErrnos);
}

}  // namespace
}  // namespace hostile
