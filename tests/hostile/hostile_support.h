// SPDX-License-Identifier: LGPL-2.1-or-later
// Client side of the hostile-server tests: fixture, watchdog, counted closures, bounded waits.
#pragma once

#include <dlfcn.h>
#include <unistd.h>
#include <libnbd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "fake_server.h"

namespace hostile {

// Counts what a callback closure saw: calls, the error it was handed, and .free.
struct Counted {
  std::atomic<int> calls{0};
  std::atomic<int> frees{0};
  std::atomic<int> error{-1};  // *error as the completion callback saw it
};

inline nbd_completion_callback completion_of(Counted &c) {
  return nbd_completion_callback{
      [](void *ud, int *error) {
        auto *k = static_cast<Counted *>(ud);
        k->error.store(*error);
        k->calls++;
        return 0;  // leave retiring to nbd_aio_command_completed
      },
      &c, [](void *ud) { static_cast<Counted *>(ud)->frees++; }};
}

inline nbd_chunk_callback chunk_of(Counted &c) {
  return nbd_chunk_callback{
      [](void *ud, const void *, size_t, uint64_t, unsigned, int *) {
        static_cast<Counted *>(ud)->calls++;
        return 0;
      },
      &c, [](void *ud) { static_cast<Counted *>(ud)->frees++; }};
}

inline nbd_extent_callback extent_of(Counted &c) {
  return nbd_extent_callback{
      [](void *ud, const char *, uint64_t, uint32_t *, size_t, int *) {
        static_cast<Counted *>(ud)->calls++;
        return 0;
      },
      &c, [](void *ud) { static_cast<Counted *>(ud)->frees++; }};
}

// The last error of this thread, for messages.
inline std::string last_error() {
  const char *m = nbd_get_error();
  const int e = nbd_get_errno();
  const char *name = e ? strerrorname_np(e) : nullptr;
  return std::string(m ? m : "(null)") + " (errno " + std::to_string(e) + ": " +
         (name ? name : "-") + ")";
}

// Calls that appeared after libnbd 1.14 are looked up at run time, so the same binary
// also runs against Debian's libnbd (LD_LIBRARY_PATH) for comparison.
template <typename F>
F optional_call(const char *name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

// errno values that make sense for a given kind of failure.
// A command whose reply broke its rules (the connection goes on): EPROTO.
inline const std::set<int> kProtocolErrnos = {EPROTO};
// The call that finds the server broke the stream, ending the connection: errno 0 and the
// reason in nbd_get_error, as libnbd 1.22.2 reports it.
inline const std::set<int> kViolationErrnos = {0};
// The server went away (errno 0 when it hung up in the middle of a reply, as libnbd).
inline const std::set<int> kGoneErrnos = {0, ENOTCONN, ECONNRESET, EPIPE, ESHUTDOWN};

// Also records the errno seen in the XML report (--gtest_output=xml), for the catalogue.
#define EXPECT_ERRNO_IN(set, err)                                                          \
  do {                                                                                     \
    const int e_ = (err);                                                                  \
    ::testing::Test::RecordProperty("errno", e_ ? strerrorname_np(e_) : "0");              \
    EXPECT_TRUE((set).count(e_)) << "errno " << e_ << " (" << (e_ ? strerrorname_np(e_) : "0") \
                                 << ") not expected here; error: " << last_error();        \
  } while (0)

// Every case runs against a fresh fake server and handle, and is time-boxed: when the
// limit passes the watchdog records a failure and breaks the socket from the server
// side (which must make any blocked library call return); if the test is still stuck
// some seconds later the process exits, so a hang fails the run instead of blocking it.
class HostileTest : public ::testing::Test {
protected:
  static constexpr auto kLimit = std::chrono::seconds(20);
  static constexpr auto kHardGrace = std::chrono::seconds(10);

  void SetUp() override {
    watchdog_ = std::thread([this] {
      std::unique_lock lock(wd_mutex_);
      if (wd_cv_.wait_for(lock, kLimit, [this] { return wd_done_; })) return;
      fired_ = true;
      ADD_FAILURE() << "watchdog: test did not finish within " << kLimit.count() << " s (hang)";
      if (server_) server_->abort_io();
      if (wd_cv_.wait_for(lock, kHardGrace, [this] { return wd_done_; })) return;
      fprintf(stderr, "watchdog: test still stuck after breaking the socket; exiting\n");
      fflush(stderr);
      _exit(3);
    });
  }

  void TearDown() override {
    if (h_) nbd_close(h_);
    h_ = nullptr;
    if (server_) server_->join();
    {
      std::lock_guard lock(wd_mutex_);
      wd_done_ = true;
    }
    wd_cv_.notify_all();
    watchdog_.join();
    server_.reset();
  }

  bool is_duplexnbd() const { return strcmp(nbd_get_package_name(h_), "duplexnbd") == 0; }

  // Creates the handle (structured replies, meta context base:allocation requested) and
  // the server; `prepare` may change handle settings before connecting.
  void make(ServerConfig cfg = {}) {
    h_ = nbd_create();
    ASSERT_NE(h_, nullptr) << last_error();
    ASSERT_NE(nbd_add_meta_context(h_, "base:allocation"), -1) << last_error();
    using SetExt = int (*)(nbd_handle *, bool);
    if (auto f = optional_call<SetExt>("nbd_set_request_extended_headers")) {
      ASSERT_NE(f(h_, cfg.extended), -1) << last_error();
    }
    server_ = std::make_unique<FakeServer>(std::move(cfg));
  }

  // Starts the script and connects; returns nbd_connect_socket's result with the
  // error (if any) captured in connect_error_/connect_errno_.
  int connect(std::function<void(FakeServer &)> script) {
    server_->start(std::move(script));
    if (FakeServer::serve_fd() >= 0) {
      // Serve mode: the client is the differential driver in another process; this
      // process only plays the server's part, reports what the client sent, and ends.
      server_->join();
      printf("client-sent %llu bytes fnv %016llx\n",
             static_cast<unsigned long long>(server_->client_bytes()),
             static_cast<unsigned long long>(server_->client_hash()));
      fflush(stdout);
      _exit(0);
    }
    int r = nbd_connect_socket(h_, server_->client_fd());
    if (r == -1) {
      connect_error_ = nbd_get_error() ? nbd_get_error() : "";
      connect_errno_ = nbd_get_errno();
      // libnbd documents that the socket passes to the handle only on success.
      server_->close_client_fd();
    }
    return r;
  }

  // Connects with a script that must get through the handshake; fails the test if not.
  void connect_ok(std::function<void(FakeServer &)> script) {
    ASSERT_EQ(connect(std::move(script)), 0) << connect_error_;
  }

  // Drives the handle with nbd_poll until `cookie` completes. Returns what
  // nbd_aio_command_completed returned (1 or -1, error left set), or 0 on a hang.
  int wait_for(int64_t cookie, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      int r = nbd_aio_command_completed(h_, uint64_t(cookie));
      if (r != 0) return r;
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "command " << cookie << " never completed";
        return 0;
      }
      if (nbd_aio_is_dead(h_) || nbd_aio_is_closed(h_)) {
        // Completion must already have happened when the handle died.
        r = nbd_aio_command_completed(h_, uint64_t(cookie));
        if (r == 0) ADD_FAILURE() << "handle is dead but command " << cookie << " is not complete";
        return r;
      }
      if (nbd_poll(h_, 100) == -1) {
        // The connection failed under us; the command must be complete now.
        continue;
      }
    }
  }

  // The handle is dead or closed and refuses new commands with a clear error.
  void expect_handle_finished() {
    EXPECT_TRUE(nbd_aio_is_dead(h_) || nbd_aio_is_closed(h_))
        << "dead " << nbd_aio_is_dead(h_) << " closed " << nbd_aio_is_closed(h_);
    EXPECT_EQ(nbd_aio_in_flight(h_), 0);
    char b[512];
    EXPECT_EQ(nbd_pread(h_, b, sizeof b, 0, 0), -1);
    EXPECT_NE(nbd_get_error(), nullptr);
    EXPECT_NE(nbd_get_errno(), 0) << last_error();
  }

  // A blocking read the server answers fatally: it fails, saying why, and takes the
  // handle down with it.
  void expect_blocking_read_fails_fatally(const std::set<int> &errnos = kViolationErrnos) {
    char buf[512];
    EXPECT_EQ(nbd_pread(h_, buf, sizeof buf, 0, 0), -1);
    EXPECT_NE(nbd_get_error(), nullptr);
    EXPECT_ERRNO_IN(errnos, nbd_get_errno());
    expect_handle_finished();
  }

  // The handle is still usable: one more read succeeds (the script must answer it).
  void expect_handle_usable() {
    EXPECT_FALSE(nbd_aio_is_dead(h_));
    char b[512];
    EXPECT_EQ(nbd_pread(h_, b, sizeof b, 0, 0), 0) << last_error();
  }

  nbd_handle *h_ = nullptr;
  std::unique_ptr<FakeServer> server_;
  std::string connect_error_;
  int connect_errno_ = 0;
  bool fired_ = false;

private:
  std::thread watchdog_;
  std::mutex wd_mutex_;
  std::condition_variable wd_cv_;
  bool wd_done_ = false;
};

}  // namespace hostile
