// SPDX-License-Identifier: LGPL-2.1-or-later
// Client-side request checks of the transmission commands, as nbd_set_strict_mode governs them.
#pragma once

#include <cstdint>

#include "engine/negotiated.h"

namespace duplexnbd::api {

// libnbd never reads or writes more than this in one request, whatever the server allows.
inline constexpr uint64_t kMaxRequestSize = 64ull * 1024 * 1024;

// The server's minimum block size, or 0 when it advertised none or an inconsistent set
// (libnbd ignores a block size advertisement that breaks the spec's rules).
uint32_t usable_block_minimum(const ExportInfo &info);

// LIBNBD_SIZE_PAYLOAD: the largest payload sent while LIBNBD_STRICT_PAYLOAD is set. The
// server's maximum clamped to [1MiB, 64MiB], or 32MiB when it advertised none.
uint32_t payload_maximum(const ExportInfo &info);

// The transmission flags as the can_* calls report them: claims that depend on something
// not negotiated are dropped (DF needs structured replies, FAST_ZERO needs WRITE_ZEROES,
// BLOCK_STAT_PAYLOAD needs extended headers).
uint16_t effective_eflags(const Negotiated &n);

// The range checks every command but flush goes through, in libnbd's order: zero length
// (STRICT_ZERO_SIZE), export bounds (STRICT_BOUNDS, failing with `bounds_errno`) and
// alignment to the minimum block size (STRICT_ALIGN; an unaligned length is let through
// when the request ends exactly at the end of an image whose size is itself unaligned).
// Sets the error and returns false.
bool check_range(uint32_t strict, const Negotiated &n, uint64_t offset, uint64_t count,
                 int bounds_errno);

// Size limits that hold whatever the strict mode: 64MiB for read and write buffers (and
// the server's payload maximum for writes under STRICT_PAYLOAD), 32-bit lengths without
// extended headers. Sets the error and returns false.
bool check_length(uint32_t strict, const Negotiated &n, uint16_t type, uint64_t count);

// The same for a block-status filter payload of `payload_len` bytes.
bool check_filter_length(uint32_t strict, const Negotiated &n, uint64_t payload_len);

}  // namespace duplexnbd::api
