// SPDX-License-Identifier: LGPL-2.1-or-later
// Transmission-phase replies: simple/structured/extended headers, chunk payloads, error codes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "wire/byte_order.h"
#include "wire/protocol.h"

namespace duplexnbd::wire {

// Every decoder here reads only within the span it is given, checks every length field
// against that span and against the layout the spec fixes, and reports failure as
// nullopt; hostile input can cost a failed decode, never a read past the end.

// ---- Reply headers ----------------------------------------------------------------------

enum class ReplyKind : uint8_t { Simple, Structured, Extended, Unknown };

constexpr ReplyKind classify_reply_magic(uint32_t magic) {
  switch (magic) {
    case kSimpleReplyMagic: return ReplyKind::Simple;
    case kStructuredReplyMagic: return ReplyKind::Structured;
    case kExtendedReplyMagic: return ReplyKind::Extended;
    default: return ReplyKind::Unknown;
  }
}

// Looks at the first 4 bytes; Unknown when fewer are given or the magic is foreign.
ReplyKind classify_reply(ConstBytes in);

// Whole header size for a kind (the magic included); 0 for Unknown.
constexpr size_t reply_header_size(ReplyKind kind) {
  switch (kind) {
    case ReplyKind::Simple: return kSimpleReplySize;
    case ReplyKind::Structured: return kStructuredReplyHeaderSize;
    case ReplyKind::Extended: return kExtendedReplyHeaderSize;
    default: return 0;
  }
}

struct SimpleReply {
  uint32_t error = 0;  // NBD error value, 0 on success
  uint64_t cookie = 0;
};

// One header type for structured chunks and extended replies, so the reader handles the
// payload the same way whichever was negotiated.  `offset` exists only in the extended
// form (it echoes the request's offset) and is 0 after decoding a structured chunk.
struct ReplyChunkHeader {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint64_t length = 0;  // payload bytes that follow the header

  bool done() const { return (flags & kReplyFlagDone) != 0; }
};

// Each reads its header from the front of `in` (16, 20 or 32 bytes) and checks the magic.
std::optional<SimpleReply> decode_simple_reply(ConstBytes in);
std::optional<ReplyChunkHeader> decode_structured_chunk_header(ConstBytes in);
std::optional<ReplyChunkHeader> decode_extended_reply_header(ConstBytes in);

// Server side / tests.  Return bytes written or 0 if `out` is too small (or, for the
// structured form, if length does not fit 32 bits).
size_t encode_simple_reply(MutableBytes out, const SimpleReply &reply);
size_t encode_structured_chunk_header(MutableBytes out, const ReplyChunkHeader &header);
size_t encode_extended_reply_header(MutableBytes out, const ReplyChunkHeader &header);

// ---- Chunk payloads ---------------------------------------------------------------------

// NBD_REPLY_TYPE_OFFSET_DATA: only the 8-byte offset is decoded here, because the data
// that follows goes straight into the caller's buffer.
struct OffsetDataPrefix {
  uint64_t offset = 0;
  uint64_t data_length = 0;  // payload_length - 8
};
// `prefix` holds at least the first 8 payload bytes; payload_length is the header's
// length, at least 8 (a chunk of the offset alone carries no data: the spec calls it
// broken, libnbd accepts it, and so do we).
std::optional<OffsetDataPrefix> decode_offset_data_prefix(ConstBytes prefix,
                                                          uint64_t payload_length);

// NBD_REPLY_TYPE_OFFSET_HOLE: the payload must be exactly 12 bytes.  A zero hole length
// is left for the caller to reject alongside its bounds checks.
struct OffsetHole {
  uint64_t offset = 0;
  uint32_t length = 0;
};
std::optional<OffsetHole> decode_offset_hole(ConstBytes payload);

// Error chunks: NBD_REPLY_TYPE_ERROR (exactly 6 + message), NBD_REPLY_TYPE_ERROR_OFFSET
// (exactly 14 + message, offset last), or any other type with the error bit set, which
// only needs its message to fit (the spec lets the client carry on after those).
struct ErrorChunk {
  uint32_t error = 0;              // NBD error value; the spec requires nonzero
  std::string_view message;        // borrowed from the payload; not NUL-terminated
  std::optional<uint64_t> offset;  // present for NBD_REPLY_TYPE_ERROR_OFFSET
};
std::optional<ErrorChunk> decode_error_chunk(uint16_t type, ConstBytes payload);

// NBD_REPLY_TYPE_BLOCK_STATUS (4 + 8n) and NBD_REPLY_TYPE_BLOCK_STATUS_EXT (8 + 16n),
// n >= 1.  Descriptors stay in wire form and are decoded on access, so nothing is copied.
struct BlockStatusExtent {
  uint64_t length = 0;
  uint64_t flags = 0;
};

struct BlockStatusChunk {
  uint32_t context_id = 0;
  bool wide = false;     // 16-byte (u64 length, u64 flags) descriptors of the _EXT type
  ConstBytes descriptors;

  size_t descriptor_size() const {
    return wide ? kBlockStatusExtDescriptorSize : kBlockStatusDescriptorSize;
  }
  size_t count() const { return descriptors.size() / descriptor_size(); }
  BlockStatusExtent extent(size_t i) const {  // i < count()
    const uint8_t *p = descriptors.data() + i * descriptor_size();
    if (wide) return {load_be64(p), load_be64(p + 8)};
    return {load_be32(p), load_be32(p + 4)};
  }
};

std::optional<BlockStatusChunk> decode_block_status(ConstBytes payload);
// The descriptor count field may be 0 (count implied by length) or must match length.
std::optional<BlockStatusChunk> decode_block_status_ext(ConstBytes payload);
// Dispatches on kReplyTypeBlockStatus / kReplyTypeBlockStatusExt; nullopt for others.
std::optional<BlockStatusChunk> decode_block_status_chunk(uint16_t type, ConstBytes payload);

// Server side / tests: chunk payload encoders, same return convention as above.
size_t encode_offset_data_prefix(MutableBytes out, uint64_t offset);
size_t encode_offset_hole(MutableBytes out, const OffsetHole &hole);
constexpr size_t error_chunk_size(size_t message_length, bool with_offset) {
  return (with_offset ? kErrorOffsetChunkFixedSize : kErrorChunkFixedSize) + message_length;
}
// Writes the ERROR_OFFSET layout when error.offset is set; fails for messages over 65535.
size_t encode_error_chunk(MutableBytes out, const ErrorChunk &error);
constexpr size_t block_status_chunk_size(size_t n_extents, bool wide) {
  return wide ? kBlockStatusExtHeaderSize + kBlockStatusExtDescriptorSize * n_extents
              : kBlockStatusHeaderSize + kBlockStatusDescriptorSize * n_extents;
}
// The narrow form fails if any length or flags value does not fit 32 bits.
size_t encode_block_status_chunk(MutableBytes out, uint32_t context_id,
                                 std::span<const BlockStatusExtent> extents, bool wide);

// ---- Error values -----------------------------------------------------------------------

// NBD error -> errno.  0 stays 0; values outside the spec's list become EINVAL, as the
// spec tells clients to treat unexpected errors.
int errno_of_nbd_error(uint32_t error);
// errno -> NBD error, for servers: EDQUOT and EFBIG fold into ENOSPC and EROFS into
// EPERM; anything without a counterpart becomes NBD_EINVAL.
uint32_t nbd_error_of_errno(int errnum);

}  // namespace duplexnbd::wire
