// SPDX-License-Identifier: LGPL-2.1-or-later
// Duplex proofs: one handle driven by two threads, writes overtaking a streaming read, overlapping sync calls.
#include <libnbd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "support/nbd_helpers.h"
#include "test_pki.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

class DuplexProof : public IntegrationTest {};

// ---- (1) Two threads drive one handle through 1 GiB of mixed traffic ------------------------

struct Traffic;

struct Op {
  Traffic *traffic = nullptr;
  uint64_t block = 0;
  bool write = false;
  std::vector<uint8_t> buf;
  int64_t cookie = -1;
  int error = 0;
};

// Completions arrive on the driver's threads; the main thread retires them.
struct Traffic {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<Op *> completed;
};

int op_completed(void *user_data, int *error) {
  auto *op = static_cast<Op *>(user_data);
  op->error = *error;
  {
    std::lock_guard lock(op->traffic->mutex);
    op->traffic->completed.push_back(op);
  }
  op->traffic->cv.notify_one();
  return 0;  // not auto-retired: the main thread calls nbd_aio_command_completed
}

// Reader thread: poll POLLIN + nbd_aio_notify_read.  Writer thread: poll POLLOUT while
// nbd_aio_get_direction has WRITE + nbd_aio_notify_write.  Main thread: issues 256 KiB
// aio writes of a per-block pattern and, once each write is done, an aio read of the
// same block, keeping 64 commands in flight, until all 1 GiB has been written, read
// back and compared byte for byte.
constexpr uint64_t kProofBlock = 256 * KiB;

// 1 GiB; DUPLEXNBD_DUPLEX_PROOF_MIB shrinks the volume for sanitizer builds, which run
// this far slower than the time budget allows for a whole GiB.
uint64_t proof_total() {
  uint64_t total = 1 * GiB;
  if (const char *mib = std::getenv("DUPLEXNBD_DUPLEX_PROOF_MIB")) total = std::strtoull(mib, nullptr, 10) * MiB;
  total -= total % kProofBlock;
  return std::max(total, kProofBlock);
}

// Shared by the plaintext and the TLS proof; `connect` connects the handle to a server
// whose export holds proof_total() bytes.
void two_threads_drive_one_handle(const std::function<bool(Handle &h)> &connect, const char *label) {
  constexpr uint64_t kBlock = kProofBlock;
  const uint64_t kTotal = proof_total();
  const uint64_t kBlocks = kTotal / kBlock;
  constexpr int kMaxInFlight = 64;
  const auto kBudget = std::chrono::seconds(100);

  // Declaration order is destruction order in reverse: the driver threads stop first,
  // then the handle closes, and only then are buffers and callback state freed.
  Traffic traffic;
  std::unordered_map<Op *, std::unique_ptr<Op>> live;
  Handle h = make_handle();
  ASSERT_TRUE(h);
  if (!connect(h)) return;
  ASSERT_GE(nbd_get_size(h.get()), int64_t(kTotal));
  DuplexDriver driver(h.get());

  std::deque<uint64_t> to_read;  // written blocks waiting for their read-back
  std::vector<Op *> unretired;   // completed, but not yet retirable
  uint64_t next_write = 0, verified = 0;
  int reads_in_flight = 0, writes_in_flight = 0, max_mixed = 0;
  bool prefer_read = false;
  const auto start = Clock::now();

  auto issue = [&](bool read) -> bool {
    auto owned = std::make_unique<Op>();
    Op *op = owned.get();
    op->traffic = &traffic;
    op->write = !read;
    nbd_completion_callback cb{};
    cb.callback = op_completed;
    cb.user_data = op;
    live.emplace(op, std::move(owned));
    if (read) {
      op->block = to_read.front();
      to_read.pop_front();
      op->buf.resize(kBlock);
      op->cookie = nbd_aio_pread(h.get(), op->buf.data(), kBlock, op->block * kBlock, cb, 0);
      ++reads_in_flight;
    } else {
      op->block = next_write++;
      op->buf = make_pattern(kBlock, op->block + 1);
      op->cookie = nbd_aio_pwrite(h.get(), op->buf.data(), kBlock, op->block * kBlock, cb, 0);
      ++writes_in_flight;
    }
    max_mixed = std::max(max_mixed, std::min(reads_in_flight, writes_in_flight));
    return op->cookie != -1;
  };

  // Returns false if the command is not retirable yet (callback ran, state not final).
  auto retire = [&](Op *op) -> bool {
    int r = nbd_aio_command_completed(h.get(), uint64_t(op->cookie));
    if (r == 0) return false;
    EXPECT_EQ(r, 1) << (op->write ? "write" : "read") << " of block " << op->block << ": " << last_error();
    EXPECT_EQ(op->error, 0) << "block " << op->block;
    if (op->write) {
      --writes_in_flight;
      to_read.push_back(op->block);
    } else {
      --reads_in_flight;
      int64_t bad = pattern_mismatch(op->buf.data(), kBlock, op->block + 1);
      EXPECT_EQ(bad, -1) << "block " << op->block << " differs at byte " << bad;
      ++verified;
    }
    live.erase(op);
    return true;
  };

  while (verified < kBlocks) {
    while (reads_in_flight + writes_in_flight < kMaxInFlight) {
      bool can_read = !to_read.empty(), can_write = next_write < kBlocks;
      if (!can_read && !can_write) break;
      // Alternate so reads and writes are on the wire together.
      bool read = can_read && (!can_write || prefer_read);
      prefer_read = !prefer_read;
      ASSERT_TRUE(issue(read)) << (read ? "nbd_aio_pread: " : "nbd_aio_pwrite: ") << last_error();
    }

    std::deque<Op *> done;
    {
      std::unique_lock lock(traffic.mutex);
      traffic.cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return !traffic.completed.empty(); });
      done.swap(traffic.completed);
    }
    ASSERT_EQ(driver.error(), "");
    ASSERT_LT(Clock::now() - start, kBudget)
        << "only " << verified << " of " << kBlocks << " blocks verified; in flight: "
        << nbd_aio_in_flight(h.get());

    std::vector<Op *> again;
    for (Op *op : unretired)
      if (!retire(op)) again.push_back(op);
    for (Op *op : done)
      if (!retire(op)) again.push_back(op);
    unretired.swap(again);
    if (::testing::Test::HasFailure()) return;
  }

  const double elapsed = seconds_since(start);
  driver.stop();
  EXPECT_EQ(driver.error(), "");
  EXPECT_EQ(nbd_aio_in_flight(h.get()), 0);
  EXPECT_GT(max_mixed, 1) << "reads and writes were never in flight together";
  EXPECT_GT(driver.read_notifies(), 0u);
  std::printf("[ duplex   ] %s: %llu MiB written and read back in %.2f s (%.0f MiB/s each way); "
              "notify_read %llu, notify_write %llu, max reads&writes in flight together %d\n",
              label, (unsigned long long)(kTotal / MiB), elapsed, double(kTotal / MiB) / elapsed,
              (unsigned long long)driver.read_notifies(),
              (unsigned long long)driver.write_notifies(), max_mixed);
  ::testing::Test::RecordProperty("seconds", std::to_string(elapsed));
  NBD_EXPECT_OK(nbd_shutdown(h.get(), 0));
}

TEST_F(DuplexProof, TwoThreadsDriveOneHandle) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"memory", std::to_string(proof_total())}));  // sparse: pages appear as written
  two_threads_drive_one_handle(
      [&](Handle &h) {
        NBD_EXPECT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
        return !::testing::Test::HasFailure();
      },
      "plaintext");
}

// The same proof over TLS: after the handshake the reader only receives and the writer
// only sends on the GnuTLS session, from two threads at once.
TEST_F(DuplexProof, TwoThreadsDriveOneHandleOverTls) {
  using duplexnbd::tls_testing::Pki;
  if (!Pki::tools_available()) GTEST_SKIP() << "certtool/psktool not installed (gnutls-bin)";
  {
    Handle probe = make_handle();
    if (!nbd_supports_tls(probe.get())) GTEST_SKIP() << "library built without GnuTLS";
  }
  Pki pki;
  ASSERT_TRUE(pki.ok()) << pki.error();
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-certificates=" + pki.path("good"), "memory",
                           std::to_string(proof_total())}));
  two_threads_drive_one_handle(
      [&](Handle &h) {
        NBD_EXPECT_OK(nbd_set_tls(h.get(), LIBNBD_TLS_REQUIRE));
        NBD_EXPECT_OK(nbd_set_tls_certificates(h.get(), pki.path("good").c_str()));
        NBD_EXPECT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
        EXPECT_EQ(nbd_get_tls_negotiated(h.get()), 1);
        return !::testing::Test::HasFailure();
      },
      "TLS");
}

// ---- (2) A write is sent and acknowledged while a large read reply is still arriving --------

struct OrderLog {
  std::atomic<int> next{0};
  std::atomic<int> read_rank{-1}, write_rank{-1};
  std::atomic<int> read_error{0}, write_error{0};
  std::mutex mutex;
  Clock::time_point read_done, write_done;
};

int read_completed(void *user_data, int *error) {
  auto *log = static_cast<OrderLog *>(user_data);
  {
    std::lock_guard lock(log->mutex);
    log->read_done = Clock::now();
  }
  log->read_error = *error;
  log->read_rank = log->next++;
  return 0;
}

int write_completed(void *user_data, int *error) {
  auto *log = static_cast<OrderLog *>(user_data);
  {
    std::lock_guard lock(log->mutex);
    log->write_done = Clock::now();
  }
  log->write_error = *error;
  log->write_rank = log->next++;
  return 0;
}

enum class Driving { TwoThreads, NbdPoll };

// The test server trickles the 16 MiB read reply out at 8 MiB/s as two 8 MiB chunks
// (~1 s each) and sends a write's ack at the first chunk boundary after the write
// arrives (a chunk is indivisible on the wire).  The write is issued while chunk 1 is
// still arriving, so it completes ~1 s before the read only if the client sent it
// while receiving and then parsed its ack between the read's chunks.  (libnbd 1.22
// gets there too, single-threaded: when a partly received reply would block it parks
// the reply state and sends queued requests.  Here the same must hold with the reader
// and the writer on different threads, and through nbd_poll.)
void write_overtakes_streaming_read(Driving driving) {
  TestServer srv;
  START_OR_SKIP(srv.start({"--size", "64M", "--slow-read-reply", "8192", "--read-chunk", "8M"}));
  OrderLog log;
  std::vector<uint8_t> read_buf(16 * MiB);
  auto read_data = make_pattern(16 * MiB, 77);
  auto write_data = make_pattern(64 * KiB, 78);
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  // Real data to read back: holes would be sent as small unpaced chunks.
  NBD_ASSERT_OK(nbd_pwrite(h.get(), read_data.data(), read_data.size(), 0, 0));

  std::unique_ptr<DuplexDriver> driver;
  if (driving == Driving::TwoThreads) driver = std::make_unique<DuplexDriver>(h.get());
  auto pump = [&](int ms) {
    if (driver) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    } else {
      ASSERT_NE(nbd_poll(h.get(), ms), -1) << last_error();
    }
  };

  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(30);
#ifdef LIBNBD_HAVE_NBD_STATS_BYTES_RECEIVED
  const uint64_t received_before = nbd_stats_bytes_received(h.get());
#endif
  nbd_completion_callback rcb{};
  rcb.callback = read_completed;
  rcb.user_data = &log;
  int64_t read_cookie = nbd_aio_pread(h.get(), read_buf.data(), read_buf.size(), 0, rcb, 0);
  ASSERT_NE(read_cookie, -1) << last_error();

  // Wait until the read reply is streaming in (or, without byte statistics, a while).
#ifdef LIBNBD_HAVE_NBD_STATS_BYTES_RECEIVED
  while (nbd_stats_bytes_received(h.get()) - received_before < 512 * KiB) {
    ASSERT_LT(Clock::now(), deadline) << "the read reply never started";
    ASSERT_NO_FATAL_FAILURE(pump(5));
  }
#else
  // Without byte statistics, give the server time to start the reply.
  for (int i = 0; i < 100; ++i) ASSERT_NO_FATAL_FAILURE(pump(5));
#endif
  ASSERT_EQ(log.read_rank.load(), -1) << "the read finished before the write could be issued";
  const double write_issued_at = seconds_since(start);

  nbd_completion_callback wcb{};
  wcb.callback = write_completed;
  wcb.user_data = &log;
  int64_t write_cookie = nbd_aio_pwrite(h.get(), write_data.data(), write_data.size(), 40 * MiB, wcb, 0);
  ASSERT_NE(write_cookie, -1) << last_error();

  while (log.read_rank.load() < 0 || log.write_rank.load() < 0) {
    ASSERT_LT(Clock::now(), deadline) << "read rank " << log.read_rank << ", write rank " << log.write_rank;
    if (driver) {
      ASSERT_EQ(driver->error(), "");
    }
    ASSERT_NO_FATAL_FAILURE(pump(10));
  }
  if (driver) driver->stop();

  double read_s, write_s;
  {
    std::lock_guard lock(log.mutex);
    read_s = std::chrono::duration<double>(log.read_done - start).count();
    write_s = std::chrono::duration<double>(log.write_done - start).count();
  }
  std::printf("[ duplex   ] write issued at %.3f s, write done at %.3f s, 16 MiB read done at %.3f s\n",
              write_issued_at, write_s, read_s);
  EXPECT_EQ(log.write_error.load(), 0);
  EXPECT_EQ(log.read_error.load(), 0);
  EXPECT_LT(log.write_rank.load(), log.read_rank.load())
      << "the write completed after the read: the client did not send it while receiving";
  // Not merely first, but well before the end of the read (a chunk is ~1 s).
  EXPECT_LT(write_s, read_s - 0.3);

  EXPECT_EQ(nbd_aio_command_completed(h.get(), uint64_t(read_cookie)), 1) << last_error();
  EXPECT_EQ(nbd_aio_command_completed(h.get(), uint64_t(write_cookie)), 1) << last_error();
  EXPECT_EQ(pattern_mismatch(read_buf.data(), read_buf.size(), 77), -1);
  std::vector<uint8_t> back(write_data.size());
  NBD_ASSERT_OK(nbd_pread(h.get(), back.data(), back.size(), 40 * MiB, 0));
  EXPECT_EQ(back, write_data);
}

TEST_F(DuplexProof, WriteAckedWhileLargeReadReplyStreams_TwoThreads) {
  write_overtakes_streaming_read(Driving::TwoThreads);
}

TEST_F(DuplexProof, WriteAckedWhileLargeReadReplyStreams_NbdPoll) {
  write_overtakes_streaming_read(Driving::NbdPoll);
}

// ---- (3) Synchronous calls from eight threads on one handle overlap -------------------------

// Each read spends 0.5 s in the server (nbdkit's delay filter).  With the calls in
// flight together the eight finish in about one delay; this must stay under three.
// (libnbd 1.22 serialises them: a synchronous call holds the handle lock while it waits
// for its reply, so eight take about eight delays, ~4 s.)
TEST_F(DuplexProof, EightThreadsSyncPreadOverlap) {
  constexpr int kThreads = 8;
  constexpr double kDelay = 0.5;
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--filter=delay", "memory", "64M", "delay-read=500ms"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));

  std::vector<std::vector<uint8_t>> expect, got(kThreads, std::vector<uint8_t>(1 * MiB));
  for (int i = 0; i < kThreads; ++i) {
    expect.push_back(make_pattern(1 * MiB, 100 + i));
    NBD_ASSERT_OK(nbd_pwrite(h.get(), expect[i].data(), 1 * MiB, uint64_t(i) * 8 * MiB, 0));
  }

  std::latch go(kThreads + 1);
  std::vector<int> result(kThreads, 0);
  std::vector<std::string> errors(kThreads);
  std::vector<double> took(kThreads, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      go.arrive_and_wait();
      auto t = Clock::now();
      result[i] = nbd_pread(h.get(), got[i].data(), 1 * MiB, uint64_t(i) * 8 * MiB, 0);
      if (result[i] == -1) errors[i] = last_error();  // per-thread error state
      took[i] = seconds_since(t);
    });
  const auto start = Clock::now();
  go.arrive_and_wait();
  for (auto &t : threads) t.join();
  const double elapsed = seconds_since(start);

  for (int i = 0; i < kThreads; ++i) {
    EXPECT_EQ(result[i], 0) << "thread " << i << ": " << errors[i];
    EXPECT_EQ(pattern_mismatch(got[i].data(), 1 * MiB, 100 + i), -1) << "thread " << i;
    EXPECT_GE(took[i], kDelay * 0.9) << "thread " << i << ": the delay filter did not delay";
  }
  std::printf("[ duplex   ] %d concurrent nbd_pread calls with a %.1f s server delay took %.2f s\n",
              kThreads, kDelay, elapsed);
  EXPECT_LT(elapsed, 3 * kDelay) << "synchronous calls on one handle did not overlap";
}

}  // namespace
}  // namespace dnbd_test
