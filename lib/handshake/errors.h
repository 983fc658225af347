// SPDX-License-Identifier: LGPL-2.1-or-later
// The errors the handshake reports: server refusals mapped to errno, and protocol violations.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/status.h"

namespace duplexnbd::handshake {

// The errno an option refused with NBD_REP_ERR_* completes with (what an opt-mode
// completion callback and the blocking nbd_opt_go / nbd_opt_info report).
int option_errno(uint32_t reply_type);

// Why the automatic NBD_OPT_GO of a normal connect failed, worded as libnbd does.
Error go_failure(uint32_t reply_type, std::string_view export_name);

// A server that broke the protocol: EPROTO with a "handshake: " message.
Error protocol_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// What a server said in an error reply, made printable for a debug line.
std::string printable(std::string_view text);

}  // namespace duplexnbd::handshake
