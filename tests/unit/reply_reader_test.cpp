// SPDX-License-Identifier: LGPL-2.1-or-later
// Tests for lib/engine/reply_reader: which recv calls a reader run makes on a scripted stream,
// and that chunk and extent callbacks wait for their command's issuing call.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "engine/command.h"
#include "engine/command_table.h"
#include "engine/issue_gate.h"
#include "engine/negotiated.h"
#include "engine/reply_reader.h"
#include "transport/transport.h"
#include "wire/protocol.h"
#include "wire/reply.h"

namespace duplexnbd {
namespace {

// Serves a byte string, at most `piece` bytes per recv, then EAGAIN (or end of stream);
// counts the calls, so a test sees each system call the reader would have made.
class ScriptedStream final : public transport::Transport {
public:
  std::vector<uint8_t> bytes;
  size_t piece = SIZE_MAX;
  bool end_of_stream = false;
  int recvs = 0;
  int would_block = 0;

  ssize_t send(const struct iovec *, int, bool) override {
    errno = EPIPE;
    return -1;
  }
  ssize_t recv(void *buf, size_t len) override {
    recvs++;
    if (pos_ == bytes.size()) {
      if (end_of_stream) return 0;
      would_block++;
      errno = EAGAIN;
      return -1;
    }
    size_t n = std::min({len, piece, bytes.size() - pos_});
    memcpy(buf, bytes.data() + pos_, n);
    pos_ += n;
    return ssize_t(n);
  }
  int fd() const override { return -1; }
  bool pending_read() const override { return false; }
  void shutdown_write() override {}
  void close() override {}

private:
  size_t pos_ = 0;
};

// A simple reply carrying `len` bytes of read data, every byte `fill`.
void simple_read_reply(std::vector<uint8_t> &v, uint64_t cookie, size_t len, uint8_t fill) {
  wire::SimpleReply reply;
  reply.cookie = cookie;
  uint8_t header[wire::kSimpleReplySize];
  ASSERT_EQ(wire::encode_simple_reply(header, reply), sizeof header);
  v.insert(v.end(), header, header + sizeof header);
  v.insert(v.end(), len, fill);
}

struct Reads {
  CommandTable table;
  IssueGate gate;
  ReplyReader reader{gate};
  std::vector<std::vector<uint8_t>> buffers;

  explicit Reads(bool structured = false) {
    Negotiated n;
    n.structured_replies = structured;
    reader.configure(n);
  }
  ~Reads() {
    // Whatever completed is no longer the table's; the rest it deletes itself.
    for (Command *c : done) delete c;
  }
  uint64_t add_read(size_t len, Command **out = nullptr) {
    buffers.emplace_back(len, 0);
    auto *c = new Command;
    c->type = wire::kCmdRead;
    c->count = len;
    c->read_buf = buffers.back().data();
    c->refs.store(1);  // the reader's only: the request counts as sent
    if (out) *out = c;
    c->cookie = table.next_cookie();
    table.insert(c);
    return c->cookie;
  }
  Result<ReplyReader::Outcome> run(ScriptedStream &s) {
    CompletionList finished;
    uint64_t bytes = 0, chunks = 0;
    auto r = reader.run(s, table, finished, bytes, chunks);
    while (Command *c = finished.pop()) {
      table.begin_callbacks(c);
      table.retired(c);
      done.push_back(c);
    }
    return r;
  }
  std::vector<Command *> done;
};

constexpr size_t kLarge = 256 * 1024;

// A first large reply teaches the reader to receive the next header alone and the payload
// straight into the caller's buffer; what the tests count is the second reply's run, in
// which every recv gets exactly what it asks for until the payload's last byte.
void first_large_reply(Reads &reads, ScriptedStream &s) {
  uint64_t cookie = reads.add_read(kLarge);
  simple_read_reply(s.bytes, cookie, kLarge, 0x01);
  s.piece = 64 * 1024;
  auto r = reads.run(s);
  ASSERT_TRUE(r);
  ASSERT_EQ(reads.done.size(), 1u);
  s.recvs = s.would_block = 0;
}

TEST(ReplyReaderRecvs, NoRecvAfterTheLastAwaitedReplyEndsExactly) {
  // 1 in flight: after the payload's last byte nothing else is expected, so no recv.
  Reads reads;
  ScriptedStream s;
  first_large_reply(reads, s);
  uint64_t cookie = reads.add_read(kLarge);
  simple_read_reply(s.bytes, cookie, kLarge, 0x5a);
  auto r = reads.run(s);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, ReplyReader::Outcome::Blocked);
  ASSERT_EQ(reads.done.size(), 2u);
  EXPECT_EQ(reads.done[1]->error, 0);
  EXPECT_EQ(reads.buffers[1], std::vector<uint8_t>(kLarge, 0x5a));
  // The header alone, then the payload in 64 KiB pieces: nothing more.
  EXPECT_EQ(s.recvs, 1 + int(kLarge / (64 * 1024)));
  EXPECT_EQ(s.would_block, 0) << "a recv was made with nothing awaited";
}

TEST(ReplyReaderRecvs, StillAsksTheSocketWhileAnotherReplyIsAwaited) {
  // Another command in flight: its reply may be right behind, so the reader asks (and is
  // told EAGAIN) rather than wait for a poll round trip.
  Reads reads;
  ScriptedStream s;
  first_large_reply(reads, s);
  uint64_t cookie = reads.add_read(kLarge);
  reads.add_read(kLarge);
  simple_read_reply(s.bytes, cookie, kLarge, 0x11);
  auto r = reads.run(s);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, ReplyReader::Outcome::Blocked);
  EXPECT_EQ(reads.done.size(), 2u);
  EXPECT_EQ(s.would_block, 1);
}

TEST(ReplyReaderRecvs, EndOfStreamIsReadEvenWithNothingAwaited) {
  // The first recv of a run is always made: a server that hangs up while the handle is
  // idle must be seen, or a level-triggered poll would report it for ever.
  Reads reads;
  ScriptedStream s;
  s.end_of_stream = true;
  auto r = reads.run(s);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, ReplyReader::Outcome::EndOfStream);
  EXPECT_EQ(s.recvs, 1);
}

TEST(ReplyReaderRecvs, UnexpectedBytesWithNothingAwaitedAreStillAProtocolError) {
  // Nothing in flight and the server sends a reply anyway: the first recv of the run
  // takes it and the reader refuses it, as before.
  Reads reads;
  ScriptedStream s;
  simple_read_reply(s.bytes, 42, 0, 0);
  auto r = reads.run(s);
  EXPECT_FALSE(r);
}

// ---- chunk callbacks and the issuing call ------------------------------------------

// A structured read reply: one data chunk carrying `len` bytes of `fill`, flagged done.
void structured_data_reply(std::vector<uint8_t> &v, uint64_t cookie, uint64_t offset, size_t len,
                           uint8_t fill) {
  wire::ReplyChunkHeader h;
  h.flags = wire::kReplyFlagDone;
  h.type = wire::kReplyTypeOffsetData;
  h.cookie = cookie;
  h.length = wire::kOffsetDataPrefixSize + len;
  uint8_t header[64];
  size_t n = wire::encode_structured_chunk_header(header, h);
  ASSERT_GT(n, 0u);
  v.insert(v.end(), header, header + n);
  uint8_t prefix[wire::kOffsetDataPrefixSize];
  ASSERT_EQ(wire::encode_offset_data_prefix(prefix, offset), sizeof prefix);
  v.insert(v.end(), prefix, prefix + sizeof prefix);
  v.insert(v.end(), len, fill);
}

std::atomic<int> chunks_seen{0};
int count_chunk(void *, const void *, size_t, uint64_t, unsigned, int *) {
  chunks_seen++;
  return 0;
}

// A 4 KiB structured read whose chunk callback counts into chunks_seen, its reply scripted.
Command *counted_read(Reads &reads, ScriptedStream &s, uint8_t fill) {
  Command *c = nullptr;
  uint64_t cookie = reads.add_read(4096, &c);
  c->chunk = ChunkCallback(nbd_chunk_callback{count_chunk, nullptr, nullptr});
  structured_data_reply(s.bytes, cookie, 0, 4096, fill);
  chunks_seen = 0;
  return c;
}

TEST(ReplyReaderCallbacks, ChunkCallbackWaitsForTheIssuingCall) {
  // Another thread reads the reply while the aio call that issued the command has not
  // returned: with libnbd's handle lock no callback could run then, and programs rely on
  // having the cookie before any callback of its command.
  Reads reads(true);
  ScriptedStream s;
  Command *c = counted_read(reads, s, 0x33);
  c->issuing.store(true);
  auto run = std::async(std::launch::async, [&] { return reads.run(s); });
  EXPECT_EQ(run.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout)
      << "the reader did not wait for the issuing call";
  EXPECT_EQ(chunks_seen.load(), 0);
  reads.gate.open(c);
  auto r = run.get();
  ASSERT_TRUE(r);
  EXPECT_EQ(chunks_seen.load(), 1);
  ASSERT_EQ(reads.done.size(), 1u);
  EXPECT_EQ(reads.buffers[0], std::vector<uint8_t>(4096, 0x33));
}

TEST(ReplyReaderCallbacks, NoWaitOnceTheIssuingCallHasReturned) {
  Reads reads(true);
  ScriptedStream s;
  counted_read(reads, s, 0x44);
  auto r = reads.run(s);
  ASSERT_TRUE(r);
  EXPECT_EQ(chunks_seen.load(), 1);
  EXPECT_EQ(reads.done.size(), 1u);
}

}  // namespace
}  // namespace duplexnbd
