// SPDX-License-Identifier: LGPL-2.1-or-later
// What the caller configured on a handle before (and sometimes during) connection.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "libnbd.h"

namespace duplexnbd {

// Guarded by nbd_handle::settings_mutex. The engine copies what it needs when a
// connection starts, so the handshake never holds this lock while doing I/O.
struct Settings {
  std::string handle_name;
  std::string export_name;
  bool request_block_size = true;
  bool full_info = false;

  int tls = LIBNBD_TLS_DISABLE;
  std::optional<std::string> tls_certificates;
  bool tls_verify_peer = true;
  std::optional<std::string> tls_username;
  std::optional<std::string> tls_psk_file;
  std::optional<std::string> tls_hostname;
  // Not set by the caller: the host of the last nbd_connect_tcp (or TCP nbd[s]:// URI),
  // kept on the handle as libnbd keeps it.  TLS checks the server's certificate
  // against it unless tls_hostname is set, and nbd_get_tls_hostname reports it then.
  std::optional<std::string> tcp_hostname;
  std::optional<std::string> tls_priority;  // unset: the build's default (tls_config.h)

  bool request_structured_replies = true;
  bool request_meta_context = true;
  bool request_extended_headers = true;
  uint32_t handshake_flags = LIBNBD_HANDSHAKE_FLAG_MASK;
  bool pread_initialize = true;
  bool opt_mode = false;

  uint32_t uri_allow_transports = LIBNBD_ALLOW_TRANSPORT_MASK;
  int uri_allow_tls = LIBNBD_TLS_ALLOW;
  bool uri_allow_local_file = false;
  bool uri_allow_tls_priority = false;

  std::vector<std::string> meta_contexts;   // requested with nbd_add_meta_context
  std::string socket_activation_name;

  // Heap memory owned by the strings and the list above (sizeof(Settings) covers the
  // rest), for nbd_get_handle_size.
  size_t heap_bytes() const;
};

}  // namespace duplexnbd
