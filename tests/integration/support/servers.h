// SPDX-License-Identifier: LGPL-2.1-or-later
// Server fixtures: nbdkit, qemu-nbd and our own test server, each on a private socket.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/process.h"

namespace dnbd_test {

// Why a server did or did not start.  Missing (program, plugin or filter not installed)
// turns into GTEST_SKIP; Failed into a test failure carrying the server's log.
struct StartStatus {
  enum Kind { Ok, Missing, Failed } kind = Ok;
  std::string message;

  static StartStatus ok() { return {}; }
  static StartStatus missing(std::string m) { return {Missing, std::move(m)}; }
  static StartStatus failed(std::string m) { return {Failed, std::move(m)}; }
};

// Use in a test body or SetUp: skips or fails the test unless the server started.
#define START_OR_SKIP(expr)                                                      \
  do {                                                                           \
    ::dnbd_test::StartStatus start_status_ = (expr);                             \
    if (start_status_.kind == ::dnbd_test::StartStatus::Missing)                 \
      GTEST_SKIP() << start_status_.message;                                     \
    ASSERT_EQ(start_status_.kind, ::dnbd_test::StartStatus::Ok) << start_status_.message; \
  } while (0)

// Shared by all servers: a private directory holding the socket and the server's log.
class ServerBase {
public:
  ServerBase() = default;
  // Prints the server's log when the test has failed, then stops the server.
  virtual ~ServerBase();
  ServerBase(const ServerBase &) = delete;
  ServerBase &operator=(const ServerBase &) = delete;

  const std::string &socket_path() const { return socket_; }
  int port() const { return port_; }  // TCP servers only, else -1
  // nbd+unix:///EXPORT?socket=... or nbd://127.0.0.1:PORT/EXPORT.
  std::string uri(const std::string &export_name = "") const;
  const TempDir &dir() const { return dir_; }
  ChildProcess &process() { return proc_; }
  std::string log() const { return file_tail(proc_.log_path()); }
  // SIGKILL now (for tests of a server dying under the client).
  void kill_now() { proc_.kill_now(); }
  void stop() { proc_.stop(); }

protected:
  // Starts argv and waits until the socket (or port) accepts.
  StartStatus launch(const std::vector<std::string> &argv, const std::string &what);

  TempDir dir_;
  std::string socket_;
  int port_ = -1;
  ChildProcess proc_;
};

// nbdkit -f --exit-with-parent [-U sock | -i 127.0.0.1 -p PORT] ARGS... where ARGS are
// filters, the plugin and its parameters, e.g. {"--filter=delay", "memory", "64M", "delay-read=1"}.
class NbdkitServer : public ServerBase {
public:
  StartStatus start(const std::vector<std::string> &args) { return start_unix(args); }
  StartStatus start_unix(const std::vector<std::string> &args);
  StartStatus start_tcp(const std::vector<std::string> &args);
};

// qemu-nbd -f FORMAT -k sock --persistent --shared=16 [EXTRA...] IMAGE, in the foreground.
class QemuNbdServer : public ServerBase {
public:
  StartStatus start(const std::string &image, const std::string &format,
                    const std::vector<std::string> &extra = {});
};

// tests/servers' duplexnbd_test_server --socket sock ARGS... (plus --verbose when the
// environment has DUPLEXNBD_TEST_SERVER_VERBOSE=1, to get its log on failures).
class TestServer : public ServerBase {
public:
  StartStatus start(const std::vector<std::string> &args = {});
  static std::string program();  // DUPLEXNBD_TEST_SERVER env or the built-in path
};

// Runs a helper tool; Missing when it is not installed, Failed on a nonzero exit.
StartStatus run_tool(const std::vector<std::string> &argv, std::string *output = nullptr);

}  // namespace dnbd_test
