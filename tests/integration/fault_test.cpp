// SPDX-License-Identifier: LGPL-2.1-or-later
// Faults with real servers: random EIO (error filter), slow replies (delay filter), a server SIGKILLed mid-flight.
#include <fcntl.h>
#include <libnbd.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;
constexpr size_t kBlock = 64 * KiB;

class FaultTest : public IntegrationTest {};

struct Done {
  std::atomic<int> calls{0};
  std::atomic<int> error{-1};
  std::atomic<int> frees{0};
};

nbd_completion_callback completion_of(Done &d) {
  return nbd_completion_callback{
      [](void *ud, int *error) {
        auto *k = static_cast<Done *>(ud);
        k->error.store(*error);
        k->calls++;
        return 0;
      },
      &d, [](void *ud) { static_cast<Done *>(ud)->frees++; }};
}

// Waits (without driving the handle: another thread does) until every command has
// called its completion, or the deadline passes.
bool wait_all_called(const std::vector<Done> &done, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    bool all = true;
    for (const Done &d : done) all = all && d.calls.load() > 0;
    if (all) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// ---------------------------------------------------------------------------------------
// Random EIO on about 10% of reads and writes. Every command completes with success or
// EIO (nothing else), the connection survives, and after the injection stops every
// block reads back as the last write that was acknowledged for it (the filter fails a
// request before the plugin sees it, so a failed write changes nothing).
TEST_F(FaultTest, ErrorFilterRandomEioKeepsDataConsistent) {
  NbdkitServer srv;
  const std::string inject = srv.dir().file("inject");
  START_OR_SKIP(srv.start({"--filter=error", "memory", "64M", "error=EIO", "error-rate=10%",
                           "error-file=" + inject}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  nbd_handle *p = h.get();
  NBD_ASSERT_OK(nbd_connect_unix(p, srv.socket_path().c_str()));
  std::ofstream(inject).put('x');

  // Blocks [0, 32) for the aio thread, [32, 48) and [48, 64) for the two sync threads.
  constexpr int kBlocks = 64;
  std::vector<uint64_t> model(kBlocks, 0);  // 0: never written (reads as zeroes)
  std::atomic<int> ok{0}, eio{0}, other{0};
  auto check_result = [&](int r, const char *what) {
    if (r != -1) {
      ok++;
      return true;
    }
    if (nbd_get_errno() == EIO) {
      eio++;
    } else {
      other++;
      ADD_FAILURE() << what << ": unexpected error " << last_error();
    }
    return false;
  };
  auto verify = [&](const std::vector<uint8_t> &buf, int block) {
    uint64_t seed = model[size_t(block)];
    if (seed == 0)
      EXPECT_TRUE(all_zero(buf.data(), buf.size())) << "block " << block;
    else
      EXPECT_EQ(pattern_mismatch(buf.data(), buf.size(), seed), -1) << "block " << block;
  };

  auto sync_worker = [&](int first, uint32_t rng_seed) {
    std::mt19937 rng(rng_seed);
    std::vector<uint8_t> buf(kBlock);
    for (int i = 0; i < 150; i++) {
      int block = first + int(rng() % 16);
      switch (rng() % 3) {
        case 0: {
          uint64_t seed = (uint64_t(rng_seed) << 32) | uint64_t(i + 1);
          fill_pattern(buf.data(), buf.size(), seed);
          if (check_result(nbd_pwrite(p, buf.data(), buf.size(), uint64_t(block) * kBlock, 0), "pwrite"))
            model[size_t(block)] = seed;
          break;
        }
        case 1:
          if (check_result(nbd_pread(p, buf.data(), buf.size(), uint64_t(block) * kBlock, 0), "pread"))
            verify(buf, block);
          break;
        default:
          check_result(nbd_flush(p, 0), "flush");
          break;
      }
    }
  };
  std::thread t1(sync_worker, 32, 1), t2(sync_worker, 48, 2);

  // The aio side: rounds of 32 writes in flight at once, then 32 reads of them.
  std::vector<std::vector<uint8_t>> bufs(32, std::vector<uint8_t>(kBlock));
  for (int round = 0; round < 5; round++) {
    std::vector<Done> done(32);
    std::vector<int64_t> cookies(32);
    std::vector<uint64_t> seeds(32);
    for (int b = 0; b < 32; b++) {
      seeds[size_t(b)] = 1000 + uint64_t(round) * 100 + uint64_t(b);
      fill_pattern(bufs[size_t(b)].data(), kBlock, seeds[size_t(b)]);
      cookies[size_t(b)] = nbd_aio_pwrite(p, bufs[size_t(b)].data(), kBlock, uint64_t(b) * kBlock,
                                          completion_of(done[size_t(b)]), 0);
      ASSERT_NE(cookies[size_t(b)], -1) << last_error();
    }
    for (int b = 0; b < 32; b++) {
      if (check_result(wait_for_command(p, cookies[size_t(b)]), "aio_pwrite"))
        model[size_t(b)] = seeds[size_t(b)];
      EXPECT_EQ(done[size_t(b)].calls.load(), 1);
    }
    std::vector<Done> rdone(32);
    for (int b = 0; b < 32; b++) {
      cookies[size_t(b)] = nbd_aio_pread(p, bufs[size_t(b)].data(), kBlock, uint64_t(b) * kBlock,
                                         completion_of(rdone[size_t(b)]), 0);
      ASSERT_NE(cookies[size_t(b)], -1) << last_error();
    }
    for (int b = 0; b < 32; b++)
      if (check_result(wait_for_command(p, cookies[size_t(b)]), "aio_pread")) verify(bufs[size_t(b)], b);
    for (auto &d : done) EXPECT_EQ(d.frees.load(), 1);
    for (auto &d : rdone) EXPECT_EQ(d.frees.load(), 1);
  }
  t1.join();
  t2.join();

  EXPECT_EQ(nbd_aio_is_ready(p), 1) << "injected errors must not break the connection";
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(eio.load(), 10) << "the error filter injected (almost) nothing";
  EXPECT_GT(ok.load(), 300);
  std::printf("[ faults   ] %d commands succeeded, %d failed with EIO\n", ok.load(), eio.load());

  // Injection off: the whole disk is as the acknowledged writes left it.
  std::remove(inject.c_str());
  std::vector<uint8_t> buf(kBlock);
  for (int b = 0; b < kBlocks; b++) {
    NBD_ASSERT_OK(nbd_pread(p, buf.data(), buf.size(), uint64_t(b) * kBlock, 0));
    verify(buf, b);
  }
}

// ---------------------------------------------------------------------------------------
// Slow server: 64 commands in flight, driven by a notify_read thread and a
// notify_write thread, plus two threads of blocking calls on the same handle. Every
// command completes, the data is right, and the whole is far quicker than serial.
TEST_F(FaultTest, DelayFilterManyInFlight) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--filter=delay", "memory", "64M", "delay-read=50ms", "delay-write=50ms"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  nbd_handle *p = h.get();
  NBD_ASSERT_OK(nbd_connect_unix(p, srv.socket_path().c_str()));

  auto t0 = std::chrono::steady_clock::now();
  DuplexDriver driver(p);
  std::atomic<int> sync_failures{0};
  auto sync_worker = [&](int first) {
    std::vector<uint8_t> buf(kBlock);
    for (int i = 0; i < 10; i++) {
      uint64_t off = uint64_t(first + i) * kBlock;
      fill_pattern(buf.data(), buf.size(), off + 7);
      if (nbd_pwrite(p, buf.data(), buf.size(), off, 0) == -1) sync_failures++;
      std::fill(buf.begin(), buf.end(), 0);
      if (nbd_pread(p, buf.data(), buf.size(), off, 0) == -1) sync_failures++;
      if (pattern_mismatch(buf.data(), buf.size(), off + 7) != -1) sync_failures++;
    }
  };
  std::thread s1(sync_worker, 100), s2(sync_worker, 200);

  constexpr int n = 64;
  std::vector<std::vector<uint8_t>> bufs(n, std::vector<uint8_t>(kBlock));
  std::vector<Done> wdone(n), rdone(n);
  std::vector<int64_t> cookies;
  for (int i = 0; i < n; i++) {
    fill_pattern(bufs[size_t(i)].data(), kBlock, uint64_t(i) + 500);
    int64_t c = nbd_aio_pwrite(p, bufs[size_t(i)].data(), kBlock, uint64_t(i) * kBlock,
                               completion_of(wdone[size_t(i)]), 0);
    ASSERT_NE(c, -1) << last_error();
    cookies.push_back(c);
  }
  ASSERT_TRUE(wait_all_called(wdone, std::chrono::seconds(30))) << driver.error();
  for (int64_t c : cookies) EXPECT_EQ(nbd_aio_command_completed(p, uint64_t(c)), 1) << last_error();
  cookies.clear();
  for (int i = 0; i < n; i++) {
    std::fill(bufs[size_t(i)].begin(), bufs[size_t(i)].end(), 0);
    int64_t c = nbd_aio_pread(p, bufs[size_t(i)].data(), kBlock, uint64_t(i) * kBlock,
                              completion_of(rdone[size_t(i)]), 0);
    ASSERT_NE(c, -1) << last_error();
    cookies.push_back(c);
  }
  ASSERT_TRUE(wait_all_called(rdone, std::chrono::seconds(30))) << driver.error();
  for (int64_t c : cookies) EXPECT_EQ(nbd_aio_command_completed(p, uint64_t(c)), 1) << last_error();
  for (int i = 0; i < n; i++)
    EXPECT_EQ(pattern_mismatch(bufs[size_t(i)].data(), kBlock, uint64_t(i) + 500), -1) << "block " << i;
  s1.join();
  s2.join();
  driver.stop();
  EXPECT_EQ(driver.error(), "");
  EXPECT_EQ(sync_failures.load(), 0);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Serially: 128 aio + 40 sync commands of 50 ms each, 8.4 s.
  EXPECT_LT(took, 6.0) << "the delayed commands did not overlap";
  std::printf("[ faults   ] 168 delayed commands in %.2f s\n", took);
  h.reset();
  for (auto &d : wdone) EXPECT_EQ(d.frees.load(), 1);
  for (auto &d : rdone) EXPECT_EQ(d.frees.load(), 1);
}

// ---------------------------------------------------------------------------------------
// The server is SIGKILLed with 64 aio commands in flight (a notify_read thread and a
// notify_write thread drive them) and two threads blocked in synchronous calls. Every
// command completes, every blocking caller returns, and every write that was
// acknowledged is in the server's backing file.
TEST_F(FaultTest, ServerKilledWith64InFlight) {
  NbdkitServer srv;
  const std::string image = srv.dir().file("disk.img");
  constexpr uint64_t kSize = 32 * MiB;
  {
    int fd = ::open(image.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, off_t(kSize)), 0);
    ::close(fd);
  }
  START_OR_SKIP(srv.start({"--filter=delay", "file", "file=" + image, "delay-read=2",
                           "delay-write=100ms"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  nbd_handle *p = h.get();
  NBD_ASSERT_OK(nbd_connect_unix(p, srv.socket_path().c_str()));

  // What must be on the server at the end: offset -> pattern seed.
  std::mutex acked_mutex;
  std::vector<std::pair<uint64_t, uint64_t>> acked;

  DuplexDriver driver(p);
  // Phase 1: 32 writes, all acknowledged, then a flush.
  std::vector<std::vector<uint8_t>> bufs(96, std::vector<uint8_t>(kBlock));
  {
    std::vector<Done> done(32);
    std::vector<int64_t> cookies;
    for (int i = 0; i < 32; i++) {
      fill_pattern(bufs[size_t(i)].data(), kBlock, 100 + uint64_t(i));
      int64_t c = nbd_aio_pwrite(p, bufs[size_t(i)].data(), kBlock, uint64_t(i) * kBlock,
                                 completion_of(done[size_t(i)]), 0);
      ASSERT_NE(c, -1) << last_error();
      cookies.push_back(c);
    }
    ASSERT_TRUE(wait_all_called(done, std::chrono::seconds(30))) << driver.error();
    for (int i = 0; i < 32; i++) {
      ASSERT_EQ(nbd_aio_command_completed(p, uint64_t(cookies[size_t(i)])), 1) << last_error();
      acked.push_back({uint64_t(i) * kBlock, 100 + uint64_t(i)});
    }
    NBD_ASSERT_OK(nbd_flush(p, 0));
  }

  // Phase 2: 32 writes (new blocks) and 32 reads (of phase 1's blocks) in flight, and
  // two threads of blocking writes; then the server dies.
  constexpr int n = 64;
  std::vector<Done> done(n);
  std::vector<int64_t> cookies(n, -1);
  std::atomic<bool> sync_stop{false};
  std::atomic<int> sync_returned{0};
  auto sync_worker = [&](uint64_t first_block) {
    std::vector<uint8_t> buf(kBlock);
    for (uint64_t b = first_block; !sync_stop.load(); b++) {
      uint64_t seed = 7000 + b;
      fill_pattern(buf.data(), buf.size(), seed);
      if (nbd_pwrite(p, buf.data(), buf.size(), b * kBlock, 0) == -1) {
        EXPECT_NE(nbd_get_errno(), 0) << last_error();
        break;
      }
      std::lock_guard lock(acked_mutex);
      acked.push_back({b * kBlock, seed});
    }
    sync_returned++;
  };
  std::thread s1(sync_worker, 200), s2(sync_worker, 300);
  for (int i = 0; i < n; i++) {
    size_t k = size_t(i);
    if (i < 32) {
      fill_pattern(bufs[32 + k].data(), kBlock, 5000 + k);
      cookies[k] = nbd_aio_pwrite(p, bufs[32 + k].data(), kBlock, (64 + k) * kBlock,
                                  completion_of(done[k]), 0);
    } else {
      cookies[k] = nbd_aio_pread(p, bufs[32 + k].data(), kBlock, (k - 32) * kBlock,
                                 completion_of(done[k]), 0);
    }
    ASSERT_NE(cookies[k], -1) << last_error();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  ASSERT_GT(nbd_aio_in_flight(p), 0) << "nothing was in flight when the server died";
  srv.kill_now();

  EXPECT_TRUE(wait_all_called(done, std::chrono::seconds(10))) << "commands stranded by the dead server";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (sync_returned.load() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(sync_returned.load(), 2) << "a blocking caller did not return";
  sync_stop = true;
  s1.join();
  s2.join();
  driver.stop();

  EXPECT_TRUE(nbd_aio_is_dead(p) == 1 || nbd_aio_is_closed(p) == 1);
  EXPECT_EQ(nbd_aio_in_flight(p), 0);
  int ok = 0, failed = 0;
  for (int i = 0; i < n; i++) {
    size_t k = size_t(i);
    int r = nbd_aio_command_completed(p, uint64_t(cookies[k]));
    ASSERT_NE(r, 0) << "command " << i << " not complete";
    if (r == 1) {
      ok++;
      if (i < 32)
        acked.push_back({(64 + k) * kBlock, 5000 + k});
      else
        EXPECT_EQ(pattern_mismatch(bufs[32 + k].data(), kBlock, 100 + (k - 32)), -1) << "read " << i;
    } else {
      failed++;
      EXPECT_NE(nbd_get_errno(), 0) << last_error();
      EXPECT_NE(done[k].error.load(), 0);
    }
  }
  EXPECT_GT(failed, 0) << "the server died with nothing in flight";
  std::printf("[ faults   ] server killed: %d of %d in-flight commands had completed, %d failed\n",
              ok, n, failed);
  h.reset();
  for (auto &d : done) EXPECT_EQ(d.frees.load(), 1);

  // Everything acknowledged is in the backing file (the page cache outlives nbdkit).
  int fd = ::open(image.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> buf(kBlock);
  for (auto [off, seed] : acked) {
    ASSERT_EQ(::pread(fd, buf.data(), buf.size(), off_t(off)), ssize_t(buf.size()));
    EXPECT_EQ(pattern_mismatch(buf.data(), buf.size(), seed), -1)
        << "acknowledged write at " << off << " is not on the server";
  }
  ::close(fd);
  std::printf("[ faults   ] %zu acknowledged writes verified in the backing file\n", acked.size());
}

}  // namespace
}  // namespace dnbd_test
