// SPDX-License-Identifier: LGPL-2.1-or-later
// Tests for the transmission commands (lib/api/command_calls.cpp) against real nbdkit servers.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "libnbd.h"
#include "nbdkit_fixture.h"

namespace {

using duplexnbd::testing::NbdkitServer;
using duplexnbd::testing::ServerProcess;

constexpr uint64_t kMiB = 1024 * 1024;

struct Closer {
  void operator()(nbd_handle *h) const { nbd_close(h); }
};
using HandlePtr = std::unique_ptr<nbd_handle, Closer>;

#define SKIP_WITHOUT_NBDKIT()                                                  \
  do {                                                                         \
    if (!NbdkitServer::available()) GTEST_SKIP() << "nbdkit is not installed"; \
  } while (0)

#define START(server)                               \
  do {                                              \
    ASSERT_TRUE((server).ok()) << (server).error(); \
  } while (0)

std::string last_error() {
  const char *e = nbd_get_error();
  return e ? e : "(none)";
}

// Connects to `server`; `setup` runs on the fresh handle first (meta contexts, ...).
template <typename F>
HandlePtr connect_to(const ServerProcess &server, F setup) {
  HandlePtr h(nbd_create());
  if (!h) return nullptr;
  setup(h.get());
  if (nbd_connect_unix(h.get(), server.socket().c_str()) == -1) {
    ADD_FAILURE() << "connect: " << last_error();
    return nullptr;
  }
  return h;
}
HandlePtr connect_to(const ServerProcess &server) {
  return connect_to(server, [](nbd_handle *) {});
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    v[i] = uint8_t(x >> 16);
  }
  return v;
}

// Drives the handle until `cookie` completes; returns nbd_aio_command_completed's result.
int wait_cookie(nbd_handle *h, int64_t cookie) {
  for (;;) {
    int r = nbd_aio_command_completed(h, uint64_t(cookie));
    if (r != 0) return r;
    if (nbd_poll(h, 5000) == -1) return -1;
  }
}

// Counts calls and frees of a closure, to check .free runs exactly once.
struct CallbackLog {
  std::atomic<int> calls{0};
  std::atomic<int> frees{0};
  std::atomic<int> last_error{-1};
  int ret = 0;
};

int completion_cb(void *user_data, int *error) {
  auto *log = static_cast<CallbackLog *>(user_data);
  log->calls++;
  log->last_error = *error;
  return log->ret;
}
void free_cb(void *user_data) { static_cast<CallbackLog *>(user_data)->frees++; }

nbd_completion_callback completion_of(CallbackLog &log) {
  return nbd_completion_callback{completion_cb, &log, free_cb};
}

void expect_failure(int r, int errnum, const char *text) {
  EXPECT_EQ(r, -1) << text;
  EXPECT_EQ(nbd_get_errno(), errnum) << last_error();
  EXPECT_NE(last_error().find(text), std::string::npos) << last_error();
}

// ---- reads and writes -------------------------------------------------------------------

TEST(CommandReadWrite, SyncRoundTripsOfManySizes) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "64M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  const size_t sizes[] = {1, 511, 512, 4096, 65536 + 7, kMiB, 8 * kMiB + 3};
  uint64_t offset = 0;
  uint32_t seed = 1;
  for (size_t n : sizes) {
    auto data = pattern(n, seed++);
    ASSERT_EQ(nbd_pwrite(h.get(), data.data(), n, offset, 0), 0) << last_error();
    std::vector<uint8_t> back(n, 0xee);
    ASSERT_EQ(nbd_pread(h.get(), back.data(), n, offset, 0), 0) << last_error();
    EXPECT_TRUE(back == data) << "size " << n;
    offset += n + 4096;
  }
  EXPECT_EQ(nbd_flush(h.get(), 0), 0) << last_error();
  EXPECT_EQ(nbd_aio_in_flight(h.get()), 0);
}

TEST(CommandReadWrite, AioRoundTripsCompleteOutOfOrderCollection) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "64M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  constexpr int kCount = 16;
  constexpr size_t kSize = 256 * 1024;
  std::vector<std::vector<uint8_t>> data;
  std::vector<int64_t> cookies;
  for (int i = 0; i < kCount; i++) {
    data.push_back(pattern(kSize, 100 + i));
    int64_t c = nbd_aio_pwrite(h.get(), data.back().data(), kSize, uint64_t(i) * kSize,
                               NBD_NULL_COMPLETION, 0);
    ASSERT_GT(c, 0) << last_error();
    cookies.push_back(c);
  }
  // Cookies are unique and increasing.
  for (int i = 1; i < kCount; i++) EXPECT_GT(cookies[i], cookies[i - 1]);
  // Collect in reverse order.
  for (int i = kCount - 1; i >= 0; i--)
    EXPECT_EQ(wait_cookie(h.get(), cookies[i]), 1) << last_error();

  std::vector<std::vector<uint8_t>> back(kCount, std::vector<uint8_t>(kSize));
  cookies.clear();
  for (int i = 0; i < kCount; i++) {
    int64_t c =
        nbd_aio_pread(h.get(), back[i].data(), kSize, uint64_t(i) * kSize, NBD_NULL_COMPLETION, 0);
    ASSERT_GT(c, 0) << last_error();
    cookies.push_back(c);
  }
  for (int i = 0; i < kCount; i++) {
    EXPECT_EQ(wait_cookie(h.get(), cookies[i]), 1) << last_error();
    EXPECT_TRUE(back[i] == data[i]) << "request " << i;
  }
  // A retired cookie is unknown afterwards: "not completed", as in libnbd.
  EXPECT_EQ(nbd_aio_command_completed(h.get(), uint64_t(cookies[0])), 0);
  EXPECT_EQ(nbd_aio_command_completed(h.get(), 0), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
}

TEST(CommandReadWrite, PreadInitializeZeroesTheBufferFirst) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "1M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  std::vector<uint8_t> buf(4096, 0xaa);
  // Out of bounds: fails client-side, but the buffer no longer holds old bytes.
  EXPECT_EQ(nbd_pread(h.get(), buf.data(), buf.size(), kMiB, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; }));

  ASSERT_EQ(nbd_set_pread_initialize(h.get(), false), 0);
  std::fill(buf.begin(), buf.end(), 0xaa);
  EXPECT_EQ(nbd_pread(h.get(), buf.data(), buf.size(), kMiB, 0), -1);
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0xaa; }));
}

TEST(CommandReadWrite, FlushTrimZeroAndCache) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "64M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  ASSERT_EQ(nbd_can_trim(hh), 1);
  ASSERT_EQ(nbd_can_zero(hh), 1);
  ASSERT_EQ(nbd_can_fua(hh), 1);
  auto data = pattern(1 * kMiB, 7);
  std::vector<uint8_t> back(data.size());
  const std::vector<uint8_t> zeroes(data.size(), 0);

  ASSERT_EQ(nbd_pwrite(hh, data.data(), data.size(), 0, LIBNBD_CMD_FLAG_FUA), 0) << last_error();
  EXPECT_EQ(nbd_flush(hh, 0), 0) << last_error();
  EXPECT_EQ(nbd_trim(hh, data.size(), 0, 0), 0) << last_error();
  ASSERT_EQ(nbd_pread(hh, back.data(), back.size(), 0, 0), 0);
  EXPECT_TRUE(back == zeroes);

  ASSERT_EQ(nbd_pwrite(hh, data.data(), data.size(), 0, 0), 0);
  EXPECT_EQ(nbd_zero(hh, data.size(), 0, LIBNBD_CMD_FLAG_FUA | LIBNBD_CMD_FLAG_NO_HOLE), 0)
      << last_error();
  ASSERT_EQ(nbd_pread(hh, back.data(), back.size(), 0, 0), 0);
  EXPECT_TRUE(back == zeroes);

  if (nbd_can_fast_zero(hh) == 1) {
    ASSERT_EQ(nbd_pwrite(hh, data.data(), data.size(), 0, 0), 0);
    EXPECT_EQ(nbd_zero(hh, data.size(), 0, LIBNBD_CMD_FLAG_FAST_ZERO), 0) << last_error();
    ASSERT_EQ(nbd_pread(hh, back.data(), back.size(), 0, 0), 0);
    EXPECT_TRUE(back == zeroes);
  }
  EXPECT_EQ(nbd_trim(hh, 4096, 0, LIBNBD_CMD_FLAG_FUA), 0) << last_error();
  if (nbd_can_cache(hh) == 1) {
    EXPECT_EQ(nbd_cache(hh, 8 * kMiB, 0, 0), 0) << last_error();
  }

  // The aio forms of the same.
  int64_t c1 = nbd_aio_flush(hh, NBD_NULL_COMPLETION, 0);
  int64_t c2 = nbd_aio_trim(hh, 65536, 0, NBD_NULL_COMPLETION, 0);
  int64_t c3 = nbd_aio_zero(hh, 65536, 65536, NBD_NULL_COMPLETION, 0);
  int64_t c4 = nbd_aio_cache(hh, 65536, 0, NBD_NULL_COMPLETION, 0);
  for (int64_t c : {c1, c2, c3, c4}) {
    ASSERT_GT(c, 0) << last_error();
    EXPECT_EQ(wait_cookie(hh, c), 1) << last_error();
  }
}

// ---- structured reads and block status --------------------------------------------------

struct ChunkLog {
  uint64_t bytes = 0;
  int calls = 0;
  int bad_status = 0;
  int ret = 0;
  const uint8_t *base = nullptr;
  uint64_t base_offset = 0;
  bool mismatch = false;
};

int chunk_cb(void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
             int *error) {
  (void)error;
  auto *log = static_cast<ChunkLog *>(user_data);
  log->calls++;
  if (status != LIBNBD_READ_DATA && status != LIBNBD_READ_HOLE) log->bad_status++;
  log->bytes += count;
  // subbuf points into the caller's buffer at the chunk's offset.
  if (static_cast<const uint8_t *>(subbuf) != log->base + (offset - log->base_offset))
    log->mismatch = true;
  return log->ret;
}

TEST(CommandStructured, PreadStructuredReportsChunks) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "64M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  auto data = pattern(3 * kMiB, 11);
  ASSERT_EQ(nbd_pwrite(h.get(), data.data(), data.size(), kMiB, 0), 0);
  std::vector<uint8_t> back(4 * kMiB);
  ChunkLog log;
  log.base = back.data();
  log.base_offset = 0;
  ASSERT_EQ(nbd_pread_structured(h.get(), back.data(), back.size(), 0,
                                 nbd_chunk_callback{chunk_cb, &log, nullptr}, 0),
            0)
      << last_error();
  EXPECT_GE(log.calls, 1);
  EXPECT_EQ(log.bytes, back.size());
  EXPECT_EQ(log.bad_status, 0);
  EXPECT_FALSE(log.mismatch);
  EXPECT_TRUE(std::equal(data.begin(), data.end(), back.begin() + kMiB));

  if (nbd_can_df(h.get()) == 1) {
    ChunkLog df;
    df.base = back.data();
    ASSERT_EQ(nbd_pread_structured(h.get(), back.data(), 65536, 0,
                                   nbd_chunk_callback{chunk_cb, &df, nullptr}, LIBNBD_CMD_FLAG_DF),
              0)
        << last_error();
    EXPECT_EQ(df.calls, 1);
  }

  // A callback failing fails the read with the value it left in *error (EPROTO here).
  ChunkLog failing;
  failing.base = back.data();
  failing.ret = -1;
  EXPECT_EQ(nbd_pread_structured(h.get(), back.data(), 8192, 0,
                                 nbd_chunk_callback{chunk_cb, &failing, nullptr}, 0),
            -1);
  EXPECT_EQ(nbd_get_errno(), EPROTO);
  EXPECT_NE(last_error().find("nbd_pread_structured: read: command failed"), std::string::npos)
      << last_error();
}

struct Extent {
  uint64_t length;
  uint64_t flags;
};
struct ExtentLog {
  std::string context;
  uint64_t offset = UINT64_MAX;
  std::vector<Extent> extents;
  int calls = 0;
};

int extent32_cb(void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
                size_t nr_entries, int *error) {
  (void)error;
  auto *log = static_cast<ExtentLog *>(user_data);
  log->calls++;
  log->context = metacontext;
  log->offset = offset;
  for (size_t i = 0; i + 1 < nr_entries; i += 2)
    log->extents.push_back({entries[i], entries[i + 1]});
  return 0;
}

int extent64_cb(void *user_data, const char *metacontext, uint64_t offset, nbd_extent *entries,
                size_t nr_entries, int *error) {
  (void)error;
  auto *log = static_cast<ExtentLog *>(user_data);
  log->calls++;
  log->context = metacontext;
  log->offset = offset;
  for (size_t i = 0; i < nr_entries; i++)
    log->extents.push_back({entries[i].length, entries[i].flags});
  return 0;
}

// The status of byte `at` according to the extents reported from `log.offset`.
uint64_t status_at(const ExtentLog &log, uint64_t at) {
  uint64_t pos = log.offset;
  for (const Extent &e : log.extents) {
    if (at < pos + e.length) return e.flags;
    pos += e.length;
  }
  return UINT64_MAX;
}

TEST(CommandBlockStatus, Extents32And64OnASparseExport) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "64M"});
  START(server);
  HandlePtr h = connect_to(
      server, [](nbd_handle *hh) { nbd_add_meta_context(hh, LIBNBD_CONTEXT_BASE_ALLOCATION); });
  ASSERT_TRUE(h);
  ASSERT_EQ(nbd_can_meta_context(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION), 1);
  auto data = pattern(kMiB, 3);
  ASSERT_EQ(nbd_pwrite(h.get(), data.data(), data.size(), 4 * kMiB, 0), 0);

  ExtentLog l32;
  ASSERT_EQ(
      nbd_block_status(h.get(), 8 * kMiB, 0, nbd_extent_callback{extent32_cb, &l32, nullptr}, 0), 0)
      << last_error();
  EXPECT_EQ(l32.calls, 1);
  EXPECT_EQ(l32.context, LIBNBD_CONTEXT_BASE_ALLOCATION);
  EXPECT_EQ(l32.offset, 0u);
  ASSERT_FALSE(l32.extents.empty());
  EXPECT_EQ(status_at(l32, 0), uint64_t(LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO));
  EXPECT_EQ(status_at(l32, 4 * kMiB) & LIBNBD_STATE_HOLE, 0u);

  ExtentLog l64;
  ASSERT_EQ(nbd_block_status_64(h.get(), 8 * kMiB, 0,
                                nbd_extent64_callback{extent64_cb, &l64, nullptr}, 0),
            0)
      << last_error();
  EXPECT_EQ(l64.calls, 1);
  EXPECT_EQ(status_at(l64, 0), uint64_t(LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO));
  EXPECT_EQ(status_at(l64, 4 * kMiB) & LIBNBD_STATE_HOLE, 0u);

  // Trimming the data makes it a hole again.
  ASSERT_EQ(nbd_trim(h.get(), kMiB, 4 * kMiB, 0), 0);
  ExtentLog after;
  ASSERT_EQ(nbd_block_status_64(h.get(), kMiB, 4 * kMiB,
                                nbd_extent64_callback{extent64_cb, &after, nullptr},
                                LIBNBD_CMD_FLAG_REQ_ONE),
            0)
      << last_error();
  ASSERT_EQ(after.extents.size(), 1u);
  EXPECT_EQ(after.extents[0].flags & LIBNBD_STATE_HOLE, uint64_t(LIBNBD_STATE_HOLE));

  // aio form.
  ExtentLog la;
  int64_t c = nbd_aio_block_status_64(
      h.get(), kMiB, 0, nbd_extent64_callback{extent64_cb, &la, nullptr}, NBD_NULL_COMPLETION, 0);
  ASSERT_GT(c, 0) << last_error();
  EXPECT_EQ(wait_cookie(h.get(), c), 1);
  EXPECT_EQ(la.calls, 1);
}

TEST(CommandBlockStatus, NeedsANegotiatedContext) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "1M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  ExtentLog log;
  EXPECT_EQ(nbd_block_status(h.get(), 512, 0, nbd_extent_callback{extent32_cb, &log, nullptr}, 0),
            -1);
  EXPECT_EQ(nbd_get_errno(), ENOTSUP);
  EXPECT_NE(last_error().find("did not negotiate any metadata contexts"), std::string::npos);
  EXPECT_EQ(
      nbd_block_status_64(h.get(), 512, 0, nbd_extent64_callback{extent64_cb, &log, nullptr}, 0),
      -1);
  EXPECT_EQ(nbd_get_errno(), ENOTSUP);
  EXPECT_EQ(log.calls, 0);
}

TEST(CommandBlockStatus, FilterNeedsExtendedHeadersAndPayloadSupport) {
  SKIP_WITHOUT_NBDKIT();
  // nbdkit 1.32 negotiates neither extended headers nor block status payloads.
  NbdkitServer server({"memory", "1M"});
  START(server);
  HandlePtr h = connect_to(
      server, [](nbd_handle *hh) { nbd_add_meta_context(hh, LIBNBD_CONTEXT_BASE_ALLOCATION); });
  ASSERT_TRUE(h);
  if (nbd_get_extended_headers_negotiated(h.get()) == 1) GTEST_SKIP() << "server is too new";
  const char *contexts[] = {LIBNBD_CONTEXT_BASE_ALLOCATION, nullptr};
  ExtentLog log;
  EXPECT_EQ(nbd_block_status_filter(h.get(), 512, 0, const_cast<char **>(contexts),
                                    nbd_extent64_callback{extent64_cb, &log, nullptr}, 0),
            -1);
  EXPECT_EQ(nbd_get_errno(), ENOTSUP);
  EXPECT_NE(last_error().find("server does not support extended headers"), std::string::npos);
  // Managing PAYLOAD_LEN oneself moves the refusal to the advertised flag.
  ASSERT_EQ(nbd_set_strict_mode(h.get(), nbd_get_strict_mode(h.get()) & ~LIBNBD_STRICT_AUTO_FLAG),
            0);
  EXPECT_EQ(nbd_block_status_filter(h.get(), 512, 0, const_cast<char **>(contexts),
                                    nbd_extent64_callback{extent64_cb, &log, nullptr},
                                    LIBNBD_CMD_FLAG_PAYLOAD_LEN),
            -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_NE(last_error().find("block status payload flag"), std::string::npos) << last_error();
  EXPECT_EQ(log.calls, 0);
}

// Our own test server speaks extended headers and block status payloads.
std::string test_server_path() {
  if (const char *p = getenv("DUPLEXNBD_TEST_SERVER")) return p;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "";
  exe[n] = '\0';
  std::string dir(exe);
  dir.resize(dir.rfind('/'));
  for (const char *rel : {"/duplexnbd_test_server", "/servers/duplexnbd_test_server",
                          "/../duplexnbd_test_server", "/../tests/duplexnbd_test_server"}) {
    std::string p = dir + rel;
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

TEST(CommandBlockStatus, FilterLimitsTheReportedContexts) {
  std::string path = test_server_path();
  if (path.empty()) GTEST_SKIP() << "duplexnbd_test_server not built";
  ServerProcess server({path, "--socket"}, {"--size", "16M"});
  START(server);
  HandlePtr h = connect_to(server, [](nbd_handle *hh) {
    nbd_add_meta_context(hh, LIBNBD_CONTEXT_BASE_ALLOCATION);
    nbd_add_meta_context(hh, "duplexnbd:data");
  });
  ASSERT_TRUE(h);
  if (nbd_can_block_status_payload(h.get()) != 1) GTEST_SKIP() << "no block status payload";
  struct Seen {
    std::vector<std::string> names;
  } seen;
  auto cb = [](void *user_data, const char *metacontext, uint64_t, nbd_extent *, size_t,
               int *) -> int {
    static_cast<Seen *>(user_data)->names.push_back(metacontext);
    return 0;
  };
  const char *one[] = {"duplexnbd:data", nullptr};
  ASSERT_EQ(nbd_block_status_filter(h.get(), kMiB, 0, const_cast<char **>(one),
                                    nbd_extent64_callback{cb, &seen, nullptr}, 0),
            0)
      << last_error();
  ASSERT_EQ(seen.names.size(), 1u);
  EXPECT_EQ(seen.names[0], "duplexnbd:data");

  seen.names.clear();
  ASSERT_EQ(nbd_block_status_64(h.get(), kMiB, 0, nbd_extent64_callback{cb, &seen, nullptr}, 0), 0);
  EXPECT_EQ(seen.names.size(), 2u);

  // A context never negotiated is refused before anything is sent.
  const char *bogus[] = {"qemu:dirty-bitmap:nope", nullptr};
  uint64_t sent = nbd_stats_bytes_sent(h.get());
  EXPECT_EQ(nbd_block_status_filter(h.get(), kMiB, 0, const_cast<char **>(bogus),
                                    nbd_extent64_callback{cb, &seen, nullptr}, 0),
            -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(nbd_stats_bytes_sent(h.get()), sent);
}

TEST(CommandExtended, PayloadLenFollowsTheNegotiatedHeaders) {
  std::string path = test_server_path();
  if (path.empty()) GTEST_SKIP() << "duplexnbd_test_server not built";
  ServerProcess server({path, "--socket"}, {"--size", "8G"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  if (nbd_get_extended_headers_negotiated(hh) != 1) GTEST_SKIP() << "no extended headers";
  auto data = pattern(100000, 9);
  std::vector<uint8_t> back(data.size());
  // The caller's PAYLOAD_LEN is ignored either way while STRICT_AUTO_FLAG is set.
  ASSERT_EQ(nbd_pwrite(hh, data.data(), data.size(), 4096, 0), 0) << last_error();
  ASSERT_EQ(nbd_pwrite(hh, data.data(), data.size(), 4096, LIBNBD_CMD_FLAG_PAYLOAD_LEN), 0)
      << last_error();
  ASSERT_EQ(nbd_pread(hh, back.data(), back.size(), 4096, 0), 0) << last_error();
  EXPECT_TRUE(back == data);
  // Taken over by the caller, a wrong setting is refused.
  ASSERT_EQ(nbd_set_strict_mode(hh, nbd_get_strict_mode(hh) & ~LIBNBD_STRICT_AUTO_FLAG), 0);
  expect_failure(nbd_pwrite(hh, data.data(), data.size(), 0, 0), EINVAL,
                 "incorrect setting for PAYLOAD_LEN flag");
  EXPECT_EQ(nbd_pwrite(hh, data.data(), data.size(), 0, LIBNBD_CMD_FLAG_PAYLOAD_LEN), 0)
      << last_error();
  // 64-bit lengths are fine with extended headers.
  EXPECT_EQ(nbd_trim(hh, (uint64_t(1) << 32) + 4096, 0, 0), 0) << last_error();
  EXPECT_EQ(nbd_zero(hh, (uint64_t(1) << 32) + 4096, 0, 0), 0) << last_error();
  ASSERT_EQ(nbd_pread(hh, back.data(), back.size(), 4096, 0), 0);
  EXPECT_TRUE(std::all_of(back.begin(), back.end(), [](uint8_t b) { return b == 0; }));
  EXPECT_EQ(nbd_aio_is_ready(hh), 1);
}

// ---- strict mode --------------------------------------------------------------------------

TEST(CommandStrict, BoundsAndZeroSize) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "1M"});
  START(server);
  HandlePtr h = connect_to(
      server, [](nbd_handle *hh) { nbd_add_meta_context(hh, LIBNBD_CONTEXT_BASE_ALLOCATION); });
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  char buf[512] = {};
  ExtentLog log;
  // Past the end: reads and queries fail with EINVAL, modifications with ENOSPC.
  expect_failure(nbd_pread(hh, buf, 512, kMiB - 256, 0), EINVAL,
                 "nbd_pread: request out of bounds");
  expect_failure(nbd_pwrite(hh, buf, 512, kMiB, 0), ENOSPC, "nbd_pwrite: request out of bounds");
  // A NULL source is refused with EFAULT even for 0 bytes, as libnbd 1.22 does (found by the
  // call_states differential run); a NULL destination of 0 bytes is a zero-size request.
  // Plain pointers: the header marks buf nonnull (see HandleName in handle_test.cpp).
  int (*volatile pwrite_fn)(nbd_handle *, const void *, size_t, uint64_t, uint32_t) = nbd_pwrite;
  int64_t (*volatile aio_pwrite_fn)(nbd_handle *, const void *, size_t, uint64_t,
                                    nbd_completion_callback, uint32_t) = nbd_aio_pwrite;
  int (*volatile pread_fn)(nbd_handle *, void *, size_t, uint64_t, uint32_t) = nbd_pread;
  expect_failure(pwrite_fn(hh, nullptr, 0, 0, 0), EFAULT, "buf cannot be NULL");
  expect_failure(int(aio_pwrite_fn(hh, nullptr, 0, 0, NBD_NULL_COMPLETION, 0)), EFAULT,
                 "buf cannot be NULL");
  expect_failure(pread_fn(hh, nullptr, 0, 0, 0), EINVAL, "");
  expect_failure(pread_fn(hh, nullptr, 512, 0, 0), EFAULT, "buf cannot be NULL");
  expect_failure(nbd_trim(hh, 512, kMiB, 0), ENOSPC, "request out of bounds");
  expect_failure(nbd_zero(hh, 512, kMiB, 0), ENOSPC, "request out of bounds");
  expect_failure(nbd_cache(hh, 512, kMiB, 0), EINVAL, "request out of bounds");
  expect_failure(
      nbd_block_status(hh, 512, kMiB, nbd_extent_callback{extent32_cb, &log, nullptr}, 0), EINVAL,
      "request out of bounds");
  expect_failure(nbd_pread(hh, buf, 512, UINT64_MAX, 0), EINVAL, "request out of bounds");
  // Zero length.
  expect_failure(nbd_pread(hh, buf, 0, 0, 0), EINVAL, "nbd_pread: count cannot be 0");
  expect_failure(nbd_pwrite(hh, buf, 0, 0, 0), EINVAL, "count cannot be 0");
  expect_failure(nbd_trim(hh, 0, 0, 0), EINVAL, "count cannot be 0");
  expect_failure(nbd_zero(hh, 0, 0, 0), EINVAL, "count cannot be 0");
  expect_failure(nbd_cache(hh, 0, 0, 0), EINVAL, "count cannot be 0");
  expect_failure(nbd_block_status(hh, 0, 0, nbd_extent_callback{extent32_cb, &log, nullptr}, 0),
                 EINVAL, "count cannot be 0");
  EXPECT_EQ(log.calls, 0);
  // Flush has no range.
  EXPECT_EQ(nbd_flush(hh, 0), 0);

  // With the checks off the server judges (nbdkit says EINVAL).
  ASSERT_EQ(nbd_set_strict_mode(hh, 0), 0);
  expect_failure(nbd_pread(hh, buf, 512, kMiB, 0), EINVAL, "nbd_pread: read: command failed");
  EXPECT_EQ(nbd_aio_is_ready(hh), 1);
}

TEST(CommandStrict, AlignmentToTheMinimumBlockSize) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"--filter=blocksize-policy", "memory", "1M", "blocksize-minimum=4096",
                       "blocksize-preferred=4096", "blocksize-maximum=65536"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  ASSERT_EQ(nbd_get_block_size(hh, LIBNBD_SIZE_MINIMUM), 4096);
  std::vector<uint8_t> buf(8192);
  expect_failure(nbd_pread(hh, buf.data(), 4096, 1, 0), EINVAL, "request is unaligned");
  expect_failure(nbd_pread(hh, buf.data(), 100, 0, 0), EINVAL, "request is unaligned");
  expect_failure(nbd_pwrite(hh, buf.data(), 4095, 0, 0), EINVAL, "request is unaligned");
  EXPECT_EQ(nbd_pread(hh, buf.data(), 4096, 4096, 0), 0) << last_error();
  // The advertised maximum becomes the payload limit (not below 1MiB).
  EXPECT_EQ(nbd_get_block_size(hh, LIBNBD_SIZE_PAYLOAD), int64_t(kMiB));
}

// libnbd 1.24: under STRICT_ALIGN a ragged length is allowed when the request ends
// exactly at the end of an image whose size is not a multiple of the minimum block size;
// the offset must still be aligned, and ending anywhere else is refused. The server
// (blocksize-policy's default "allow") accepts everything, so each refusal is ours: it
// sends nothing, and with STRICT_ALIGN cleared the same request succeeds.
TEST(CommandStrict, UnalignedTailOfAnUnalignedImage) {
  SKIP_WITHOUT_NBDKIT();
  constexpr uint64_t kSize = 2 * 4096 + 1808;  // two whole blocks and a partial one
  NbdkitServer server({"--filter=blocksize-policy", "memory", std::to_string(kSize),
                       "blocksize-minimum=4096", "blocksize-preferred=4096",
                       "blocksize-maximum=65536"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  ASSERT_EQ(nbd_get_block_size(hh, LIBNBD_SIZE_MINIMUM), 4096);
  ASSERT_EQ(nbd_get_size(hh), int64_t(kSize));
  ASSERT_NE(nbd_get_strict_mode(hh) & LIBNBD_STRICT_ALIGN, 0u);

  // Allowed: aligned offset, ragged length reaching the end exactly.
  std::vector<uint8_t> tail = pattern(1808, 7);
  ASSERT_EQ(nbd_pwrite(hh, tail.data(), tail.size(), 8192, 0), 0) << last_error();
  std::vector<uint8_t> back(kSize);
  ASSERT_EQ(nbd_pread(hh, back.data(), 1808, 8192, 0), 0) << last_error();
  EXPECT_EQ(std::vector<uint8_t>(back.begin(), back.begin() + 1808), tail);
  ASSERT_EQ(nbd_pread(hh, back.data(), kSize - 4096, 4096, 0), 0) << last_error();
  EXPECT_EQ(std::vector<uint8_t>(back.begin() + 4096, back.begin() + kSize - 4096), tail);
  ASSERT_EQ(nbd_pread(hh, back.data(), kSize, 0, 0), 0) << last_error();
  EXPECT_EQ(nbd_zero(hh, 1808, 8192, 0), 0) << last_error();
  EXPECT_EQ(nbd_trim(hh, kSize, 0, 0), 0) << last_error();
  EXPECT_EQ(nbd_cache(hh, 1808, 8192, 0), 0) << last_error();

  // Still refused, before anything is sent.
  const uint64_t sent = nbd_stats_bytes_sent(hh);
  expect_failure(nbd_pread(hh, back.data(), 1807, 8192, 0), EINVAL, "request is unaligned");
  expect_failure(nbd_pread(hh, back.data(), 1808, 4096, 0), EINVAL, "request is unaligned");
  expect_failure(nbd_pread(hh, back.data(), 100, kSize - 100, 0), EINVAL,
                 "request is unaligned");  // reaches the end, but from an unaligned offset
  expect_failure(nbd_pwrite(hh, tail.data(), 1000, 8192, 0), EINVAL, "request is unaligned");
  expect_failure(nbd_zero(hh, 1808, 4096, 0), EINVAL, "request is unaligned");
  // Past the end is not "exactly at the end", even with the bounds check off.
  ASSERT_EQ(nbd_set_strict_mode(hh, nbd_get_strict_mode(hh) & ~LIBNBD_STRICT_BOUNDS), 0);
  expect_failure(nbd_pread(hh, back.data(), 1809, 8192, 0), EINVAL, "request is unaligned");
  EXPECT_EQ(nbd_stats_bytes_sent(hh), sent);

  // The server takes what we refused once the check is off.
  ASSERT_EQ(nbd_set_strict_mode(hh, nbd_get_strict_mode(hh) & ~LIBNBD_STRICT_ALIGN), 0);
  EXPECT_EQ(nbd_pread(hh, back.data(), 1807, 8192, 0), 0) << last_error();
  EXPECT_EQ(nbd_pread(hh, back.data(), 100, kSize - 100, 0), 0) << last_error();
  EXPECT_GT(nbd_stats_bytes_sent(hh), sent);
}

TEST(CommandStrict, RequestSizeLimits) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "1G"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  // 64MiB is libnbd's limit for any read or write buffer.
  std::vector<uint8_t> big(64 * kMiB + 1);
  expect_failure(nbd_pread(hh, big.data(), big.size(), 0, 0), ERANGE,
                 "request too large: maximum request size is 67108864");
  int64_t c = nbd_aio_pread(hh, big.data(), big.size(), 0, NBD_NULL_COMPLETION, 0);
  EXPECT_EQ(c, -1);
  EXPECT_EQ(nbd_get_errno(), ERANGE);
  // Writes are held to the payload maximum: 32MiB when the server advertises none.
  if (nbd_get_block_size(hh, LIBNBD_SIZE_MAXIMUM) == 0) {
    EXPECT_EQ(nbd_get_block_size(hh, LIBNBD_SIZE_PAYLOAD), int64_t(32 * kMiB));
    expect_failure(nbd_pwrite(hh, big.data(), 32 * kMiB + 1, 0, 0), ERANGE,
                   "request too large: maximum payload size is 33554432");
    ASSERT_EQ(nbd_set_strict_mode(hh, nbd_get_strict_mode(hh) & ~LIBNBD_STRICT_PAYLOAD), 0);
    EXPECT_EQ(nbd_pwrite(hh, big.data(), 32 * kMiB + 1, 0, 0), 0) << last_error();
  }
  expect_failure(nbd_pwrite(hh, big.data(), big.size(), 0, 0), ERANGE, "maximum request size");
  // A 64MiB read is fine.
  EXPECT_EQ(nbd_pread(hh, big.data(), 64 * kMiB, 0, 0), 0) << last_error();
  // Without extended headers other commands are limited to 32 bits.
  if (nbd_get_extended_headers_negotiated(hh) != 1) {
    ASSERT_EQ(nbd_set_strict_mode(hh, nbd_get_strict_mode(hh) & ~LIBNBD_STRICT_BOUNDS), 0);
    expect_failure(nbd_trim(hh, uint64_t(1) << 32, 0, 0), ERANGE,
                   "request too large: maximum request size is 4294967295");
  }
}

TEST(CommandStrict, ReadOnlyExport) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"-r", "memory", "1M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  ASSERT_EQ(nbd_is_read_only(hh), 1);
  char buf[512] = {};
  expect_failure(nbd_pwrite(hh, buf, 512, 0, 0), EPERM,
                 "nbd_pwrite: server does not support write operations");
  CallbackLog cb;
  EXPECT_EQ(nbd_aio_pwrite(hh, buf, 512, 0, completion_of(cb), 0), -1);
  EXPECT_EQ(nbd_get_errno(), EPERM);
  EXPECT_EQ(cb.calls, 0);
  EXPECT_EQ(cb.frees, 1);
  // A read-only export does not advertise trim or zero.
  expect_failure(nbd_trim(hh, 512, 0, 0), EINVAL, "server does not support trim operations");
  expect_failure(nbd_zero(hh, 512, 0, 0), EINVAL, "server does not support zero operations");
  EXPECT_EQ(nbd_pread(hh, buf, 512, 0, 0), 0);
  // Without the client-side check the server refuses it.
  ASSERT_EQ(nbd_set_strict_mode(hh, nbd_get_strict_mode(hh) & ~LIBNBD_STRICT_COMMANDS), 0);
  expect_failure(nbd_pwrite(hh, buf, 512, 0, 0), EPERM, "nbd_pwrite: write: command failed");
}

TEST(CommandStrict, UnadvertisedCommandsAndFlags) {
  SKIP_WITHOUT_NBDKIT();
  // A writable server with no flush, trim, zero, FUA or cache.
  NbdkitServer server({"--filter=nozero", "eval", "get_size=echo 1048576",
                       "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
                       "can_write=exit 0", "pwrite=cat >/dev/null", "can_flush=exit 3",
                       "can_trim=exit 3", "can_zero=exit 3", "can_fua=echo none",
                       "can_cache=echo none", "zeromode=none"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  ASSERT_EQ(nbd_can_flush(hh), 0);
  ASSERT_EQ(nbd_can_fua(hh), 0);
  char buf[512] = {};
  expect_failure(nbd_flush(hh, 0), EINVAL, "nbd_flush: server does not support flush operations");
  expect_failure(nbd_pwrite(hh, buf, 512, 0, LIBNBD_CMD_FLAG_FUA), EINVAL,
                 "server does not support the FUA flag");
  expect_failure(nbd_trim(hh, 512, 0, 0), EINVAL, "server does not support trim operations");
  // The command check comes before the range check.
  expect_failure(nbd_trim(hh, 0, 0, 0), EINVAL, "server does not support trim operations");
  expect_failure(nbd_zero(hh, 512, 0, 0), EINVAL, "server does not support zero operations");
  expect_failure(nbd_zero(hh, 512, 0, LIBNBD_CMD_FLAG_FAST_ZERO), EINVAL,
                 "server does not support zero operations");
  expect_failure(nbd_cache(hh, 512, 0, 0), EINVAL, "server does not support cache operations");
  EXPECT_EQ(nbd_pwrite(hh, buf, 512, 0, 0), 0) << last_error();

  // Unknown flags (STRICT_FLAGS), and flags not meant for the command.
  expect_failure(nbd_pread(hh, buf, 512, 0, LIBNBD_CMD_FLAG_FUA), EINVAL, "invalid value for flag");
  expect_failure(nbd_pwrite(hh, buf, 512, 0, 0x100), EINVAL, "invalid value for flag");
  expect_failure(nbd_pwrite(hh, buf, 512, 0, 0x10000), EINVAL, "invalid value for flag");

  // Relaxed, the server answers instead.
  ASSERT_EQ(nbd_set_strict_mode(hh, nbd_get_strict_mode(hh) & ~LIBNBD_STRICT_COMMANDS), 0);
  expect_failure(nbd_flush(hh, 0), EINVAL, "nbd_flush: flush: command failed");
  expect_failure(nbd_trim(hh, 512, 0, 0), EINVAL, "nbd_trim: trim: command failed");
  expect_failure(nbd_zero(hh, 512, 0, 0), EINVAL, "nbd_zero: write-zeroes: command failed");
  expect_failure(nbd_cache(hh, 512, 0, 0), EINVAL, "nbd_cache: cache: command failed");
  // Bits beyond the wire's 16 are refused whatever the strict mode.
  ASSERT_EQ(nbd_set_strict_mode(hh, 0), 0);
  expect_failure(nbd_pwrite(hh, buf, 512, 0, 0x10000), EINVAL, "invalid value for flag");
  EXPECT_EQ(nbd_aio_is_ready(hh), 1);
}

TEST(CommandStrict, NoStructuredReplies) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "1M"});
  START(server);
  HandlePtr h = connect_to(server, [](nbd_handle *hh) {
    nbd_set_request_structured_replies(hh, false);
    nbd_add_meta_context(hh, LIBNBD_CONTEXT_BASE_ALLOCATION);
  });
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  ASSERT_EQ(nbd_get_structured_replies_negotiated(hh), 0);
  ASSERT_EQ(nbd_can_df(hh), 0);
  char buf[512];
  ChunkLog log;
  log.base = reinterpret_cast<uint8_t *>(buf);
  expect_failure(nbd_pread_structured(hh, buf, 512, 0, nbd_chunk_callback{chunk_cb, &log, nullptr},
                                      LIBNBD_CMD_FLAG_DF),
                 EINVAL, "server does not support the DF flag");
  // Without DF, a simple reply still reaches the chunk callback once.
  EXPECT_EQ(nbd_pread_structured(hh, buf, 512, 0, nbd_chunk_callback{chunk_cb, &log, nullptr}, 0),
            0)
      << last_error();
  EXPECT_EQ(log.calls, 1);
  ExtentLog el;
  expect_failure(nbd_block_status(hh, 512, 0, nbd_extent_callback{extent32_cb, &el, nullptr}, 0),
                 ENOTSUP, "server does not support structured replies");
}

// ---- server errors --------------------------------------------------------------------------

TEST(CommandErrors, ServerErrorsFailTheCommandNotTheHandle) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"--filter=error", "memory", "1M", "error-rate=100%"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  char buf[512] = {};
  expect_failure(nbd_pread(hh, buf, 512, 0, 0), EIO, "nbd_pread: read: command failed");
  EXPECT_EQ(last_error(), "nbd_pread: read: command failed: Input/output error");
  expect_failure(nbd_pwrite(hh, buf, 512, 0, 0), EIO, "nbd_pwrite: write: command failed");
  expect_failure(nbd_trim(hh, 512, 0, 0), EIO, "nbd_trim: trim: command failed");
  expect_failure(nbd_zero(hh, 512, 0, 0), EIO, "nbd_zero: write-zeroes: command failed");
  expect_failure(nbd_cache(hh, 512, 0, 0), EIO, "nbd_cache: cache: command failed");

  CallbackLog cb;
  int64_t c = nbd_aio_pread(hh, buf, 512, 0, completion_of(cb), 0);
  ASSERT_GT(c, 0);
  EXPECT_EQ(wait_cookie(hh, c), -1);
  EXPECT_EQ(nbd_get_errno(), EIO);
  EXPECT_EQ(last_error(), "nbd_aio_command_completed: read: command failed: Input/output error");
  EXPECT_EQ(cb.calls, 1);
  EXPECT_EQ(cb.last_error, EIO);
  EXPECT_EQ(cb.frees, 1);
  EXPECT_EQ(nbd_aio_is_ready(hh), 1);
}

TEST(CommandErrors, ServerDeathFailsWaitingCalls) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"--filter=delay", "memory", "1M", "rdelay=2"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    server.kill_now();
  });
  std::vector<char> buf(512, 'x');
  EXPECT_EQ(nbd_pread(h.get(), buf.data(), buf.size(), 0, 0), -1);
  killer.join();
  EXPECT_EQ(nbd_get_errno(), ENOTCONN) << last_error();
  // libnbd calls a hang-up with commands outstanding closed, not dead; either way the
  // handle is finished.
  EXPECT_TRUE(nbd_aio_is_dead(h.get()) == 1 || nbd_aio_is_closed(h.get()) == 1);
  EXPECT_EQ(nbd_aio_in_flight(h.get()), 0);
  expect_failure(nbd_pread(h.get(), buf.data(), buf.size(), 0, 0), EINVAL, "invalid state");
  expect_failure(nbd_aio_notify_read(h.get()), EINVAL, "external event 0 is invalid in state");
  expect_failure(nbd_aio_get_fd(h.get()), EINVAL, "connection is not in a connected state");
  expect_failure(nbd_poll(h.get(), 0), EINVAL, "nothing to poll for in state");
}

// ---- callbacks and completion --------------------------------------------------------------

TEST(CommandCompletion, CallbackRetiresWhenItReturnsOne) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "1M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  char buf[512];

  CallbackLog retire;
  retire.ret = 1;
  int64_t c1 = nbd_aio_pread(hh, buf, 512, 0, completion_of(retire), 0);
  ASSERT_GT(c1, 0);
  while (retire.calls == 0) ASSERT_NE(nbd_poll(hh, 5000), -1) << last_error();
  EXPECT_EQ(retire.last_error, 0);
  EXPECT_EQ(retire.frees, 1);
  // Already retired: unknown now.
  EXPECT_EQ(nbd_aio_command_completed(hh, uint64_t(c1)), 0);
  EXPECT_EQ(nbd_aio_in_flight(hh), 0);

  CallbackLog keep;
  int64_t c2 = nbd_aio_pread(hh, buf, 512, 0, completion_of(keep), 0);
  ASSERT_GT(c2, 0);
  while (keep.calls == 0) ASSERT_NE(nbd_poll(hh, 5000), -1);
  // As in libnbd 1.22: not freed when the callback ran, only when the command is retired.
  EXPECT_EQ(keep.frees, 0);
  EXPECT_EQ(nbd_aio_peek_command_completed(hh), c2);
  EXPECT_EQ(nbd_aio_command_completed(hh, uint64_t(c2)), 1);
  EXPECT_EQ(keep.calls, 1);
  EXPECT_EQ(keep.frees, 1);

  // A completed command never retired is freed by nbd_close.
  CallbackLog unretired;
  int64_t c3 = nbd_aio_pread(hh, buf, 512, 0, completion_of(unretired), 0);
  ASSERT_GT(c3, 0);
  while (unretired.calls == 0) ASSERT_NE(nbd_poll(hh, 5000), -1);
  EXPECT_EQ(unretired.frees, 0);
  h.reset();
  EXPECT_EQ(unretired.frees, 1);
}

TEST(CommandCompletion, ClosuresAreFreedOnceWhenTheCallFailsEarly) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "1M"});
  START(server);
  HandlePtr h = connect_to(
      server, [](nbd_handle *hh) { nbd_add_meta_context(hh, LIBNBD_CONTEXT_BASE_ALLOCATION); });
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  char buf[512];
  CallbackLog completion, chunk_frees, extent_frees;
  auto chunk_free = [](void *p) { static_cast<CallbackLog *>(p)->frees++; };
  // Zero length fails in strict mode before anything is queued.
  EXPECT_EQ(nbd_aio_pread_structured(hh, buf, 0, 0,
                                     nbd_chunk_callback{chunk_cb, &chunk_frees, chunk_free},
                                     completion_of(completion), 0),
            -1);
  EXPECT_EQ(
      nbd_aio_block_status(hh, 0, 0, nbd_extent_callback{extent32_cb, &extent_frees, chunk_free},
                           NBD_NULL_COMPLETION, 0),
      -1);
  // Refused by the entry point already.
  EXPECT_EQ(nbd_aio_flush(hh, completion_of(completion), LIBNBD_CMD_FLAG_FUA), -1);
  EXPECT_EQ(completion.calls, 0);
  EXPECT_EQ(completion.frees, 2);
  EXPECT_EQ(chunk_frees.frees, 1);
  EXPECT_EQ(extent_frees.frees, 1);
  EXPECT_EQ(chunk_frees.calls, 0);

  // Blocking calls free their callback once too, success or failure.
  CallbackLog ok_frees;
  auto ok_chunk = [](void *, const void *, size_t, uint64_t, unsigned, int *) { return 0; };
  EXPECT_EQ(
      nbd_pread_structured(hh, buf, 512, 0, nbd_chunk_callback{ok_chunk, &ok_frees, chunk_free}, 0),
      0);
  EXPECT_EQ(nbd_pread_structured(hh, buf, 512, kMiB,
                                 nbd_chunk_callback{ok_chunk, &ok_frees, chunk_free}, 0),
            -1);
  EXPECT_EQ(ok_frees.frees, 2);
}

TEST(CommandCompletion, PeekAndInFlight) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"--filter=delay", "memory", "1M", "rdelay=300ms"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  EXPECT_EQ(nbd_aio_in_flight(hh), 0);
  expect_failure(int(nbd_aio_peek_command_completed(hh)), EINVAL, "no commands are in flight");
  std::vector<std::vector<char>> bufs(3, std::vector<char>(512));
  std::vector<int64_t> cookies;
  for (auto &b : bufs)
    cookies.push_back(nbd_aio_pread(hh, b.data(), 512, 0, NBD_NULL_COMPLETION, 0));
  EXPECT_EQ(nbd_aio_in_flight(hh), 3);
  EXPECT_EQ(nbd_aio_peek_command_completed(hh), 0);
  EXPECT_EQ(nbd_aio_command_completed(hh, uint64_t(cookies[1])), 0);
  EXPECT_EQ(nbd_aio_get_direction(hh) & LIBNBD_AIO_DIRECTION_READ,
            unsigned(LIBNBD_AIO_DIRECTION_READ));
  EXPECT_GE(nbd_aio_get_fd(hh), 0);

  std::vector<int64_t> collected;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (collected.size() < cookies.size() && std::chrono::steady_clock::now() < deadline) {
    int64_t c = nbd_aio_peek_command_completed(hh);
    ASSERT_NE(c, -1) << last_error();
    if (c == 0) {
      ASSERT_NE(nbd_poll(hh, 1000), -1) << last_error();
      continue;
    }
    EXPECT_EQ(nbd_aio_command_completed(hh, uint64_t(c)), 1);
    collected.push_back(c);
  }
  std::sort(collected.begin(), collected.end());
  EXPECT_EQ(collected, cookies);
  EXPECT_EQ(nbd_aio_in_flight(hh), 0);
  // Idle: a poll times out, and a write notification is refused, the handle unharmed.
  EXPECT_EQ(nbd_poll(hh, 10), 0);
  expect_failure(nbd_aio_notify_write(hh), EINVAL, "external event 1 is invalid in state READY");
  EXPECT_EQ(nbd_aio_is_ready(hh), 1);
}

TEST(CommandCompletion, Poll2WakesOnTheExtraDescriptor) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "1M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  int efd = eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  EXPECT_EQ(nbd_poll2(h.get(), efd, 10), 0);
  uint64_t one = 1;
  ASSERT_EQ(write(efd, &one, sizeof one), ssize_t(sizeof one));
  EXPECT_EQ(nbd_poll2(h.get(), efd, 5000), 1);
  EXPECT_EQ(nbd_poll2(h.get(), -1, 10), 0);
  close(efd);
}

TEST(CommandCompletion, AioNotifyDrivesTheHandleFromAMainLoop) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "1M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  auto data = pattern(4 * 65536, 5);
  int64_t c = nbd_aio_pwrite(hh, data.data(), data.size(), 0, NBD_NULL_COMPLETION, 0);
  ASSERT_GT(c, 0);
  int fd = nbd_aio_get_fd(hh);
  ASSERT_GE(fd, 0);
  int r;
  while ((r = nbd_aio_command_completed(hh, uint64_t(c))) == 0) {
    unsigned dir = nbd_aio_get_direction(hh);
    struct pollfd pfd = {fd,
                         short(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                               ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)),
                         0};
    ASSERT_GT(::poll(&pfd, 1, 5000), 0);
    if (pfd.revents & (POLLIN | POLLHUP)) {
      ASSERT_EQ(nbd_aio_notify_read(hh), 0) << last_error();
    } else if (pfd.revents & POLLOUT) {
      ASSERT_EQ(nbd_aio_notify_write(hh), 0) << last_error();
    }
  }
  EXPECT_EQ(r, 1);
}

// ---- disconnecting ----------------------------------------------------------------------------

TEST(CommandShutdown, ShutdownClosesTheHandle) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "1M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  char buf[512] = {};
  ASSERT_EQ(nbd_pwrite(hh, buf, 512, 0, 0), 0);
  ASSERT_EQ(nbd_shutdown(hh, 0), 0) << last_error();
  EXPECT_EQ(nbd_aio_is_closed(hh), 1);
  EXPECT_EQ(nbd_aio_in_flight(hh), 0);
  EXPECT_EQ(nbd_aio_get_direction(hh), 0u);
  expect_failure(nbd_aio_get_fd(hh), EINVAL, "connection is not in a connected state");
  expect_failure(nbd_poll(hh, 0), EINVAL, "nothing to poll for in state CLOSED");
  expect_failure(nbd_aio_notify_read(hh), EINVAL, "external event 0 is invalid in state CLOSED");
  expect_failure(nbd_aio_notify_write(hh), EINVAL, "external event 1 is invalid in state CLOSED");
  expect_failure(nbd_pread(hh, buf, 512, 0, 0), EINVAL, "invalid state");
  expect_failure(nbd_shutdown(hh, 0), EINVAL, "invalid state");
}

TEST(CommandShutdown, AioDisconnectWaitsForTheServerToClose) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"--filter=delay", "memory", "1M", "rdelay=200ms"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  char buf[512];
  int64_t c = nbd_aio_pread(hh, buf, 512, 0, NBD_NULL_COMPLETION, 0);
  ASSERT_GT(c, 0);
  ASSERT_EQ(nbd_aio_disconnect(hh, 0), 0) << last_error();
  expect_failure(nbd_aio_disconnect(hh, 0), EINVAL,
                 "cannot request more commands after NBD_CMD_DISC");
  expect_failure(int(nbd_aio_pread(hh, buf, 512, 0, NBD_NULL_COMPLETION, 0)), EINVAL,
                 "cannot request more commands after NBD_CMD_DISC");
  // As in libnbd, the disconnect counts as in flight until the connection closes.
  EXPECT_EQ(nbd_aio_in_flight(hh), 2);
  ASSERT_EQ(nbd_shutdown(hh, 0), 0) << last_error();
  EXPECT_EQ(nbd_aio_is_closed(hh), 1);
  EXPECT_EQ(nbd_aio_in_flight(hh), 0);
  // The read was answered (or failed by the server) before it closed; either way it is done.
  int r = nbd_aio_command_completed(hh, uint64_t(c));
  EXPECT_NE(r, 0);
}

TEST(CommandShutdown, AbandonPendingFailsUnsentRequests) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"--filter=delay", "memory", "1G", "wdelay=200ms"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  nbd_handle *hh = h.get();
  // Far more than the socket buffers hold, so most requests are still queued.
  const std::vector<uint8_t> data(4 * kMiB, 0x5a);
  constexpr int kCount = 48;
  std::vector<CallbackLog> logs(kCount);
  for (int i = 0; i < kCount; i++)
    ASSERT_GT(nbd_aio_pwrite(hh, data.data(), data.size(), uint64_t(i) * data.size(),
                             completion_of(logs[i]), 0),
              0)
        << last_error();
  ASSERT_EQ(nbd_shutdown(hh, LIBNBD_SHUTDOWN_ABANDON_PENDING), 0) << last_error();
  EXPECT_EQ(nbd_aio_is_closed(hh), 1);
  int abandoned = 0;
  for (auto &l : logs) {
    EXPECT_EQ(l.calls, 1);
    EXPECT_EQ(l.frees, 0);  // completed, not retired: freed by nbd_close, as in libnbd
    if (l.last_error == ENOTCONN) abandoned++;
  }
  EXPECT_GT(abandoned, 0);
  h.reset();
  for (auto &l : logs) EXPECT_EQ(l.frees, 1);
}

// ---- concurrency ------------------------------------------------------------------------------

TEST(CommandThreads, EightThreadsDoSyncReadsOnOneHandle) {
  SKIP_WITHOUT_NBDKIT();
  NbdkitServer server({"memory", "64M"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  constexpr size_t kSize = 16 * kMiB;
  auto data = pattern(kSize, 42);
  ASSERT_EQ(nbd_pwrite(h.get(), data.data(), kSize, 0, 0), 0);
  constexpr int kThreads = 8;
  constexpr int kReads = 200;
  std::atomic<int> failures{0}, mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      uint32_t x = uint32_t(t) * 7919u + 1;
      std::vector<uint8_t> buf(256 * 1024);
      for (int i = 0; i < kReads; i++) {
        x = x * 1103515245u + 12345u;
        size_t len = 1 + (x >> 8) % buf.size();
        x = x * 1103515245u + 12345u;
        uint64_t off = (uint64_t(x) << 4) % (kSize - len);
        if (nbd_pread(h.get(), buf.data(), len, off, 0) != 0) {
          failures++;
          continue;
        }
        if (memcmp(buf.data(), data.data() + off, len) != 0) mismatches++;
      }
    });
  }
  for (auto &th : threads) th.join();
  EXPECT_EQ(failures, 0) << last_error();
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(nbd_aio_in_flight(h.get()), 0);
}

TEST(CommandThreads, SyncCallsFromThreadsOverlap) {
  SKIP_WITHOUT_NBDKIT();
  // Every read takes 0.5s at the server; one after the other, 8 would take 4s.
  NbdkitServer server({"--filter=delay", "memory", "1M", "rdelay=500ms"});
  START(server);
  HandlePtr h = connect_to(server);
  ASSERT_TRUE(h);
  constexpr int kThreads = 8;
  std::atomic<int> failures{0};
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&] {
      char buf[4096];
      if (nbd_pread(h.get(), buf, sizeof buf, 0, 0) != 0) failures++;
    });
  }
  for (auto &th : threads) th.join();
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(failures, 0);
  EXPECT_LT(elapsed, std::chrono::milliseconds(2500));
}

}  // namespace
