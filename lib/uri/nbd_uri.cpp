// SPDX-License-Identifier: LGPL-2.1-or-later
// NBD URIs: parsing for nbd_connect_uri, the nbd_is_uri heuristic, and formatting for nbd_get_uri.
#include "uri/nbd_uri.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/un.h>

#if __has_include(<linux/vm_sockets.h>)
#include <linux/vm_sockets.h>
#define DUPLEXNBD_HAVE_VSOCK 1
#endif

#include <array>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>
#include <vector>

#include "uri/rfc3986.h"

namespace duplexnbd::uri {
namespace {

// The NBD protocol's limit on export names (NBD_MAX_STRING).
constexpr size_t kMaxExportName = 4096;

enum class SocketParam { Forbidden, Required, Optional };

struct SchemeInfo {
  std::string_view name;
  Transport transport;
  bool tls;
  SocketParam socket;
  uint32_t allow_bit;
};

constexpr std::array<SchemeInfo, 8> kSchemes = {{
    {"nbd", Transport::Tcp, false, SocketParam::Forbidden, kAllowTransportTcp},
    {"nbds", Transport::Tcp, true, SocketParam::Forbidden, kAllowTransportTcp},
    {"nbd+unix", Transport::Unix, false, SocketParam::Required, kAllowTransportUnix},
    {"nbds+unix", Transport::Unix, true, SocketParam::Required, kAllowTransportUnix},
    {"nbd+vsock", Transport::Vsock, false, SocketParam::Forbidden, kAllowTransportVsock},
    {"nbds+vsock", Transport::Vsock, true, SocketParam::Forbidden, kAllowTransportVsock},
    {"nbd+ssh", Transport::Ssh, false, SocketParam::Optional, kAllowTransportSsh},
    {"nbds+ssh", Transport::Ssh, true, SocketParam::Optional, kAllowTransportSsh},
}};

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// libnbd hands decoded strings to C setters, so a decoded NUL ends them.
// We keep that (rather than rejecting) so the same URIs mean the same thing.
std::string c_string(std::string s) {
  size_t nul = s.find('\0');
  if (nul != std::string::npos) s.resize(nul);
  return s;
}

// split_uri has already validated every escape, so decoding cannot fail.
std::string decode(std::string_view s) { return percent_decode(s).value_or(std::string()); }

struct QueryParam {
  std::string name;
  std::string value;  // fully decoded; may contain NUL
};

// Split the raw query as libnbd does (it borrows libvirt's rules):
// parameters end at the next '&', or, only when no '&' remains, at the next
// ';'; "name" alone means an empty value; "=value" and empty pieces are
// skipped.  Names and values are then percent-decoded ('+' stays '+').
std::vector<QueryParam> split_query(std::string_view query) {
  std::vector<QueryParam> out;
  while (!query.empty()) {
    size_t end = query.find('&');
    if (end == std::string_view::npos) end = query.find(';');
    if (end == std::string_view::npos) end = query.size();
    std::string_view piece = query.substr(0, end);
    query.remove_prefix(end == query.size() ? end : end + 1);

    if (piece.empty()) continue;
    size_t eq = piece.find('=');
    if (eq == 0) continue;
    if (eq == std::string_view::npos)
      out.push_back({c_string(decode(piece)), std::string()});
    else
      out.push_back({c_string(decode(piece.substr(0, eq))), decode(piece.substr(eq + 1))});
  }
  return out;
}

// The spellings libnbd's tls-verify-peer accepts (like nbdkit_parse_bool).
std::optional<bool> parse_bool(std::string_view v) {
  if (v == "1" || iequals(v, "true") || iequals(v, "t") || iequals(v, "yes") ||
      iequals(v, "y") || iequals(v, "on"))
    return true;
  if (v == "0" || iequals(v, "false") || iequals(v, "f") || iequals(v, "no") ||
      iequals(v, "n") || iequals(v, "off"))
    return false;
  return std::nullopt;
}

// A URI port is 1..INT_MAX digits (split_uri checked); 0 means "default",
// as it does in libnbd (libxml2 reports an absent port as 0 or -1).
std::optional<uint32_t> port_number(const std::optional<std::string> &port) {
  if (!port) return std::nullopt;
  uint32_t n = 0;
  for (char c : *port) n = n * 10 + static_cast<uint32_t>(c - '0');
  if (n == 0) return std::nullopt;
  return n;
}

// A vsock CID must be a plain decimal uint32.  libnbd uses sscanf("%u"),
// which would also take "2abc" or "-1"; being stricter costs nothing real.
std::optional<uint32_t> parse_cid(std::string_view s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  uint64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  if (n > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(n);
}

// ?nbd-port=: plain decimal (no sign, no spaces), at most UINT32_MAX.
std::optional<uint32_t> parse_port_param(std::string_view s) { return parse_cid(s); }

// An ssh login that is a plain POSIX user name: ssh may substitute it (%r)
// into a command its local shell runs, so nothing a shell reads as syntax
// gets through, and a leading '-' cannot pose as an option.
bool plain_user_name(std::string_view s) {
  if (s.empty() || s[0] == '-') return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return false;
  return true;
}

Error no_scheme_error(std::string_view uri, const UriPolicy &policy) {
  std::string msg =
      "NBD URI does not have a scheme: valid NBD URIs should start with a scheme "
      "like nbd://, nbds:// or nbd+unix://";
  // The two usual mistakes: a socket path, or "localhost" without a scheme.
  if (!uri.empty() && uri[0] == '/' && (policy.allowed_transports & kAllowTransportUnix))
    msg += ": to open a local socket use \"nbd+unix://?socket=PATH\"";
  else if (istarts_with(uri, "localhost") && (policy.allowed_transports & kAllowTransportTcp))
    msg += ": to open a local port use \"nbd://localhost\" or \"nbd://localhost:PORT\"";
  return make_error(EINVAL, std::move(msg));
}

}  // namespace

Result<NbdUri> parse_nbd_uri(std::string_view uri, const UriPolicy &policy) {
  auto split = split_uri(uri);
  if (!split) return split.take_error();
  const UriParts &parts = split.value();

  if (parts.scheme.empty()) return no_scheme_error(uri, policy);
  const SchemeInfo *scheme = nullptr;
  for (const SchemeInfo &s : kSchemes)
    if (iequals(parts.scheme, s.name)) scheme = &s;
  if (!scheme) return make_error(EINVAL, "unknown NBD URI scheme: " + parts.scheme);

  // "nbd:foo" and "nbd:/foo" are valid RFC 3986 but not NBD URIs.
  if (!parts.has_authority)
    return make_error(EINVAL, "URI must begin with '" + parts.scheme + "://'");

  if ((policy.allowed_transports & scheme->allow_bit) == 0)
    return make_error(EPERM, "URI transport " + parts.scheme + " is not permitted");
  if ((scheme->tls && policy.allow_tls == kTlsDisable) ||
      (!scheme->tls && policy.allow_tls == kTlsRequire))
    return make_error(EPERM, "URI TLS setting " + parts.scheme + " is not permitted");

  NbdUri out;
  out.tls = scheme->tls;
  out.transport = scheme->transport;

  std::vector<QueryParam> params;
  if (parts.query) params = split_query(*parts.query);

  for (const QueryParam &p : params)
    if (iequals(p.name, "socket")) out.socket_path = p.value;
  switch (scheme->socket) {
  case SocketParam::Required:
    if (!out.socket_path)
      return make_error(EINVAL, "cannot parse socket parameter from NBD URI (did you mean to use \"" +
                                    parts.scheme + ":///?socket=...\"?)");
    break;
  case SocketParam::Forbidden:
    if (out.socket_path)
      return make_error(EINVAL, "socket parameter is incompatible with \"" + parts.scheme +
                                    ":\" (did you mean to use \"" +
                                    (scheme->tls ? "nbds" : "nbd") + "+unix:///?socket=...\"?)");
    break;
  case SocketParam::Optional:
    break;
  }

  // Applied in order, so a repeated parameter overrides an earlier one, and
  // the first offending parameter decides the error.
  for (const QueryParam &p : params) {
    if (iequals(p.name, "tls-certificates") || iequals(p.name, "tls-psk-file")) {
      bool certs = iequals(p.name, "tls-certificates");
      if (!policy.allow_local_file)
        return make_error(EPERM, std::string("local file access (") +
                                     (certs ? "tls-certificates" : "tls-psk-file") +
                                     ") is not allowed, call nbd_set_uri_allow_local_file "
                                     "to enable this");
      (certs ? out.tls_certificates : out.tls_psk_file) = c_string(p.value);
    } else if (iequals(p.name, "tls-hostname")) {
      out.tls_hostname = c_string(p.value);
    } else if (iequals(p.name, "tls-verify-peer")) {
      auto v = parse_bool(c_string(p.value));
      if (!v)
        return make_error(EINVAL,
                          "could not parse tls-verify-peer parameter, expecting "
                          "tls-verify-peer=true|false");
      out.tls_verify_peer = *v;
    } else if (iequals(p.name, "tls-priority")) {
      if (!policy.allow_tls_priority)
        return make_error(EPERM,
                          "the TLS priority (tls-priority) is not allowed in URIs, call "
                          "nbd_set_uri_allow_tls_priority to enable this");
      out.tls_priority = c_string(p.value);
    } else if (iequals(p.name, "tls-username")) {
      out.tls_username = c_string(p.value);
    } else if (iequals(p.name, "nbd-port")) {
      auto n = parse_port_param(p.value);
      bool vsock = out.transport == Transport::Vsock;
      if (!n || (!vsock && (*n == 0 || *n > 65535)))
        return make_error(EINVAL, std::string("could not parse nbd-port parameter, expecting ") +
                                      (vsock ? "a number up to 4294967295" : "a port 1-65535"));
      out.nbd_port = *n;
    } else if (iequals(p.name, "compress")) {
      auto v = parse_bool(c_string(p.value));
      if (!v)
        return make_error(EINVAL,
                          "could not parse compress parameter, expecting compress=true|false");
      out.compress = *v;
    }
    // Anything else is ignored, as libnbd does (the spec says "SHOULD be
    // diagnosed", but rejecting would break URIs libnbd accepts).
  }

  // libxml2 mis-reports an empty userinfo ("nbd://@host") as the rest of
  // the URI; an empty name is more sensibly no name at all.
  // For +ssh it is ssh's login; elsewhere the TLS username, unless
  // ?tls-username= (already in out.tls_username) overrides it.
  if (parts.userinfo) {
    std::string user = c_string(decode(*parts.userinfo));
    if (!user.empty()) {
      if (out.transport == Transport::Ssh) {
        if (!plain_user_name(user))
          return make_error(EINVAL, "ssh user name in NBD URI must be made of letters, digits, "
                                    "'.', '_' and '-' (and not begin with '-')");
        out.ssh_user = std::move(user);
      } else if (!out.tls_username) {
        out.tls_username = std::move(user);
      }
    }
  }

  // has_authority guarantees the path is empty or starts with '/'.
  out.export_name = parts.path.empty() ? std::string() : c_string(decode(parts.path.substr(1)));
  if (out.export_name.size() > kMaxExportName)
    return make_error(ENAMETOOLONG, "export name too long for NBD protocol");

  std::string host = c_string(decode(parts.host));
  std::optional<uint32_t> port = port_number(parts.port);
  switch (out.transport) {
  case Transport::Tcp:
    out.host = host.empty() ? "localhost" : std::move(host);
    if (out.nbd_port) port = out.nbd_port;
    out.port = port ? std::to_string(*port) : kDefaultNbdPort;
    break;
  case Transport::Unix:
    // The authority "should not be present"; libnbd ignores it if it is.
    break;
  case Transport::Vsock:
    if (!host.empty()) {
      auto cid = parts.host_is_ip_literal ? std::nullopt : parse_cid(host);
      if (!cid) return make_error(EINVAL, "cannot parse vsock CID from NBD URI: " + host);
      out.vsock_cid = *cid;
    }
    out.vsock_port = out.nbd_port ? *out.nbd_port : port.value_or(kDefaultNbdPortNumber);
    break;
  case Transport::Ssh:
    if (host.empty()) return make_error(EINVAL, "SSH transport requires a server name");
    out.host = std::move(host);
    out.port = port ? std::to_string(*port) : kDefaultSshPort;
    break;
  }
  return out;
}

bool looks_like_nbd_uri(std::string_view text) {
  for (const SchemeInfo &s : kSchemes) {
    if (istarts_with(text, s.name) && text.substr(s.name.size()).substr(0, 3) == "://")
      return true;
  }
  return false;
}

Status set_uri_endpoint_from_sockaddr(UriInfo &info, const struct sockaddr *addr,
                                      socklen_t addrlen) {
  if (addr == nullptr || addrlen < static_cast<socklen_t>(sizeof(sa_family_t)))
    return make_error(EINVAL, "cannot construct a URI for this connection type");

  switch (addr->sa_family) {
  case AF_INET:
  case AF_INET6: {
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    int err = getnameinfo(addr, addrlen, host, sizeof host, serv, sizeof serv,
                          NI_NUMERICHOST | NI_NUMERICSERV);
    if (err != 0) return make_error(0, std::string("getnameinfo: ") + gai_strerror(err));
    info.transport = Transport::Tcp;
    info.host = host;
    info.port = serv;
    return {};
  }
  case AF_UNIX: {
    constexpr size_t path_offset = offsetof(struct sockaddr_un, sun_path);
    const auto *sun = reinterpret_cast<const struct sockaddr_un *>(addr);
    size_t max = addrlen > path_offset ? static_cast<size_t>(addrlen) - path_offset : 0;
    if (max > sizeof sun->sun_path) max = sizeof sun->sun_path;
    if (max == 0 || sun->sun_path[0] == '\0')
      return make_error(EPROTONOSUPPORT,
                        "Unix domain sockets in the abstract namespace are not yet supported");
    info.transport = Transport::Unix;
    info.socket_path.assign(sun->sun_path, strnlen(sun->sun_path, max));
    return {};
  }
#ifdef DUPLEXNBD_HAVE_VSOCK
  case AF_VSOCK: {
    if (addrlen < static_cast<socklen_t>(sizeof(struct sockaddr_vm)))
      return make_error(EINVAL, "truncated AF_VSOCK address");
    const auto *svm = reinterpret_cast<const struct sockaddr_vm *>(addr);
    info.transport = Transport::Vsock;
    info.vsock_cid = svm->svm_cid;
    info.vsock_port = svm->svm_port;
    return {};
  }
#endif
  default:
    return make_error(EAFNOSUPPORT,
                      "address family " + std::to_string(addr->sa_family) + " not supported");
  }
}

namespace {

// Characters written literally (besides ASCII letters and digits).  The
// path and userinfo sets are the ones libxml2's xmlSaveUri uses, so libnbd
// and we write e.g. "/a%3Ab" and "bob%20x@" identically.
constexpr std::string_view kPathLiteral = "-_.!~*'()/;@&=+$,";
constexpr std::string_view kUserLiteral = "-_.!~*'();:&=+$,";
// Host: unreserved and sub-delims (RFC 3986 reg-name); inside brackets also
// ':' but not '%', so a zone id "fe80::1%eth0" becomes "fe80::1%25eth0".
constexpr std::string_view kHostLiteral = "-._~!$&'()*+,;=";
constexpr std::string_view kIpLiteral = "-._~!$&'()*+,;=:";
// Query values: keep '/', ':' and '@' (paths read naturally, and match
// libnbd's unescaped output) but escape the separators '&', ';', '=' and
// anything that could be mistaken for an escape or a fragment.
constexpr std::string_view kQueryLiteral = "-._~!$'()*,/:@?";

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// A URI port must be numeric; nbd_connect_tcp also accepts service names.
Result<std::string> uri_port(const std::string &port) {
  if (all_digits(port)) return port;
  struct servent ent, *found = nullptr;
  char buf[1024];
  if (getservbyname_r(port.c_str(), "tcp", &ent, buf, sizeof buf, &found) != 0 || !found)
    return make_error(EINVAL, "cannot write port \"" + port + "\" in a URI: unknown service name");
  return std::to_string(ntohs(static_cast<uint16_t>(found->s_port)));
}

Result<std::string> host_port(const UriInfo &info) {
  // Appended piece by piece: GCC 12 at -O3 warns (-Wrestrict, a false positive) about
  // `"[" + std::string`, which fails a Release build (so does format_nbd_uri's path).
  std::string out;
  if (info.host.find(':') != std::string::npos) {
    out += '[';
    out += percent_encode(info.host, kIpLiteral);
    out += ']';
  } else {
    out = percent_encode(info.host, kHostLiteral);
  }
  if (!info.port.empty()) {
    auto port = uri_port(info.port);
    if (!port) return port.take_error();
    out += ':';
    out += port.value();
  }
  return out;
}

void add_param(std::string &query, std::string_view name, std::string_view value) {
  query += query.empty() ? "?" : "&";
  query += name;
  query += '=';
  query += percent_encode(value, kQueryLiteral);
}

}  // namespace

Result<std::string> format_nbd_uri(const UriInfo &info) {
  if (!info.transport)
    return make_error(EINVAL, "cannot construct a URI for this connection type");

  std::string uri = info.tls ? "nbds" : "nbd";
  std::string authority;
  std::string query;
  switch (*info.transport) {
  case Transport::Tcp: {
    auto hp = host_port(info);
    if (!hp) return hp.take_error();
    authority = hp.value();
    break;
  }
  case Transport::Unix:
    uri += "+unix";
    add_param(query, "socket", info.socket_path);
    break;
  case Transport::Vsock:
    uri += "+vsock";
    authority = std::to_string(info.vsock_cid);
    // A URI port of 0 reads as "the default", and one over INT_MAX does
    // not parse; ?nbd-port= carries any vsock port.
    if (info.vsock_port == 0 || info.vsock_port > static_cast<uint32_t>(INT_MAX)) {
      add_param(query, "nbd-port", std::to_string(info.vsock_port));
    } else {
      authority += ":" + std::to_string(info.vsock_port);
    }
    break;
  case Transport::Ssh: {
    uri += "+ssh";
    auto hp = host_port(info);
    if (!hp) return hp.take_error();
    authority = hp.value();
    if (!info.socket_path.empty()) add_param(query, "socket", info.socket_path);
    if (info.ssh_nbd_port && *info.ssh_nbd_port != kDefaultNbdPortNumber)
      add_param(query, "nbd-port", std::to_string(*info.ssh_nbd_port));
    if (info.compress) add_param(query, "compress", "true");
    // The userinfo is ssh's login here, so the TLS username goes in the query.
    if (info.tls_username) add_param(query, "tls-username", *info.tls_username);
    break;
  }
  }

  uri += "://";
  const std::optional<std::string> &user =
      *info.transport == Transport::Ssh ? info.ssh_user : info.tls_username;
  if (user) uri += percent_encode(*user, kUserLiteral) + "@";
  uri += authority;
  uri += '/';
  uri += percent_encode(info.export_name, kPathLiteral);

  if (info.tls_certificates) add_param(query, "tls-certificates", *info.tls_certificates);
  if (info.tls_psk_file) add_param(query, "tls-psk-file", *info.tls_psk_file);
  if (info.tls_hostname) add_param(query, "tls-hostname", *info.tls_hostname);
  if (info.tls_priority) add_param(query, "tls-priority", *info.tls_priority);
  if (!info.tls_verify_peer) add_param(query, "tls-verify-peer", "false");
  return uri + query;
}

}  // namespace duplexnbd::uri
