// SPDX-License-Identifier: LGPL-2.1-or-later
// Decoding and encoding of reply headers, chunk payloads, and NBD error values.
#include "wire/reply.h"

#include <algorithm>
#include <cerrno>
#include <limits>

#include "wire/cursor.h"

namespace duplexnbd::wire {

namespace {

constexpr uint64_t kU32Max = std::numeric_limits<uint32_t>::max();

// A reader over just the header, so trailing bytes in `in` are never consumed.
ByteReader header_reader(ConstBytes in, size_t size) {
  return ByteReader(in.first(std::min(in.size(), size)));
}

}  // namespace

ReplyKind classify_reply(ConstBytes in) {
  if (in.size() < kReplyMagicSize) return ReplyKind::Unknown;
  return classify_reply_magic(load_be32(in.data()));
}

std::optional<SimpleReply> decode_simple_reply(ConstBytes in) {
  ByteReader r = header_reader(in, kSimpleReplySize);
  uint32_t magic = r.u32();
  SimpleReply reply;
  reply.error = r.u32();
  reply.cookie = r.u64();
  if (!r.ok() || magic != kSimpleReplyMagic) return std::nullopt;
  return reply;
}

std::optional<ReplyChunkHeader> decode_structured_chunk_header(ConstBytes in) {
  ByteReader r = header_reader(in, kStructuredReplyHeaderSize);
  uint32_t magic = r.u32();
  ReplyChunkHeader h;
  h.flags = r.u16();
  h.type = r.u16();
  h.cookie = r.u64();
  h.length = r.u32();
  if (!r.ok() || magic != kStructuredReplyMagic) return std::nullopt;
  return h;
}

std::optional<ReplyChunkHeader> decode_extended_reply_header(ConstBytes in) {
  ByteReader r = header_reader(in, kExtendedReplyHeaderSize);
  uint32_t magic = r.u32();
  ReplyChunkHeader h;
  h.flags = r.u16();
  h.type = r.u16();
  h.cookie = r.u64();
  h.offset = r.u64();
  h.length = r.u64();
  if (!r.ok() || magic != kExtendedReplyMagic) return std::nullopt;
  return h;
}

size_t encode_simple_reply(MutableBytes out, const SimpleReply &reply) {
  if (out.size() < kSimpleReplySize) return 0;
  ByteWriter w(out);
  w.u32(kSimpleReplyMagic);
  w.u32(reply.error);
  w.u64(reply.cookie);
  return w.result();
}

size_t encode_structured_chunk_header(MutableBytes out, const ReplyChunkHeader &header) {
  if (out.size() < kStructuredReplyHeaderSize || header.length > kU32Max) return 0;
  ByteWriter w(out);
  w.u32(kStructuredReplyMagic);
  w.u16(header.flags);
  w.u16(header.type);
  w.u64(header.cookie);
  w.u32(uint32_t(header.length));
  return w.result();
}

size_t encode_extended_reply_header(MutableBytes out, const ReplyChunkHeader &header) {
  if (out.size() < kExtendedReplyHeaderSize) return 0;
  ByteWriter w(out);
  w.u32(kExtendedReplyMagic);
  w.u16(header.flags);
  w.u16(header.type);
  w.u64(header.cookie);
  w.u64(header.offset);
  w.u64(header.length);
  return w.result();
}

std::optional<OffsetDataPrefix> decode_offset_data_prefix(ConstBytes prefix,
                                                          uint64_t payload_length) {
  if (payload_length < kOffsetDataPrefixSize || prefix.size() < kOffsetDataPrefixSize)
    return std::nullopt;
  return OffsetDataPrefix{load_be64(prefix.data()), payload_length - kOffsetDataPrefixSize};
}

std::optional<OffsetHole> decode_offset_hole(ConstBytes payload) {
  if (payload.size() != kOffsetHolePayloadSize) return std::nullopt;
  ByteReader r(payload);
  OffsetHole hole;
  hole.offset = r.u64();
  hole.length = r.u32();
  if (!r.ok()) return std::nullopt;
  return hole;
}

std::optional<ErrorChunk> decode_error_chunk(uint16_t type, ConstBytes payload) {
  if (!is_error_chunk_type(type)) return std::nullopt;
  ByteReader r(payload);
  ErrorChunk chunk;
  chunk.error = r.u32();
  uint16_t message_length = r.u16();
  chunk.message = r.string(message_length);  // fails if it overruns the payload
  if (type == kReplyTypeErrorOffset) chunk.offset = r.u64();
  if (!r.ok()) return std::nullopt;
  // The two known layouts are fully determined, so stray bytes mean a broken server.
  if ((type == kReplyTypeError || type == kReplyTypeErrorOffset) && !r.at_end())
    return std::nullopt;
  return chunk;
}

std::optional<BlockStatusChunk> decode_block_status(ConstBytes payload) {
  if (payload.size() < kBlockStatusHeaderSize + kBlockStatusDescriptorSize ||
      (payload.size() - kBlockStatusHeaderSize) % kBlockStatusDescriptorSize != 0)
    return std::nullopt;
  ByteReader r(payload);
  BlockStatusChunk chunk;
  chunk.context_id = r.u32();
  chunk.wide = false;
  chunk.descriptors = r.rest();
  if (!r.ok()) return std::nullopt;
  return chunk;
}

std::optional<BlockStatusChunk> decode_block_status_ext(ConstBytes payload) {
  if (payload.size() < kBlockStatusExtHeaderSize + kBlockStatusExtDescriptorSize ||
      (payload.size() - kBlockStatusExtHeaderSize) % kBlockStatusExtDescriptorSize != 0)
    return std::nullopt;
  ByteReader r(payload);
  BlockStatusChunk chunk;
  chunk.context_id = r.u32();
  uint32_t declared = r.u32();
  chunk.wide = true;
  chunk.descriptors = r.rest();
  if (!r.ok()) return std::nullopt;
  if (declared != chunk.count()) return std::nullopt;  // libnbd 1.22.2 fails the command then
  return chunk;
}

std::optional<BlockStatusChunk> decode_block_status_chunk(uint16_t type, ConstBytes payload) {
  if (type == kReplyTypeBlockStatus) return decode_block_status(payload);
  if (type == kReplyTypeBlockStatusExt) return decode_block_status_ext(payload);
  return std::nullopt;
}

size_t encode_offset_data_prefix(MutableBytes out, uint64_t offset) {
  if (out.size() < kOffsetDataPrefixSize) return 0;
  store_be64(out.data(), offset);
  return kOffsetDataPrefixSize;
}

size_t encode_offset_hole(MutableBytes out, const OffsetHole &hole) {
  if (out.size() < kOffsetHolePayloadSize) return 0;
  ByteWriter w(out);
  w.u64(hole.offset);
  w.u32(hole.length);
  return w.result();
}

size_t encode_error_chunk(MutableBytes out, const ErrorChunk &error) {
  if (error.message.size() > std::numeric_limits<uint16_t>::max()) return 0;
  if (out.size() < error_chunk_size(error.message.size(), error.offset.has_value())) return 0;
  ByteWriter w(out);
  w.u32(error.error);
  w.u16(uint16_t(error.message.size()));
  w.string(error.message);
  if (error.offset) w.u64(*error.offset);
  return w.result();
}

size_t encode_block_status_chunk(MutableBytes out, uint32_t context_id,
                                 std::span<const BlockStatusExtent> extents, bool wide) {
  // Bound the count before multiplying so the size check cannot wrap.
  if (extents.size() > (std::numeric_limits<size_t>::max() - kBlockStatusExtHeaderSize) /
                           kBlockStatusExtDescriptorSize)
    return 0;
  if (wide && extents.size() > kU32Max) return 0;
  if (out.size() < block_status_chunk_size(extents.size(), wide)) return 0;
  if (!wide) {
    for (const BlockStatusExtent &e : extents)
      if (e.length > kU32Max || e.flags > kU32Max) return 0;
  }
  ByteWriter w(out);
  w.u32(context_id);
  if (wide) w.u32(uint32_t(extents.size()));
  for (const BlockStatusExtent &e : extents) {
    if (wide) {
      w.u64(e.length);
      w.u64(e.flags);
    } else {
      w.u32(uint32_t(e.length));
      w.u32(uint32_t(e.flags));
    }
  }
  return w.result();
}

int errno_of_nbd_error(uint32_t error) {
  switch (error) {
    case kNbdSuccess: return 0;
    case kNbdEperm: return EPERM;
    case kNbdEio: return EIO;
    case kNbdEnomem: return ENOMEM;
    case kNbdEinval: return EINVAL;
    case kNbdEnospc: return ENOSPC;
    case kNbdEoverflow: return EOVERFLOW;
    case kNbdEnotsup: return ENOTSUP;
    case kNbdEshutdown: return ESHUTDOWN;
    default: return EINVAL;
  }
}

uint32_t nbd_error_of_errno(int errnum) {
  // ENOTSUP and EOPNOTSUPP share a value on Linux but not everywhere, so no switch.
  if (errnum == ENOTSUP || errnum == EOPNOTSUPP) return kNbdEnotsup;
  switch (errnum) {
    case 0: return kNbdSuccess;
    case EPERM:
    case EROFS: return kNbdEperm;
    case EIO: return kNbdEio;
    case ENOMEM: return kNbdEnomem;
    case EINVAL: return kNbdEinval;
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return kNbdEnospc;
    case EOVERFLOW: return kNbdEoverflow;
    case ESHUTDOWN: return kNbdEshutdown;
    default: return kNbdEinval;
  }
}

}  // namespace duplexnbd::wire
