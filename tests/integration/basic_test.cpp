// SPDX-License-Identifier: LGPL-2.1-or-later
// Basic integration: every way to connect, export info and listing, data round trips, block status.
#include <libnbd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

// Writes a small pattern and reads it back: proves a freshly connected handle carries data.
void small_round_trip(nbd_handle *h, uint64_t offset = 4096) {
  auto data = make_pattern(8192, offset);
  NBD_ASSERT_OK(nbd_pwrite(h, data.data(), data.size(), offset, 0));
  std::vector<uint8_t> back(data.size());
  NBD_ASSERT_OK(nbd_pread(h, back.data(), back.size(), offset, 0));
  ASSERT_EQ(back, data);
}

// A NULL-terminated argv for the connect_command family.
struct CArgv {
  std::vector<std::string> storage;
  std::vector<char *> ptrs;
  explicit CArgv(std::vector<std::string> args) : storage(std::move(args)) {
    for (auto &s : storage) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
  }
  char **get() { return ptrs.data(); }
};

std::string take_string(char *s) {  // for the calls returning malloc'd strings
  std::string r = s ? s : "";
  std::free(s);
  return r;
}

class ConnectTest : public IntegrationTest {};

TEST_F(ConnectTest, Unix) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"memory", "1M"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  EXPECT_EQ(nbd_aio_is_ready(h.get()), 1);
  EXPECT_EQ(nbd_get_size(h.get()), int64_t(1 * MiB));
  const char *protocol = nbd_get_protocol(h.get());
  ASSERT_NE(protocol, nullptr) << last_error();
  EXPECT_STREQ(protocol, "newstyle-fixed");
  ASSERT_NO_FATAL_FAILURE(small_round_trip(h.get()));
  NBD_EXPECT_OK(nbd_shutdown(h.get(), 0));
  EXPECT_EQ(nbd_aio_is_closed(h.get()), 1);
}

TEST_F(ConnectTest, Tcp) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start_tcp({"memory", "2M"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_tcp(h.get(), "127.0.0.1", std::to_string(srv.port()).c_str()));
  EXPECT_EQ(nbd_get_size(h.get()), int64_t(2 * MiB));
  ASSERT_NO_FATAL_FAILURE(small_round_trip(h.get()));
  NBD_EXPECT_OK(nbd_shutdown(h.get(), 0));
}

TEST_F(ConnectTest, Command) {
  std::string nbdkit = find_program("nbdkit");
  if (nbdkit.empty()) GTEST_SKIP() << "nbdkit is not installed";
  Handle h = make_handle();
  ASSERT_TRUE(h);
  // -s: serve the one connection on stdin/stdout, which the library provides.
  CArgv argv({nbdkit, "-s", "--exit-with-parent", "memory", "3M"});
  NBD_ASSERT_OK(nbd_connect_command(h.get(), argv.get()));
  EXPECT_EQ(nbd_get_size(h.get()), int64_t(3 * MiB));
  ASSERT_NO_FATAL_FAILURE(small_round_trip(h.get()));
  NBD_EXPECT_OK(nbd_shutdown(h.get(), 0));
}

TEST_F(ConnectTest, SystemdSocketActivation) {
  std::string nbdkit = find_program("nbdkit");
  if (nbdkit.empty()) GTEST_SKIP() << "nbdkit is not installed";
  Handle h = make_handle();
  ASSERT_TRUE(h);
  // nbdkit notices LISTEN_PID/LISTEN_FDS and serves the socket the library made.
  CArgv argv({nbdkit, "-f", "--exit-with-parent", "memory", "5M"});
  NBD_ASSERT_OK(nbd_connect_systemd_socket_activation(h.get(), argv.get()));
  EXPECT_EQ(nbd_get_size(h.get()), int64_t(5 * MiB));
  ASSERT_NO_FATAL_FAILURE(small_round_trip(h.get()));
  NBD_EXPECT_OK(nbd_shutdown(h.get(), 0));
}

TEST_F(ConnectTest, UriUnixWithExportName) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"memory", "1M"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  // nbdkit's memory plugin serves the same disk under any export name.
  std::string uri = srv.uri("some-export");
  NBD_ASSERT_OK(nbd_connect_uri(h.get(), uri.c_str()));
  EXPECT_EQ(take_string(nbd_get_export_name(h.get())), "some-export");
  EXPECT_EQ(nbd_get_size(h.get()), int64_t(1 * MiB));
#ifdef LIBNBD_HAVE_NBD_GET_URI
  EXPECT_EQ(take_string(nbd_get_uri(h.get())), uri);
#endif
  ASSERT_NO_FATAL_FAILURE(small_round_trip(h.get()));
}

TEST_F(ConnectTest, UriTcp) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start_tcp({"memory", "1M"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_uri(h.get(), srv.uri().c_str()));
  EXPECT_EQ(take_string(nbd_get_export_name(h.get())), "");
  ASSERT_NO_FATAL_FAILURE(small_round_trip(h.get()));
}

// libnbd 1.24: ?nbd-port= overrides the authority's port (here a closed one).
TEST_F(ConnectTest, UriNbdPortOverridesTheAuthoritysPort) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start_tcp({"memory", "1M"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  int closed = pick_free_tcp_port();
  std::string uri = "nbd://127.0.0.1:" + std::to_string(closed) + "/?nbd-port=" + std::to_string(srv.port());
  NBD_ASSERT_OK(nbd_connect_uri(h.get(), uri.c_str()));
  EXPECT_EQ(nbd_get_size(h.get()), int64_t(1 * MiB));
  // nbd_get_uri names the port actually used, in the authority.
  EXPECT_EQ(take_string(nbd_get_uri(h.get())), "nbd://127.0.0.1:" + std::to_string(srv.port()) + "/");
  ASSERT_NO_FATAL_FAILURE(small_round_trip(h.get()));

  Handle bad = make_handle();
  ASSERT_TRUE(bad);
  EXPECT_EQ(nbd_connect_uri(bad.get(), "nbd://127.0.0.1/?nbd-port=http"), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_TRUE(nbd_aio_is_created(bad.get()));
}

class InfoTest : public IntegrationTest {};

TEST_F(InfoTest, FlagsOfNbdkitMemory) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"memory", "64M"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  nbd_handle *p = h.get();
  // What nbdkit 1.32's memory plugin advertises (nbdinfo with Debian's libnbd agrees).
  EXPECT_EQ(nbd_is_read_only(p), 0);
  EXPECT_EQ(nbd_is_rotational(p), 0);
  EXPECT_EQ(nbd_can_flush(p), 1);
  EXPECT_EQ(nbd_can_fua(p), 1);
  EXPECT_EQ(nbd_can_trim(p), 1);
  EXPECT_EQ(nbd_can_zero(p), 1);
  EXPECT_EQ(nbd_can_fast_zero(p), 1);
  EXPECT_EQ(nbd_can_cache(p), 1);
  EXPECT_EQ(nbd_can_multi_conn(p), 1);
  EXPECT_EQ(nbd_can_df(p), 1);
  EXPECT_EQ(nbd_get_structured_replies_negotiated(p), 1);
#ifdef LIBNBD_HAVE_NBD_GET_EXTENDED_HEADERS_NEGOTIATED
  EXPECT_EQ(nbd_get_extended_headers_negotiated(p), 0);  // nbdkit 1.32 predates them
#endif
  EXPECT_TRUE(nbd_get_handshake_flags(p) & LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE);
  EXPECT_EQ(nbd_get_size(p), int64_t(64 * MiB));
  EXPECT_STREQ(nbd_get_protocol(p), "newstyle-fixed");
  EXPECT_EQ(nbd_get_tls_negotiated(p), 0);
}

TEST_F(InfoTest, ReadOnlyExportRefusesWrites) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"-r", "memory", "1M"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  EXPECT_EQ(nbd_is_read_only(h.get()), 1);
  std::vector<uint8_t> buf(512, 1);
  EXPECT_EQ(nbd_pwrite(h.get(), buf.data(), buf.size(), 0, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EPERM) << last_error();
  // The refusal is local; the connection stays usable.
  NBD_EXPECT_OK(nbd_pread(h.get(), buf.data(), buf.size(), 0, 0));
  EXPECT_TRUE(all_zero(buf.data(), buf.size()));
}

// The eval plugin lists two exports with descriptions and sizes them by name.
std::vector<std::string> two_export_plugin() {
  return {"eval",
          "list_exports=echo NAMES+DESCRIPTIONS; echo alpha; echo beta; echo 'first export'; "
          "echo 'second export'",
          "default_export=echo alpha",
          "open=echo \"$3\"",
          "get_size=case \"$2\" in alpha) echo 1M ;; beta) echo 2M ;; *) echo 3M ;; esac",
          "pread=dd if=/dev/zero count=$3 iflag=count_bytes 2>/dev/null",
          "export_description=echo \"description of $2\"",
          "thread_model=echo parallel"};
}

int collect_export(void *user_data, const char *name, const char *description) {
  static_cast<std::vector<std::pair<std::string, std::string>> *>(user_data)->emplace_back(
      name ? name : "", description ? description : "");
  return 0;
}

TEST_F(InfoTest, OptModeListsExportsAndPicksOne) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start(two_export_plugin()));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_set_opt_mode(h.get(), true));
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  ASSERT_EQ(nbd_aio_is_negotiating(h.get()), 1);

  std::vector<std::pair<std::string, std::string>> exports;
  nbd_list_callback list{};
  list.callback = collect_export;
  list.user_data = &exports;
  int n = nbd_opt_list(h.get(), list);
  ASSERT_EQ(n, 2) << last_error();
  std::vector<std::pair<std::string, std::string>> expected{{"alpha", "first export"},
                                                            {"beta", "second export"}};
  EXPECT_EQ(exports, expected);

  // NBD_OPT_INFO about one export, without leaving negotiation.
  NBD_ASSERT_OK(nbd_set_export_name(h.get(), "beta"));
  NBD_ASSERT_OK(nbd_opt_info(h.get()));
  EXPECT_EQ(nbd_get_size(h.get()), int64_t(2 * MiB));
  EXPECT_EQ(nbd_aio_is_negotiating(h.get()), 1);

  // The default export "" has a canonical name the server reports with full info.
  NBD_ASSERT_OK(nbd_set_full_info(h.get(), true));
  NBD_ASSERT_OK(nbd_set_export_name(h.get(), ""));
  NBD_ASSERT_OK(nbd_opt_info(h.get()));
  EXPECT_EQ(take_string(nbd_get_canonical_export_name(h.get())), "alpha") << last_error();

  NBD_ASSERT_OK(nbd_set_export_name(h.get(), "alpha"));
  NBD_ASSERT_OK(nbd_opt_go(h.get()));
  EXPECT_EQ(nbd_aio_is_ready(h.get()), 1);
  EXPECT_EQ(nbd_get_size(h.get()), int64_t(1 * MiB));
  EXPECT_EQ(take_string(nbd_get_export_name(h.get())), "alpha");
  EXPECT_EQ(take_string(nbd_get_export_description(h.get())), "description of alpha") << last_error();
  std::vector<uint8_t> buf(64 * KiB, 0xff);
  NBD_ASSERT_OK(nbd_pread(h.get(), buf.data(), buf.size(), 512 * KiB, 0));
  EXPECT_TRUE(all_zero(buf.data(), buf.size()));
}

TEST_F(InfoTest, OptAbortEndsNegotiation) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start(two_export_plugin()));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_set_opt_mode(h.get(), true));
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  NBD_ASSERT_OK(nbd_opt_abort(h.get()));
  EXPECT_EQ(nbd_aio_is_closed(h.get()), 1);
}

class RoundTripTest : public IntegrationTest {};

TEST_F(RoundTripTest, PreadPwriteZeroTrimFlushCache) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"memory", "64M"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  nbd_handle *p = h.get();

  const uint64_t base = 3 * MiB;
  auto data = make_pattern(1 * MiB, 42);
  NBD_ASSERT_OK(nbd_pwrite(p, data.data(), data.size(), base, 0));
  std::vector<uint8_t> back(data.size());
  NBD_ASSERT_OK(nbd_pread(p, back.data(), back.size(), base, 0));
  ASSERT_EQ(pattern_mismatch(back.data(), back.size(), 42), -1);

  // FUA write at an unaligned offset and length.
  auto small = make_pattern(1000, 7);
  NBD_ASSERT_OK(nbd_pwrite(p, small.data(), small.size(), 5 * MiB + 17, LIBNBD_CMD_FLAG_FUA));
  std::vector<uint8_t> small_back(1000);
  NBD_ASSERT_OK(nbd_pread(p, small_back.data(), small_back.size(), 5 * MiB + 17, 0));
  EXPECT_EQ(small_back, small);

  // Zero [64K, 128K) and trim [256K, 384K) of the pattern; the rest must survive.
  NBD_ASSERT_OK(nbd_zero(p, 64 * KiB, base + 64 * KiB, 0));
  NBD_ASSERT_OK(nbd_trim(p, 128 * KiB, base + 256 * KiB, 0));
  NBD_ASSERT_OK(nbd_zero(p, 4 * KiB, base + 512 * KiB, LIBNBD_CMD_FLAG_FAST_ZERO));
  NBD_ASSERT_OK(nbd_pread(p, back.data(), back.size(), base, 0));
  for (uint64_t off = 0; off < data.size(); off += 4 * KiB) {
    bool zeroed = (off >= 64 * KiB && off < 128 * KiB) || (off >= 256 * KiB && off < 384 * KiB) ||
                  (off >= 512 * KiB && off < 516 * KiB);
    if (zeroed) ASSERT_TRUE(all_zero(back.data() + off, 4 * KiB)) << "at +" << off;
    else ASSERT_EQ(std::memcmp(back.data() + off, data.data() + off, 4 * KiB), 0) << "at +" << off;
  }

  NBD_EXPECT_OK(nbd_flush(p, 0));
  NBD_EXPECT_OK(nbd_cache(p, 1 * MiB, base, 0));

  // The same through the aio calls, retired with nbd_aio_command_completed.
  std::vector<uint8_t> abuf(256 * KiB);
  int64_t c1 = nbd_aio_pwrite(p, data.data(), abuf.size(), 40 * MiB, NBD_NULL_COMPLETION, 0);
  ASSERT_NE(c1, -1) << last_error();
  ASSERT_EQ(wait_for_command(p, c1), 1) << last_error();
  int64_t c2 = nbd_aio_pread(p, abuf.data(), abuf.size(), 40 * MiB, NBD_NULL_COMPLETION, 0);
  ASSERT_NE(c2, -1) << last_error();
  ASSERT_EQ(wait_for_command(p, c2), 1) << last_error();
  EXPECT_EQ(std::memcmp(abuf.data(), data.data(), abuf.size()), 0);
  int64_t c3 = nbd_aio_flush(p, NBD_NULL_COMPLETION, 0);
  ASSERT_NE(c3, -1) << last_error();
  ASSERT_EQ(wait_for_command(p, c3), 1) << last_error();
  EXPECT_EQ(nbd_aio_in_flight(p), 0);

#ifdef LIBNBD_HAVE_NBD_STATS_BYTES_SENT
  EXPECT_GT(nbd_stats_bytes_sent(p), 1 * MiB);
  EXPECT_GT(nbd_stats_bytes_received(p), 2 * MiB);
#endif
  NBD_EXPECT_OK(nbd_shutdown(p, 0));
}

TEST_F(RoundTripTest, PatternPluginReadsAtOddOffsets) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"pattern", "16M"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  // The pattern plugin stores each 8-byte word's own offset, big-endian.
  auto expect_byte = [](uint64_t pos) { return uint8_t((pos & ~uint64_t(7)) >> (8 * (7 - pos % 8))); };
  const std::pair<uint64_t, size_t> reads[] = {{0, 1}, {7, 9}, {4093, 7000}, {1 * MiB - 3, 64 * KiB + 5},
                                               {15 * MiB + 12345, 777}, {16 * MiB - 8, 8}};
  for (auto [offset, count] : reads) {
    std::vector<uint8_t> buf(count);
    NBD_ASSERT_OK(nbd_pread(h.get(), buf.data(), count, offset, 0));
    for (size_t i = 0; i < count; ++i)
      ASSERT_EQ(buf[i], expect_byte(offset + i)) << "offset " << offset << " + " << i;
  }
}

TEST_F(RoundTripTest, DataAndNullPlugins) {
  NbdkitServer data_srv, null_srv;
  START_OR_SKIP(data_srv.start({"data", "1 2 3 @0x1000 4 5 6", "size=64K"}));
  START_OR_SKIP(null_srv.start({"null", "1G"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), data_srv.socket_path().c_str()));
  uint8_t buf[4];
  NBD_ASSERT_OK(nbd_pread(h.get(), buf, 4, 0, 0));
  EXPECT_EQ(std::vector<uint8_t>(buf, buf + 4), (std::vector<uint8_t>{1, 2, 3, 0}));
  NBD_ASSERT_OK(nbd_pread(h.get(), buf, 4, 0xfff, 0));
  EXPECT_EQ(std::vector<uint8_t>(buf, buf + 4), (std::vector<uint8_t>{0, 4, 5, 6}));

  Handle n = make_handle();
  ASSERT_TRUE(n);
  NBD_ASSERT_OK(nbd_connect_unix(n.get(), null_srv.socket_path().c_str()));
  EXPECT_EQ(nbd_get_size(n.get()), int64_t(1024 * MiB));
  std::vector<uint8_t> big(4 * MiB, 0xee);
  NBD_ASSERT_OK(nbd_pwrite(n.get(), big.data(), big.size(), 512 * MiB, 0));  // discarded
  NBD_ASSERT_OK(nbd_pread(n.get(), big.data(), big.size(), 512 * MiB, 0));
  EXPECT_TRUE(all_zero(big.data(), big.size()));
}

class BlockStatusTest : public IntegrationTest {};

TEST_F(BlockStatusTest, SparseMemoryExport) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"memory", "64M"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_add_meta_context(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION));
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  ASSERT_EQ(nbd_can_meta_context(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION), 1);

  // nbdkit's memory plugin allocates 32 KiB pages: 64 KiB-aligned writes map exactly.
  auto data = make_pattern(128 * KiB, 9);
  NBD_ASSERT_OK(nbd_pwrite(h.get(), data.data(), 64 * KiB, 1 * MiB, 0));
  NBD_ASSERT_OK(nbd_pwrite(h.get(), data.data(), 128 * KiB, 4 * MiB, 0));

  const uint64_t hole = LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO;
  std::vector<Extent> expected{{0, 1 * MiB, hole},
                               {1 * MiB, 64 * KiB, 0},
                               {1 * MiB + 64 * KiB, 3 * MiB - 64 * KiB, hole},
                               {4 * MiB, 128 * KiB, 0},
                               {4 * MiB + 128 * KiB, 4 * MiB - 128 * KiB, hole}};
  EXPECT_EQ(block_status_all(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION, 0, 8 * MiB), expected);

  // REQ_ONE: exactly one extent, starting at the offset asked for.
  ExtentCollector one;
  NBD_ASSERT_OK(nbd_block_status(h.get(), 8 * MiB, 1 * MiB, one.callback32(), LIBNBD_CMD_FLAG_REQ_ONE));
  ASSERT_EQ(one.raw.size(), 1u);
  ASSERT_EQ(one.raw[0].entries.size(), 1u);
  EXPECT_EQ(one.raw[0].offset, 1 * MiB);
  EXPECT_EQ(one.raw[0].entries[0], (std::pair<uint64_t, uint64_t>{64 * KiB, 0}));

  // Trimming the first range makes it a hole again.
  NBD_ASSERT_OK(nbd_trim(h.get(), 64 * KiB, 1 * MiB, 0));
  std::vector<Extent> after{{0, 4 * MiB, hole}, {4 * MiB, 128 * KiB, 0}, {4 * MiB + 128 * KiB, 4 * MiB - 128 * KiB, hole}};
  EXPECT_EQ(block_status_all(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION, 0, 8 * MiB), after);
}

TEST_F(BlockStatusTest, SparseRandomExtentsMatchData) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"sparse-random", "32M", "seed=4321", "percent=30", "runlength=524288"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_add_meta_context(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION));
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  const uint64_t size = uint64_t(nbd_get_size(h.get()));
  auto extents = block_status_all(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION, 0, size);
  ASSERT_FALSE(extents.empty());
  uint64_t covered = 0, data_bytes = 0;
  std::vector<uint8_t> buf;
  for (const auto &e : extents) {
    ASSERT_EQ(e.offset, covered);
    covered += e.length;
    buf.resize(e.length);
    NBD_ASSERT_OK(nbd_pread(h.get(), buf.data(), buf.size(), e.offset, 0));
    if (e.flags & LIBNBD_STATE_ZERO) {
      EXPECT_TRUE(all_zero(buf.data(), buf.size())) << "extent at " << e.offset << " claims zero";
    } else {
      data_bytes += e.length;
      // sparse-random fills each data block with one nonzero byte.
      EXPECT_FALSE(all_zero(buf.data(), buf.size())) << "data extent at " << e.offset << " is zero";
    }
  }
  EXPECT_EQ(covered, size);
  EXPECT_GT(data_bytes, 0u);
  EXPECT_LT(data_bytes, size);
}

}  // namespace
}  // namespace dnbd_test
