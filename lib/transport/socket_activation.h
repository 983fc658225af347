// SPDX-License-Identifier: LGPL-2.1-or-later
// Starting a server with systemd socket activation (nbd_connect_systemd_socket_activation).
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <string>
#include <vector>

#include "core/status.h"
#include "transport/subprocess.h"

namespace duplexnbd::transport {

// Owns a private directory holding a listening Unix socket, and the server
// process it was handed to as fd 3 with LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES
// set.  The caller then connects to socket_path() (e.g. Connector::start_unix);
// the kernel queues that connection even if the server has not started yet.
//
// Destruction terminates the server (SIGTERM, as libnbd does when the handle
// closes: a socket-activated server need not exit when its client leaves),
// removes the socket and directory, and reaps the server.
class SocketActivation {
public:
  SocketActivation() = default;
  SocketActivation(SocketActivation &&other) noexcept;
  SocketActivation &operator=(SocketActivation &&other) noexcept;
  ~SocketActivation();

  // `socket_name` is nbd_set_socket_activation_name's value; empty means the
  // server sees the name "unknown".
  static Result<SocketActivation> start(const std::vector<std::string> &argv,
                                        const std::string &socket_name = "");

  const std::string &socket_path() const { return socket_path_; }
  const struct sockaddr *address() const {
    return reinterpret_cast<const struct sockaddr *>(&address_);
  }
  socklen_t address_length() const { return sizeof address_; }

  pid_t pid() const { return process_.pid(); }
  Subprocess &process() { return process_; }

private:
  void remove_files();

  std::string directory_;
  std::string socket_path_;
  struct sockaddr_un address_ = {};
  Subprocess process_;
};

}  // namespace duplexnbd::transport
