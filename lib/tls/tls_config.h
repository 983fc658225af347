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
  // if it holds a readable ca-cert.pem; client-cert.pem + client-key.pem and ca-crl.pem
  // are then loaded when present.  With no such directory the system trust store is
  // used.  (An explicitly set directory that lacks ca-cert.pem also falls back to the
  // system store, not to the default directories, as libnbd does.)
  std::optional<std::string> certificates_dir;

  // nbd_set_tls_verify_peer (default true).  Verification (chain and hostname, against
  // the CA of the directory or the system store) happens only when it is set AND a
  // hostname is known: libnbd documents it as "true when connecting to TCP servers,
  // false otherwise", so a Unix socket without nbd_set_tls_hostname is not verified.
  bool verify_peer = true;

  // nbd_set_tls_username; when unset, default_tls_username() is used for PSK.
  std::optional<std::string> username;

  // nbd_set_tls_psk_file.  When set, PSK is used instead of certificates.
  std::optional<std::string> psk_file;

  // The name the server's certificate must match (and the SNI sent): the
  // nbd_set_tls_hostname setting, else the hostname given to connect, else none.
  std::optional<std::string> hostname;

  // The GnuTLS priority string: nbd_set_tls_priority, else kDefaultPriority.  As in
  // libnbd, a PSK session appends the PSK key exchanges to it (":+ECDHE-PSK:+DHE-PSK:+PSK"),
  // which NORMAL lacks.
  std::string priority = kDefaultPriority;

  // Builds the configuration of one connection.  `connect_hostname` is the host of
  // nbd_connect_tcp / an nbds:// URI; leave it empty for Unix sockets, sockets handed
  // over by the caller, subprocesses and socket activation.
  static TlsConfig from_settings(const Settings &settings,
                                 std::optional<std::string> connect_hostname);
};

// The PSK username used when none was set, and what nbd_get_tls_username reports:
// $LOGNAME, else getlogin_r() (which fails with ENXIO without a controlling terminal:
// that error is returned as {errno, "getlogin_r"}, like libnbd).
Result<std::string> default_tls_username();

}  // namespace tls
}  // namespace duplexnbd
