// SPDX-License-Identifier: LGPL-2.1-or-later
// qemu-nbd: raw and qcow2 images, a persistent dirty bitmap as a meta context, export listing.
#include <libnbd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/servers.h"

// Older libnbd headers lack it; qemu:dirty-bitmap reports dirtiness in bit 0.
#ifndef LIBNBD_STATE_DIRTY
#define LIBNBD_STATE_DIRTY 1
#endif

namespace dnbd_test {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

class QemuNbdTest : public IntegrationTest {};

TEST_F(QemuNbdTest, RawImageRoundTrip) {
  TempDir work;
  const std::string image = work.file("disk.raw");
  START_OR_SKIP(run_tool({"qemu-img", "create", "-f", "raw", image, "16M"}));
  QemuNbdServer srv;
  START_OR_SKIP(srv.start(image, "raw"));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  EXPECT_EQ(nbd_get_size(h.get()), int64_t(16 * MiB));
  EXPECT_EQ(nbd_get_structured_replies_negotiated(h.get()), 1);
  auto data = make_pattern(2 * MiB, 11);
  NBD_ASSERT_OK(nbd_pwrite(h.get(), data.data(), data.size(), 5 * MiB + 512, 0));
  NBD_ASSERT_OK(nbd_flush(h.get(), 0));
  std::vector<uint8_t> back(data.size());
  NBD_ASSERT_OK(nbd_pread(h.get(), back.data(), back.size(), 5 * MiB + 512, 0));
  EXPECT_EQ(pattern_mismatch(back.data(), back.size(), 11), -1);
  NBD_ASSERT_OK(nbd_zero(h.get(), 1 * MiB, 5 * MiB + 512, 0));
  NBD_ASSERT_OK(nbd_pread(h.get(), back.data(), back.size(), 5 * MiB + 512, 0));
  EXPECT_TRUE(all_zero(back.data(), 1 * MiB));
  EXPECT_EQ(std::memcmp(back.data() + MiB, data.data() + MiB, MiB), 0);
  NBD_EXPECT_OK(nbd_shutdown(h.get(), 0));
}

TEST_F(QemuNbdTest, DirtyBitmapMetaContext) {
  TempDir work;
  const std::string image = work.file("disk.qcow2");
  START_OR_SKIP(run_tool({"qemu-img", "create", "-f", "qcow2", image, "64M"}));
  START_OR_SKIP(run_tool({"qemu-img", "bitmap", "--add", image, "b0"}));
  // qemu-io writes with the persistent bitmap enabled, so it records what it dirties.
  START_OR_SKIP(run_tool({"qemu-io", "-f", "qcow2", "-c", "write -P 0x55 1M 64k", "-c",
                          "write -P 0xaa 8M 128k", image}));
  QemuNbdServer srv;
  // An enabled bitmap can only be exported read-only.
  START_OR_SKIP(srv.start(image, "qcow2", {"--read-only", "--bitmap=b0"}));

  Handle h = make_handle();
  ASSERT_TRUE(h);
  const std::string dirty = "qemu:dirty-bitmap:b0";
  NBD_ASSERT_OK(nbd_add_meta_context(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION));
  NBD_ASSERT_OK(nbd_add_meta_context(h.get(), dirty.c_str()));
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  EXPECT_EQ(nbd_is_read_only(h.get()), 1);
  ASSERT_EQ(nbd_can_meta_context(h.get(), dirty.c_str()), 1);
  ASSERT_EQ(nbd_can_meta_context(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION), 1);

  std::vector<Extent> expect_dirty{{0, 1 * MiB, 0},
                                   {1 * MiB, 64 * KiB, LIBNBD_STATE_DIRTY},
                                   {1 * MiB + 64 * KiB, 7 * MiB - 64 * KiB, 0},
                                   {8 * MiB, 128 * KiB, LIBNBD_STATE_DIRTY},
                                   {8 * MiB + 128 * KiB, 56 * MiB - 128 * KiB, 0}};
  EXPECT_EQ(block_status_all(h.get(), dirty, 0, 64 * MiB), expect_dirty);

  // Unallocated qcow2 clusters read as holes of zeroes; written ones as data.
  auto alloc = block_status_all(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION, 0, 64 * MiB);
  uint64_t data_bytes = 0;
  for (const auto &e : alloc)
    if (!(e.flags & LIBNBD_STATE_HOLE)) data_bytes += e.length;
  EXPECT_EQ(data_bytes, 192 * KiB);

  std::vector<uint8_t> buf(64 * KiB);
  NBD_ASSERT_OK(nbd_pread(h.get(), buf.data(), buf.size(), 1 * MiB, 0));
  EXPECT_EQ(buf, std::vector<uint8_t>(64 * KiB, 0x55));
  NBD_ASSERT_OK(nbd_pread(h.get(), buf.data(), buf.size(), 8 * MiB + 64 * KiB, 0));
  EXPECT_EQ(buf, std::vector<uint8_t>(64 * KiB, 0xaa));
}

int collect_export(void *user_data, const char *name, const char *description) {
  static_cast<std::vector<std::pair<std::string, std::string>> *>(user_data)->emplace_back(
      name ? name : "", description ? description : "");
  return 0;
}

TEST_F(QemuNbdTest, ListsNamedExportWithDescription) {
  TempDir work;
  const std::string image = work.file("disk.raw");
  START_OR_SKIP(run_tool({"qemu-img", "create", "-f", "raw", image, "1M"}));
  QemuNbdServer srv;
  START_OR_SKIP(srv.start(image, "raw", {"--export-name=vol0", "--description=the test volume"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_set_opt_mode(h.get(), true));
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  std::vector<std::pair<std::string, std::string>> exports;
  nbd_list_callback list{};
  list.callback = collect_export;
  list.user_data = &exports;
  ASSERT_EQ(nbd_opt_list(h.get(), list), 1) << last_error();
  EXPECT_EQ(exports, (std::vector<std::pair<std::string, std::string>>{{"vol0", "the test volume"}}));
  NBD_ASSERT_OK(nbd_set_export_name(h.get(), "vol0"));
  NBD_ASSERT_OK(nbd_opt_go(h.get()));
  EXPECT_EQ(nbd_get_size(h.get()), int64_t(1 * MiB));
}

}  // namespace
}  // namespace dnbd_test
