// SPDX-License-Identifier: LGPL-2.1-or-later
// Client credentials for a GnuTLS session: certificate directories, system trust, PSK files.
#pragma once

#include <gnutls/gnutls.h>

#include "core/status.h"
#include "tls/tls_config.h"

namespace duplexnbd::tls {

// Owns whatever credentials a session was given; GnuTLS only borrows them, so this
// must outlive the session.
class Credentials {
public:
  Credentials() = default;
  Credentials(const Credentials &) = delete;
  Credentials &operator=(const Credentials &) = delete;
  ~Credentials();

  gnutls_certificate_credentials_t cert = nullptr;
  gnutls_psk_client_credentials_t psk = nullptr;
};

// Chooses the priorities, loads the credentials `config` names into `creds`, attaches
// them to `session` and arms peer verification where it applies (see TlsConfig).
// Errors follow libnbd's wording: {errno, "open: <file>"} for system failures,
// {EINVAL, "<file>: username <u> was not found in PSK file"}, and {0, "<gnutls
// call>: <GnuTLS text>"} when GnuTLS rejects something.
Status set_up_credentials(gnutls_session_t session, const TlsConfig &config, Credentials &creds);

}  // namespace duplexnbd::tls
