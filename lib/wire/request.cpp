// SPDX-License-Identifier: LGPL-2.1-or-later
// Encoding and decoding of request headers and the block-status filter payload.
#include "wire/request.h"

#include <algorithm>
#include <limits>

#include "wire/cursor.h"

namespace duplexnbd::wire {

namespace {

// Both forms share every field but the magic and the width of length.
size_t encode_common(MutableBytes out, const RequestHeader &req, bool extended) {
  if (out.size() < request_header_size(extended)) return 0;
  if (!extended && req.length > std::numeric_limits<uint32_t>::max()) return 0;
  ByteWriter w(out);
  w.u32(extended ? kExtendedRequestMagic : kRequestMagic);
  w.u16(req.flags);
  w.u16(req.type);
  w.u64(req.cookie);
  w.u64(req.offset);
  if (extended) w.u64(req.length);
  else w.u32(uint32_t(req.length));
  return w.result();
}

std::optional<RequestHeader> decode_common(ConstBytes in, bool extended) {
  ByteReader r(in.first(std::min(in.size(), request_header_size(extended))));
  uint32_t magic = r.u32();
  RequestHeader req;
  req.flags = r.u16();
  req.type = r.u16();
  req.cookie = r.u64();
  req.offset = r.u64();
  req.length = extended ? r.u64() : r.u32();
  if (!r.ok() || magic != (extended ? kExtendedRequestMagic : kRequestMagic)) return std::nullopt;
  return req;
}

}  // namespace

size_t encode_request(MutableBytes out, const RequestHeader &req) {
  return encode_common(out, req, false);
}

size_t encode_extended_request(MutableBytes out, const RequestHeader &req) {
  return encode_common(out, req, true);
}

size_t encode_request_header(MutableBytes out, const RequestHeader &req, bool extended) {
  return encode_common(out, req, extended);
}

std::optional<RequestHeader> decode_request(ConstBytes in) { return decode_common(in, false); }

std::optional<RequestHeader> decode_extended_request(ConstBytes in) {
  return decode_common(in, true);
}

std::optional<RequestHeader> decode_request_header(ConstBytes in, bool extended) {
  return decode_common(in, extended);
}

size_t encode_block_status_payload(MutableBytes out, uint64_t effect_length,
                                   std::span<const uint32_t> context_ids) {
  // Guard the multiplication too: a caller-supplied count must not wrap the size check.
  if (context_ids.size() > (std::numeric_limits<size_t>::max() - kBlockStatusPayloadFixedSize) / 4)
    return 0;
  if (out.size() < block_status_payload_size(context_ids.size())) return 0;
  ByteWriter w(out);
  w.u64(effect_length);
  for (uint32_t id : context_ids) w.u32(id);
  return w.result();
}

std::optional<BlockStatusPayload> decode_block_status_payload(ConstBytes payload) {
  if (payload.size() < kBlockStatusPayloadFixedSize ||
      (payload.size() - kBlockStatusPayloadFixedSize) % 4 != 0)
    return std::nullopt;
  ByteReader r(payload);
  BlockStatusPayload p;
  p.effect_length = r.u64();
  p.ids = r.rest();
  if (!r.ok()) return std::nullopt;
  return p;
}

}  // namespace duplexnbd::wire
