// SPDX-License-Identifier: LGPL-2.1-or-later
// Starts a throwaway nbdkit (or another server taking a socket path) for one test.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char **environ;

#include "test_pki.h"

namespace duplexnbd::testing {

// A server process listening on a Unix socket in a private temporary directory. The
// process is stopped (by its pid) when the object goes. Its stderr goes to a log file
// that is shown if it fails to start, so expected error chatter does not fill test logs.
class ServerProcess {
public:
  // `argv_before_socket` is the command up to where the socket path goes; the socket
  // path is inserted after it, then `argv_after_socket` follows.
  ServerProcess(std::vector<std::string> argv_before_socket,
                std::vector<std::string> argv_after_socket) {
    char tmpl[] = "/tmp/duplexnbd-test-XXXXXX";
    if (!mkdtemp(tmpl)) {
      error_ = std::string("mkdtemp: ") + strerror(errno);
      return;
    }
    dir_ = tmpl;
    socket_ = dir_ + "/sock";
    log_ = dir_ + "/server.log";
    std::vector<std::string> argv = std::move(argv_before_socket);
    argv.push_back(socket_);
    for (auto &a : argv_after_socket) argv.push_back(std::move(a));
    start(argv);
  }

  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status;
      // Give it a moment to go, then insist.
      for (int i = 0; i < 200; i++) {
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = -1;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (pid_ > 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
      }
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  ServerProcess(const ServerProcess &) = delete;
  ServerProcess &operator=(const ServerProcess &) = delete;

  bool ok() const { return error_.empty(); }
  const std::string &error() const { return error_; }
  const std::string &socket() const { return socket_; }
  std::string uri() const { return "nbd+unix:///?socket=" + socket_; }
  pid_t pid() const { return pid_; }

  // Stops the server abruptly, as a crash would.
  void kill_now() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status;
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

private:
  void start(const std::vector<std::string> &argv) {
    std::vector<char *> cargv;
    for (const auto &a : argv) cargv.push_back(const_cast<char *>(a.c_str()));
    cargv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    int r = posix_spawnp(&pid_, cargv[0], &fa, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0) {
      pid_ = -1;
      error_ = "cannot start " + argv[0] + ": " + strerror(r);
      return;
    }
    // Ready once the socket accepts a connection (the file appears just before listen).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        error_ = argv[0] + " exited during startup: " + read_log();
        return;
      }
      if (connectable()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    error_ = argv[0] + " did not start listening: " + read_log();
  }

  bool connectable() const {
    struct stat st;
    if (stat(socket_.c_str(), &st) != 0) return false;
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    struct sockaddr_un sa = {};
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, socket_.c_str(), sizeof sa.sun_path - 1);
    bool ok = ::connect(fd, reinterpret_cast<struct sockaddr *>(&sa), sizeof sa) == 0;
    ::close(fd);
    return ok;
  }

  std::string read_log() const {
    std::ifstream f(log_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  std::string dir_, socket_, log_, error_;
  pid_t pid_ = -1;
};

// nbdkit -U <sock> -f --exit-with-parent <args...>, e.g. {"memory", "64M"} or
// {"--filter=error", "memory", "1M", "error-rate=100%"}.
class NbdkitServer : public ServerProcess {
public:
  explicit NbdkitServer(std::vector<std::string> args)
      : ServerProcess({"nbdkit", "-U"}, with_options(std::move(args))) {}

  static bool available() { return tls_testing::on_path("nbdkit"); }

private:
  static std::vector<std::string> with_options(std::vector<std::string> args) {
    std::vector<std::string> v = {"-f", "--exit-with-parent"};
    for (auto &a : args) v.push_back(std::move(a));
    return v;
  }
};

}  // namespace duplexnbd::testing
