// SPDX-License-Identifier: LGPL-2.1-or-later
// nbd+ssh URIs, against `ssh` stand-ins on PATH: one that serves NBD itself, one that runs the remote command as sshd would.
#include <libnbd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/process.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

class SshUriTest : public IntegrationTest {
protected:
  void SetUp() override {
    if (::system("nbdkit --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "nbdkit is not installed";
    // No sshd here: the stand-in plays the remote end, an NBD server on its stdin/stdout.
    args_ = dir_.file("ssh-args");
    std::ofstream f(dir_.file("ssh"));
    f << "#!/bin/sh\nprintf '%s\\n' \"$@\" > '" << args_ << "'\n"
      << "exec nbdkit -s --exit-with-parent memory 1M\n";
    f.close();
    ASSERT_EQ(::chmod(dir_.file("ssh").c_str(), 0755), 0);
    const char *path = ::getenv("PATH");
    ::setenv("PATH", (dir_.path() + ":" + (path ? path : "/usr/bin:/bin")).c_str(), 1);
    h_ = make_handle();
    ASSERT_TRUE(h_);
  }

  std::vector<std::string> ssh_args() const {
    std::ifstream f(args_);
    std::vector<std::string> out;
    for (std::string line; std::getline(f, line);) out.push_back(line);
    return out;
  }

  TempDir dir_;
  std::string args_;
  Handle h_;
};

TEST_F(SshUriTest, RemoteUnixSocket) {
  NBD_ASSERT_OK(nbd_connect_uri(h_.get(), "nbd+ssh://example.test:2222/?socket=/run/nbd.sock"));
  EXPECT_EQ(ssh_args(), (std::vector<std::string>{"-p", "2222", "--", "example.test",
                                                  "nc -U /run/nbd.sock"}));
  std::vector<uint8_t> buf(4096, 0xff);
  NBD_EXPECT_OK(nbd_pread(h_.get(), buf.data(), buf.size(), 0, 0));
  EXPECT_TRUE(all_zero(buf.data(), buf.size()));
  char *uri = nbd_get_uri(h_.get());
  ASSERT_NE(uri, nullptr) << last_error();
  EXPECT_STREQ(uri, "nbd+ssh://example.test:2222/?socket=/run/nbd.sock");
  free(uri);
  EXPECT_GT(nbd_get_subprocess_pid(h_.get()), 0);
  NBD_EXPECT_OK(nbd_shutdown(h_.get(), 0));
}

TEST_F(SshUriTest, RemoteDefaultPort) {
  NBD_ASSERT_OK(nbd_connect_uri(h_.get(), "nbd+ssh://example.test/"));
  EXPECT_EQ(ssh_args(), (std::vector<std::string>{"-p", "22", "--", "example.test",
                                                  "nc localhost 10809"}));
  EXPECT_EQ(nbd_get_size(h_.get()), 1024 * 1024);
}

// A host name ssh would parse as an option must never reach it (it could run commands).
TEST_F(SshUriTest, OptionLookingHostIsRefused) {
  EXPECT_EQ(nbd_connect_uri(h_.get(), "nbd+ssh://-oProxyCommand=touch%20pwned/"), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_TRUE(ssh_args().empty()) << "ssh was started";
}

// libnbd 1.24's query parameters: the userinfo is ssh's login, compress=true is -C,
// nbd-port is the remote NBD port, tls-username stays on this side.
TEST_F(SshUriTest, LoginCompressAndRemotePort) {
  NBD_ASSERT_OK(nbd_connect_uri(
      h_.get(), "nbd+ssh://carol@example.test:2222/?nbd-port=10900&compress=true&tls-username=dave"));
  EXPECT_EQ(ssh_args(), (std::vector<std::string>{"-C", "-p", "2222", "-l", "carol", "--",
                                                  "example.test", "nc localhost 10900"}));
  EXPECT_EQ(nbd_get_size(h_.get()), 1024 * 1024);
  char *user = nbd_get_tls_username(h_.get());
  ASSERT_NE(user, nullptr) << last_error();
  EXPECT_STREQ(user, "dave");
  free(user);
  char *uri = nbd_get_uri(h_.get());
  ASSERT_NE(uri, nullptr) << last_error();
  EXPECT_STREQ(uri, "nbd+ssh://carol@example.test:2222/?nbd-port=10900&compress=true&tls-username=dave");
  free(uri);
  NBD_EXPECT_OK(nbd_shutdown(h_.get(), 0));
}

TEST_F(SshUriTest, BadLoginOrNbdPortIsRefusedBeforeSsh) {
  for (const char *bad : {"nbd+ssh://a%3Btouch%20x@example.test/", "nbd+ssh://%24(id)@example.test/",
                          "nbd+ssh://-oProxyCommand=id@example.test/",
                          "nbd+ssh://example.test/?nbd-port=1%3Bid", "nbd+ssh://example.test/?nbd-port=70000",
                          "nbd+ssh://example.test/?compress=sometimes"}) {
    SCOPED_TRACE(bad);
    Handle h = make_handle();
    ASSERT_TRUE(h);
    EXPECT_EQ(nbd_connect_uri(h.get(), bad), -1);
    EXPECT_EQ(nbd_get_errno(), EINVAL) << last_error();
    EXPECT_TRUE(ssh_args().empty()) << "ssh was started";
  }
}

TEST_F(SshUriTest, RefusedWhenTransportNotAllowed) {
  NBD_ASSERT_OK(nbd_set_uri_allow_transports(h_.get(), LIBNBD_ALLOW_TRANSPORT_UNIX));
  EXPECT_EQ(nbd_connect_uri(h_.get(), "nbd+ssh://example.test/"), -1);
  EXPECT_EQ(nbd_get_errno(), EPERM);
  EXPECT_TRUE(ssh_args().empty()) << "ssh was started";
}

// ---------------------------------------------------------------------------------------
// The remote command as a real sshd would run it.  ssh joins its remote-command words with
// spaces and sshd hands the line to the user's shell; this stand-in does the same,
// locally, with `sh -c` in the test's directory.  The remote `nc` is a stand-in too (netcat is not installed
// here): it records the words it was given, NUL-separated, then relays stdin/stdout to
// the Unix socket named by `-U PATH` (or to HOST PORT).  Anything a URI smuggles into
// the shell's syntax shows up as a marker file, or as nc receiving other words.

// Percent-encodes every byte outside RFC 3986's unreserved set (and '/').
std::string percent_encode(const std::string &s) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~' || c == '/') {
      out += char(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::vector<std::string> read_nul_separated(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<std::string> out;
  for (std::string w; std::getline(f, w, '\0');) out.push_back(w);
  return out;
}

class SshRemoteShellTest : public IntegrationTest {
protected:
  void SetUp() override {
    if (find_program("python3").empty()) GTEST_SKIP() << "python3 (for the nc stand-in) is not installed";
    ssh_log_ = dir_.file("ssh-args");
    nc_log_ = dir_.file("nc-args");
    marker_ = dir_.file("marker");
    write_script("ssh",
                 "#!/bin/sh\n"
                 "printf '%s\\0' \"$@\" > '" + ssh_log_ + "'\n"
                 "while [ $# -gt 0 ]; do\n"
                 "  case \"$1\" in -p|-l) shift 2 ;; --) shift; break ;; -*) shift ;; *) break ;; esac\n"
                 "done\n"
                 "shift  # the host\n"
                 "cd '" + dir_.path() + "'  # as sshd starts in the home directory\n"
                 "exec sh -c \"$*\"\n");
    write_script("nc",
                 "#!/usr/bin/env python3\n"
                 "import os, socket, sys, threading\n"
                 "with open(" + python_string(nc_log_) + ", 'wb') as f:\n"
                 "    f.write(b''.join(os.fsencode(a) + b'\\0' for a in sys.argv[1:]))\n"
                 "a = sys.argv[1:]\n"
                 "try:\n"
                 "    if a[:1] == ['-U']:\n"
                 "        s = socket.socket(socket.AF_UNIX)\n"
                 "        s.connect(a[1])\n"
                 "    else:\n"
                 "        s = socket.create_connection((a[0], int(a[1])))\n"
                 "except (OSError, ValueError, IndexError) as e:\n"
                 "    sys.exit('nc stand-in: %s' % e)\n"
                 "def up():\n"
                 "    while True:\n"
                 "        b = os.read(0, 65536)\n"
                 "        if not b:\n"
                 "            break\n"
                 "        s.sendall(b)\n"
                 "    s.shutdown(socket.SHUT_WR)\n"
                 "threading.Thread(target=up, daemon=True).start()\n"
                 "while True:\n"
                 "    b = s.recv(65536)\n"
                 "    if not b:\n"
                 "        break\n"
                 "    os.write(1, b)\n");
    const char *path = ::getenv("PATH");
    ::setenv("PATH", (dir_.path() + ":" + (path ? path : "/usr/bin:/bin")).c_str(), 1);
    h_ = make_handle();
    ASSERT_TRUE(h_);
  }

  void write_script(const std::string &name, const std::string &text) {
    std::ofstream(dir_.file(name)) << text;
    ASSERT_EQ(::chmod(dir_.file(name).c_str(), 0755), 0);
  }

  // A Python string literal for a temporary path (made of plain characters only).
  static std::string python_string(const std::string &s) { return "'" + s + "'"; }

  bool marker_exists() const { return ::access(marker_.c_str(), F_OK) == 0; }

  // nbdkit memory 1M listening on `socket`, run by `server`. The caller returns when this
  // skipped the test or failed it (IsSkipped() / HasFatalFailure()).
  void start_nbdkit_memory(ChildProcess &server, const std::string &socket) {
    std::string nbdkit = find_program("nbdkit");
    if (nbdkit.empty()) GTEST_SKIP() << "nbdkit is not installed";
    std::string error;
    ASSERT_TRUE(server.start({nbdkit, "-f", "--exit-with-parent", "-U", socket, "memory", "1M"},
                             dir_.file("server.log"), &error))
        << error;
    ASSERT_TRUE(wait_for_unix_socket(socket, server, std::chrono::seconds(20), &error)) << error;
  }

  TempDir dir_;
  std::string ssh_log_, nc_log_, marker_;
  Handle h_;
};

// An NBD server whose socket path is full of shell syntax is reached through the
// remote shell exactly as named, and that syntax runs nothing.
TEST_F(SshRemoteShellTest, ReachesSocketWhosePathHasShellSyntax) {
  // No '/' may appear in a file name, so the commands name the marker relative to the
  // "remote" working directory, which is dir_.
  const std::string socket = dir_.file("my nbd 'sock' $(touch marker);`touch marker`\\.s");
  ChildProcess server;
  start_nbdkit_memory(server, socket);
  if (IsSkipped() || HasFatalFailure()) return;

  const std::string uri = "nbd+ssh://example.test/?socket=" + percent_encode(socket);
  NBD_ASSERT_OK(nbd_connect_uri(h_.get(), uri.c_str()));
  EXPECT_EQ(read_nul_separated(nc_log_), (std::vector<std::string>{"-U", socket}));
  EXPECT_EQ(nbd_get_size(h_.get()), 1024 * 1024);
  std::vector<uint8_t> data = make_pattern(4096, 9), back(4096);
  NBD_ASSERT_OK(nbd_pwrite(h_.get(), data.data(), data.size(), 8192, 0));
  NBD_ASSERT_OK(nbd_pread(h_.get(), back.data(), back.size(), 8192, 0));
  EXPECT_EQ(back, data);
  NBD_EXPECT_OK(nbd_shutdown(h_.get(), 0));
  EXPECT_FALSE(marker_exists()) << "the socket path ran a command";
}

// Each of these socket= values would run `touch MARKER` (or create MARKER by
// redirection) if it reached the remote shell as syntax.  The connection must fail
// cleanly, with nc (if it ran at all) given exactly the path as one word.
TEST_F(SshRemoteShellTest, InjectionAttemptsRunNothing) {
  const std::string m = marker_;
  const std::vector<std::string> attempts = {
      "/tmp/s;touch " + m,
      "$(touch " + m + ")",
      "`touch " + m + "`",
      "/tmp/s && touch " + m,
      "/tmp/s|touch " + m,
      "/tmp/s >" + m,
      "/tmp/s'; touch " + m + "; '",
      "/tmp/s\\'; touch " + m + "; #",
      "/tmp/s\"; touch " + m + "; \"",
      "/tmp/a b; touch " + m,
  };
  for (const std::string &socket : attempts) {
    SCOPED_TRACE("socket=" + socket);
    ::unlink(nc_log_.c_str());
    Handle h = make_handle();
    ASSERT_TRUE(h);
    const std::string uri = "nbd+ssh://example.test/?socket=" + percent_encode(socket);
    EXPECT_EQ(nbd_connect_uri(h.get(), uri.c_str()), -1) << "no such socket exists";
    EXPECT_NE(nbd_get_error(), nullptr);
    EXPECT_FALSE(marker_exists()) << "the remote shell ran part of the URI";
    EXPECT_EQ(read_nul_separated(nc_log_), (std::vector<std::string>{"-U", socket}))
        << "nc did not get the path as one word";
    ::unlink(marker_.c_str());
  }
}

// Characters no quoting carries safely to every login shell are refused before ssh
// runs: a newline (csh ends a command there even inside quotes) or any other control
// character; so is a path nc would read as an option (ncat's -e runs a program).
TEST_F(SshRemoteShellTest, UnquotableSocketPathsAreRefusedBeforeSsh) {
  const std::vector<std::string> refused = {
      "/tmp/s\ntouch " + marker_,
      "/tmp/s\rtouch " + marker_,
      "/tmp/s\ttouch",
      "-e touch " + marker_,
      "--exec=touch " + marker_,
  };
  for (const std::string &socket : refused) {
    SCOPED_TRACE("socket=" + socket);
    Handle h = make_handle();
    ASSERT_TRUE(h);
    const std::string uri = "nbd+ssh://example.test/?socket=" + percent_encode(socket);
    EXPECT_EQ(nbd_connect_uri(h.get(), uri.c_str()), -1);
    EXPECT_EQ(nbd_get_errno(), EINVAL) << last_error();
    EXPECT_NE(nbd_get_error(), nullptr);
    EXPECT_NE(::access(ssh_log_.c_str(), F_OK), 0) << "ssh was started";
    EXPECT_FALSE(marker_exists());
  }
}

// Without socket=, the remote side connects to port 10809 there: the same path through
// the remote shell, with nc given the host and port.
TEST_F(SshRemoteShellTest, DefaultRemotePortGoesThroughTheShellToo) {
  // Whether anything listens on this machine's port 10809 does not matter here.
  (void)nbd_connect_uri(h_.get(), "nbd+ssh://example.test/");
  std::vector<std::string> ssh = read_nul_separated(ssh_log_);
  ASSERT_FALSE(ssh.empty());
  EXPECT_EQ(ssh.back(), "nc localhost 10809");
  EXPECT_EQ(read_nul_separated(nc_log_), (std::vector<std::string>{"localhost", "10809"}));
}

// nbd-port reaches a real NBD server on the "remote" side's TCP port, through the shell.
TEST_F(SshRemoteShellTest, NbdPortReachesTheRemoteServer) {
  NbdkitServer server;
  START_OR_SKIP(server.start_tcp({"memory", "2M"}));
  const std::string uri = "nbd+ssh://example.test/?nbd-port=" + std::to_string(server.port());
  NBD_ASSERT_OK(nbd_connect_uri(h_.get(), uri.c_str()));
  EXPECT_EQ(read_nul_separated(nc_log_),
            (std::vector<std::string>{"localhost", std::to_string(server.port())}));
  EXPECT_EQ(nbd_get_size(h_.get()), 2 * 1024 * 1024);
  NBD_EXPECT_OK(nbd_shutdown(h_.get(), 0));
}

// A TLS username full of shell syntax is accepted (it is only ever a TLS identity) and
// never reaches ssh or the remote shell; an nbd-port with shell syntax never gets that
// far.  Each attempt would create the marker if it ran.
TEST_F(SshRemoteShellTest, TlsUsernameAndNbdPortRunNothing) {
  const std::string socket = dir_.file("nbd.sock");
  ChildProcess server;
  start_nbdkit_memory(server, socket);
  if (IsSkipped() || HasFatalFailure()) return;
  const std::string m = marker_;
  const std::vector<std::string> attempts = {
      "x;touch " + m, "$(touch " + m + ")", "`touch " + m + "`", "x\ntouch " + m, "x' ; touch " + m + " #",
  };
  for (const std::string &user : attempts) {
    SCOPED_TRACE("tls-username=" + user);
    ::unlink(nc_log_.c_str());
    Handle h = make_handle();
    ASSERT_TRUE(h);
    const std::string uri = "nbd+ssh://example.test/?socket=" + percent_encode(socket) +
                            "&tls-username=" + percent_encode(user);
    NBD_ASSERT_OK(nbd_connect_uri(h.get(), uri.c_str()));
    EXPECT_EQ(nbd_get_size(h.get()), 1024 * 1024);
    for (const std::string &arg : read_nul_separated(ssh_log_))
      EXPECT_EQ(arg.find("touch"), std::string::npos) << "ssh was given: " << arg;
    EXPECT_EQ(read_nul_separated(nc_log_), (std::vector<std::string>{"-U", socket}));
    char *got = nbd_get_tls_username(h.get());
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(std::string(got), user);
    free(got);
    NBD_EXPECT_OK(nbd_shutdown(h.get(), 0));
    EXPECT_FALSE(marker_exists()) << "the TLS username ran a command";
  }
  for (const std::string &port : {"1;touch " + m, "$(touch " + m + ")", "`touch " + m + "`",
                                  "1\ntouch " + m, "1 " + m}) {
    SCOPED_TRACE("nbd-port=" + port);
    ::unlink(ssh_log_.c_str());
    Handle h = make_handle();
    ASSERT_TRUE(h);
    const std::string uri = "nbd+ssh://example.test/?nbd-port=" + percent_encode(port);
    EXPECT_EQ(nbd_connect_uri(h.get(), uri.c_str()), -1);
    EXPECT_EQ(nbd_get_errno(), EINVAL) << last_error();
    EXPECT_NE(::access(ssh_log_.c_str(), F_OK), 0) << "ssh was started";
    EXPECT_FALSE(marker_exists());
  }
}

}  // namespace
}  // namespace dnbd_test
