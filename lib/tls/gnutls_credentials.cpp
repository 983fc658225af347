// SPDX-License-Identifier: LGPL-2.1-or-later
// Loading client credentials as libnbd documents them: certificate directories, system trust, PSK.
#include "tls/gnutls_credentials.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace duplexnbd::tls {

namespace {

// The PSK key exchanges, which NORMAL (the default priority) lacks: a PSK session adds
// them to whatever priority string is in force, as libnbd does.
constexpr const char kPskExchanges[] = ":+ECDHE-PSK:+DHE-PSK:+PSK";

// The system-wide directory searched for root, as libnbd built with sysconfdir=/etc.
constexpr const char kSystemPkiDir[] = "/etc/pki/libnbd";

Error gnutls_error(std::string_view call, int err) {
  return make_error(0, std::string(call) + ": " + gnutls_strerror(err));
}

// gnutls_priority_set_direct, failing with the string and where GnuTLS stopped reading
// it: "gnutls_priority_set_direct: The request is invalid." alone does not say that the
// caller's nbd_set_tls_priority (or ?tls-priority=) is what is wrong.
Status set_priority(gnutls_session_t session, const std::string &priority) {
  const char *err_pos = nullptr;
  int err = gnutls_priority_set_direct(session, priority.c_str(), &err_pos);
  if (err >= 0)
    return {};
  std::string msg = "invalid TLS priority string \"" + priority + "\"";
  if (err_pos != nullptr && err_pos >= priority.c_str() &&
      err_pos <= priority.c_str() + priority.size())
    msg += " (at \"" + std::string(err_pos) + "\")";
  return make_error(EINVAL, msg + ": gnutls_priority_set_direct: " + gnutls_strerror(err));
}

bool readable(const std::string &path) { return ::access(path.c_str(), R_OK) == 0; }

// Overwrites key material before its memory is released.
void wipe(std::string &s) {
  if (!s.empty())
    gnutls_memset(s.data(), 0, s.size());
  s.clear();
}

// Adds a certificate and its key when both files are readable (else nothing).
Status load_key_pair(Credentials &creds, const std::string &cert, const std::string &key) {
  if (!readable(cert) || !readable(key))
    return {};
  int err = gnutls_certificate_set_x509_key_file(creds.cert, cert.c_str(), key.c_str(),
                                                 GNUTLS_X509_FMT_PEM);
  if (err < 0)
    return gnutls_error("gnutls_certificate_set_x509_key_file: " + cert + ", " + key, err);
  return {};
}

// Loads the credentials of one directory.  Returns true when the directory has a
// ca-cert.pem (and so was used), false when it should be skipped.
Result<bool> load_directory(const std::string &dir, Credentials &creds) {
  std::string ca = dir + "/ca-cert.pem";
  if (!readable(ca))
    return false;

  int err = gnutls_certificate_allocate_credentials(&creds.cert);
  if (err < 0)
    return gnutls_error("gnutls_certificate_allocate_credentials", err);

  err = gnutls_certificate_set_x509_trust_file(creds.cert, ca.c_str(), GNUTLS_X509_FMT_PEM);
  if (err < 0)
    return gnutls_error("gnutls_certificate_set_x509_trust_file: " + ca, err);

  // A client certificate is optional: servers that do not check clients need none.
  // client-cert-N.pem / client-key-N.pem (N = 0, 1, ... while they exist, libnbd 1.24)
  // add more pairs, e.g. one per algorithm for hybrid post-quantum setups or one per
  // CA: GnuTLS then offers the server the pair that suits the CAs and signature
  // algorithms it asked for.
  Status pair = load_key_pair(creds, dir + "/client-cert.pem", dir + "/client-key.pem");
  if (!pair)
    return pair.take_error();
  for (unsigned n = 0;; n++) {
    std::string cert = dir + "/client-cert-" + std::to_string(n) + ".pem";
    std::string key = dir + "/client-key-" + std::to_string(n) + ".pem";
    if (!readable(cert) && !readable(key))
      break;
    // Half a pair is a mistake in the directory, not a reason to quietly stop here
    // and connect with fewer certificates than the caller put there.
    if (!readable(cert) || !readable(key))
      return make_error(EINVAL, "TLS certificates directory " + dir + " has only one of " +
                                    cert + " and " + key);
    pair = load_key_pair(creds, cert, key);
    if (!pair)
      return pair.take_error();
  }

  std::string crl = dir + "/ca-crl.pem";
  if (readable(crl)) {
    err = gnutls_certificate_set_x509_crl_file(creds.cert, crl.c_str(), GNUTLS_X509_FMT_PEM);
    if (err < 0)
      return gnutls_error("gnutls_certificate_set_x509_crl_file: " + crl, err);
  }
  return true;
}

// Finds the certificate directory: the configured one, else the per-user defaults
// (non-root) or the system one (root).  False when none applies.
Result<bool> load_certificate_directory(const TlsConfig &config, Credentials &creds) {
  if (config.certificates_dir)
    return load_directory(*config.certificates_dir, creds);

  const char *home = std::getenv("HOME");
  if (::geteuid() != 0 && home != nullptr) {
    for (const char *sub : {"/.pki/libnbd", "/.config/pki/libnbd"}) {
      Result<bool> r = load_directory(std::string(home) + sub, creds);
      if (!r || *r)
        return r;
    }
    return false;
  }
  if (::geteuid() == 0)
    return load_directory(kSystemPkiDir, creds);
  return false;
}

Status set_up_certificates(gnutls_session_t session, const TlsConfig &config,
                           Credentials &creds) {
  Status prio = set_priority(session, config.priority);
  if (!prio)
    return prio;

  int err;
  Result<bool> found = load_certificate_directory(config, creds);
  if (!found)
    return found.take_error();
  if (!*found) {
    // No directory: trust the system's CAs instead.
    if (creds.cert == nullptr) {
      err = gnutls_certificate_allocate_credentials(&creds.cert);
      if (err < 0)
        return gnutls_error("gnutls_certificate_allocate_credentials", err);
    }
    err = gnutls_certificate_set_x509_system_trust(creds.cert);
    if (err < 0)
      return gnutls_error("gnutls_certificate_set_x509_system_trust", err);
  }

  // GnuTLS then checks the server's certificate inside the handshake, before our
  // Finished message, so a failure leaves nothing sent but the ClientHello.  Armed
  // for the system store as for a directory, and with no hostname too (chain only):
  // trusting whatever a server presents because no CA directory or no name was
  // given is the man-in-the-middle of CVE-2024-7383.
  if (config.verify_peer)
    gnutls_session_set_verify_cert(session, config.hostname ? config.hostname->c_str() : nullptr,
                                   0);

  err = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, creds.cert);
  if (err < 0)
    return gnutls_error("gnutls_credentials_set", err);
  return {};
}

// Finds `username`'s hex key in a psktool-format file ("username:hexkey" lines).
Result<std::string> lookup_psk(const std::string &file, const std::string &username) {
  FILE *fp = std::fopen(file.c_str(), "re");
  if (fp == nullptr)
    return errno_error("open: " + file);

  std::string key;
  char *line = nullptr;
  size_t cap = 0;
  ssize_t n;
  bool found = false;
  while (!found && (n = ::getline(&line, &cap, fp)) != -1) {
    std::string_view l(line, static_cast<size_t>(n));
    while (!l.empty() && (l.back() == '\n' || l.back() == '\r'))
      l.remove_suffix(1);
    if (l.size() > username.size() + 1 && l.substr(0, username.size()) == username &&
        l[username.size()] == ':') {
      key.assign(l.substr(username.size() + 1));
      found = true;
    }
  }
  int read_errno = std::ferror(fp) ? errno : 0;
  if (line != nullptr) {
    gnutls_memset(line, 0, cap);
    std::free(line);
  }
  std::fclose(fp);

  if (!found && read_errno != 0)
    return make_error(read_errno, file + ": read");
  if (!found)
    return make_error(EINVAL, file + ": username " + username + " was not found in PSK file");
  return key;
}

Status set_up_psk(gnutls_session_t session, const TlsConfig &config, Credentials &creds) {
  Status prio = set_priority(session, config.priority + kPskExchanges);
  if (!prio)
    return prio;
  int err;

  std::string username;
  if (config.username) {
    username = *config.username;
  } else {
    Result<std::string> u = default_tls_username();
    if (!u)
      return u.take_error();
    username = std::move(*u);
  }

  Result<std::string> key = lookup_psk(*config.psk_file, username);
  if (!key)
    return key.take_error();

  err = gnutls_psk_allocate_client_credentials(&creds.psk);
  if (err < 0) {
    wipe(*key);
    return gnutls_error("gnutls_psk_allocate_client_credentials", err);
  }
  gnutls_datum_t datum = {reinterpret_cast<unsigned char *>(key->data()),
                          static_cast<unsigned>(key->size())};
  err = gnutls_psk_set_client_credentials(creds.psk, username.c_str(), &datum,
                                          GNUTLS_PSK_KEY_HEX);
  wipe(*key);
  if (err < 0)
    return gnutls_error("gnutls_psk_set_client_credentials", err);

  err = gnutls_credentials_set(session, GNUTLS_CRD_PSK, creds.psk);
  if (err < 0)
    return gnutls_error("gnutls_credentials_set", err);
  return {};
}

}  // namespace

Credentials::~Credentials() {
  if (cert != nullptr)
    gnutls_certificate_free_credentials(cert);
  if (psk != nullptr)
    gnutls_psk_free_client_credentials(psk);
}

Status set_up_credentials(gnutls_session_t session, const TlsConfig &config, Credentials &creds) {
  if (config.psk_file)
    return set_up_psk(session, config, creds);
  return set_up_certificates(session, config, creds);
}

}  // namespace duplexnbd::tls
