// SPDX-License-Identifier: LGPL-2.1-or-later
// The settings the handshake works from, copied once so that no settings lock is held during I/O.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "handle/settings.h"

namespace duplexnbd::handshake {

// What the socket must become ready for before the handshake can progress.
enum class Want : uint8_t { None, Read, Write };

struct Config {
  std::string export_name;
  uint32_t handshake_flags = LIBNBD_HANDSHAKE_FLAG_MASK;
  bool request_structured_replies = true;
  bool request_extended_headers = true;
  bool request_meta_context = true;
  bool request_block_size = true;
  bool full_info = false;
  bool opt_mode = false;
  std::vector<std::string> meta_contexts;

  int tls = LIBNBD_TLS_DISABLE;
  std::optional<std::string> tls_certificates;
  bool tls_verify_peer = true;
  std::optional<std::string> tls_username;
  std::optional<std::string> tls_psk_file;
  std::optional<std::string> tls_hostname;

  // TLS plugs in through two hooks, set by Connection when the build has TLS.
  //
  // upgrade_to_tls: called once the server has accepted NBD_OPT_STARTTLS, before any
  // further byte is exchanged; it must put a TLS session in place of the plain transport
  // (later on_readable / on_writable calls receive the session) or fail.  Unset means
  // this build cannot do TLS: LIBNBD_TLS_REQUIRE then fails after the greeting,
  // LIBNBD_TLS_ALLOW stays in plaintext without asking, and nbd_opt_starttls is refused.
  std::function<Status()> upgrade_to_tls;
  // tls_handshake_step: then called until it returns Want::None, each time after the
  // socket became ready as its previous answer asked (the handshake's wants() reports
  // that answer meanwhile).  An Error is fatal.  Unset: upgrade_to_tls did it all.
  std::function<Result<Want>()> tls_handshake_step;
};

// The caller holds h.settings_mutex.
Config config_from(const Settings &s);

}  // namespace duplexnbd::handshake
