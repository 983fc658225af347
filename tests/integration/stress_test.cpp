// SPDX-License-Identifier: LGPL-2.1-or-later
// Many threads, one handle: random sync and aio commands checked against per-thread models.
#include <libnbd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

class StressTest : public IntegrationTest {};

int record_extents(void *user_data, const char *context, uint64_t offset, uint32_t *entries,
                   size_t nr_entries, int *error) {
  (void)error;
  if (std::strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0) return 0;
  auto *out = static_cast<std::vector<Extent> *>(user_data);
  for (size_t i = 0; i + 1 < nr_entries; i += 2) {
    out->push_back({offset, entries[i], entries[i + 1]});
    offset += entries[i];
  }
  return 0;
}

// Six threads issue synchronous calls and two issue aio calls and wait for them with
// nbd_poll (so several threads poll at once), all on one handle, against a server that
// delays each reply by a random 0..5 ms.  Each thread owns a 16 MiB region and keeps a
// model of it; every read and every block status answer is checked against the model.
TEST_F(StressTest, ManyThreadsMixedCallsOnOneHandle) {
  constexpr int kSyncThreads = 6, kAioThreads = 2, kThreads = kSyncThreads + kAioThreads;
  constexpr uint64_t kRegion = 16 * MiB;
  // Each thread runs for kDuration and at least kMinOps commands (sanitizer builds are
  // slow), but never past kCap.
  const auto kDuration = std::chrono::seconds(4);
  const auto kCap = std::chrono::seconds(90);
  constexpr uint64_t kMinOps = 100;

  TestServer srv;
  START_OR_SKIP(srv.start({"--size", "256M", "--jitter-ms", "5"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_add_meta_context(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION));
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  nbd_handle *p = h.get();

  std::atomic<bool> stop{false};
  std::vector<std::string> failures(kThreads);
  std::vector<uint64_t> ops(kThreads, 0);
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + kDuration, cap = start + kCap;

  auto worker = [&](int t) {
    const bool use_aio = t >= kSyncThreads;
    const uint64_t base = uint64_t(t) * kRegion;
    std::mt19937_64 rng(uint64_t(t) * 7919 + 1);
    std::vector<uint8_t> model(kRegion, 0), buf;
    auto fail = [&](const std::string &what) {
      failures[t] = "thread " + std::to_string(t) + " op " + std::to_string(ops[t]) + ": " + what;
      stop = true;
    };
    // Runs an aio command to completion, or returns the sync call's result.
    auto finish = [&](int64_t cookie) -> int {
      if (cookie == -1) return -1;
      int r = wait_for_command(p, cookie);
      return r == 1 ? 0 : -1;
    };
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      if (stop || (now >= end && ops[t] >= kMinOps)) break;
      if (now >= cap) return fail("only " + std::to_string(ops[t]) + " commands before the time cap");
      ++ops[t];
      uint64_t len = 1 + rng() % (256 * KiB);
      uint64_t off = rng() % (kRegion - len);
      int r = 0;
      switch (rng() % 10) {
        case 0: case 1: case 2: case 3: {  // write
          buf.resize(len);
          fill_pattern(buf.data(), len, rng());
          uint32_t flags = rng() % 4 == 0 ? LIBNBD_CMD_FLAG_FUA : 0;
          r = use_aio ? finish(nbd_aio_pwrite(p, buf.data(), len, base + off, NBD_NULL_COMPLETION, flags))
                      : nbd_pwrite(p, buf.data(), len, base + off, flags);
          if (r == -1) return fail("pwrite: " + last_error());
          std::memcpy(model.data() + off, buf.data(), len);
          break;
        }
        case 4: case 5: {  // read
          buf.assign(len, 0xee);
          r = use_aio ? finish(nbd_aio_pread(p, buf.data(), len, base + off, NBD_NULL_COMPLETION, 0))
                      : nbd_pread(p, buf.data(), len, base + off, 0);
          if (r == -1) return fail("pread: " + last_error());
          if (std::memcmp(buf.data(), model.data() + off, len) != 0)
            return fail("pread of " + std::to_string(len) + " at +" + std::to_string(off) + " differs from the model");
          break;
        }
        case 6:  // zero
          r = use_aio ? finish(nbd_aio_zero(p, len, base + off, NBD_NULL_COMPLETION, 0))
                      : nbd_zero(p, len, base + off, 0);
          if (r == -1) return fail("zero: " + last_error());
          std::memset(model.data() + off, 0, len);
          break;
        case 7:  // trim (the test server zeroes trimmed ranges)
          r = use_aio ? finish(nbd_aio_trim(p, len, base + off, NBD_NULL_COMPLETION, 0))
                      : nbd_trim(p, len, base + off, 0);
          if (r == -1) return fail("trim: " + last_error());
          std::memset(model.data() + off, 0, len);
          break;
        case 8: {  // block status: whatever is reported as zero must be zero
          std::vector<Extent> extents;
          nbd_extent_callback cb{};
          cb.callback = record_extents;
          cb.user_data = &extents;
          r = use_aio ? finish(nbd_aio_block_status(p, len, base + off, cb, NBD_NULL_COMPLETION, 0))
                      : nbd_block_status(p, len, base + off, cb, 0);
          if (r == -1) return fail("block_status: " + last_error());
          if (extents.empty() || extents[0].offset != base + off) return fail("block status did not start at the offset");
          for (const auto &e : extents) {
            if (!(e.flags & LIBNBD_STATE_ZERO)) continue;
            uint64_t s = e.offset - base, n = std::min(e.length, off + len - s);
            if (!all_zero(model.data() + s, n))
              return fail("block status calls [" + std::to_string(s) + ", +" + std::to_string(n) + ") zero, it is not");
          }
          break;
        }
        default:  // flush or cache
          if (rng() % 2) r = use_aio ? finish(nbd_aio_flush(p, NBD_NULL_COMPLETION, 0)) : nbd_flush(p, 0);
          else r = use_aio ? finish(nbd_aio_cache(p, len, base + off, NBD_NULL_COMPLETION, 0))
                           : nbd_cache(p, len, base + off, 0);
          if (r == -1) return fail("flush/cache: " + last_error());
      }
    }
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto &t : threads) t.join();

  uint64_t total = 0;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], "");
    total += ops[t];
  }
  std::printf("[ stress   ] %llu commands from %d threads in %.1f s\n", (unsigned long long)total, kThreads,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  EXPECT_EQ(nbd_aio_in_flight(p), 0);
  EXPECT_EQ(nbd_aio_is_ready(p), 1);
  NBD_EXPECT_OK(nbd_shutdown(p, 0));
}

}  // namespace
}  // namespace dnbd_test
