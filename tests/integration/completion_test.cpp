// SPDX-License-Identifier: LGPL-2.1-or-later
// When a command counts as completed, and which error a callback may impose on it.
#include <libnbd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

class CompletionTest : public IntegrationTest {
protected:
  void SetUp() override {
    START_OR_SKIP(srv_.start({"memory", "16M"}));
    h_ = make_handle();
    ASSERT_TRUE(h_);
    NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv_.socket_path().c_str()));
  }

  NbdkitServer srv_;
  Handle h_;
};

// nbdfuse's pattern: one thread drives the handle, another waits for the completion
// callback to say "done" and then asks nbd_aio_command_completed, which must not answer
// "still in flight" even if the driving thread has not yet got back from the callback.
struct Signal {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
};

int signal_and_linger(void *user_data, int *error) {
  (void)error;
  auto *s = static_cast<Signal *>(user_data);
  {
    std::lock_guard lock(s->m);
    s->done = true;
  }
  s->cv.notify_all();
  // Widen the window in which the command is neither in flight nor done.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return 0;
}

TEST_F(CompletionTest, CompletedAsSoonAsTheCallbackHasSignalled) {
  nbd_handle *h = h_.get();
  std::atomic<bool> stop{false};
  std::thread driver([&] {
    while (!stop.load()) {
      if (nbd_aio_in_flight(h) > 0)
        nbd_poll(h, 10);
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::vector<uint8_t> buf(4096);
  for (int i = 0; i < 20; i++) {
    Signal s;
    int64_t cookie = nbd_aio_pread(h, buf.data(), buf.size(), uint64_t(i) * 4096,
                                   nbd_completion_callback{signal_and_linger, &s, nullptr}, 0);
    ASSERT_GT(cookie, 0) << last_error();
    {
      std::unique_lock lock(s.m);
      ASSERT_TRUE(s.cv.wait_for(lock, std::chrono::seconds(10), [&] { return s.done; }));
    }
    EXPECT_EQ(nbd_aio_command_completed(h, cookie), 1) << "iteration " << i;
  }
  stop = true;
  driver.join();
}

// libnbd never runs a command's callbacks inside the aio call that issues it: programs
// count the command as theirs only once they have its cookie.  With another thread
// reading replies the reply can be complete before the issuing call has let go of the
// request; its completion must then still wait for a later call.
thread_local bool inside_issuing_call = false;
std::atomic<int> completed_inside{0}, completed_total{0};

// user_data: the read's own buffer (freed here, its command being over), or NULL.
int note_where_completed(void *user_data, int *) {
  if (inside_issuing_call) completed_inside++;
  completed_total++;
  delete static_cast<std::vector<uint8_t> *>(user_data);
  return 1;
}

TEST_F(CompletionTest, NeverCompletesInsideTheIssuingCall) {
  nbd_handle *h = h_.get();
  completed_inside = 0;
  completed_total = 0;
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) {
      if (nbd_aio_in_flight(h) > 0)
        nbd_poll(h, 10);
      else
        std::this_thread::yield();
    }
  });
  constexpr int kCommands = 4000;
  // Each read has a buffer of its own (no two commands in flight may share one); the
  // writes all send the same bytes.
  std::vector<uint8_t> wbuf(4096);
  for (int i = 0; i < kCommands; i++) {
    auto *rbuf = (i % 2) ? new std::vector<uint8_t>(512) : nullptr;
    inside_issuing_call = true;
    int64_t cookie = rbuf
        ? nbd_aio_pread(h, rbuf->data(), rbuf->size(), 0,
                        nbd_completion_callback{note_where_completed, rbuf, nullptr}, 0)
        : nbd_aio_pwrite(h, wbuf.data(), wbuf.size(), 0,
                         nbd_completion_callback{note_where_completed, nullptr, nullptr}, 0);
    inside_issuing_call = false;
    ASSERT_GT(cookie, 0) << last_error();
    while (nbd_aio_in_flight(h) > 8) std::this_thread::yield();
  }
  while (completed_total.load() < kCommands) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop = true;
  reader.join();
  EXPECT_EQ(completed_inside.load(), 0);
}

struct Verdict {
  int ret;          // what the completion callback returns
  int set_error;    // what it stores into *error
  int seen = -1;    // the *error it was given
};

int judge(void *user_data, int *error) {
  auto *v = static_cast<Verdict *>(user_data);
  v->seen = *error;
  *error = v->set_error;
  return v->ret;
}

int fail_chunk(void *user_data, const void *, size_t, uint64_t, unsigned, int *error) {
  *error = *static_cast<int *>(user_data);
  return -1;
}

int ignored_chunk(void *, const void *, size_t, uint64_t, unsigned, int *error) {
  *error = EPROTO;  // ignored: the callback succeeds
  return 0;
}

// nbdfuse's operations thread: it calls nbd_poll only while its own count of commands
// in flight is above zero, and the issuing threads count a command once nbd_aio_pread
// has returned.  A callback for a command its issuer has not counted yet (libnbd lets
// that happen too, after the issuing call has released the handle) must not run in the
// same nbd_poll as the callback that brought the count to zero: nbdfuse asserts the
// count is at least one in every callback.  libnbd runs one reply per poll; so do we.
struct FuseLikeDriver {
  std::mutex count_mutex;
  std::condition_variable count_cv;
  std::atomic<long> in_flight{0};
  std::atomic<long> below_one{0};
  std::atomic<bool> stop{false};
};

int counted_read_done(void *user_data, int *error) {
  (void)error;
  auto *pair = static_cast<std::pair<FuseLikeDriver *, Signal *> *>(user_data);
  FuseLikeDriver *d = pair->first;
  Signal *r = pair->second;
  std::lock_guard lock(r->m);
  if (d->in_flight.fetch_sub(1) < 1) d->below_one++;
  r->done = true;
  r->cv.notify_all();
  return 0;
}

TEST_F(CompletionTest, OnePollRunsOneCallbackSoCountersNeverGoBelowZero) {
  nbd_handle *h = h_.get();
  FuseLikeDriver d;
  std::atomic<bool> poll_failed{false};
  std::thread ops([&] {
    for (;;) {
      {
        std::unique_lock lock(d.count_mutex);
        d.count_cv.wait(lock, [&] { return d.in_flight.load() > 0 || d.stop.load(); });
        if (d.stop.load()) return;
      }
      while (d.in_flight.load() > 0) {
        if (nbd_poll(h, 1000) == -1) {
          poll_failed = true;
          return;
        }
      }
    }
  });
  constexpr int kWorkers = 3;
  constexpr int kReads = 3000;
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; w++) {
    workers.emplace_back([&, w] {
      std::vector<uint8_t> buf(64 * 1024);
      for (int i = 0; i < kReads && !poll_failed.load(); i++) {
        Signal r;
        std::pair<FuseLikeDriver *, Signal *> ud{&d, &r};
        uint64_t offset = uint64_t((i * kWorkers + w) % 200) * buf.size();
        int64_t cookie = nbd_aio_pread(h, buf.data(), buf.size(), offset,
                                       nbd_completion_callback{counted_read_done, &ud, nullptr}, 0);
        ASSERT_NE(cookie, -1) << nbd_get_error();
        // nbdfuse's issuer may wait for its count mutex here, behind other threads;
        // a pause makes callbacks overtake the count often, as they then do there.
        if (i % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
        {
          std::lock_guard lock(d.count_mutex);
          d.in_flight++;
        }
        d.count_cv.notify_one();
        std::unique_lock lock(r.m);
        ASSERT_TRUE(r.cv.wait_for(lock, std::chrono::seconds(30), [&] { return r.done; }));
        lock.unlock();
        ASSERT_EQ(nbd_aio_command_completed(h, uint64_t(cookie)), 1) << nbd_get_error();
      }
    });
  }
  for (auto &t : workers) t.join();
  {
    std::lock_guard lock(d.count_mutex);
    d.stop = true;
  }
  d.count_cv.notify_all();
  ops.join();
  EXPECT_FALSE(poll_failed.load()) << nbd_get_error();
  EXPECT_EQ(d.below_one.load(), 0) << "callbacks that found no counted command in flight";
}

// libnbd(3), "Callbacks with int *error parameter": an assignment into *error counts only
// when the callback returns -1, and assigning 0 never clears an error.
TEST_F(CompletionTest, OnlyAFailingCallbackChangesTheError) {
  nbd_handle *h = h_.get();
  std::vector<uint8_t> buf(512);

  // Chunk callback sets *error but succeeds; completion sets *error but succeeds: success.
  Verdict ok{0, ENOMEM};
  int64_t cookie = nbd_aio_pread_structured(h, buf.data(), buf.size(), 0,
                                            nbd_chunk_callback{ignored_chunk, nullptr, nullptr},
                                            nbd_completion_callback{judge, &ok, nullptr}, 0);
  ASSERT_GT(cookie, 0);
  int r;
  while ((r = nbd_aio_command_completed(h, cookie)) == 0) ASSERT_NE(nbd_poll(h, -1), -1);
  EXPECT_EQ(r, 1) << last_error();
  EXPECT_EQ(ok.seen, 0);

  // A failing chunk callback's error reaches the completion callback and the caller.
  int eproto = EPROTO;
  Verdict keep{0, ENOMEM};
  cookie = nbd_aio_pread_structured(h, buf.data(), buf.size(), 0,
                                    nbd_chunk_callback{fail_chunk, &eproto, nullptr},
                                    nbd_completion_callback{judge, &keep, nullptr}, 0);
  ASSERT_GT(cookie, 0);
  while ((r = nbd_aio_command_completed(h, cookie)) == 0) ASSERT_NE(nbd_poll(h, -1), -1);
  EXPECT_EQ(r, -1);
  EXPECT_EQ(nbd_get_errno(), EPROTO);
  EXPECT_EQ(keep.seen, EPROTO);

  // A failing completion callback replaces the error.
  Verdict replace{-1, ENOMEM};
  cookie = nbd_aio_pread_structured(h, buf.data(), buf.size(), 0,
                                    nbd_chunk_callback{fail_chunk, &eproto, nullptr},
                                    nbd_completion_callback{judge, &replace, nullptr}, 0);
  ASSERT_GT(cookie, 0);
  while ((r = nbd_aio_command_completed(h, cookie)) == 0) ASSERT_NE(nbd_poll(h, -1), -1);
  EXPECT_EQ(r, -1);
  EXPECT_EQ(nbd_get_errno(), ENOMEM);

  // ... but storing 0 does not turn a failure into success.
  Verdict clear{-1, 0};
  cookie = nbd_aio_pread_structured(h, buf.data(), buf.size(), 0,
                                    nbd_chunk_callback{fail_chunk, &eproto, nullptr},
                                    nbd_completion_callback{judge, &clear, nullptr}, 0);
  ASSERT_GT(cookie, 0);
  while ((r = nbd_aio_command_completed(h, cookie)) == 0) ASSERT_NE(nbd_poll(h, -1), -1);
  EXPECT_EQ(r, -1);
  EXPECT_EQ(nbd_get_errno(), EPROTO);
}

// A closure may come with no function at all (libnbd's own tests pass one holding only
// .free): it is never called, the command works, and .free runs once.
TEST_F(CompletionTest, ClosureWithoutFunctionIsFreedOnce) {
  static int frees;
  frees = 0;
  auto count_free = [](void *) { frees++; };
  std::vector<uint8_t> buf(512);
  int64_t cookie = nbd_aio_pread_structured(h_.get(), buf.data(), buf.size(), 0,
                                            nbd_chunk_callback{nullptr, nullptr, count_free},
                                            nbd_completion_callback{nullptr, nullptr, count_free}, 0);
  ASSERT_GT(cookie, 0) << last_error();
  int r;
  while ((r = nbd_aio_command_completed(h_.get(), cookie)) == 0) ASSERT_NE(nbd_poll(h_.get(), -1), -1);
  EXPECT_EQ(r, 1);
  EXPECT_EQ(frees, 2);
  // A request that fails its checks still frees both.
  frees = 0;
  EXPECT_EQ(nbd_aio_pread_structured(h_.get(), buf.data(), buf.size(), UINT64_MAX,
                                     nbd_chunk_callback{nullptr, nullptr, count_free},
                                     nbd_completion_callback{nullptr, nullptr, count_free}, 0),
            -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(frees, 2);
}

}  // namespace
}  // namespace dnbd_test
