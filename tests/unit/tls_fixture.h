// SPDX-License-Identifier: LGPL-2.1-or-later
// Test helpers for TLS: throwaway PKI (certtool/psktool), an nbdkit process, blocking I/O over a Transport.
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

#include "transport/file_descriptor.h"
#include "transport/transport.h"

extern char **environ;

namespace duplexnbd::tls_testing {

inline constexpr int kIoTimeoutMs = 20000;

inline bool on_path(const std::string &program) {
  const char *path = getenv("PATH");
  if (!path) return false;
  std::stringstream ss(path);
  std::string d;
  while (std::getline(ss, d, ':')) {
    std::string p = (d.empty() ? "." : d) + "/" + program;
    if (access(p.c_str(), X_OK) == 0) return true;
  }
  return false;
}

// A private temporary directory, removed with everything in it.
class TempDir {
public:
  TempDir() {
    char tmpl[] = "/tmp/duplexnbd-tls-XXXXXX";
    if (mkdtemp(tmpl)) path_ = tmpl;
  }
  ~TempDir() {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  bool ok() const { return !path_.empty(); }
  const std::string &path() const { return path_; }
  std::string operator/(const std::string &name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

inline void write_file(const std::string &path, const std::string &text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
}

inline std::string read_file(const std::string &path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs argv with stdin from /dev/null and stdout+stderr to `log`; true on exit 0.
inline bool run(const std::vector<std::string> &argv, const std::string &log) {
  std::vector<char *> cargv;
  for (const auto &a : argv) cargv.push_back(const_cast<char *>(a.c_str()));
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid;
  int r = posix_spawnp(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (r != 0) return false;
  int status;
  while (waitpid(pid, &status, 0) == -1 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Certificates in the layout nbdkit (server-*) and libnbd (ca-cert.pem, client-*) read:
//   <root>/good:    CA, server certificate for "localhost"/127.0.0.1, client certificate
//   <root>/wrongca: a different CA only, plus the good client certificate
//   <root>/caonly:  the good CA and nothing else
// and PSK files <root>/keys.psk (alice) and <root>/wrong.psk (alice, another key).
class Pki {
public:
  Pki() {
    if (!dir_.ok()) {
      error_ = "mkdtemp failed";
      return;
    }
    log_ = dir_ / "certtool.log";
    for (const char *d : {"good", "wrongca", "caonly", "other"})
      std::filesystem::create_directory(dir_ / d);
    if (!make_ca("good") || !make_ca("other") || !make_leaf("good", "server") ||
        !make_leaf("good", "client")) {
      error_ = "certtool failed: " + read_file(log_);
      return;
    }
    std::filesystem::copy_file(dir_ / "other/ca-cert.pem", dir_ / "wrongca/ca-cert.pem");
    std::filesystem::copy_file(dir_ / "good/client-cert.pem", dir_ / "wrongca/client-cert.pem");
    std::filesystem::copy_file(dir_ / "good/client-key.pem", dir_ / "wrongca/client-key.pem");
    std::filesystem::copy_file(dir_ / "good/ca-cert.pem", dir_ / "caonly/ca-cert.pem");
    if (!run({"psktool", "-u", "alice", "-p", dir_ / "keys.psk"}, log_) ||
        !run({"psktool", "-u", "alice", "-p", dir_ / "wrong.psk"}, log_)) {
      error_ = "psktool failed: " + read_file(log_);
      return;
    }
  }

  static bool tools_available() { return on_path("certtool") && on_path("psktool"); }
  bool ok() const { return error_.empty(); }
  const std::string &error() const { return error_; }
  std::string path(const std::string &name) const { return dir_ / name; }

private:
  bool make_ca(const std::string &d) {
    std::string key = dir_ / (d + "/ca-key.pem"), tmpl = dir_ / (d + "/ca.info");
    write_file(tmpl, "cn = duplexnbd test CA " + d + "\nca\ncert_signing_key\nexpiration_days = 30\n");
    return run({"certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key}, log_) &&
           run({"certtool", "--generate-self-signed", "--load-privkey", key, "--template", tmpl,
                "--outfile", dir_ / (d + "/ca-cert.pem")},
               log_);
  }

  bool make_leaf(const std::string &d, const std::string &role) {
    std::string key = dir_ / (d + "/" + role + "-key.pem"), tmpl = dir_ / (d + "/" + role + ".info");
    std::string t = "organization = duplexnbd tests\nexpiration_days = 30\nencryption_key\nsigning_key\n";
    if (role == "server")
      t += "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\n";
    else
      t += "cn = duplexnbd client\ntls_www_client\n";
    write_file(tmpl, t);
    return run({"certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key}, log_) &&
           run({"certtool", "--generate-certificate", "--load-ca-certificate",
                dir_ / (d + "/ca-cert.pem"), "--load-ca-privkey", dir_ / (d + "/ca-key.pem"),
                "--load-privkey", key, "--template", tmpl, "--outfile",
                dir_ / (d + "/" + role + "-cert.pem")},
               log_);
  }

  TempDir dir_;
  std::string log_, error_;
};

// nbdkit -f --exit-with-parent -U <sock> <args...> in its own temporary directory,
// stopped by pid when the object goes.
class Nbdkit {
public:
  explicit Nbdkit(const std::vector<std::string> &args) {
    socket_ = dir_ / "sock";
    log_ = dir_ / "nbdkit.log";
    std::vector<std::string> argv = {"nbdkit", "-f", "--exit-with-parent", "-U", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char *> cargv;
    for (const auto &a : argv) cargv.push_back(const_cast<char *>(a.c_str()));
    cargv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int r = posix_spawnp(&pid_, "nbdkit", &fa, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
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
