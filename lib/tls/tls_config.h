// SPDX-License-Identifier: LGPL-2.1-or-later
// What a TLS client session needs from the handle's settings, resolved once per connection.
#pragma once

#include <optional>
#include <string>

#include "build_info.h"
#include "core/status.h"

namespace duplexnbd {

struct Settings;

namespace tls {

// The priority string when nbd_set_tls_priority was not called: "NORMAL" unless the
// DUPLEXNBD_TLS_PRIORITY cache variable chose another when the library was built.
inline constexpr const char *kDefaultPriority = DUPLEXNBD_TLS_PRIORITY_DEFAULT;

// Copied out of Settings when STARTTLS is acknowledged, so the TLS code never touches
// the handle (or its settings lock) while doing I/O.
struct TlsConfig {
  // nbd_set_tls_certificates.  When unset: non-root users search $HOME/.pki/libnbd then
  // $HOME/.config/pki/libnbd, root searches /etc/pki/libnbd.  A directory counts only
  // if it holds a readable ca-cert.pem; client-cert.pem + client-key.pem, the pairs
  // client-cert-N.pem + client-key-N.pem for N = 0, 1, ... (libnbd 1.24) and ca-crl.pem
  // are then loaded when present.  With no such directory the system trust store is
  // used.  (An explicitly set directory that lacks ca-cert.pem also falls back to the
  // system store, not to the default directories, as libnbd does.)
  std::optional<std::string> certificates_dir;

  // nbd_set_tls_verify_peer (default true).  With certificates (not PSK) it arms
  // GnuTLS's own check of the server's certificate during the handshake: the chain
  // must lead to a trusted CA (the directory's ca-cert.pem, else the system store)
  // and every certificate in it must be valid now, always; and the certificate must
  // name `hostname` when there is one.  Without a hostname (a Unix socket, a command,
  // socket activation, an fd) the chain is still checked, as libnbd 1.22 does
  // (1.14 checked nothing then: CVE-2024-7383).  false is the only way to skip it.
  bool verify_peer = true;

  // nbd_set_tls_username; when unset, default_tls_username() is used for PSK.
  std::optional<std::string> username;

  // nbd_set_tls_psk_file.  When set, PSK is used instead of certificates.
  std::optional<std::string> psk_file;

  // The name the server's certificate must match: the nbd_set_tls_hostname setting,
  // else the host given to connect, else none (chain checked, no name).
  std::optional<std::string> hostname;

  // The name sent as SNI: only the host given to connect, never nbd_set_tls_hostname
  // (as libnbd does; that setting names the certificate's owner, possibly a server
  // behind a proxy, not the host the connection reaches).  IP literals are not sent.
  std::optional<std::string> sni_hostname;

  // Builds the configuration of one connection.  The host connected to is
  // settings.tcp_hostname, set only by nbd_connect_tcp / a TCP nbd[s]:// URI: Unix
  // sockets, sockets or addresses handed over by the caller, subprocesses and socket
  // activation have none, as in libnbd.
  static TlsConfig from_settings(const Settings &settings);

  // The GnuTLS priority string: nbd_set_tls_priority, else kDefaultPriority.  As in
  // libnbd, a PSK session appends the PSK key exchanges to it (":+ECDHE-PSK:+DHE-PSK:+PSK"),
  // which NORMAL lacks.
  std::string priority = kDefaultPriority;
};

// The PSK username used when none was set, and what nbd_get_tls_username reports:
// $LOGNAME, else getlogin_r() (which fails with ENXIO without a controlling terminal:
// that error is returned as {errno, "getlogin_r"}, like libnbd).
Result<std::string> default_tls_username();

}  // namespace tls
}  // namespace duplexnbd
