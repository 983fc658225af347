// SPDX-License-Identifier: LGPL-2.1-or-later
// duplexnbd.h against real servers: request and connect timeouts, their policies, cancel,
// and interrupt from threads and signal handlers.
#include <libnbd.h>
#include <duplexnbd.h>

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nbd.hpp>

#include "support/nbd_helpers.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

using namespace std::chrono_literals;

// SIGSTOP stops a multi-threaded process only once one of its threads runs and starts the
// group stop; until then (long, on a loaded machine) its other threads still answer
// requests.  Sends SIGSTOP and waits until every thread of `pid` is in the stopped state.
bool stop_and_wait(pid_t pid) {
  if (kill(pid, SIGSTOP) != 0) return false;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (int i = 0; i < 5000; ++i) {
    bool all = true, any = false;
    for (const auto &t : std::filesystem::directory_iterator(tasks)) {
      std::ifstream f(t.path() / "stat");
      std::string stat((std::istreambuf_iterator<char>(f)), {});
      auto paren = stat.rfind(')');
      if (paren == std::string::npos || paren + 2 >= stat.size()) continue;
      any = true;
      const char state = stat[paren + 2];
      if (state != 'T' && state != 't') all = false;
    }
    if (any && all) return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}
using Clock = std::chrono::steady_clock;

constexpr uint8_t kCanary = 0xc5;

// Nothing may reach a buffer once its command has completed: what it holds then (the
// canary, or zeroes where nbd_set_pread_initialize asked the library to clear what the
// server never sent) must still be there after the late reply has come and gone.
struct Snapshot {
  explicit Snapshot(const std::vector<uint8_t> &b) : buf(&b), copy(b) {}
  bool unchanged() const { return *buf == copy; }
  const std::vector<uint8_t> *buf;
  std::vector<uint8_t> copy;
};

class Extensions : public IntegrationTest {
protected:
  // nbdkit memory with a delay filter in front (delay in milliseconds, 0: none).
  void start(unsigned read_delay_ms, unsigned write_delay_ms = 0) {
    std::vector<std::string> args = {"--filter=delay", "memory", "8M"};
    args.push_back("delay-read=" + std::to_string(read_delay_ms) + "ms");
    args.push_back("delay-write=" + std::to_string(write_delay_ms) + "ms");
    START_OR_SKIP(srv_.start(args));
    h_ = make_handle();
    ASSERT_TRUE(h_);
  }
  void connect() { NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv_.socket_path().c_str())); }
  static double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  }

  NbdkitServer srv_;
  Handle h_;
};

struct Outcome {
  std::atomic<int> calls{0};
  std::atomic<int> error{-1};
  std::atomic<int> frees{0};
};

nbd_completion_callback record(Outcome &o, int retire = 0) {
  return nbd_completion_callback{
      retire ? +[](void *ud, int *err) {
        auto *x = static_cast<Outcome *>(ud);
        x->error = *err;
        x->calls++;
        return 1;
      }
             : +[](void *ud, int *err) {
                 auto *x = static_cast<Outcome *>(ud);
                 x->error = *err;
                 x->calls++;
                 return 0;
               },
      &o, [](void *ud) { static_cast<Outcome *>(ud)->frees++; }};
}

// ---------------------------------------------------------------- settings

TEST_F(Extensions, SettingsDefaultToOffAndAreKept) {
  Handle h = make_handle();
  EXPECT_EQ(duplexnbd_get_request_timeout(h.get()), 0);
  EXPECT_EQ(duplexnbd_get_connect_timeout(h.get()), 0);
  EXPECT_EQ(duplexnbd_get_timeout_policy(h.get()), DUPLEXNBD_TIMEOUT_KEEP_CONNECTION);
  NBD_EXPECT_OK(duplexnbd_set_request_timeout(h.get(), 1500));
  NBD_EXPECT_OK(duplexnbd_set_connect_timeout(h.get(), 2500));
  NBD_EXPECT_OK(duplexnbd_set_timeout_policy(h.get(), DUPLEXNBD_TIMEOUT_CLOSE_CONNECTION));
  EXPECT_EQ(duplexnbd_get_request_timeout(h.get()), 1500);
  EXPECT_EQ(duplexnbd_get_connect_timeout(h.get()), 2500);
  EXPECT_EQ(duplexnbd_get_timeout_policy(h.get()), DUPLEXNBD_TIMEOUT_CLOSE_CONNECTION);
  EXPECT_EQ(duplexnbd_set_timeout_policy(h.get(), 2), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(duplexnbd_get_timeout_policy(h.get()), DUPLEXNBD_TIMEOUT_CLOSE_CONNECTION);
  // Nothing to cancel on a handle that never connected; interrupting it is harmless.
  EXPECT_EQ(duplexnbd_aio_cancel(h.get(), 1), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(duplexnbd_interrupt(h.get()), 0);
  // The header says nonnull; the call copes anyway.  Called through a plain function pointer so
  // that UBSan's nonnull-attribute check (a caller-side check) does not flag the test itself.
  int (*volatile interrupt)(nbd_handle *) = duplexnbd_interrupt;
  EXPECT_EQ(interrupt(nullptr), -1);
}

TEST_F(Extensions, CxxTimeoutsTakeDurationsRoundedUp) {
  nbd::Handle h;
  h.set_request_timeout(1500us);
  EXPECT_EQ(h.request_timeout(), 2ms);
  h.set_connect_timeout(3s);
  EXPECT_EQ(h.connect_timeout(), 3000ms);
  h.set_request_timeout(0s);
  EXPECT_EQ(h.get_request_timeout(), 0);
}

// ---------------------------------------------------------------- request timeouts

// A blocking read the server answers only after 2 s fails with ETIMEDOUT at 300 ms; the
// late reply goes nowhere (the buffer keeps its canary), and the connection goes on.
TEST_F(Extensions, BlockingReadTimesOutAndTheLateReplyIsThrownAway) {
  start(2000);
  connect();
  NBD_ASSERT_OK(duplexnbd_set_request_timeout(h_.get(), 300));
  std::vector<uint8_t> buf(1 << 20, kCanary);  // large: its payload would go straight in
  const auto t0 = Clock::now();
  EXPECT_EQ(nbd_pread(h_.get(), buf.data(), buf.size(), 0, 0), -1);
  EXPECT_EQ(nbd_get_errno(), ETIMEDOUT) << last_error();
  EXPECT_LT(seconds_since(t0), 1.5);
  EXPECT_GE(seconds_since(t0), 0.29);
  EXPECT_EQ(nbd_aio_in_flight(h_.get()), 0);
  const Snapshot at_timeout(buf);
  // The late reply arrives while another (undelayed) command runs.
  std::vector<uint8_t> data(4096, 0x5a);
  NBD_ASSERT_OK(nbd_pwrite(h_.get(), data.data(), data.size(), 4096, 0));
  std::this_thread::sleep_for(2200ms);
  NBD_ASSERT_OK(nbd_pwrite(h_.get(), data.data(), data.size(), 8192, 0));
  EXPECT_TRUE(at_timeout.unchanged()) << "the late reply reached the caller's buffer";
  NBD_ASSERT_OK(duplexnbd_set_request_timeout(h_.get(), 0));
  std::vector<uint8_t> back(4096);
  NBD_ASSERT_OK(nbd_pread(h_.get(), back.data(), back.size(), 4096, 0));
  EXPECT_EQ(back, data);
  EXPECT_EQ(nbd_aio_is_ready(h_.get()), 1);
}

TEST_F(Extensions, AioReadTimesOutWithItsCallback) {
  start(1500);
  connect();
  NBD_ASSERT_OK(duplexnbd_set_request_timeout(h_.get(), 200));
  std::vector<uint8_t> buf(4096, kCanary);
  Outcome o;
  int64_t c = nbd_aio_pread(h_.get(), buf.data(), buf.size(), 0, record(o), 0);
  ASSERT_NE(c, -1) << last_error();
  const auto t0 = Clock::now();
  while (o.calls == 0 && seconds_since(t0) < 5) ASSERT_NE(nbd_poll(h_.get(), -1), -1) << last_error();
  EXPECT_EQ(o.calls.load(), 1);
  EXPECT_EQ(o.error.load(), ETIMEDOUT);
  EXPECT_LT(seconds_since(t0), 1.2);
  EXPECT_EQ(nbd_aio_command_completed(h_.get(), uint64_t(c)), -1);
  EXPECT_EQ(nbd_get_errno(), ETIMEDOUT);
  EXPECT_EQ(o.frees.load(), 1);
  const Snapshot at_timeout(buf);
  // Let the late reply come and go.
  NBD_ASSERT_OK(duplexnbd_set_request_timeout(h_.get(), 0));
  std::this_thread::sleep_for(1500ms);
  std::vector<uint8_t> other(512);
  NBD_ASSERT_OK(nbd_pread(h_.get(), other.data(), other.size(), 0, 0));
  EXPECT_TRUE(at_timeout.unchanged());
  EXPECT_EQ(o.calls.load(), 1);
}

TEST_F(Extensions, WriteTimesOutAndTheConnectionStaysUsable) {
  start(0, 1500);
  connect();
  NBD_ASSERT_OK(duplexnbd_set_request_timeout(h_.get(), 200));
  std::vector<uint8_t> buf(256 * 1024, 0x77);
  EXPECT_EQ(nbd_pwrite(h_.get(), buf.data(), buf.size(), 0, 0), -1);
  EXPECT_EQ(nbd_get_errno(), ETIMEDOUT);
  // The caller may reuse the buffer at once; the server still gets the bytes it was sent.
  std::memset(buf.data(), 0x11, buf.size());
  std::vector<uint8_t> back(buf.size());
  std::this_thread::sleep_for(1700ms);
  NBD_ASSERT_OK(nbd_pread(h_.get(), back.data(), back.size(), 0, 0));
  EXPECT_EQ(back[0], 0x77);  // the write happened, with what was in the buffer at the time
  EXPECT_EQ(nbd_aio_is_ready(h_.get()), 1);
}

// A stopped server (a frozen VM): commands time out; when it resumes, its late replies are
// thrown away and later commands work.
TEST_F(Extensions, StoppedServerTimesOutThenRecovers) {
  start(0);
  connect();
  std::vector<uint8_t> data(64 * 1024, 0x42);
  NBD_ASSERT_OK(nbd_pwrite(h_.get(), data.data(), data.size(), 0, 0));
  NBD_ASSERT_OK(duplexnbd_set_request_timeout(h_.get(), 300));
  ASSERT_TRUE(stop_and_wait(srv_.process().pid()));
  std::vector<std::vector<uint8_t>> bufs(4, std::vector<uint8_t>(64 * 1024, kCanary));
  std::vector<Snapshot> snaps;
  for (auto &b : bufs) {
    EXPECT_EQ(nbd_pread(h_.get(), b.data(), b.size(), 0, 0), -1);
    EXPECT_EQ(nbd_get_errno(), ETIMEDOUT);
    snaps.emplace_back(b);
  }
  ASSERT_EQ(kill(srv_.process().pid(), SIGCONT), 0);
  NBD_ASSERT_OK(duplexnbd_set_request_timeout(h_.get(), 0));
  std::vector<uint8_t> back(data.size());
  NBD_ASSERT_OK(nbd_pread(h_.get(), back.data(), back.size(), 0, 0));
  EXPECT_EQ(back, data);
  for (auto &snap : snaps) EXPECT_TRUE(snap.unchanged());
}

TEST_F(Extensions, ClosePolicyKillsTheConnection) {
  start(1000);
  connect();
  NBD_ASSERT_OK(duplexnbd_set_timeout_policy(h_.get(), DUPLEXNBD_TIMEOUT_CLOSE_CONNECTION));
  std::vector<uint8_t> a(4096), b(4096);
  Outcome other;
  // Issued without a deadline: it fails with the connection, with ETIMEDOUT too.
  ASSERT_NE(nbd_aio_pread(h_.get(), a.data(), a.size(), 0, record(other), 0), -1);
  NBD_ASSERT_OK(duplexnbd_set_request_timeout(h_.get(), 200));
  EXPECT_EQ(nbd_pread(h_.get(), b.data(), b.size(), 0, 0), -1);
  EXPECT_EQ(nbd_get_errno(), ETIMEDOUT);
  EXPECT_EQ(nbd_aio_is_dead(h_.get()), 1);
  EXPECT_EQ(other.calls.load(), 1);
  EXPECT_EQ(other.error.load(), ETIMEDOUT);
  EXPECT_EQ(nbd_aio_in_flight(h_.get()), 0);
  // Never retired: its closure is freed by nbd_close (as in libnbd), while `other` lives.
  EXPECT_EQ(other.frees.load(), 0);
  h_.reset();
  EXPECT_EQ(other.frees.load(), 1);
}

// ---------------------------------------------------------------- connect timeout

// A socket that listens and never answers the handshake.
class SilentListener {
public:
  SilentListener() {
    path_ = dir_.file("silent.sock");
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    ok_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0 && listen(fd_, 8) == 0;
  }
  ~SilentListener() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return ok_; }
  const std::string &path() const { return path_; }

private:
  TempDir dir_;
  std::string path_;
  int fd_ = -1;
  bool ok_ = false;
};

TEST_F(Extensions, ConnectToASilentServerTimesOut) {
  SilentListener l;
  ASSERT_TRUE(l.ok());
  Handle h = make_handle();
  NBD_ASSERT_OK(duplexnbd_set_connect_timeout(h.get(), 300));
  const auto t0 = Clock::now();
  EXPECT_EQ(nbd_connect_unix(h.get(), l.path().c_str()), -1);
  EXPECT_EQ(nbd_get_errno(), ETIMEDOUT) << last_error();
  EXPECT_LT(seconds_since(t0), 1.5);
  EXPECT_EQ(nbd_aio_is_dead(h.get()), 1);

  // The aio form, driven by nbd_poll.
  Handle h2 = make_handle();
  NBD_ASSERT_OK(duplexnbd_set_connect_timeout(h2.get(), 300));
  NBD_ASSERT_OK(nbd_aio_connect_unix(h2.get(), l.path().c_str()));
  const auto t1 = Clock::now();
  int r = 0;
  while (r != -1 && !nbd_aio_is_dead(h2.get()) && seconds_since(t1) < 5) r = nbd_poll(h2.get(), -1);
  EXPECT_EQ(nbd_aio_is_dead(h2.get()), 1);
  EXPECT_LT(seconds_since(t1), 1.5);
}

TEST_F(Extensions, AConnectTimeoutDoesNotOutliveTheHandshake) {
  start(0);
  NBD_ASSERT_OK(duplexnbd_set_connect_timeout(h_.get(), 200));
  connect();
  std::this_thread::sleep_for(400ms);
  std::vector<uint8_t> b(512);
  NBD_ASSERT_OK(nbd_pread(h_.get(), b.data(), b.size(), 0, 0));
  EXPECT_EQ(nbd_aio_is_ready(h_.get()), 1);
}

// ---------------------------------------------------------------- cancel

TEST_F(Extensions, CancelAReadInFlight) {
  start(1000);
  connect();
  std::vector<uint8_t> buf(128 * 1024, kCanary);
  Outcome o;
  int64_t c = nbd_aio_pread(h_.get(), buf.data(), buf.size(), 0, record(o), 0);
  ASSERT_NE(c, -1);
  std::this_thread::sleep_for(100ms);  // well on the wire by now
  NBD_ASSERT_OK(duplexnbd_aio_cancel(h_.get(), uint64_t(c)));
  EXPECT_EQ(o.calls.load(), 1);
  EXPECT_EQ(o.error.load(), ECANCELED);
  EXPECT_EQ(nbd_aio_command_completed(h_.get(), uint64_t(c)), -1);
  EXPECT_EQ(nbd_get_errno(), ECANCELED);
  EXPECT_EQ(nbd_aio_in_flight(h_.get()), 0);
  const Snapshot at_cancel(buf);
  // Cancelling twice, or what is gone, is an error.
  EXPECT_EQ(duplexnbd_aio_cancel(h_.get(), uint64_t(c)), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(duplexnbd_aio_cancel(h_.get(), 999999), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  // The late reply is thrown away; the handle goes on.
  std::vector<uint8_t> b(512);
  NBD_ASSERT_OK(nbd_pread(h_.get(), b.data(), b.size(), 0, 0));  // after the delay
  std::this_thread::sleep_for(100ms);
  NBD_ASSERT_OK(nbd_pread(h_.get(), b.data(), b.size(), 0, 0));
  EXPECT_TRUE(at_cancel.unchanged());
  EXPECT_EQ(o.calls.load(), 1);
  EXPECT_EQ(o.frees.load(), 1);
}

// A request that has not left yet (behind a large write to a stopped server) is never
// sent: the server's log shows no read.
TEST_F(Extensions, CancelBeforeSendNeverSends) {
  TempDir d;
  const std::string log = d.file("requests.log");
  START_OR_SKIP(srv_.start({"--filter=log", "memory", "64M", "logfile=" + log}));
  h_ = make_handle();
  connect();
  ASSERT_TRUE(stop_and_wait(srv_.process().pid()));
  std::vector<uint8_t> big(32 << 20, 0x33), small(4096, kCanary);
  Outcome w, r;
  int64_t wc = nbd_aio_pwrite(h_.get(), big.data(), big.size(), 0, record(w), 0);
  ASSERT_NE(wc, -1);
  int64_t rc = nbd_aio_pread(h_.get(), small.data(), small.size(), 12345 * 512, record(r), 0);
  ASSERT_NE(rc, -1);
  NBD_ASSERT_OK(duplexnbd_aio_cancel(h_.get(), uint64_t(rc)));
  EXPECT_EQ(r.calls.load(), 1);
  EXPECT_EQ(r.error.load(), ECANCELED);
  // Retired now, so its closure is freed while `r` lives.
  EXPECT_EQ(nbd_aio_command_completed(h_.get(), uint64_t(rc)), -1);
  EXPECT_EQ(r.frees.load(), 1);
  const Snapshot at_cancel(small);
  ASSERT_EQ(kill(srv_.process().pid(), SIGCONT), 0);
  EXPECT_EQ(wait_for_command(h_.get(), wc), 1);
  NBD_ASSERT_OK(nbd_flush(h_.get(), 0));
  std::ifstream in(log);
  std::stringstream all;
  all << in.rdbuf();
  EXPECT_NE(all.str().find("Write"), std::string::npos) << all.str();
  EXPECT_EQ(all.str().find("Read id="), std::string::npos) << "the cancelled read was sent:\n" << all.str();
  EXPECT_TRUE(at_cancel.unchanged());
}

// ---------------------------------------------------------------- interrupt

TEST_F(Extensions, InterruptReleasesEveryBlockedThread) {
  start(3000);
  connect();
  constexpr int kThreads = 8;
  std::vector<std::vector<uint8_t>> bufs(kThreads, std::vector<uint8_t>(4096, kCanary));
  std::vector<std::vector<uint8_t>> at_return(kThreads);
  std::atomic<int> eintr{0}, started{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i) {
    ts.emplace_back([&, i] {
      started++;
      if (nbd_pread(h_.get(), bufs[i].data(), bufs[i].size(), 0, 0) == -1 && nbd_get_errno() == EINTR)
        eintr++;
      at_return[i] = bufs[i];
    });
  }
  // And one in nbd_poll. It may do some of the readers' sending and return 1 before the
  // interrupt (work it did is not interrupted), so it polls again until a call fails; the
  // replies come 3 s later, so the call blocked when the interrupt comes is the last.
  std::atomic<int> poll_result{0}, poll_errno{0};
  ts.emplace_back([&] {
    started++;
    const auto p0 = Clock::now();
    int r;
    do r = nbd_poll(h_.get(), -1);
    while (r == 1 && seconds_since(p0) < 2);
    poll_result = r;
    poll_errno = nbd_get_errno();
  });
  while (started < kThreads + 1) std::this_thread::yield();
  std::this_thread::sleep_for(300ms);
  const auto t0 = Clock::now();
  NBD_ASSERT_OK(duplexnbd_interrupt(h_.get()));
  for (auto &t : ts) t.join();
  EXPECT_LT(seconds_since(t0), 1.0);
  EXPECT_EQ(eintr.load(), kThreads);
  EXPECT_EQ(poll_result.load(), -1);
  EXPECT_EQ(poll_errno.load(), EINTR);
  // Calls made afterwards are not interrupted, and the connection is fine.
  std::vector<uint8_t> b(512);
  NBD_ASSERT_OK(nbd_pread(h_.get(), b.data(), b.size(), 0, 0));
  std::this_thread::sleep_for(3000ms);  // the interrupted reads' replies come and go
  NBD_ASSERT_OK(nbd_pread(h_.get(), b.data(), b.size(), 0, 0));
  for (int i = 0; i < kThreads; ++i) EXPECT_EQ(bufs[i], at_return[i]) << i;
}

nbd_handle *signal_target;
void on_sigusr1(int) { duplexnbd_interrupt(signal_target); }

TEST_F(Extensions, InterruptFromASignalHandler) {
  start(3000);
  connect();
  signal_target = h_.get();
  struct sigaction sa = {};
  sa.sa_handler = on_sigusr1;
  sigemptyset(&sa.sa_mask);
  struct sigaction old = {};
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  constexpr int kThreads = 8;
  std::atomic<int> eintr{0}, started{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; ++i) {
    ts.emplace_back([&] {
      std::vector<uint8_t> b(4096);
      started++;
      if (nbd_pread(h_.get(), b.data(), b.size(), 0, 0) == -1 && nbd_get_errno() == EINTR) eintr++;
    });
  }
  while (started < kThreads) std::this_thread::yield();
  std::this_thread::sleep_for(300ms);
  const auto t0 = Clock::now();
  // Delivered to one of the blocked threads, as a terminal's SIGINT would be.
  ASSERT_EQ(pthread_kill(ts[3].native_handle(), SIGUSR1), 0);
  for (auto &t : ts) t.join();
  sigaction(SIGUSR1, &old, nullptr);
  EXPECT_LT(seconds_since(t0), 1.0);
  EXPECT_EQ(eintr.load(), kThreads);
}

}  // namespace
}  // namespace dnbd_test
