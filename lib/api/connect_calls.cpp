// SPDX-License-Identifier: LGPL-2.1-or-later
// The connect calls: every transport, in aio and blocking form, plus URI helpers.
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "api_impl.h"
#include "engine/connection.h"
#include "handle/error.h"
#include "transport/connector.h"
#include "transport/remote_command.h"
#include "transport/socket_activation.h"
#include "transport/subprocess.h"
#include "uri/nbd_uri.h"

namespace duplexnbd::api {
namespace {

Connection &new_connection(Handle &h) {
  h.connection = std::make_unique<Connection>(h);
  return *h.connection;
}

// A failed start leaves the handle dead, as libnbd's does, and reports the error.
int failed(Handle &h, Error e) {
  if (!h.connection) new_connection(h);
  h.connection->fail(e);
  set_error(e);
  return -1;
}

// A failure before any connection exists where libnbd 1.22 leaves its handle created, ready
// for another connect call: a bad socket descriptor, a TCP name that does not resolve or
// whose every address refuses at once.
int failed_before_connecting(Handle &h, Error e) {
  h.connection.reset();
  set_error(e);
  return -1;
}

int start(Handle &h, std::unique_ptr<transport::Connector> c) {
  Connection &conn = h.connection ? *h.connection : new_connection(h);
  Status s = conn.start_connector(std::move(c));
  if (!s) return failed(h, s.take_error());
  return 0;
}

// Blocking connect: the aio form, then drive the handshake until it is out of our hands
// (transmission, or opt mode waiting for the caller).
int wait_connected(Handle &h, int r) {
  if (r == -1) return -1;
  Connection &conn = *h.connection;
  Status s = conn.wait_until([&h] { return h.state() != State::Connecting; });
  if (h.state() == State::Ready || h.state() == State::Negotiating) return 0;
  if (h.state() == State::Closed) {
    set_error(ENOTCONN, "the server closed the connection during the handshake");
    return -1;
  }
  set_error(s ? conn.fatal_error() : s.error());
  return -1;
}

std::vector<std::string> to_vector(char **argv) {
  std::vector<std::string> v;
  for (size_t i = 0; argv[i]; i++) v.emplace_back(argv[i]);
  return v;
}

uri::UriInfo base_uri_info(Handle &h) {
  uri::UriInfo u;
  std::lock_guard lock(h.settings_mutex);
  const Settings &s = h.settings;
  u.tls = s.tls == LIBNBD_TLS_REQUIRE;
  u.export_name = s.export_name;
  u.tls_username = s.tls_username;
  u.tls_certificates = s.tls_certificates;
  u.tls_psk_file = s.tls_psk_file;
  u.tls_hostname = s.tls_hostname;
  u.tls_priority = s.tls_priority;
  u.tls_verify_peer = s.tls_verify_peer;
  return u;
}

}  // namespace

int aio_connect(Handle &h, const struct sockaddr *addr, socklen_t addrlen) {
  uri::UriInfo info = base_uri_info(h);
  (void)uri::set_uri_endpoint_from_sockaddr(info, addr, addrlen);
  new_connection(h).uri_info = std::move(info);
  auto c = std::make_unique<transport::Connector>();
  Status s = c->start_sockaddr(addr, addrlen);
  if (!s) return failed(h, s.take_error());
  return start(h, std::move(c));
}

int aio_connect_unix(Handle &h, const char *unixsocket) {
  uri::UriInfo info = base_uri_info(h);
  info.transport = uri::Transport::Unix;
  info.socket_path = unixsocket;
  new_connection(h).uri_info = std::move(info);
  auto c = std::make_unique<transport::Connector>();
  Status s = c->start_unix(unixsocket);
  if (!s) return failed(h, s.take_error());
  return start(h, std::move(c));
}

int aio_connect_tcp(Handle &h, const char *hostname, const char *port) {
  {
    std::lock_guard lock(h.settings_mutex);
    h.settings.tcp_hostname = hostname;
  }
  uri::UriInfo info = base_uri_info(h);
  info.transport = uri::Transport::Tcp;
  info.host = hostname;
  info.port = port;
  new_connection(h).uri_info = std::move(info);
  auto c = std::make_unique<transport::Connector>();
  Status s = c->start_tcp(hostname, port);
  if (!s) return failed_before_connecting(h, s.take_error());
  return start(h, std::move(c));
}

int aio_connect_vsock(Handle &h, uint32_t cid, uint32_t port) {
  uri::UriInfo info = base_uri_info(h);
  info.transport = uri::Transport::Vsock;
  info.vsock_cid = cid;
  info.vsock_port = port;
  new_connection(h).uri_info = std::move(info);
  auto c = std::make_unique<transport::Connector>();
  Status s = c->start_vsock(cid, port);
  if (!s) return failed(h, s.take_error());
  return start(h, std::move(c));
}

int aio_connect_socket(Handle &h, int sock) {
  new_connection(h).uri_info = base_uri_info(h);
  auto c = std::make_unique<transport::Connector>();
  Status s = c->adopt(sock);
  // libnbd 1.22 checks the descriptor before the handle leaves the created state.
  if (!s) return failed_before_connecting(h, s.take_error());
  return start(h, std::move(c));
}

int aio_connect_command(Handle &h, char **argv) {
  if (argv[0] == nullptr) {
    set_error(EINVAL, "argv: the command must not be empty");
    return -1;
  }
  Connection &conn = new_connection(h);
  conn.uri_info = base_uri_info(h);
  auto cc = transport::connect_command(to_vector(argv));
  if (!cc) return failed(h, cc.take_error());
  conn.adopt_subprocess(std::make_unique<transport::Subprocess>(std::move(cc->process)));
  Status s = conn.start_with_fd(std::move(cc->socket));
  if (!s) return failed(h, s.take_error());
  return 0;
}

int aio_connect_systemd_socket_activation(Handle &h, char **argv) {
  if (argv[0] == nullptr) {
    set_error(EINVAL, "argv: the command must not be empty");
    return -1;
  }
  std::string name;
  {
    std::lock_guard lock(h.settings_mutex);
    name = h.settings.socket_activation_name;
  }
  Connection &conn = new_connection(h);
  conn.uri_info = base_uri_info(h);
  auto act = transport::SocketActivation::start(to_vector(argv), name);
  if (!act) return failed(h, act.take_error());
  auto c = std::make_unique<transport::Connector>();
  Status s = c->start_unix(act->socket_path());
  conn.uri_info.transport = uri::Transport::Unix;
  conn.uri_info.socket_path = act->socket_path();
  conn.adopt_socket_activation(std::make_unique<transport::SocketActivation>(std::move(*act)));
  if (!s) return failed(h, s.take_error());
  return start(h, std::move(c));
}

namespace {

// nbd+ssh: ssh to the host and let netcat there join our end of a socketpair to the NBD
// server: its Unix socket when the URI names one, else the URI's nbd-port (default
// 10809) on the remote host.  The URI's user is ssh's login (-l, checked by the parser
// to be a plain name); ?compress=true adds -C.  The TLS username never reaches ssh.
int connect_over_ssh(Handle &h, const uri::NbdUri &u) {
  // A host name that ssh would read as an option (-oProxyCommand=...) runs commands here.
  if (u.host.empty() || u.host[0] == '-') {
    set_error(EINVAL, "ssh host name must not be empty or begin with '-'");
    return -1;
  }
  // Quoting keeps the remote shell from reading the path as syntax, but nc itself would
  // still take a leading '-' as one of its options (ncat's -e runs a program).
  if (u.socket_path && !u.socket_path->empty() && (*u.socket_path)[0] == '-') {
    set_error(EINVAL, "ssh: the remote socket path must not begin with '-'");
    return -1;
  }
  std::vector<std::string> remote = {"nc"};
  if (u.socket_path) {
    remote.insert(remote.end(), {"-U", *u.socket_path});
  } else {
    // A number (the parser checked), and quoted like every other word all the same.
    remote.insert(remote.end(),
                  {"localhost", std::to_string(u.nbd_port.value_or(uri::kDefaultNbdPortNumber))});
  }
  // ssh joins the remote command's words with spaces and the remote user's shell parses
  // the line, so it is handed over as one line with every word quoted.
  Result<std::string> line = transport::shell_command_line(remote);
  if (!line) {
    Error e = line.take_error();
    set_error(e.errnum, "ssh: remote socket path: %s", e.message.c_str());
    return -1;
  }
  std::vector<std::string> argv = {"ssh"};
  if (u.compress) argv.push_back("-C");
  argv.insert(argv.end(), {"-p", u.port});
  if (u.ssh_user) argv.insert(argv.end(), {"-l", *u.ssh_user});
  argv.insert(argv.end(), {"--", u.host, *line});
  Connection &conn = new_connection(h);
  conn.uri_info = base_uri_info(h);
  conn.uri_info.transport = uri::Transport::Ssh;
  conn.uri_info.host = u.host;
  conn.uri_info.port = u.port;
  conn.uri_info.ssh_user = u.ssh_user;
  conn.uri_info.ssh_nbd_port = u.nbd_port;
  conn.uri_info.compress = u.compress;
  if (u.socket_path) conn.uri_info.socket_path = *u.socket_path;
  auto cc = transport::connect_command(argv);
  if (!cc) return failed(h, cc.take_error());
  conn.adopt_subprocess(std::make_unique<transport::Subprocess>(std::move(cc->process)));
  Status s = conn.start_with_fd(std::move(cc->socket));
  if (!s) return failed(h, s.take_error());
  return 0;
}

}  // namespace

int aio_connect_uri(Handle &h, const char *uri_text) {
  uri::UriPolicy policy;
  {
    std::lock_guard lock(h.settings_mutex);
    policy.allowed_transports = h.settings.uri_allow_transports;
    policy.allow_tls = h.settings.uri_allow_tls;
    policy.allow_local_file = h.settings.uri_allow_local_file;
    policy.allow_tls_priority = h.settings.uri_allow_tls_priority;
  }
  auto parsed = uri::parse_nbd_uri(uri_text, policy);
  if (!parsed) {
    set_error(parsed.error());
    return -1;
  }
  const uri::NbdUri &u = *parsed;
  {
    // The URI's settings become the handle's, as if the caller had set them.
    std::lock_guard lock(h.settings_mutex);
    Settings &s = h.settings;
    if (u.tls) s.tls = LIBNBD_TLS_REQUIRE;
    s.export_name = u.export_name;
    if (u.tls_username) s.tls_username = u.tls_username;
    if (u.tls_certificates) s.tls_certificates = u.tls_certificates;
    if (u.tls_psk_file) s.tls_psk_file = u.tls_psk_file;
    if (u.tls_hostname) s.tls_hostname = u.tls_hostname;
    if (u.tls_priority) s.tls_priority = u.tls_priority;
    if (u.tls_verify_peer) s.tls_verify_peer = *u.tls_verify_peer;
  }
  switch (u.transport) {
    case uri::Transport::Tcp:
      return aio_connect_tcp(h, u.host.c_str(), u.port.c_str());
    case uri::Transport::Unix:
      return aio_connect_unix(h, u.socket_path ? u.socket_path->c_str() : "");
    case uri::Transport::Vsock:
      return aio_connect_vsock(h, u.vsock_cid, u.vsock_port);
    case uri::Transport::Ssh:
      return connect_over_ssh(h, u);
  }
  set_error(EINVAL, "unknown transport");
  return -1;
}

int connect_uri(Handle &h, const char *uri) { return wait_connected(h, aio_connect_uri(h, uri)); }
int connect_unix(Handle &h, const char *path) { return wait_connected(h, aio_connect_unix(h, path)); }
int connect_vsock(Handle &h, uint32_t cid, uint32_t port) {
  return wait_connected(h, aio_connect_vsock(h, cid, port));
}
int connect_tcp(Handle &h, const char *host, const char *port) {
  return wait_connected(h, aio_connect_tcp(h, host, port));
}
int connect_socket(Handle &h, int sock) { return wait_connected(h, aio_connect_socket(h, sock)); }
int connect_command(Handle &h, char **argv) { return wait_connected(h, aio_connect_command(h, argv)); }
int connect_systemd_socket_activation(Handle &h, char **argv) {
  return wait_connected(h, aio_connect_systemd_socket_activation(h, argv));
}

int is_uri(Handle &, const char *uri) { return uri::looks_like_nbd_uri(uri) ? 1 : 0; }

char *get_uri(Handle &h) {
  uri::UriInfo info = h.connection->uri_info;
  {
    // Settings may have changed since connecting (export name in opt mode).
    std::lock_guard lock(h.settings_mutex);
    info.export_name = h.settings.export_name;
  }
  if (h.connection->negotiated().tls) info.tls = true;
  auto text = uri::format_nbd_uri(info);
  if (!text) {
    set_error(text.error());
    return nullptr;
  }
  char *out = strdup(text->c_str());
  if (!out) set_error(errno, "strdup");
  return out;
}

int kill_subprocess(Handle &h, int signum) {
  transport::Subprocess *p = h.connection ? h.connection->subprocess() : nullptr;
  if (!p) {
    set_error(ESRCH, "no subprocess exists");
    return -1;
  }
  Status s = p->kill(signum);
  if (!s) {
    set_error(s.error());
    return -1;
  }
  return 0;
}

int64_t get_subprocess_pid(Handle &h) {
  transport::Subprocess *p = h.connection ? h.connection->subprocess() : nullptr;
  if (!p) {
    set_error(ESRCH, "no subprocess exists");
    return -1;
  }
  return p->pid();
}

}  // namespace duplexnbd::api
