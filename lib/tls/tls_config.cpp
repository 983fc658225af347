// SPDX-License-Identifier: LGPL-2.1-or-later
// TLS configuration from the handle's settings and the default PSK username (no GnuTLS here).
#include "tls/tls_config.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "handle/settings.h"

namespace duplexnbd::tls {

TlsConfig TlsConfig::from_settings(const Settings &settings) {
  TlsConfig c;
  c.certificates_dir = settings.tls_certificates;
  c.verify_peer = settings.tls_verify_peer;
  c.username = settings.tls_username;
  c.psk_file = settings.tls_psk_file;
  c.priority = settings.tls_priority.value_or(kDefaultPriority);
  // A name set to "" is still the name to check (libnbd passes it on as it is, and no
  // certificate matches it), not a request to fall back to the connection's host.
  c.hostname = settings.tls_hostname ? settings.tls_hostname : settings.tcp_hostname;
  if (settings.tcp_hostname && !settings.tcp_hostname->empty())
    c.sni_hostname = settings.tcp_hostname;
  return c;
}

Result<std::string> default_tls_username() {
  // $LOGNAME first: it lets the user override the name, and getlogin_r() fails in
  // the common case of no controlling terminal (services, tests, containers).
  if (const char *s = std::getenv("LOGNAME"); s != nullptr)
    return std::string(s);

  std::vector<char> buf(64);
  for (;;) {
    int r = ::getlogin_r(buf.data(), buf.size());
    if (r == 0)
      return std::string(buf.data());
    if (r != ERANGE || buf.size() >= 65536)
      return make_error(r, "getlogin_r");
    buf.resize(buf.size() * 2);
  }
}

}  // namespace duplexnbd::tls
