// SPDX-License-Identifier: LGPL-2.1-or-later
// Replies the way the spec allows them: out of order, chunks reversed, an error chunk mid-read.
#include <libnbd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

// Each test runs with extended headers and with plain structured replies: the chunk
// headers differ, the rules do not.
class ReplyOrderTest : public IntegrationTest, public ::testing::WithParamInterface<bool> {
protected:
  void start(std::vector<std::string> args) {
    args.insert(args.end(), {"--size", "256M"});
    if (!GetParam()) args.push_back("--no-extended");
    START_OR_SKIP(srv_.start(args));
    h_ = make_handle();
    ASSERT_TRUE(h_);
    NBD_ASSERT_OK(nbd_add_meta_context(h_.get(), LIBNBD_CONTEXT_BASE_ALLOCATION));
    NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv_.socket_path().c_str()));
#ifdef LIBNBD_HAVE_NBD_GET_EXTENDED_HEADERS_NEGOTIATED
    ASSERT_EQ(nbd_get_extended_headers_negotiated(h_.get()), GetParam() ? 1 : 0);
#endif
  }

  TestServer srv_;
  Handle h_;
};

struct OrderRecorder {
  std::vector<int> order;  // op indexes in completion order (callbacks run one at a time per op)
  std::mutex mutex;
  std::vector<int> errors;
};

struct OpTag {
  OrderRecorder *rec;
  int index;
};

int record_and_retire(void *user_data, int *error) {
  auto *tag = static_cast<OpTag *>(user_data);
  std::lock_guard lock(tag->rec->mutex);
  tag->rec->order.push_back(tag->index);
  tag->rec->errors[size_t(tag->index)] = *error;
  return 1;  // auto-retire: nbd_aio_command_completed is not needed
}

// With a random 0..30 ms delay per reply, replies come back in a different order
// than the requests went out; every command must still get its own reply.
TEST_P(ReplyOrderTest, JitteredRepliesMatchedByCookie) {
  ASSERT_NO_FATAL_FAILURE(start({"--jitter-ms", "30"}));
  if (IsSkipped()) return;
  nbd_handle *h = h_.get();
  constexpr int kBlocks = 64;
  constexpr uint64_t kBlock = 64 * KiB;

  auto run_round = [&](const std::vector<int64_t> &cookies, OrderRecorder &rec) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (nbd_aio_in_flight(h) > 0) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << nbd_aio_in_flight(h) << " still in flight";
      ASSERT_NE(nbd_poll(h, 100), -1) << last_error();
    }
    std::lock_guard lock(rec.mutex);
    ASSERT_EQ(rec.order.size(), cookies.size());
    for (size_t i = 0; i < rec.errors.size(); ++i) EXPECT_EQ(rec.errors[i], 0) << "op " << i;
  };
  auto inversions = [](const std::vector<int> &order) {
    int n = 0;
    for (size_t i = 1; i < order.size(); ++i) n += order[i] < order[i - 1];
    return n;
  };

  // Round 1: 64 writes in flight at once.
  std::vector<std::vector<uint8_t>> data;
  for (int b = 0; b < kBlocks; ++b) data.push_back(make_pattern(kBlock, 1000 + b));
  OrderRecorder writes;
  writes.errors.assign(kBlocks, -1);
  std::vector<OpTag> wtags(kBlocks);
  std::vector<int64_t> cookies;
  for (int b = 0; b < kBlocks; ++b) {
    wtags[b] = {&writes, b};
    nbd_completion_callback cb{};
    cb.callback = record_and_retire;
    cb.user_data = &wtags[b];
    int64_t c = nbd_aio_pwrite(h, data[b].data(), kBlock, uint64_t(b) * 2 * kBlock, cb, 0);
    ASSERT_NE(c, -1) << last_error();
    cookies.push_back(c);
  }
  ASSERT_NO_FATAL_FAILURE(run_round(cookies, writes));

  // Round 2: reads of those blocks mixed with writes, zeroes, trims, a flush and block
  // status on other ranges, all in flight together.
  std::vector<std::vector<uint8_t>> back(kBlocks, std::vector<uint8_t>(kBlock, 0xee));
  OrderRecorder mixed;
  mixed.errors.assign(kBlocks + 4, -1);
  std::vector<OpTag> mtags(kBlocks + 4);
  cookies.clear();
  ExtentCollector extents;
  for (int i = 0; i < kBlocks + 4; ++i) {
    mtags[i] = {&mixed, i};
    nbd_completion_callback cb{};
    cb.callback = record_and_retire;
    cb.user_data = &mtags[i];
    int64_t c;
    if (i < kBlocks) c = nbd_aio_pread(h, back[i].data(), kBlock, uint64_t(i) * 2 * kBlock, cb, 0);
    else if (i == kBlocks) c = nbd_aio_flush(h, cb, 0);
    else if (i == kBlocks + 1) c = nbd_aio_zero(h, 1 * MiB, 100 * MiB, cb, 0);
    else if (i == kBlocks + 2) c = nbd_aio_trim(h, 1 * MiB, 120 * MiB, cb, 0);
    else c = nbd_aio_block_status(h, 16 * MiB, 0, extents.callback32(), cb, 0);
    ASSERT_NE(c, -1) << last_error();
    cookies.push_back(c);
  }
  ASSERT_NO_FATAL_FAILURE(run_round(cookies, mixed));
  for (int b = 0; b < kBlocks; ++b)
    ASSERT_EQ(pattern_mismatch(back[b].data(), kBlock, 1000 + b), -1) << "block " << b;
  // Written blocks alternate with never-written ones (64 KiB each).
  auto map = extents.extents(LIBNBD_CONTEXT_BASE_ALLOCATION, 0, 16 * MiB);
  ASSERT_GE(map.size(), 2u * kBlocks);
  for (int b = 0; b < kBlocks; ++b) {
    EXPECT_EQ(map[size_t(2 * b)], (Extent{uint64_t(b) * 2 * kBlock, kBlock, 0})) << "block " << b;
  }

  int inv = inversions(writes.order) + inversions(mixed.order);
  std::printf("[ order    ] %d inversions in %zu completions\n", inv, writes.order.size() + mixed.order.size());
  EXPECT_GT(inv, 0) << "the server's jitter should have reordered some replies";
}

struct Chunk {
  uint64_t offset;
  size_t count;
  unsigned status;
  int error;
};

int record_chunk(void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
                 int *error) {
  (void)subbuf;
  static_cast<std::vector<Chunk> *>(user_data)->push_back({offset, count, status, *error});
  return 0;
}

nbd_chunk_callback chunk_recorder(std::vector<Chunk> &chunks) {
  nbd_chunk_callback cb{};
  cb.callback = record_chunk;
  cb.user_data = &chunks;
  return cb;
}

// The server sends a read's chunks last first (16 KiB data chunks and one hole): the
// library must put each where its offset says and zero the hole itself.
TEST_P(ReplyOrderTest, ReversedReadChunksLandAtTheirOffsets) {
  ASSERT_NO_FATAL_FAILURE(start({"--reverse-chunks", "--read-chunk", "16K"}));
  if (IsSkipped()) return;
  nbd_handle *h = h_.get();
  auto a = make_pattern(64 * KiB, 31), b = make_pattern(64 * KiB, 32);
  NBD_ASSERT_OK(nbd_pwrite(h, a.data(), a.size(), 0, 0));
  NBD_ASSERT_OK(nbd_pwrite(h, b.data(), b.size(), 192 * KiB, 0));

  std::vector<uint8_t> buf(256 * KiB, 0xaa);  // the hole must come back as zeroes
  NBD_ASSERT_OK(nbd_pread(h, buf.data(), buf.size(), 0, 0));
  EXPECT_EQ(std::memcmp(buf.data(), a.data(), a.size()), 0);
  EXPECT_TRUE(all_zero(buf.data() + 64 * KiB, 128 * KiB));
  EXPECT_EQ(std::memcmp(buf.data() + 192 * KiB, b.data(), b.size()), 0);

  std::vector<Chunk> chunks;
  std::fill(buf.begin(), buf.end(), 0xaa);
  NBD_ASSERT_OK(nbd_pread_structured(h, buf.data(), buf.size(), 0, chunk_recorder(chunks), 0));
  EXPECT_EQ(std::memcmp(buf.data() + 192 * KiB, b.data(), b.size()), 0);
  // 4 data chunks of [192K, 256K), the hole [64K, 192K), 4 data chunks of [0, 64K): reversed.
  ASSERT_EQ(chunks.size(), 9u);
  for (size_t i = 1; i < chunks.size(); ++i) EXPECT_LT(chunks[i].offset, chunks[i - 1].offset);
  EXPECT_EQ(chunks[4].offset, 64 * KiB);
  EXPECT_EQ(chunks[4].count, 128 * KiB);
  EXPECT_EQ(chunks[4].status, unsigned(LIBNBD_READ_HOLE));
  for (size_t i : {0u, 1u, 2u, 3u, 5u, 6u, 7u, 8u}) {
    EXPECT_EQ(chunks[i].status, unsigned(LIBNBD_READ_DATA)) << i;
    EXPECT_EQ(chunks[i].count, 16 * KiB) << i;
  }
}

// An ERROR_OFFSET chunk fails that read (EIO), after the chunks before it arrived; the
// connection and other reads are unaffected.
TEST_P(ReplyOrderTest, ErrorOffsetChunkFailsOnlyThatRead) {
  ASSERT_NO_FATAL_FAILURE(start({"--fail-reads-at", "1M", "--read-chunk", "4K"}));
  if (IsSkipped()) return;
  nbd_handle *h = h_.get();
  auto data = make_pattern(128 * KiB, 41);
  NBD_ASSERT_OK(nbd_pwrite(h, data.data(), data.size(), 1 * MiB - 64 * KiB, 0));

  std::vector<uint8_t> buf(16 * KiB);
  EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), 1 * MiB - 8 * KiB, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EIO) << last_error();

  std::vector<Chunk> chunks;
  EXPECT_EQ(nbd_pread_structured(h, buf.data(), buf.size(), 1 * MiB - 8 * KiB, chunk_recorder(chunks), 0), -1);
  EXPECT_EQ(nbd_get_errno(), EIO) << last_error();
  ASSERT_EQ(chunks.size(), 3u);  // two 4 KiB data chunks, then the error
  EXPECT_EQ(chunks[0].status, unsigned(LIBNBD_READ_DATA));
  EXPECT_EQ(chunks[1].offset, 1 * MiB - 4 * KiB);
  EXPECT_EQ(chunks[2].status, unsigned(LIBNBD_READ_ERROR));
  EXPECT_EQ(chunks[2].offset, 1 * MiB);
  EXPECT_EQ(chunks[2].error, EIO);

  EXPECT_EQ(nbd_aio_is_ready(h), 1);
  NBD_ASSERT_OK(nbd_pread(h, buf.data(), buf.size(), 1 * MiB - 32 * KiB, 0));  // ends before 1M
  EXPECT_EQ(std::memcmp(buf.data(), data.data() + 32 * KiB, buf.size()), 0);
  NBD_ASSERT_OK(nbd_pread(h, buf.data(), buf.size(), 1 * MiB + 4 * KiB, 0));  // starts after
  EXPECT_EQ(std::memcmp(buf.data(), data.data() + 68 * KiB, buf.size()), 0);
}

INSTANTIATE_TEST_SUITE_P(Headers, ReplyOrderTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool> &info) {
                           return std::string(info.param ? "Extended" : "Structured");
                         });

}  // namespace
}  // namespace dnbd_test
