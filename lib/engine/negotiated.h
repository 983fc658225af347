// SPDX-License-Identifier: LGPL-2.1-or-later
// What the handshake learned about the server and the export; read by the info calls.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace duplexnbd {

struct MetaContext {
  std::string name;
  uint32_t id = 0;
};

struct ExportInfo {
  bool valid = false;              // NBD_INFO_EXPORT (or the oldstyle / EXPORT_NAME reply) seen
  uint64_t size = 0;
  uint16_t eflags = 0;             // transmission flags
  std::optional<std::string> canonical_name;  // NBD_INFO_NAME
  std::optional<std::string> description;     // NBD_INFO_DESCRIPTION
  uint32_t block_minimum = 0;      // NBD_INFO_BLOCK_SIZE; 0 = not advertised
  uint32_t block_preferred = 0;
  uint32_t block_maximum = 0;
};

struct Negotiated {
  std::string protocol;            // "oldstyle", "newstyle" or "newstyle-fixed"
  uint16_t gflags = 0;             // handshake flags the server sent
  bool structured_replies = false;
  bool extended_headers = false;
  bool tls = false;
  // Result of the last successful SET_META_CONTEXT (cleared by a failed or new one);
  // `meta_valid` tells whether a negotiation took place at all.
  bool meta_valid = false;
  std::vector<MetaContext> meta_contexts;
  ExportInfo info;                 // from the last OPT_INFO / OPT_GO
};

}  // namespace duplexnbd
