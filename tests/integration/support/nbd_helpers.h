// SPDX-License-Identifier: LGPL-2.1-or-later
// Public-API helpers for the integration tests: handles, errors, data patterns, two-thread driver.
#pragma once

#include <libnbd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/process.h"

namespace dnbd_test {

struct HandleCloser {
  void operator()(nbd_handle *h) const { nbd_close(h); }
};
using Handle = std::unique_ptr<nbd_handle, HandleCloser>;

// nbd_create, failing the test (with the library's message) when it returns NULL.
Handle make_handle();

// "message (errno N: name)" of the calling thread's last libnbd error.
std::string last_error();

// Asserts that a libnbd call did not return -1, printing the library's error if it did.
#define NBD_ASSERT_OK(call) ASSERT_NE((call), -1) << #call << ": " << ::dnbd_test::last_error()
#define NBD_EXPECT_OK(call) EXPECT_NE((call), -1) << #call << ": " << ::dnbd_test::last_error()

// Deterministic bytes that differ per (seed, position): a block written with seed S
// reads back as fill_pattern(S) and as nothing else (zeroes, another block, a shifted
// copy), so a mix-up anywhere shows.
void fill_pattern(uint8_t *buf, size_t len, uint64_t seed);
std::vector<uint8_t> make_pattern(size_t len, uint64_t seed);
// -1 when buf matches fill_pattern(seed), else the first mismatching offset.
int64_t pattern_mismatch(const uint8_t *buf, size_t len, uint64_t seed);
bool all_zero(const uint8_t *buf, size_t len);

// Extents as reported by the block status callbacks.
struct Extent {
  uint64_t offset;
  uint64_t length;
  uint64_t flags;
  bool operator==(const Extent &) const = default;
};
void PrintTo(const Extent &e, std::ostream *os);

// Collects what block status callbacks report, per meta context: `raw` exactly as
// delivered (one vector per callback call), `merged` with adjacent same-flag extents
// joined (servers may split ranges as they like, so tests compare the merged form).
struct ExtentCollector {
  struct Call {
    std::string context;
    uint64_t offset;
    std::vector<std::pair<uint64_t, uint64_t>> entries;  // (length, flags)
  };
  std::vector<Call> raw;
  std::map<std::string, std::vector<Extent>> merged;
  int calls = 0;

  void add(const char *context, uint64_t offset, const std::vector<std::pair<uint64_t, uint64_t>> &entries);
  nbd_extent_callback callback32();
#ifdef LIBNBD_HAVE_NBD_BLOCK_STATUS_64
  nbd_extent64_callback callback64();
#endif
  // The merged extents of `context`, clipped to [offset, offset + length).
  std::vector<Extent> extents(const std::string &context, uint64_t offset, uint64_t length) const;
};

// Calls nbd_block_status repeatedly until [offset, offset + length) is covered for
// `context` (servers may answer with a prefix).  Fails the test on a library error.
std::vector<Extent> block_status_all(nbd_handle *h, const std::string &context, uint64_t offset,
                                     uint64_t length);

// Drives the handle with nbd_poll until the command with `cookie` completes, and
// returns nbd_aio_command_completed's result (1 ok, -1 error with the library's error
// set), or 0 on timeout.
int wait_for_command(nbd_handle *h, int64_t cookie,
                     std::chrono::milliseconds timeout = std::chrono::milliseconds(30000));

// Base fixture: every integration test is time-boxed (see Watchdog).
class IntegrationTest : public ::testing::Test {
protected:
  Watchdog watchdog_{std::chrono::seconds(120)};
};

// Drives one handle from two threads, the way an event loop with separate read and
// write readiness would:
//  - the reader thread polls POLLIN and calls nbd_aio_notify_read;
//  - the writer thread polls POLLOUT whenever nbd_aio_get_direction says WRITE and calls
//    nbd_aio_notify_write.  It has no wakeup descriptor, so it re-polls with a short
//    timeout: a command queued by another thread shows up as WRITE within that time.
// Both stop on stop() (or destruction), on the first notify error, or when the
// handle is dead or closed.
class DuplexDriver {
public:
  explicit DuplexDriver(nbd_handle *h, int writer_poll_ms = 2);
  ~DuplexDriver() { stop(); }
  DuplexDriver(const DuplexDriver &) = delete;
  DuplexDriver &operator=(const DuplexDriver &) = delete;

  void stop();
  // The first error a notify call returned ("" if none), as seen by its thread.
  std::string error() const;
  uint64_t read_notifies() const { return read_notifies_.load(); }
  uint64_t write_notifies() const { return write_notifies_.load(); }

private:
  void reader();
  void writer();
  void record_error(const char *who);

  nbd_handle *h_;
  int fd_;
  int writer_poll_ms_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> read_notifies_{0}, write_notifies_{0};
  mutable std::mutex error_mutex_;
  std::string error_;
  std::thread reader_, writer_;
};

}  // namespace dnbd_test
