// SPDX-License-Identifier: LGPL-2.1-or-later
// Throwaway PKI for TLS tests: a CA, server and client certificates (certtool), PSK files (psktool).
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char **environ;

namespace duplexnbd::tls_testing {

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

// Starts argv (looked up in PATH) with stdin from /dev/null, stderr (and with
// `with_stdout` stdout too) appended to `log`.  Returns the pid, or -errno.
inline pid_t spawn_logged(const std::vector<std::string> &argv, const std::string &log,
                          bool with_stdout) {
  std::vector<char *> cargv;
  for (const auto &a : argv) cargv.push_back(const_cast<char *>(a.c_str()));
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (with_stdout) posix_spawn_file_actions_adddup2(&fa, 2, 1);
  pid_t pid;
  int r = posix_spawnp(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return r == 0 ? pid : -r;
}

// Runs argv to the end, its output to `log`; true on exit 0.
inline bool run(const std::vector<std::string> &argv, const std::string &log) {
  pid_t pid = spawn_logged(argv, log, true);
  if (pid < 0) return false;
  int status;
  while (waitpid(pid, &status, 0) == -1 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Certificates in the layout nbdkit (server-*) and libnbd (ca-cert.pem, client-*) read:
//   <root>/good:       CA, server certificate for "localhost"/127.0.0.1, client certificate
//   <root>/wrongca:    a different CA only, plus the good client certificate
//   <root>/caonly:     the good CA and nothing else
//   <root>/othername:  server directory: a certificate from the good CA for
//                      "nbd.example.invalid" only (no localhost, no IP address)
//   <root>/expired:    server directory: a certificate from the good CA for localhost and
//                      127.0.0.1 that expired in 2020
//   <root>/selfsigned: server directory: a self-signed certificate for localhost and
//                      127.0.0.1 (its ca-cert.pem is that certificate)
// and PSK files <root>/keys.psk (alice) and <root>/wrong.psk (alice, another key).
class Pki {
public:
  // The host name the "othername" certificate names.
  static constexpr const char *kOtherName = "nbd.example.invalid";

  Pki() {
    if (!dir_.ok()) {
      error_ = "mkdtemp failed";
      return;
    }
    log_ = dir_ / "certtool.log";
    for (const char *d :
         {"good", "wrongca", "caonly", "other", "othername", "expired", "selfsigned"})
      std::filesystem::create_directory(dir_ / d);
    const std::string localhost = "cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n";
    if (!make_ca("good") || !make_ca("other") || !make_leaf("good", "server") ||
        !make_leaf("good", "client") ||
        !make_server("othername", "good", std::string("cn = ") + kOtherName + "\ndns_name = " +
                                              kOtherName + "\n") ||
        !make_server("expired", "good",
                     localhost + "activation_date = \"2019-01-01 00:00:00 UTC\"\n"
                                 "expiration_date = \"2020-01-01 00:00:00 UTC\"\n") ||
        !make_server("selfsigned", "", localhost + "expiration_days = 30\n")) {
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

  // A server directory `d` for nbdkit: server-key.pem, server-cert.pem with `names`
  // (template lines: cn, dns_name, ip_address, dates) issued by the CA of directory
  // `ca`, or self-signed when `ca` is empty; its ca-cert.pem is that CA (or the
  // certificate itself).
  bool make_server(const std::string &d, const std::string &ca, const std::string &names) {
    std::string key = dir_ / (d + "/server-key.pem"), tmpl = dir_ / (d + "/server.info");
    std::string cert = dir_ / (d + "/server-cert.pem");
    write_file(tmpl, "organization = duplexnbd tests\nencryption_key\nsigning_key\ntls_www_server\n" +
                         names);
    if (!run({"certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key}, log_))
      return false;
    if (ca.empty()) {
      if (!run({"certtool", "--generate-self-signed", "--load-privkey", key, "--template", tmpl,
                "--outfile", cert},
               log_))
        return false;
      std::filesystem::copy_file(cert, dir_ / (d + "/ca-cert.pem"));
      return true;
    }
    if (!run({"certtool", "--generate-certificate", "--load-ca-certificate",
              dir_ / (ca + "/ca-cert.pem"), "--load-ca-privkey", dir_ / (ca + "/ca-key.pem"),
              "--load-privkey", key, "--template", tmpl, "--outfile", cert},
             log_))
      return false;
    std::filesystem::copy_file(dir_ / (ca + "/ca-cert.pem"), dir_ / (d + "/ca-cert.pem"));
    return true;
  }

  TempDir dir_;
  std::string log_, error_;
};

}  // namespace duplexnbd::tls_testing
