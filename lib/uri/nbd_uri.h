// SPDX-License-Identifier: LGPL-2.1-or-later
// NBD URIs: parsing for nbd_connect_uri, the nbd_is_uri heuristic, and formatting for nbd_get_uri.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

// Behaviour follows libnbd 1.22, plus 1.24's query parameters (the NBD URI spec is NetworkBlockDevice/nbd
// doc/uri.md).  Where libnbd 1.14 differs (it is what Debian 12 ships) the
// tests say so.
namespace duplexnbd::uri {

// LIBNBD_ALLOW_TRANSPORT_* bits for nbd_set_uri_allow_transports.
inline constexpr uint32_t kAllowTransportTcp = 0x1;
inline constexpr uint32_t kAllowTransportUnix = 0x2;
inline constexpr uint32_t kAllowTransportVsock = 0x4;
inline constexpr uint32_t kAllowTransportSsh = 0x8;  // libnbd 1.22, experimental
inline constexpr uint32_t kAllowTransportMask = 0xf;

// LIBNBD_TLS_* values, as used by nbd_set_uri_allow_tls.
inline constexpr int kTlsDisable = 0;
inline constexpr int kTlsAllow = 1;
inline constexpr int kTlsRequire = 2;

inline constexpr const char *kDefaultNbdPort = "10809";
inline constexpr uint32_t kDefaultNbdPortNumber = 10809;
inline constexpr const char *kDefaultSshPort = "22";
inline constexpr uint32_t kDefaultVsockCid = 2;  // VMADDR_CID_HOST

// What a handle allows in URIs (the three nbd_set_uri_allow_* settings).
// The defaults are libnbd's defaults for a new handle.
struct UriPolicy {
  uint32_t allowed_transports = kAllowTransportMask;
  int allow_tls = kTlsAllow;
  bool allow_local_file = false;
  bool allow_tls_priority = false;  // nbd_set_uri_allow_tls_priority (libnbd 1.24)
};

enum class Transport {
  Tcp,    // nbd://, nbds://
  Unix,   // nbd+unix://, nbds+unix://
  Vsock,  // nbd+vsock://, nbds+vsock://
  Ssh,    // nbd+ssh://, nbds+ssh://  (`ssh [-C] -p PORT [-l USER] -- HOST nc ...`)
};

// A parsed and policy-checked NBD URI: what nbd_connect_uri applies to the
// handle before connecting.  All strings are percent-decoded.
struct NbdUri {
  // True for the "nbds" schemes: the connection must set LIBNBD_TLS_REQUIRE.
  // False leaves the handle's own nbd_set_tls setting alone (libnbd does not
  // force TLS off for "nbd://").
  bool tls = false;
  Transport transport = Transport::Tcp;

  // Tcp: the server for getaddrinfo, brackets of an IPv6 literal removed;
  // "localhost" when the URI has no host.  Ssh: the ssh server (never empty).
  std::string host;
  // Tcp: decimal port, "10809" when absent or 0.  Ssh: "22" when absent or 0.
  // A URI port may be up to INT_MAX; out-of-range ports fail at connect time.
  std::string port;

  // Vsock: CID (default 2, the host) and port (default 10809).
  uint32_t vsock_cid = kDefaultVsockCid;
  uint32_t vsock_port = kDefaultNbdPortNumber;

  // Unix: always set (may be empty if the URI said "?socket=").  Ssh: the
  // remote socket for `nc -U` when given, else nbd on remote localhost:10809.
  // A leading NUL byte ("socket=%00name") names a Linux abstract socket, as
  // the NBD URI spec permits; whether to support it is the connector's call.
  std::optional<std::string> socket_path;

  // The path without its leading '/' ("" when absent); at most 4096 bytes.
  std::string export_name;

  // The TLS username: the userinfo ("alice@host"; a "user:password"
  // userinfo is kept whole, as libnbd does), overridden by ?tls-username=.
  // For +ssh the userinfo is ssh's login instead (libnbd 1.24), so there
  // only ?tls-username= sets it.
  std::optional<std::string> tls_username;
  // Ssh: the userinfo, the login for `ssh -l`.  Only [A-Za-z0-9._-] (not
  // starting with '-'): ssh may expand %r into a local shell command
  // (ProxyCommand, Match exec), so nothing else is let through.
  std::optional<std::string> ssh_user;
  // ?nbd-port= (libnbd 1.24), already applied to `port` (Tcp, 1..65535) and
  // `vsock_port` (any uint32).  Ssh: the NBD server's port on the remote
  // side (1..65535; nullopt means 10809) while `port` stays ssh's.
  std::optional<uint32_t> nbd_port;
  // ?compress= (libnbd 1.24, a boolean): ssh -C.  Ignored by other transports.
  bool compress = false;
  // Query parameters.  When repeated, the last one wins.
  std::optional<std::string> tls_priority;      // needs allow_tls_priority
  std::optional<std::string> tls_certificates;  // needs allow_local_file
  std::optional<std::string> tls_psk_file;      // needs allow_local_file
  std::optional<std::string> tls_hostname;
  std::optional<bool> tls_verify_peer;
};

// Parse `uri` as nbd_connect_uri / nbd_aio_connect_uri do, and check it
// against `policy`.  Errors, in the order libnbd checks them:
//   EINVAL  not a URI, no or unknown scheme, not "scheme://...";
//   EPERM   transport not in allowed_transports, TLS forbidden or required;
//   EINVAL  "socket" missing for +unix, present for tcp or vsock;
//   EPERM   tls-certificates / tls-psk-file without allow_local_file;
//   EPERM   tls-priority without allow_tls_priority;
//   EINVAL  tls-verify-peer or compress not a boolean, nbd-port not a port;
//   ENAMETOOLONG export name over 4096 bytes;
//   EINVAL  vsock CID not a number, +ssh without a host or with a login
//           that is not a plain user name.
// Unknown query parameters are ignored, and so is the fragment.
Result<NbdUri> parse_nbd_uri(std::string_view uri, const UriPolicy &policy);

// nbd_is_uri: a quick heuristic (no parsing, no policy): true when `text`
// starts with one of the NBD schemes followed by "://", in any letter case.
bool looks_like_nbd_uri(std::string_view text);

// What nbd_get_uri needs to know about a handle.  The handle layer fills it
// from what it remembered when connecting; format_nbd_uri never looks at the
// network.
struct UriInfo {
  // Write an "nbds" scheme.  libnbd does so when nbd_set_tls was
  // LIBNBD_TLS_REQUIRE, or when TLS was actually negotiated.
  bool tls = false;

  // How the handle connected.  nullopt when no address is known
  // (nbd_connect_socket, nbd_connect_command, socket activation): the URI
  // cannot be built and format_nbd_uri fails with EINVAL.
  std::optional<Transport> transport;

  // Tcp, Ssh: the host and port as passed to nbd_connect_tcp (or numeric,
  // see set_uri_endpoint_from_sockaddr).  An IPv6 address is given without
  // brackets; any host containing ':' is bracketed in the URI.  `port` may
  // be a number or a service name ("nbd"), which is looked up in
  // /etc/services; empty omits the port.
  std::string host;
  std::string port;

  // Unix: the socket path (required).  Ssh: the remote socket, if any.
  std::string socket_path;

  // Vsock: the address.
  uint32_t vsock_cid = 0;
  uint32_t vsock_port = 0;

  // nbd_set_export_name; written as the path.
  std::string export_name;

  // Ssh: the login, written as "user@" (the TLS username then goes in the
  // query); the remote NBD port, written as ?nbd-port= unless 10809; ssh -C.
  std::optional<std::string> ssh_user;
  std::optional<uint32_t> ssh_nbd_port;
  bool compress = false;

  // TLS settings that libnbd writes back into the URI when set.
  std::optional<std::string> tls_username;      // as "user@" (+ssh: ?tls-username=)
  std::optional<std::string> tls_priority;      // ?tls-priority=
  std::optional<std::string> tls_certificates;  // ?tls-certificates=
  std::optional<std::string> tls_psk_file;      // ?tls-psk-file=
  std::optional<std::string> tls_hostname;      // ?tls-hostname=
  bool tls_verify_peer = true;                  // false adds tls-verify-peer=false
};

// Fill info.transport/host/port/socket_path/vsock_* from a connected-to
// address (nbd_aio_connect with a sockaddr), as libnbd does: numeric host
// and port for AF_INET/AF_INET6.  Fails with EAFNOSUPPORT for other
// families, EPROTONOSUPPORT for abstract Unix sockets (libnbd declines to
// write those), and errnum 0 when getnameinfo fails.
Status set_uri_endpoint_from_sockaddr(UriInfo &info, const struct sockaddr *addr,
                                      socklen_t addrlen);

// Build the nbd_get_uri string, e.g. "nbd://example.com:10809/disk",
// "nbds+unix://alice@/?socket=/tmp/sock&tls-verify-peer=false",
// "nbd+vsock://2:10809/".  The export name and userinfo are percent-encoded
// with exactly libnbd's character sets, so ordinary names come out
// byte-identical.  Query values are percent-encoded too, which libnbd
// omits (it writes "socket=/a b&c" raw, which cannot be parsed back).
// A vsock port of 0 or over INT_MAX (which a URI port cannot carry) is
// written as ?nbd-port=.
Result<std::string> format_nbd_uri(const UriInfo &info);

}  // namespace duplexnbd::uri
