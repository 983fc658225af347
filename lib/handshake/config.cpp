// SPDX-License-Identifier: LGPL-2.1-or-later
// Snapshot of the handle's settings for the handshake.
#include "handshake/config.h"

namespace duplexnbd::handshake {

Config config_from(const Settings &s) {
  Config c;
  c.export_name = s.export_name;
  c.handshake_flags = s.handshake_flags;
  c.request_structured_replies = s.request_structured_replies;
  // Extended headers imply structured replies, so turning those off turns both off.
  c.request_extended_headers = s.request_extended_headers && s.request_structured_replies;
  c.request_meta_context = s.request_meta_context;
  c.request_block_size = s.request_block_size;
  c.full_info = s.full_info;
  c.opt_mode = s.opt_mode;
  c.meta_contexts = s.meta_contexts;
  c.tls = s.tls;
  c.tls_certificates = s.tls_certificates;
  c.tls_verify_peer = s.tls_verify_peer;
  c.tls_username = s.tls_username;
  c.tls_psk_file = s.tls_psk_file;
  c.tls_hostname = s.tls_hostname;
  return c;
}

}  // namespace duplexnbd::handshake
