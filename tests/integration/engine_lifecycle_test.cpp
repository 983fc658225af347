// SPDX-License-Identifier: LGPL-2.1-or-later
// The engine's lifecycle under concurrency: connections dying or ending while threads issue
// and poll, connects driven from two threads, what nbd_close does with what is left, and
// how many file descriptors a handle holds.
#include <libnbd.h>

#include <dirent.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
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

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class EngineLifecycle : public IntegrationTest {};

int open_fds() {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (dirent *e = readdir(d))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1;  // the directory's own descriptor
}

// Threads that issue 4 KiB aio reads with auto-retiring completion callbacks until the
// handle refuses one, each read into a buffer of its own until its callback has run
// (the library writes into it from whichever thread reads the reply; the buffers
// outlive the handle).  Counts what was issued, refused, called back and freed.
class ReadIssuers {
public:
  ReadIssuers(nbd_handle *h, int threads) : h_(h), slots_(size_t(threads) * kSlots) {
    for (auto &s : slots_) s.owner = this;
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this, t] { issue(t); });
  }
  ~ReadIssuers() { stop(); }
  void stop() {
    stop_ = true;
    for (auto &t : threads_)
      if (t.joinable()) t.join();
  }

  std::atomic<int> issued{0};
  std::atomic<int> refused{0};  // calls that failed: their closures are freed at once
  std::atomic<int> completed{0};
  std::atomic<int> freed{0};

private:
  static constexpr int kSlots = 512;
  struct Slot {
    ReadIssuers *owner = nullptr;
    std::atomic<bool> busy{false};
    uint8_t buf[4096];
  };

  void issue(int t) {
    for (unsigned i = 0; !stop_.load(); ++i) {
      Slot &s = slots_[size_t(t) * kSlots + i % kSlots];
      if (s.busy.load(std::memory_order_acquire)) {
        std::this_thread::yield();
        continue;
      }
      s.busy.store(true, std::memory_order_relaxed);
      nbd_completion_callback cb{[](void *ud, int *) {
                                   auto *slot = static_cast<Slot *>(ud);
                                   slot->owner->completed++;
                                   slot->busy.store(false, std::memory_order_release);
                                   return 1;
                                 },
                                 &s, [](void *ud) { static_cast<Slot *>(ud)->owner->freed++; }};
      if (nbd_aio_pread(h_, s.buf, sizeof s.buf, uint64_t(i % 256) * 4096, cb, 0) == -1) {
        refused++;
        return;  // the handle ended: the issuer stops, as a program would
      }
      issued++;
    }
  }

  nbd_handle *h_;
  std::atomic<bool> stop_{false};
  std::vector<Slot> slots_;
  std::vector<std::thread> threads_;
};

// nbd_poll in a loop until told to stop or the handle ends.
class Poller {
public:
  explicit Poller(nbd_handle *h)
      : thread_([this, h] {
          while (!stop_.load() && !nbd_aio_is_dead(h) && !nbd_aio_is_closed(h)) nbd_poll(h, 10);
        }) {}
  ~Poller() {
    stop_ = true;
    thread_.join();
  }

private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Polls until nothing is in flight (or `limit`), as a program waiting for its callbacks
// would after its server died.  Returns what is still in flight.
int drain_in_flight(nbd_handle *h, std::chrono::milliseconds limit) {
  const auto end = Clock::now() + limit;
  while (nbd_aio_in_flight(h) > 0 && Clock::now() < end) {
    if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h))
      std::this_thread::sleep_for(1ms);
    else
      nbd_poll(h, 10);
  }
  return nbd_aio_in_flight(h);
}

// Four threads issue reads with auto-retiring completion callbacks, two threads sit in
// nbd_poll, and the server is killed under them.  Every command issued must complete
// (its callback run, nothing left in flight) however the death races with the issuing
// and the polling: reaping the dead connection's commands may not depend on which
// thread happened to hold the reader at the time.
TEST_F(EngineLifecycle, EveryCommandCompletesWhenTheServerDiesUnderIssuersAndPollers) {
  const int iterations = 60;
  std::mt19937 rng(12345);
  for (int it = 0; it < iterations; ++it) {
    NbdkitServer srv;
    START_OR_SKIP(srv.start({"memory", "64M"}));
    Handle h = make_handle();
    ASSERT_TRUE(h);
    NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
    nbd_handle *p = h.get();

    ReadIssuers issuers(p, 4);
    {
      Poller a(p), b(p);
      std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 30));
      srv.kill_now();
      std::this_thread::sleep_for(50ms);
      issuers.stop();
    }
    const int left = drain_in_flight(p, 3000ms);
    ASSERT_EQ(left, 0) << "iteration " << it << ": " << left << " of " << issuers.issued.load()
                       << " commands stranded on a " << (nbd_aio_is_dead(p) ? "dead" : "live")
                       << " handle";
    ASSERT_EQ(issuers.completed.load(), issuers.issued.load()) << "iteration " << it;
    h.reset();
    ASSERT_EQ(issuers.freed.load(), issuers.issued.load() + issuers.refused.load())
        << "iteration " << it;
  }
}

// The same with a server that ends the session cleanly (end of stream, not an error)
// while commands are still being issued: the handle becomes CLOSED, and commands issued
// around that moment complete with an error or are refused, never left in flight.
TEST_F(EngineLifecycle, EveryCommandCompletesWhenTheServerEndsTheSessionUnderIssuers) {
  const int iterations = 40;
  int closed = 0;
  for (int it = 0; it < iterations; ++it) {
    TestServer srv;
    START_OR_SKIP(srv.start({"--size", "1M", "--delay-ms", "1", "--end-after",
                             std::to_string(200 + 37 * it)}));
    Handle h = make_handle();
    ASSERT_TRUE(h);
    NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
    nbd_handle *p = h.get();
    ReadIssuers issuers(p, 3);
    {
      Poller poller(p);
      const auto end = Clock::now() + 10s;
      while (!nbd_aio_is_closed(p) && !nbd_aio_is_dead(p) && Clock::now() < end)
        std::this_thread::sleep_for(1ms);
      std::this_thread::sleep_for(5ms);
      issuers.stop();
    }
    const int left = drain_in_flight(p, 3000ms);
    ASSERT_EQ(left, 0) << "iteration " << it << ": " << left << " commands stranded on a "
                       << (nbd_aio_is_closed(p) ? "closed" : nbd_aio_is_dead(p) ? "dead" : "live")
                       << " handle";
    ASSERT_EQ(issuers.completed.load(), issuers.issued.load()) << "iteration " << it;
    closed += nbd_aio_is_closed(p);
  }
  // The server ends the session cleanly: the handle is CLOSED (end of stream), not DEAD.
  EXPECT_EQ(closed, iterations);
}

// One thread drives a TCP connect with nbd_poll while another runs the classic loop on
// the same handle (get_fd, get_direction, poll, notify).  Both may look at the
// connection while it moves from connecting to the handshake and to TLS-less
// transmission; under ThreadSanitizer nothing they read may be written unguarded.
TEST_F(EngineLifecycle, TwoThreadsDriveOneConnect) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start_tcp({"memory", "1M"}));
  const std::string uri = srv.uri();
  for (int it = 0; it < 100; ++it) {
    Handle h = make_handle();
    ASSERT_TRUE(h);
    nbd_handle *p = h.get();
    NBD_ASSERT_OK(nbd_aio_connect_uri(p, uri.c_str()));
    std::atomic<bool> done{false};
    std::thread classic([&] {
      while (!done.load()) {
        if (nbd_aio_is_ready(p) || nbd_aio_is_dead(p)) break;
        int fd = nbd_aio_get_fd(p);
        unsigned dir = nbd_aio_get_direction(p);
        if (fd < 0 || dir == 0) {
          std::this_thread::yield();
          continue;
        }
        struct pollfd pfd = {fd, short(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                                       ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)), 0};
        if (::poll(&pfd, 1, 5) <= 0) continue;
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) nbd_aio_notify_read(p);
        else if (pfd.revents & POLLOUT) nbd_aio_notify_write(p);
      }
    });
    const auto end = Clock::now() + 10s;
    while (!nbd_aio_is_ready(p) && !nbd_aio_is_dead(p) && Clock::now() < end) nbd_poll(p, 5);
    done = true;
    classic.join();
    ASSERT_EQ(nbd_aio_is_ready(p), 1) << "iteration " << it << ": " << last_error();
    char b[512];
    NBD_ASSERT_OK(nbd_pread(p, b, sizeof b, 0, 0));
  }
}

// libnbd 1.18 and later: closing a handle calls the completion callback of every command
// still in flight, exactly once, with an error, then frees each command's closures, a
// mid-command callback's before the completion callback's.  And nbd_close never writes
// into a read's buffer: the caller may have reused it already.
TEST_F(EngineLifecycle, CloseCompletesWhatIsInFlightWithoutTouchingReadBuffers) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--filter=delay", "memory", "1M", "delay-read=10"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_set_pread_initialize(h.get(), true));
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));

  const long page = sysconf(_SC_PAGESIZE);
  void *mem = mmap(nullptr, size_t(page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  std::memset(mem, 0xa5, size_t(page));

  struct Order {
    std::atomic<int> completion_error{-1};
    std::atomic<int> completions{0};
    std::atomic<bool> chunk_freed{false};
    std::atomic<bool> completion_freed_first{false};
    std::atomic<int> frees{0};
  } order;
  nbd_chunk_callback chunk{[](void *, const void *, size_t, uint64_t, unsigned, int *) { return 0; },
                           &order, [](void *ud) {
                             auto *o = static_cast<Order *>(ud);
                             o->chunk_freed = true;
                             o->frees++;
                           }};
  nbd_completion_callback completion{
      [](void *ud, int *error) {
        auto *o = static_cast<Order *>(ud);
        o->completion_error = *error;
        o->completions++;
        return 0;
      },
      &order, [](void *ud) {
        auto *o = static_cast<Order *>(ud);
        if (!o->chunk_freed) o->completion_freed_first = true;
        o->frees++;
      }};
  ASSERT_NE(nbd_aio_pread_structured(h.get(), mem, size_t(page), 0, chunk, completion, 0), -1)
      << last_error();
  // The reply is 10 s away.  From here on a write into the buffer would be a crash.
  ASSERT_EQ(mprotect(mem, size_t(page), PROT_READ), 0);
  h.reset();
  EXPECT_EQ(order.completions.load(), 1);
  EXPECT_EQ(order.completion_error.load(), ENOTCONN);
  EXPECT_EQ(order.frees.load(), 2);
  EXPECT_FALSE(order.completion_freed_first.load());
  EXPECT_EQ(static_cast<uint8_t *>(mem)[0], 0xa5);
  munmap(mem, size_t(page));
}

// A connected handle nobody is blocked on holds one descriptor, its socket, as libnbd's
// does; the wake-ups of blocked threads are theirs, not the handle's.  So a program opens
// as many connections as libnbd lets it under its limit of open files.
TEST_F(EngineLifecycle, AnIdleConnectedHandleHoldsOnlyItsSocket) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"memory", "1M"}));
  // Warm up this thread (a blocking call and an nbd_poll) so what it keeps for itself is
  // already counted.
  {
    Handle h = make_handle();
    NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
    char b[512];
    NBD_ASSERT_OK(nbd_pread(h.get(), b, sizeof b, 0, 0));
    nbd_poll(h.get(), 0);
  }
  const int before = open_fds();
  constexpr int kHandles = 20;
  std::vector<Handle> handles;
  for (int i = 0; i < kHandles; ++i) {
    handles.push_back(make_handle());
    NBD_ASSERT_OK(nbd_connect_unix(handles.back().get(), srv.socket_path().c_str()));
    char b[512];
    NBD_ASSERT_OK(nbd_pread(handles.back().get(), b, sizeof b, 0, 0));
    int64_t c = nbd_aio_pread(handles.back().get(), b, sizeof b, 0, NBD_NULL_COMPLETION, 0);
    ASSERT_NE(c, -1) << last_error();
    ASSERT_EQ(wait_for_command(handles.back().get(), c), 1);
  }
  EXPECT_EQ(open_fds() - before, kHandles);
  handles.clear();
  EXPECT_EQ(open_fds(), before);
}

}  // namespace
}  // namespace dnbd_test
