// SPDX-License-Identifier: LGPL-2.1-or-later
// Server-side failures: injected NBD errors reach the right command; a dead server kills the handle.
#include <libnbd.h>

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB;

class ErrorTest : public IntegrationTest {};

struct Completion {
  std::atomic<int> calls{0};
  std::atomic<int> error{0};
};

int record_completion(void *user_data, int *error) {
  auto *c = static_cast<Completion *>(user_data);
  c->error = *error;
  ++c->calls;
  return 0;  // left for nbd_aio_command_completed to retire
}

nbd_completion_callback completion_of(Completion &c) {
  nbd_completion_callback cb{};
  cb.callback = record_completion;
  cb.user_data = &c;
  return cb;
}

TEST_F(ErrorTest, ErrorFilterErrnoReachesTheCommand) {
  NbdkitServer srv;
  // Errors are injected only while the file exists, so one connection sees both.
  const std::string inject = srv.dir().file("inject");
  START_OR_SKIP(srv.start({"--filter=error", "memory", "64M",
                           "error-pread=EIO", "error-pread-rate=100%", "error-pread-file=" + inject,
                           "error-pwrite=ENOSPC", "error-pwrite-rate=100%", "error-pwrite-file=" + inject,
                           "error-trim=EPERM", "error-trim-rate=100%", "error-trim-file=" + inject}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  nbd_handle *p = h.get();

  auto data = make_pattern(64 * KiB, 3);
  std::vector<uint8_t> buf(64 * KiB);
  NBD_ASSERT_OK(nbd_pwrite(p, data.data(), data.size(), 1 * MiB, 0));

  std::ofstream(inject).put('x');
  EXPECT_EQ(nbd_pread(p, buf.data(), buf.size(), 1 * MiB, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EIO) << last_error();
  EXPECT_EQ(nbd_pwrite(p, data.data(), data.size(), 2 * MiB, 0), -1);
  EXPECT_EQ(nbd_get_errno(), ENOSPC) << last_error();
  EXPECT_EQ(nbd_trim(p, 64 * KiB, 1 * MiB, 0), -1);
  EXPECT_EQ(nbd_get_errno(), EPERM) << last_error();
  // Commands the filter leaves alone still succeed meanwhile.
  NBD_EXPECT_OK(nbd_flush(p, 0));

  // The aio form: the completion callback sees the error, and so does retirement.
  Completion c;
  int64_t cookie = nbd_aio_pread(p, buf.data(), buf.size(), 1 * MiB, completion_of(c), 0);
  ASSERT_NE(cookie, -1) << last_error();
  EXPECT_EQ(wait_for_command(p, cookie), -1);
  EXPECT_EQ(nbd_get_errno(), EIO) << last_error();
  EXPECT_EQ(c.calls.load(), 1);
  EXPECT_EQ(c.error.load(), EIO);

  // Errors are per command: the connection is fine once the injection stops.
  EXPECT_EQ(nbd_aio_is_ready(p), 1);
  std::remove(inject.c_str());
  NBD_ASSERT_OK(nbd_pread(p, buf.data(), buf.size(), 1 * MiB, 0));
  EXPECT_EQ(buf, data);
}

// The server dies while the client waits between replies.  As in libnbd, the client
// sees end-of-file where a reply would start: the handle ends up CLOSED (libnbd
// reserves DEAD for an error, or for EOF in the middle of a reply, tested below) and
// every in-flight command fails with ENOTCONN.
TEST_F(ErrorTest, ServerKilledWhileCommandsInFlight) {
  NbdkitServer srv;
  // Reads take 5 s, so they are surely in flight when the server dies.
  START_OR_SKIP(srv.start({"--filter=delay", "memory", "64M", "delay-read=5"}));
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  nbd_handle *p = h.get();

  constexpr int kCommands = 4;
  std::vector<std::vector<uint8_t>> bufs(kCommands, std::vector<uint8_t>(64 * KiB));
  Completion completions[kCommands];
  std::vector<int64_t> cookies;
  for (int i = 0; i < kCommands; ++i) {
    int64_t cookie = nbd_aio_pread(p, bufs[i].data(), bufs[i].size(), uint64_t(i) * MiB,
                                   completion_of(completions[i]), 0);
    ASSERT_NE(cookie, -1) << last_error();
    cookies.push_back(cookie);
  }
  // Let the requests go out (a short poll loop also covers a library that only sends
  // from inside poll).
  for (int i = 0; i < 5; ++i) ASSERT_NE(nbd_poll(p, 20), -1) << last_error();
  ASSERT_EQ(nbd_aio_in_flight(p), kCommands);

  srv.kill_now();

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (nbd_aio_in_flight(p) > 0 && std::chrono::steady_clock::now() < deadline)
    if (nbd_poll(p, 500) == -1) break;

  EXPECT_TRUE(nbd_aio_is_closed(p) == 1 || nbd_aio_is_dead(p) == 1)
      << "closed " << nbd_aio_is_closed(p) << ", dead " << nbd_aio_is_dead(p);
  EXPECT_EQ(nbd_aio_is_ready(p), 0);
  EXPECT_EQ(nbd_aio_in_flight(p), 0);
  for (int i = 0; i < kCommands; ++i) {
    EXPECT_EQ(completions[i].calls.load(), 1) << "command " << i;
    EXPECT_EQ(completions[i].error.load(), ENOTCONN) << "command " << i;
    EXPECT_EQ(nbd_aio_command_completed(p, uint64_t(cookies[i])), -1) << "command " << i;
    EXPECT_NE(nbd_get_errno(), 0) << "command " << i;
  }
  // A dead handle refuses new work at once.
  std::vector<uint8_t> buf(512);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(nbd_pread(p, buf.data(), buf.size(), 0, 0), -1);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

// The server dies in the middle of a reply: that is a broken connection, so the
// handle is DEAD, the half-received read and the other commands fail, and the
// library says so instead of waiting for the rest.
TEST_F(ErrorTest, ServerKilledMidReplyKillsHandle) {
  TestServer srv;
  START_OR_SKIP(srv.start({"--size", "64M", "--slow-read-reply", "4096", "--read-chunk", "16M"}));
  std::vector<uint8_t> big(16 * MiB), small(64 * KiB);
  Completion read_c, other_c;
  Handle h = make_handle();
  ASSERT_TRUE(h);
  NBD_ASSERT_OK(nbd_connect_unix(h.get(), srv.socket_path().c_str()));
  nbd_handle *p = h.get();
  auto data = make_pattern(big.size(), 21);
  NBD_ASSERT_OK(nbd_pwrite(p, data.data(), data.size(), 0, 0));  // data, so the read is paced

  int64_t read_cookie = nbd_aio_pread(p, big.data(), big.size(), 0, completion_of(read_c), 0);
  ASSERT_NE(read_cookie, -1) << last_error();
#ifdef LIBNBD_HAVE_NBD_STATS_BYTES_RECEIVED
  const uint64_t before = nbd_stats_bytes_received(p);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (nbd_stats_bytes_received(p) - before < 1 * MiB && std::chrono::steady_clock::now() < until)
    ASSERT_NE(nbd_poll(p, 10), -1) << last_error();
  ASSERT_GE(nbd_stats_bytes_received(p) - before, 1 * MiB) << "the read reply never started";
#else
  for (int i = 0; i < 50; ++i) ASSERT_NE(nbd_poll(p, 10), -1) << last_error();
#endif
  int64_t other_cookie = nbd_aio_pread(p, small.data(), small.size(), 32 * MiB, completion_of(other_c), 0);
  ASSERT_NE(other_cookie, -1) << last_error();

  srv.kill_now();

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (nbd_aio_in_flight(p) > 0 && std::chrono::steady_clock::now() < deadline)
    if (nbd_poll(p, 500) == -1) break;
  EXPECT_EQ(nbd_aio_is_dead(p), 1);
  EXPECT_EQ(nbd_aio_in_flight(p), 0);
  EXPECT_EQ(read_c.calls.load(), 1);
  EXPECT_NE(read_c.error.load(), 0);
  EXPECT_EQ(other_c.calls.load(), 1);
  EXPECT_NE(other_c.error.load(), 0);
  EXPECT_EQ(nbd_aio_command_completed(p, uint64_t(read_cookie)), -1);
  EXPECT_EQ(nbd_aio_command_completed(p, uint64_t(other_cookie)), -1);
  EXPECT_EQ(nbd_pread(p, small.data(), small.size(), 0, 0), -1);
}

// nbdinfo 1.22 shuts its handle down from an atexit handler, after a failed connect.
// exit() has run the main thread's thread_local destructors by then, so the library's
// per-thread error (and its per-thread wake-up) must not be a thread_local object: a
// handler that makes failing calls and reads the error exits normally.
nbd_handle *atexit_handle;
void shutdown_at_exit() {
  if (nbd_shutdown(atexit_handle, 0) != -1) _exit(10);
  const char *e = nbd_get_error();
  if (e == nullptr || std::strlen(e) == 0) _exit(11);
  char b[512];
  if (nbd_pread(atexit_handle, b, sizeof b, 0, 0) != -1) _exit(12);
  nbd_close(atexit_handle);
}

TEST_F(ErrorTest, CallsFromAnAtexitHandlerAfterAFailedConnect) {
  pid_t pid = fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    atexit_handle = nbd_create();
    if (!atexit_handle) _exit(20);
    atexit(shutdown_at_exit);
    // Fails: nobody listens there.
    if (nbd_connect_uri(atexit_handle, "nbd+unix:///?socket=/nonexistent/duplexnbd.sock") != -1)
      _exit(21);
    // The error of this thread exists before exit() destroys the thread's objects.
    if (nbd_get_error() == nullptr) _exit(22);
    exit(1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 1);
}

}  // namespace
}  // namespace dnbd_test
