// SPDX-License-Identifier: LGPL-2.1-or-later
// Extended headers against tests/servers: 64-bit offsets, >4 GiB extents, block status filtering.
#include <libnbd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
constexpr uint64_t kHole = LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO;
// The test server's second context: bit 0 set where data was written.
constexpr const char *kDataContext = "duplexnbd:data";

class ExtendedHeadersTest : public IntegrationTest {
protected:
  // A fresh 16 GiB sparse export per test, so the allocation map is known exactly.
  void start(std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), {"--size", "16G"});
    START_OR_SKIP(srv_.start(extra));
    h_ = make_handle();
    ASSERT_TRUE(h_);
    NBD_ASSERT_OK(nbd_add_meta_context(h_.get(), LIBNBD_CONTEXT_BASE_ALLOCATION));
    NBD_ASSERT_OK(nbd_add_meta_context(h_.get(), kDataContext));
    NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv_.socket_path().c_str()));
  }

  TestServer srv_;
  Handle h_;
};

#ifdef LIBNBD_HAVE_NBD_GET_EXTENDED_HEADERS_NEGOTIATED

TEST_F(ExtendedHeadersTest, Negotiated) {
  ASSERT_NO_FATAL_FAILURE(start());
  if (IsSkipped()) return;
  EXPECT_EQ(nbd_get_request_extended_headers(h_.get()), 1);  // the 1.22 default
  EXPECT_EQ(nbd_get_extended_headers_negotiated(h_.get()), 1);
  EXPECT_EQ(nbd_get_size(h_.get()), int64_t(16 * GiB));
  EXPECT_EQ(nbd_can_meta_context(h_.get(), LIBNBD_CONTEXT_BASE_ALLOCATION), 1);
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kDataContext), 1);
  EXPECT_EQ(nbd_get_block_size(h_.get(), LIBNBD_SIZE_MAXIMUM), int64_t(32 * MiB));
  EXPECT_EQ(nbd_can_block_status_payload(h_.get()), 1);
}

TEST_F(ExtendedHeadersTest, PreadPwriteBeyond4GiB) {
  ASSERT_NO_FATAL_FAILURE(start());
  if (IsSkipped()) return;
  nbd_handle *h = h_.get();
  const uint64_t at = 5 * GiB + 12345;  // unaligned, far past 32 bits
  auto data = make_pattern(3 * MiB, 5);
  NBD_ASSERT_OK(nbd_pwrite(h, data.data(), data.size(), at, 0));
  std::vector<uint8_t> back(data.size());
  NBD_ASSERT_OK(nbd_pread(h, back.data(), back.size(), at, 0));
  EXPECT_EQ(pattern_mismatch(back.data(), back.size(), 5), -1);

  // Across the 4 GiB boundary, and the very end of the export.
  auto edge = make_pattern(64 * KiB, 6);
  NBD_ASSERT_OK(nbd_pwrite(h, edge.data(), edge.size(), 4 * GiB - 32 * KiB, LIBNBD_CMD_FLAG_FUA));
  NBD_ASSERT_OK(nbd_pwrite(h, edge.data(), 4096, 16 * GiB - 4096, 0));
  std::vector<uint8_t> b2(64 * KiB);
  NBD_ASSERT_OK(nbd_pread(h, b2.data(), b2.size(), 4 * GiB - 32 * KiB, 0));
  EXPECT_EQ(b2, edge);
  NBD_ASSERT_OK(nbd_pread(h, b2.data(), 4096, 16 * GiB - 4096, 0));
  EXPECT_EQ(std::memcmp(b2.data(), edge.data(), 4096), 0);

  // Unwritten space reads as zeroes (the server sends OFFSET_HOLE chunks for it).
  NBD_ASSERT_OK(nbd_pread(h, b2.data(), b2.size(), 12 * GiB, 0));
  EXPECT_TRUE(all_zero(b2.data(), b2.size()));
  // Past the end is the server's EINVAL, delivered to this command only.
  EXPECT_EQ(nbd_pread(h, b2.data(), 4096, 16 * GiB - 2048, 0), -1);
  EXPECT_EQ(nbd_aio_is_ready(h), 1);

  NBD_ASSERT_OK(nbd_zero(h, 1 * MiB, at, 0));
  NBD_ASSERT_OK(nbd_trim(h, 1 * MiB, at + 1 * MiB, 0));
  NBD_ASSERT_OK(nbd_flush(h, 0));
  NBD_ASSERT_OK(nbd_pread(h, back.data(), back.size(), at, 0));
  EXPECT_TRUE(all_zero(back.data(), 2 * MiB));
  EXPECT_EQ(std::memcmp(back.data() + 2 * MiB, data.data() + 2 * MiB, 1 * MiB), 0);
}

TEST_F(ExtendedHeadersTest, BlockStatus64ReportsExtentOver4GiB) {
  ASSERT_NO_FATAL_FAILURE(start());
  if (IsSkipped()) return;
  nbd_handle *h = h_.get();
  auto data = make_pattern(128 * KiB, 8);
  NBD_ASSERT_OK(nbd_pwrite(h, data.data(), data.size(), 5 * GiB, 0));

  ExtentCollector c;
  NBD_ASSERT_OK(nbd_block_status_64(h, 8 * GiB, 0, c.callback64(), 0));
  // One callback per context, each with the first extent a single 5 GiB hole: a length
  // that only the 64-bit (BLOCK_STATUS_EXT) reply can carry.
  ASSERT_EQ(c.raw.size(), 2u);
  for (const auto &call : c.raw) {
    ASSERT_FALSE(call.entries.empty()) << call.context;
    EXPECT_EQ(call.offset, 0u);
    EXPECT_EQ(call.entries[0].first, 5 * GiB) << call.context;
    EXPECT_GT(call.entries[0].first, uint64_t(UINT32_MAX));
  }
  std::vector<Extent> alloc{{0, 5 * GiB, kHole}, {5 * GiB, 128 * KiB, 0}, {5 * GiB + 128 * KiB, 3 * GiB - 128 * KiB, kHole}};
  std::vector<Extent> written{{0, 5 * GiB, 0}, {5 * GiB, 128 * KiB, 1}, {5 * GiB + 128 * KiB, 3 * GiB - 128 * KiB, 0}};
  EXPECT_EQ(c.extents(LIBNBD_CONTEXT_BASE_ALLOCATION, 0, 8 * GiB), alloc);
  EXPECT_EQ(c.extents(kDataContext, 0, 8 * GiB), written);

  // The 32-bit callback cannot hold 5 GiB: the library must hand over a shorter (but
  // non-empty) first extent rather than a wrapped length.
  ExtentCollector c32;
  NBD_ASSERT_OK(nbd_block_status(h, 8 * GiB, 0, c32.callback32(), 0));
  ASSERT_FALSE(c32.raw.empty());
  for (const auto &call : c32.raw) {
    ASSERT_FALSE(call.entries.empty());
    EXPECT_GT(call.entries[0].first, 0u);
    EXPECT_LE(call.entries[0].first, uint64_t(UINT32_MAX));
  }
  EXPECT_EQ(c32.raw[0].entries[0].second, c32.raw[0].context == kDataContext ? 0u : kHole);
}

TEST_F(ExtendedHeadersTest, BlockStatusFilterSelectsContexts) {
  ASSERT_NO_FATAL_FAILURE(start());
  if (IsSkipped()) return;
  nbd_handle *h = h_.get();
  auto data = make_pattern(64 * KiB, 8);
  NBD_ASSERT_OK(nbd_pwrite(h, data.data(), data.size(), 6 * GiB, 0));

  // Only the data context: the request carries the id list as its payload.
  char *only_data[] = {const_cast<char *>(kDataContext), nullptr};
  ExtentCollector c;
  NBD_ASSERT_OK(nbd_block_status_filter(h, 8 * GiB, 0, only_data, c.callback64(), 0));
  ASSERT_EQ(c.raw.size(), 1u);
  EXPECT_EQ(c.raw[0].context, kDataContext);
  std::vector<Extent> written{{0, 6 * GiB, 0}, {6 * GiB, 64 * KiB, 1}, {6 * GiB + 64 * KiB, 2 * GiB - 64 * KiB, 0}};
  EXPECT_EQ(c.extents(kDataContext, 0, 8 * GiB), written);

  // Only base:allocation, with REQ_ONE.
  char *only_alloc[] = {const_cast<char *>(LIBNBD_CONTEXT_BASE_ALLOCATION), nullptr};
  ExtentCollector c2;
  NBD_ASSERT_OK(nbd_block_status_filter(h, 8 * GiB, 6 * GiB, only_alloc, c2.callback64(), LIBNBD_CMD_FLAG_REQ_ONE));
  ASSERT_EQ(c2.raw.size(), 1u);
  EXPECT_EQ(c2.raw[0].context, LIBNBD_CONTEXT_BASE_ALLOCATION);
  ASSERT_EQ(c2.raw[0].entries.size(), 1u);
  EXPECT_EQ(c2.raw[0].entries[0], (std::pair<uint64_t, uint64_t>{64 * KiB, 0}));

  // A context that was not negotiated is refused before anything is sent.
  char *unknown[] = {const_cast<char *>("qemu:dirty-bitmap:nope"), nullptr};
  ExtentCollector c3;
  EXPECT_EQ(nbd_block_status_filter(h, 8 * GiB, 0, unknown, c3.callback64(), 0), -1);
  EXPECT_EQ(c3.calls, 0);
  EXPECT_EQ(nbd_aio_is_ready(h), 1);
}

TEST_F(ExtendedHeadersTest, ServerWithoutExtendedHeadersFallsBackToStructured) {
  ASSERT_NO_FATAL_FAILURE(start({"--no-extended"}));
  if (IsSkipped()) return;
  nbd_handle *h = h_.get();
  EXPECT_EQ(nbd_get_extended_headers_negotiated(h), 0);
  EXPECT_EQ(nbd_get_structured_replies_negotiated(h), 1);
  EXPECT_EQ(nbd_can_block_status_payload(h), 0);  // the server offers it only with extended headers
  auto data = make_pattern(1 * MiB, 12);
  NBD_ASSERT_OK(nbd_pwrite(h, data.data(), data.size(), 5 * GiB, 0));
  std::vector<uint8_t> back(data.size());
  NBD_ASSERT_OK(nbd_pread(h, back.data(), back.size(), 5 * GiB, 0));
  EXPECT_EQ(back, data);
  // Compact replies: every extent fits 32 bits, and the map is still right.
  ExtentCollector c;
  NBD_ASSERT_OK(nbd_block_status_64(h, 2 * GiB, 4 * GiB, c.callback64(), 0));
  for (const auto &call : c.raw)
    for (const auto &e : call.entries) EXPECT_LE(e.first, uint64_t(UINT32_MAX));
  std::vector<Extent> alloc{{4 * GiB, 1 * GiB, kHole}, {5 * GiB, 1 * MiB, 0}, {5 * GiB + 1 * MiB, 1 * GiB - 1 * MiB, kHole}};
  EXPECT_EQ(c.extents(LIBNBD_CONTEXT_BASE_ALLOCATION, 4 * GiB, 2 * GiB), alloc);
  // The id filter needs extended headers.
  char *only_data[] = {const_cast<char *>(kDataContext), nullptr};
  ExtentCollector c2;
  EXPECT_EQ(nbd_block_status_filter(h, 1 * MiB, 0, only_data, c2.callback64(), 0), -1);
}

TEST_F(ExtendedHeadersTest, ClientCanDeclineExtendedHeaders) {
  TestServer srv;
  START_OR_SKIP(srv.start({"--size", "16G"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_set_request_extended_headers(h.get(), false));
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  EXPECT_EQ(nbd_get_extended_headers_negotiated(h.get()), 0);
  EXPECT_EQ(nbd_get_structured_replies_negotiated(h.get()), 1);
  auto data = make_pattern(256 * KiB, 13);
  NBD_ASSERT_OK(nbd_pwrite(h.get(), data.data(), data.size(), 9 * GiB, 0));
  std::vector<uint8_t> back(data.size());
  NBD_ASSERT_OK(nbd_pread(h.get(), back.data(), back.size(), 9 * GiB, 0));
  EXPECT_EQ(back, data);
}

#endif  // LIBNBD_HAVE_NBD_GET_EXTENDED_HEADERS_NEGOTIATED

// Simple replies only: the oldest transmission mode still works end to end.
TEST_F(ExtendedHeadersTest, SimpleRepliesOnly) {
  ASSERT_NO_FATAL_FAILURE(start({"--no-structured"}));
  if (IsSkipped()) return;
  nbd_handle *h = h_.get();
  EXPECT_EQ(nbd_get_structured_replies_negotiated(h), 0);
  EXPECT_EQ(nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0);
  auto data = make_pattern(2 * MiB, 14);
  NBD_ASSERT_OK(nbd_pwrite(h, data.data(), data.size(), 7 * GiB + 1, 0));
  std::vector<uint8_t> back(data.size());
  NBD_ASSERT_OK(nbd_pread(h, back.data(), back.size(), 7 * GiB + 1, 0));
  EXPECT_EQ(back, data);
  // An error in a simple reply.
  EXPECT_EQ(nbd_pread(h, back.data(), 4096, 16 * GiB - 100, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL) << last_error();
  EXPECT_EQ(nbd_aio_is_ready(h), 1);
}

}  // namespace
}  // namespace dnbd_test
