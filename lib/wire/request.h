// SPDX-License-Identifier: LGPL-2.1-or-later
// Transmission-phase requests: compact and extended headers, and the block-status filter payload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "wire/byte_order.h"
#include "wire/protocol.h"

namespace duplexnbd::wire {

// One request header, independent of the form it travels in.  In the compact form
// `length` must fit 32 bits; in the extended form it is the payload length when flags
// has kCmdFlagPayloadLen and the effect length otherwise.
struct RequestHeader {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

constexpr size_t request_header_size(bool extended) {
  return extended ? kExtendedRequestHeaderSize : kRequestHeaderSize;
}

// Encoders return the bytes written (28 or 32), or 0 when `out` is too small or, for the
// compact form, when length does not fit 32 bits.  Nothing is written on failure.
size_t encode_request(MutableBytes out, const RequestHeader &req);
size_t encode_extended_request(MutableBytes out, const RequestHeader &req);
size_t encode_request_header(MutableBytes out, const RequestHeader &req, bool extended);

// Decoders (server side, tests) read exactly the header's size from the front of `in`
// and reject a short span or a wrong magic.
std::optional<RequestHeader> decode_request(ConstBytes in);
std::optional<RequestHeader> decode_extended_request(ConstBytes in);
std::optional<RequestHeader> decode_request_header(ConstBytes in, bool extended);

// ---- NBD_CMD_BLOCK_STATUS payload form ---------------------------------------------------
// Sent with kCmdFlagPayloadLen when the server advertised kFlagBlockStatPayload: the
// request header's length is then this payload's size, so the effect length (the range
// of interest) moves into the payload, followed by the context ids to report on.

inline constexpr size_t kBlockStatusPayloadFixedSize = 8;

constexpr size_t block_status_payload_size(size_t n_context_ids) {
  return kBlockStatusPayloadFixedSize + 4 * n_context_ids;
}

size_t encode_block_status_payload(MutableBytes out, uint64_t effect_length,
                                   std::span<const uint32_t> context_ids);

struct BlockStatusPayload {
  uint64_t effect_length = 0;
  ConstBytes ids;  // big-endian u32s, borrowed from the decoded span

  size_t count() const { return ids.size() / 4; }
  uint32_t id(size_t i) const { return load_be32(ids.data() + 4 * i); }  // i < count()
};

// The whole payload: 8 + 4n bytes.  An empty id list is structurally valid; whether it
// is acceptable is the server's call.
std::optional<BlockStatusPayload> decode_block_status_payload(ConstBytes payload);

}  // namespace duplexnbd::wire
