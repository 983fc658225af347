// SPDX-License-Identifier: LGPL-2.1-or-later
// Many threads, one handle: random sync and aio commands checked against per-thread models.
#include <libnbd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
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

struct StressPlan {
  int sync_threads;
  int aio_threads;
  // true: two more threads drive the handle (POLLIN + nbd_aio_notify_read, POLLOUT +
  // nbd_aio_notify_write) and aio threads only wait for their completion callbacks;
  // false: aio threads wait with nbd_aio_command_completed + nbd_poll themselves.
  bool duplex_driver;
  uint64_t min_total;   // commands, whatever the duration
  uint64_t max_len;     // request sizes 1 .. max_len
};

// An aio command's outcome, set by its completion callback (which retires it).
struct Outcome {
  std::atomic<bool> done{false};
  int error = 0;
};

int record_outcome(void *user_data, int *error) {
  auto *o = static_cast<Outcome *>(user_data);
  o->error = *error;
  o->done.store(true, std::memory_order_release);
  return 1;
}

// Threads of synchronous calls and threads of aio calls on one handle, against a server
// that delays each reply by a random 0..5 ms.  Each thread owns a 16 MiB region and keeps
// a model of it; every read and every block status answer is checked against the model.
void run_stress(const StressPlan &plan) {
  const int kSyncThreads = plan.sync_threads, kThreads = plan.sync_threads + plan.aio_threads;
  constexpr uint64_t kRegion = 16 * MiB;
  // Each thread runs for kDuration and at least its share of min_total commands
  // (sanitizer builds are slow), but never past kCap.
  const auto kDuration = std::chrono::seconds(4);
  const auto kCap = std::chrono::seconds(240);
  const uint64_t kMinOps = std::max<uint64_t>(100, plan.min_total / uint64_t(kThreads) + 1);

  TestServer srv;
  START_OR_SKIP(srv.start({"--size", std::to_string(uint64_t(kThreads) * kRegion / MiB) + "M",
                           "--jitter-ms", "5"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_add_meta_context(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION));
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  nbd_handle *p = h.get();
  std::unique_ptr<DuplexDriver> driver;
  if (plan.duplex_driver) driver = std::make_unique<DuplexDriver>(p);

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
    // The completion an aio command carries, and waiting for it: with the driver, the
    // callback's flag; without, the thread polls the handle itself.
    Outcome outcome;
    std::string aio_note;  // why an aio command failed, in driver mode
    auto err_text = [&] { return aio_note.empty() ? last_error() : aio_note; };
    auto completion = [&]() -> nbd_completion_callback {
      if (!plan.duplex_driver) return NBD_NULL_COMPLETION;
      outcome.done.store(false, std::memory_order_relaxed);
      outcome.error = 0;
      return nbd_completion_callback{record_outcome, &outcome, nullptr};
    };
    auto finish = [&](int64_t cookie) -> int {
      if (cookie == -1) return -1;
      if (!plan.duplex_driver) return wait_for_command(p, cookie) == 1 ? 0 : -1;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (!outcome.done.load(std::memory_order_acquire)) {
        if (std::chrono::steady_clock::now() > deadline) {
          aio_note = "completion callback never came";
          return -1;
        }
        std::this_thread::yield();
      }
      if (outcome.error != 0) aio_note = std::string("command failed: ") + std::strerror(outcome.error);
      return outcome.error == 0 ? 0 : -1;
    };
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      if (stop || (now >= end && ops[t] >= kMinOps)) break;
      if (now >= cap) return fail("only " + std::to_string(ops[t]) + " commands before the time cap");
      ++ops[t];
      uint64_t len = 1 + rng() % plan.max_len;
      uint64_t off = rng() % (kRegion - len);
      int r = 0;
      switch (rng() % 10) {
        case 0: case 1: case 2: case 3: {  // write
          buf.resize(len);
          fill_pattern(buf.data(), len, rng());
          uint32_t flags = rng() % 4 == 0 ? LIBNBD_CMD_FLAG_FUA : 0;
          r = use_aio ? finish(nbd_aio_pwrite(p, buf.data(), len, base + off, completion(), flags))
                      : nbd_pwrite(p, buf.data(), len, base + off, flags);
          if (r == -1) return fail("pwrite: " + err_text());
          std::memcpy(model.data() + off, buf.data(), len);
          break;
        }
        case 4: case 5: {  // read
          buf.assign(len, 0xee);
          r = use_aio ? finish(nbd_aio_pread(p, buf.data(), len, base + off, completion(), 0))
                      : nbd_pread(p, buf.data(), len, base + off, 0);
          if (r == -1) return fail("pread: " + err_text());
          if (std::memcmp(buf.data(), model.data() + off, len) != 0)
            return fail("pread of " + std::to_string(len) + " at +" + std::to_string(off) + " differs from the model");
          break;
        }
        case 6:  // zero
          r = use_aio ? finish(nbd_aio_zero(p, len, base + off, completion(), 0))
                      : nbd_zero(p, len, base + off, 0);
          if (r == -1) return fail("zero: " + err_text());
          std::memset(model.data() + off, 0, len);
          break;
        case 7:  // trim (the test server zeroes trimmed ranges)
          r = use_aio ? finish(nbd_aio_trim(p, len, base + off, completion(), 0))
                      : nbd_trim(p, len, base + off, 0);
          if (r == -1) return fail("trim: " + err_text());
          std::memset(model.data() + off, 0, len);
          break;
        case 8: {  // block status: whatever is reported as zero must be zero
          std::vector<Extent> extents;
          nbd_extent_callback cb{};
          cb.callback = record_extents;
          cb.user_data = &extents;
          r = use_aio ? finish(nbd_aio_block_status(p, len, base + off, cb, completion(), 0))
                      : nbd_block_status(p, len, base + off, cb, 0);
          if (r == -1) return fail("block_status: " + err_text());
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
          if (rng() % 2) r = use_aio ? finish(nbd_aio_flush(p, completion(), 0)) : nbd_flush(p, 0);
          else r = use_aio ? finish(nbd_aio_cache(p, len, base + off, completion(), 0))
                           : nbd_cache(p, len, base + off, 0);
          if (r == -1) return fail("flush/cache: " + err_text());
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
  if (driver) {
    driver->stop();
    EXPECT_EQ(driver->error(), "");
  }
  std::printf("[ stress   ] %llu commands from %d threads%s in %.1f s\n", (unsigned long long)total,
              kThreads, plan.duplex_driver ? " (+2 driving notify_read/notify_write)" : "",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  EXPECT_GE(total, plan.min_total);
  EXPECT_EQ(nbd_aio_in_flight(p), 0);
  EXPECT_EQ(nbd_aio_is_ready(p), 1);
  NBD_EXPECT_OK(nbd_shutdown(p, 0));
}

// Six threads of synchronous calls and two of aio calls that poll the handle themselves
// (nbd_poll), so several threads poll at once.
TEST_F(StressTest, ManyThreadsMixedCallsOnOneHandle) {
  run_stress({.sync_threads = 6, .aio_threads = 2, .duplex_driver = false, .min_total = 800,
              .max_len = 256 * KiB});
}

// Four threads issuing aio commands while two threads drive the handle (one POLLIN +
// notify_read, one POLLOUT + notify_write), plus eight threads of synchronous calls: tens
// of thousands of commands, every byte checked.
TEST_F(StressTest, AioIssuersTwoDriversAndSyncThreads) {
  run_stress({.sync_threads = 8, .aio_threads = 4, .duplex_driver = true, .min_total = 20000,
              .max_len = 64 * KiB});
}

}  // namespace
}  // namespace dnbd_test
