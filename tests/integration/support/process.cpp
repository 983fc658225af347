// SPDX-License-Identifier: LGPL-2.1-or-later
// Child processes for the integration tests: spawn, wait for a socket, kill and reap, time-box.
#include "support/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

extern char **environ;

namespace dnbd_test {

namespace {

// Every live child, so the watchdog can kill them all from its own thread.
std::mutex g_children_mutex;
std::set<pid_t> g_children;

void register_child(pid_t pid) {
  std::lock_guard lock(g_children_mutex);
  g_children.insert(pid);
}
void unregister_child(pid_t pid) {
  std::lock_guard lock(g_children_mutex);
  g_children.erase(pid);
}
void kill_all_children() {
  std::lock_guard lock(g_children_mutex);
  for (pid_t pid : g_children) ::kill(-pid, SIGKILL);  // the whole group: plugins fork too
}

// argv and envp for execve, prepared before fork: after fork in a threaded program the
// child may only call async-signal-safe functions, so no allocation there.
struct ExecVectors {
  std::vector<std::string> env_storage;
  std::vector<char *> argv, envp;

  ExecVectors(const std::vector<std::string> &args, const std::vector<std::string> &extra_env) {
    for (const auto &a : args) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    for (char **e = environ; *e; ++e) {
      std::string_view entry(*e);
      bool overridden = false;
      for (const auto &x : extra_env) {
        auto eq = x.find('=');
        if (entry.substr(0, eq + 1) == std::string_view(x).substr(0, eq + 1)) overridden = true;
      }
      if (!overridden) env_storage.emplace_back(entry);
    }
    for (const auto &x : extra_env) env_storage.push_back(x);
    for (const auto &e : env_storage) envp.push_back(const_cast<char *>(e.c_str()));
    envp.push_back(nullptr);
  }
};

// In the child, between fork and exec.
[[noreturn]] void exec_child(pid_t parent, int out_fd, const ExecVectors &v) {
  ::setpgid(0, 0);
  // Die with the test process even if it is SIGKILLed, so no server outlives a crash.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);
  // The test process may ignore SIGPIPE; servers expect the default.
  ::signal(SIGPIPE, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd >= 0) ::dup2(null_fd, 0);
  ::dup2(out_fd, 1);
  ::dup2(out_fd, 2);
  ::execve(v.argv[0], v.argv.data(), v.envp.data());
  ::_exit(127);
}

}  // namespace

std::string find_program(std::string_view name) {
  if (name.find('/') != std::string_view::npos)
    return ::access(std::string(name).c_str(), X_OK) == 0 ? std::string(name) : std::string();
  const char *path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + std::string(name);
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return {};
}

// ---- TempDir --------------------------------------------------------------------------------

TempDir::TempDir() {
  // Unix socket paths are limited to 108 bytes: stay short, under /tmp.
  char tmpl[] = "/tmp/dnbd-it-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    return;
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// ---- ChildProcess ---------------------------------------------------------------------------

bool ChildProcess::start(const std::vector<std::string> &argv, const std::string &log_path,
                         std::string *error, const std::vector<std::string> &extra_env) {
  stop();
  log_path_ = log_path;
  status_ = -1;
  int out_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out_fd < 0) {
    *error = "open " + log_path + ": " + std::strerror(errno);
    return false;
  }
  ExecVectors v(argv, extra_env);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    *error = std::string("fork: ") + std::strerror(errno);
    ::close(out_fd);
    return false;
  }
  if (pid == 0) exec_child(parent, out_fd, v);
  ::close(out_fd);
  // Also from the parent side, so a kill(-pid) right away cannot miss the group.
  ::setpgid(pid, pid);
  pid_ = pid;
  register_child(pid);
  return true;
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == 0) return true;
  if (r == pid_) status_ = status;
  unregister_child(pid_);
  pid_ = -1;
  return false;
}

void ChildProcess::reap_blocking() {
  int status;
  pid_t r;
  do r = ::waitpid(pid_, &status, 0);
  while (r < 0 && errno == EINTR);
  if (r == pid_) status_ = status;
  unregister_child(pid_);
  pid_ = -1;
}

void ChildProcess::stop(std::chrono::milliseconds grace) {
  if (!running()) return;
  ::kill(-pid_, SIGTERM);
  ::kill(pid_, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!running()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill_now();
}

void ChildProcess::kill_now() {
  if (pid_ <= 0) return;
  ::kill(-pid_, SIGKILL);
  ::kill(pid_, SIGKILL);
  reap_blocking();
}

std::string file_tail(const std::string &path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "(no log)";
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (s.size() > max_bytes) s = "..." + s.substr(s.size() - max_bytes);
  return s;
}

// ---- Waiting for servers --------------------------------------------------------------------

namespace {

template <typename TryConnect>
bool wait_until_accepting(TryConnect try_connect, ChildProcess &child, std::chrono::milliseconds timeout,
                          const std::string &what, std::string *error) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (try_connect()) return true;
    if (!child.running()) {
      int st = child.wait_status();
      *error = what + ": server exited before accepting (" +
               (WIFEXITED(st) ? "status " + std::to_string(WEXITSTATUS(st))
                              : "signal " + std::to_string(WIFSIGNALED(st) ? WTERMSIG(st) : 0)) +
               "); its log:\n" + file_tail(child.log_path());
      return false;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      *error = what + ": not accepting after " + std::to_string(timeout.count()) + " ms; log:\n" +
               file_tail(child.log_path());
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

bool wait_for_unix_socket(const std::string &path, ChildProcess &child, std::chrono::milliseconds timeout,
                          std::string *error) {
  auto try_connect = [&] {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return false;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    bool ok = ::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
  };
  return wait_until_accepting(try_connect, child, timeout, "unix socket " + path, error);
}

bool wait_for_tcp_port(int port, ChildProcess &child, std::chrono::milliseconds timeout, std::string *error) {
  auto try_connect = [&] {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    bool ok = ::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
  };
  return wait_until_accepting(try_connect, child, timeout, "127.0.0.1:" + std::to_string(port), error);
}

int pick_free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

RunResult run_program(const std::vector<std::string> &argv, std::chrono::milliseconds timeout) {
  RunResult result;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) < 0) {
    result.output = std::string("pipe: ") + std::strerror(errno);
    return result;
  }
  ExecVectors v(argv, {});
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    result.output = std::string("fork: ") + std::strerror(errno);
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    return result;
  }
  if (pid == 0) exec_child(parent, pipefd[1], v);
  ::close(pipefd[1]);
  register_child(pid);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{pipefd[0], POLLIN, 0};
    int r = ::poll(&p, 1, int(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    result.output.append(buf, size_t(n));
  }
  ::close(pipefd[0]);
  if (timed_out) {
    ::kill(-pid, SIGKILL);
    result.output += "\n(killed after " + std::to_string(timeout.count()) + " ms)";
  }
  int status;
  pid_t r;
  do r = ::waitpid(pid, &status, 0);
  while (r < 0 && errno == EINTR);
  unregister_child(pid);
  if (!timed_out && r == pid && WIFEXITED(status)) result.exit_status = WEXITSTATUS(status);
  return result;
}

// ---- Watchdog -------------------------------------------------------------------------------

Watchdog::Watchdog(std::chrono::seconds limit, std::chrono::seconds hard_grace) {
  if (const auto *info = ::testing::UnitTest::GetInstance()->current_test_info())
    test_name_ = std::string(info->test_suite_name()) + "." + info->name();
  thread_ = std::thread([this, limit, hard_grace] { run(limit, hard_grace); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(mutex_);
    done_ = true;
  }
  cv_.notify_all();
  thread_.join();
  // Reported from the test's own thread, where gtest expects failures.
  if (fired_) ADD_FAILURE() << "watchdog: " << test_name_ << " exceeded its time limit";
}

void Watchdog::run(std::chrono::seconds limit, std::chrono::seconds hard_grace) {
  std::unique_lock lock(mutex_);
  if (cv_.wait_for(lock, limit, [this] { return done_; })) return;
  fired_ = true;
  std::fprintf(stderr, "\nwatchdog: %s still running after %lld s: killing its servers\n",
               test_name_.c_str(), static_cast<long long>(limit.count()));
  kill_all_children();
  if (cv_.wait_for(lock, hard_grace, [this] { return done_; })) return;
  std::fprintf(stderr, "watchdog: %s still stuck %lld s later: exiting the test program\n",
               test_name_.c_str(), static_cast<long long>(hard_grace.count()));
  std::fflush(stderr);
  ::_exit(124);
}

}  // namespace dnbd_test
