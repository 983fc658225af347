// SPDX-License-Identifier: LGPL-2.1-or-later
// Child processes for the integration tests: spawn, wait for a socket, kill and reap, time-box.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace dnbd_test {

// The full path of `name` on $PATH (or `name` itself if it contains a slash and is
// executable), or "" when there is none.
std::string find_program(std::string_view name);

// A private directory from mkdtemp, removed with everything in it on destruction.
class TempDir {
public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;

  const std::string &path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

private:
  std::string path_;
};

// One child process, started in its own process group with stdout and stderr going to
// a log file, and killed (SIGTERM, then SIGKILL) and reaped on destruction, so a failing
// test never leaks a server.  It also dies with the test process (PR_SET_PDEATHSIG):
// spawn from the test's main thread, because the signal follows the spawning thread.
class ChildProcess {
public:
  ChildProcess() = default;
  ~ChildProcess() { stop(); }
  ChildProcess(const ChildProcess &) = delete;
  ChildProcess &operator=(const ChildProcess &) = delete;

  // argv[0] must already be a path (see find_program).  extra_env entries are
  // "NAME=value" and override the inherited environment.  On failure returns false
  // with *error set.
  bool start(const std::vector<std::string> &argv, const std::string &log_path, std::string *error,
             const std::vector<std::string> &extra_env = {});

  pid_t pid() const { return pid_; }
  // Reaps the child if it has exited; true while it still runs.
  bool running();
  // The wait status once reaped (see running / stop), else -1.
  int wait_status() const { return status_; }
  // SIGTERM to the group, up to `grace` to exit, then SIGKILL; always reaps.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));
  // SIGKILL now, then reap: for "the server died" tests.
  void kill_now();
  const std::string &log_path() const { return log_path_; }

private:
  void reap_blocking();

  pid_t pid_ = -1;
  int status_ = -1;
  std::string log_path_;
};

// The last `max_bytes` bytes of a file (server logs in failure messages).
std::string file_tail(const std::string &path, size_t max_bytes = 4000);

// Polls until a Unix socket at `path` accepts a connection.  Fails early (false with
// *error) when `child` exits first or the timeout passes.
bool wait_for_unix_socket(const std::string &path, ChildProcess &child,
                          std::chrono::milliseconds timeout, std::string *error);
bool wait_for_tcp_port(int port, ChildProcess &child, std::chrono::milliseconds timeout,
                       std::string *error);

// A loopback TCP port that was free a moment ago (bind to port 0, read it, close).
int pick_free_tcp_port();

// Runs a program to completion (qemu-img, qemu-io, nbdinfo): exit status and output.
struct RunResult {
  int exit_status = -1;  // -1: could not run or killed
  std::string output;    // stdout and stderr interleaved
};
RunResult run_program(const std::vector<std::string> &argv,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds(60000));

// Time-boxes a test.  When the limit passes it reports a failure, kills every child
// process spawned through ChildProcess (which makes any library call blocked on a
// server return with an error, so the test can finish and clean up), and if the test
// is still stuck `hard_grace` later, exits the whole process so nothing hangs forever.
class Watchdog {
public:
  explicit Watchdog(std::chrono::seconds limit,
                    std::chrono::seconds hard_grace = std::chrono::seconds(20));
  ~Watchdog();
  Watchdog(const Watchdog &) = delete;
  Watchdog &operator=(const Watchdog &) = delete;

  bool fired() const { return fired_.load(); }

private:
  void run(std::chrono::seconds limit, std::chrono::seconds hard_grace);

  std::string test_name_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> fired_{false};
  std::thread thread_;
};

}  // namespace dnbd_test
