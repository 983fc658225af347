// SPDX-License-Identifier: LGPL-2.1-or-later
// Test helpers for TLS: an nbdkit process and blocking I/O over a Transport (PKI: test_pki.h).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_pki.h"
#include "transport/file_descriptor.h"
#include "transport/transport.h"

extern char **environ;

namespace duplexnbd::tls_testing {

inline constexpr int kIoTimeoutMs = 20000;

// nbdkit -f --exit-with-parent -U <sock> <args...> in its own temporary directory,
// stopped by pid when the object goes.
class Nbdkit {
public:
  explicit Nbdkit(const std::vector<std::string> &args) {
    socket_ = dir_ / "sock";
    log_ = dir_ / "nbdkit.log";
    std::vector<std::string> argv = {"nbdkit", "-f", "--exit-with-parent", "-U", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = spawn_logged(argv, log_, false);
    int r = pid_ < 0 ? -pid_ : 0;
    if (r != 0) {
      pid_ = -1;
      error_ = std::string("cannot start nbdkit: ") + strerror(r);
      return;
    }
    // nbdkit creates the socket file right before listening; wait for it rather than
    // probing with a connection (which a TLS-requiring nbdkit would log as an error).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        error_ = "nbdkit exited during startup: " + read_file(log_);
        return;
      }
      struct stat st;
      if (stat(socket_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    error_ = "nbdkit did not start listening: " + read_file(log_);
  }

  ~Nbdkit() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status;
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
  }
  Nbdkit(const Nbdkit &) = delete;
  Nbdkit &operator=(const Nbdkit &) = delete;

  static bool available() { return on_path("nbdkit"); }
  bool ok() const { return error_.empty(); }
  const std::string &error() const { return error_; }
  std::string log() const { return read_file(log_); }

  // A fresh plain connection to the server.
  transport::FileDescriptor connect() const {
    transport::FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    struct sockaddr_un sa = {};
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, socket_.c_str(), sizeof sa.sun_path - 1);
    if (!fd.valid() || ::connect(fd.get(), reinterpret_cast<struct sockaddr *>(&sa), sizeof sa) != 0)
      return transport::FileDescriptor();
    return fd;
  }

private:
  TempDir dir_;
  std::string socket_, log_, error_;
  pid_t pid_ = -1;
};

// ---- Blocking I/O over a non-blocking Transport, as the engine would drive it.

inline bool wait_for(int fd, short events, int timeout_ms = kIoTimeoutMs) {
  struct pollfd pfd = {fd, events, 0};
  int r;
  do {
    r = ::poll(&pfd, 1, timeout_ms);
  } while (r == -1 && errno == EINTR);
  return r == 1;
}

// Sends all of `data`; false (with errno) on failure or timeout.
inline bool send_all(transport::Transport &t, const void *data, size_t len) {
  const uint8_t *p = static_cast<const uint8_t *>(data);
  size_t off = 0;
  while (off < len) {
    struct iovec iov = {const_cast<uint8_t *>(p + off), len - off};
    ssize_t r = t.send(&iov, 1, false);
    if (r < 0) {
      if (errno != EAGAIN) return false;
      if (!wait_for(t.fd(), POLLOUT)) {
        errno = ETIMEDOUT;
        return false;
      }
      continue;
    }
    off += static_cast<size_t>(r);
  }
  return true;
}

// Receives exactly `len` bytes; false on failure, timeout or end of stream (errno 0).
inline bool recv_exact(transport::Transport &t, void *buf, size_t len) {
  uint8_t *p = static_cast<uint8_t *>(buf);
  size_t off = 0;
  while (off < len) {
    ssize_t r = t.recv(p + off, len - off);
    if (r == 0) {
      errno = 0;
      return false;
    }
    if (r < 0) {
      if (errno != EAGAIN) return false;
      // Decrypted bytes inside the transport never make the socket readable.
      if (!t.pending_read() && !wait_for(t.fd(), POLLIN)) {
        errno = ETIMEDOUT;
        return false;
      }
      continue;
    }
    off += static_cast<size_t>(r);
  }
  return true;
}

// Reads until end of stream; returns the number of bytes seen before it, or -1.
inline ssize_t recv_until_eof(transport::Transport &t) {
  char buf[4096];
  ssize_t total = 0;
  for (;;) {
    ssize_t r = t.recv(buf, sizeof buf);
    if (r == 0) return total;
    if (r < 0) {
      if (errno != EAGAIN) return -1;
      if (!t.pending_read() && !wait_for(t.fd(), POLLIN)) return -1;
      continue;
    }
    total += r;
  }
}

}  // namespace duplexnbd::tls_testing
