// SPDX-License-Identifier: LGPL-2.1-or-later
// The errors the handshake reports: server refusals mapped to errno, and protocol violations.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/status.h"

namespace duplexnbd::handshake {

// The errno an option refused with NBD_REP_ERR_* completes with (what an opt-mode
// completion callback reports).
int option_errno(uint32_t reply_type);

// A refusal of NBD_OPT_GO or NBD_OPT_INFO, worded and numbered as libnbd 1.22 reports it
// (the errno is 0 for a policy or platform refusal), followed by what the server said,
// if anything, with its unprintable bytes escaped.
Error go_failure(uint32_t reply_type, std::string_view export_name,
                 std::string_view server_message = {});

// A server that broke the protocol: a "handshake: " message with errno 0, as libnbd 1.22.2
// reports it (the connection is over; no errno describes a server breaking the protocol).
Error protocol_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// What a server said in an error reply, made printable: bytes outside printable ASCII
// become \xNN.
std::string printable(std::string_view text);

}  // namespace duplexnbd::handshake
