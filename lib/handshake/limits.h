// SPDX-License-Identifier: LGPL-2.1-or-later
// Bounds on what a server can make the handshake buffer: no server length drives a big allocation.
#pragma once

#include <cstddef>

#include "wire/protocol.h"

namespace duplexnbd::handshake {

// Every string in an option reply (export names and descriptions, context names, INFO
// texts) is limited by the spec to 4096 bytes; a longer one is a protocol error.
inline constexpr size_t kMaxString = wire::kMaxStringSize;

// The largest valid option reply is NBD_REP_SERVER with a full-length name and
// description (4 + 2 * 4096 bytes).  Error messages and unknown NBD_INFO types are not
// checked field by field, so the whole payload is capped instead: 64 KiB leaves room
// for lax servers while keeping what one reply can make us allocate trivially small.
inline constexpr size_t kMaxOptionReplyPayload = 64 * 1024;

// NBD_OPT_SET_META_CONTEXT may return any number of contexts, all of which we keep;
// an honest server returns about as many as were asked for.
inline constexpr size_t kMaxMetaContexts = 65536;

// Callbacks collected in one I/O step (export list entries, context names) before the
// driver yields so Connection can run them: a server streaming an endless list then
// costs bounded memory instead of growing the deferred queue without limit.
inline constexpr size_t kMaxDeferredPerStep = 256;

}  // namespace duplexnbd::handshake
