// SPDX-License-Identifier: LGPL-2.1-or-later
// Server fixtures: nbdkit, qemu-nbd and our own test server, each on a private socket.
#include "support/servers.h"

#include <cstdio>
#include <cstdlib>

namespace dnbd_test {

namespace {

constexpr auto kStartTimeout = std::chrono::milliseconds(20000);

bool contains(const std::string &haystack, const char *needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

ServerBase::~ServerBase() {
  const char *always = std::getenv("DUPLEXNBD_PRINT_SERVER_LOGS");
  if ((::testing::Test::HasFailure() || (always && *always == '1')) && !proc_.log_path().empty())
    std::fprintf(stderr, "---- server log (%s) ----\n%s\n---- end of server log ----\n",
                 proc_.log_path().c_str(), file_tail(proc_.log_path(), 20000).c_str());
  proc_.stop();
}

std::string ServerBase::uri(const std::string &export_name) const {
  if (port_ > 0) return "nbd://127.0.0.1:" + std::to_string(port_) + "/" + export_name;
  return "nbd+unix:///" + export_name + "?socket=" + socket_;
}

StartStatus ServerBase::launch(const std::vector<std::string> &argv, const std::string &what) {
  if (dir_.path().empty()) return StartStatus::failed("no temporary directory");
  std::string error;
  if (!proc_.start(argv, dir_.file("server.log"), &error)) return StartStatus::failed(what + ": " + error);
  bool up = port_ > 0 ? wait_for_tcp_port(port_, proc_, kStartTimeout, &error)
                      : wait_for_unix_socket(socket_, proc_, kStartTimeout, &error);
  if (up) return StartStatus::ok();
  proc_.stop();
  // A plugin or filter that is not installed is an environment gap, not a failure.
  if (contains(error, "cannot open plugin") || contains(error, "cannot open filter") ||
      contains(error, "Unknown driver") || contains(error, "Unknown protocol"))
    return StartStatus::missing(what + " is not usable here: " + error);
  return StartStatus::failed(what + ": " + error);
}

StartStatus NbdkitServer::start_unix(const std::vector<std::string> &args) {
  std::string nbdkit = find_program("nbdkit");
  if (nbdkit.empty()) return StartStatus::missing("nbdkit is not installed (apt-get install nbdkit)");
  socket_ = dir_.file("sock");
  std::vector<std::string> argv{nbdkit, "-f", "--exit-with-parent", "-U", socket_};
  argv.insert(argv.end(), args.begin(), args.end());
  return launch(argv, "nbdkit");
}

StartStatus NbdkitServer::start_tcp(const std::vector<std::string> &args) {
  std::string nbdkit = find_program("nbdkit");
  if (nbdkit.empty()) return StartStatus::missing("nbdkit is not installed (apt-get install nbdkit)");
  // The free port can be taken between the probe and nbdkit's bind: retry a few times.
  StartStatus st;
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = pick_free_tcp_port();
    if (port_ <= 0) return StartStatus::failed("no free TCP port");
    std::vector<std::string> argv{nbdkit, "-f", "--exit-with-parent", "-i", "127.0.0.1",
                                  "-p", std::to_string(port_)};
    argv.insert(argv.end(), args.begin(), args.end());
    st = launch(argv, "nbdkit (tcp)");
    if (st.kind != StartStatus::Failed || !contains(st.message, "in use")) return st;
  }
  return st;
}

StartStatus QemuNbdServer::start(const std::string &image, const std::string &format,
                                 const std::vector<std::string> &extra) {
  std::string qemu_nbd = find_program("qemu-nbd");
  if (qemu_nbd.empty()) return StartStatus::missing("qemu-nbd is not installed (apt-get install qemu-utils)");
  socket_ = dir_.file("sock");
  // Foreground (no --fork) so the fixture owns the pid and PDEATHSIG applies;
  // --persistent because the readiness probe is itself a connection; --shared so
  // several handles can connect at once.
  std::vector<std::string> argv{qemu_nbd, "-f", format, "-k", socket_, "--persistent", "--shared=16"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(image);
  return launch(argv, "qemu-nbd");
}

std::string TestServer::program() {
  if (const char *env = std::getenv("DUPLEXNBD_TEST_SERVER")) return env;
#ifdef DUPLEXNBD_TEST_SERVER
  return DUPLEXNBD_TEST_SERVER;
#else
  return "duplexnbd_test_server";
#endif
}

StartStatus TestServer::start(const std::vector<std::string> &args) {
  std::string prog = find_program(program());
  if (prog.empty()) return StartStatus::missing("duplexnbd_test_server not found at " + program());
  socket_ = dir_.file("sock");
  std::vector<std::string> argv{prog, "--socket", socket_};
  argv.insert(argv.end(), args.begin(), args.end());
  if (const char *v = std::getenv("DUPLEXNBD_TEST_SERVER_VERBOSE"); v && *v == '1') argv.push_back("--verbose");
  return launch(argv, "duplexnbd_test_server");
}

StartStatus run_tool(const std::vector<std::string> &argv, std::string *output) {
  std::string path = find_program(argv.at(0));
  if (path.empty()) return StartStatus::missing(argv[0] + " is not installed");
  std::vector<std::string> full = argv;
  full[0] = path;
  RunResult r = run_program(full);
  if (output) *output = r.output;
  if (r.exit_status != 0) {
    std::string cmd;
    for (const auto &a : argv) cmd += a + " ";
    return StartStatus::failed(cmd + "failed (" + std::to_string(r.exit_status) + "): " + r.output);
  }
  return StartStatus::ok();
}

}  // namespace dnbd_test
