// SPDX-License-Identifier: LGPL-2.1-or-later
// Handshake phase: greetings, client flags, option requests and their payloads, option replies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string_view>

#include "wire/byte_order.h"
#include "wire/cursor.h"
#include "wire/protocol.h"

namespace duplexnbd::wire {

// Conventions as in reply.h: decoders stay inside their span and return nullopt on any
// inconsistency; encoders return the bytes written, or 0 (writing nothing) when `out`
// is too small or a value does not fit its field.  Strings are borrowed, never copied,
// and string length limits (kMaxStringSize) are left to the caller.

// ---- Greetings --------------------------------------------------------------------------

enum class GreetingKind : uint8_t { Newstyle, Oldstyle };

// From the first 16 bytes (NBDMAGIC + IHAVEOPT or the oldstyle magic).
std::optional<GreetingKind> classify_greeting(ConstBytes in);

// Newstyle: 18 bytes -> the server's handshake flags.
std::optional<uint16_t> decode_newstyle_greeting(ConstBytes in);
size_t encode_newstyle_greeting(MutableBytes out, uint16_t handshake_flags);

// Oldstyle: 152 bytes.  The 32-bit flags field is the handshake flags (high half, which
// servers must leave 0) followed by the transmission flags (low half).  The reserved
// zeroes are not checked.
struct OldstyleGreeting {
  uint64_t export_size = 0;
  uint16_t handshake_flags = 0;
  uint16_t transmission_flags = 0;
};
std::optional<OldstyleGreeting> decode_oldstyle_greeting(ConstBytes in);
size_t encode_oldstyle_greeting(MutableBytes out, const OldstyleGreeting &greeting);

// Client flags: the u32 the client answers the newstyle greeting with.
size_t encode_client_flags(MutableBytes out, uint32_t client_flags);
std::optional<uint32_t> decode_client_flags(ConstBytes in);

// ---- Option requests --------------------------------------------------------------------

struct OptionRequestHeader {
  uint32_t option = 0;
  uint32_t length = 0;  // payload bytes that follow
};

size_t encode_option_request_header(MutableBytes out, const OptionRequestHeader &header);
std::optional<OptionRequestHeader> decode_option_request_header(ConstBytes in);

// Header plus payload in one go (EXPORT_NAME's payload is just the name: bytes_of(name)).
size_t encode_option_request(MutableBytes out, uint32_t option, ConstBytes payload);

// NBD_OPT_INFO / NBD_OPT_GO payload: u32 name length, name, u16 count, u16 info types.
constexpr size_t info_payload_size(size_t name_length, size_t n_requests) {
  return 4 + name_length + 2 + 2 * n_requests;
}
size_t encode_info_payload(MutableBytes out, std::string_view export_name,
                           std::span<const uint16_t> info_requests);

struct InfoRequestPayload {
  std::string_view export_name;
  ConstBytes requests;  // big-endian u16s

  size_t count() const { return requests.size() / 2; }
  uint16_t request(size_t i) const { return load_be16(requests.data() + 2 * i); }  // i < count()
};
// Server side: the name must fit and the count must match the remaining bytes exactly.
std::optional<InfoRequestPayload> decode_info_payload(ConstBytes payload);

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT payload: u32 name length, name,
// u32 query count, then per query u32 length + query.  `queries` is any range of things
// convertible to std::string_view (std::vector<std::string>, std::array<std::string_view>).
template <typename Range>
size_t meta_context_payload_size(std::string_view export_name, const Range &queries) {
  size_t size = 4 + export_name.size() + 4;
  for (const auto &q : queries) size += 4 + std::string_view(q).size();
  return size;
}

template <typename Range>
size_t encode_meta_context_payload(MutableBytes out, std::string_view export_name,
                                   const Range &queries) {
  constexpr size_t kU32Max = std::numeric_limits<uint32_t>::max();
  size_t count = 0;
  for (const auto &q : queries) {
    if (std::string_view(q).size() > kU32Max) return 0;
    ++count;
  }
  if (export_name.size() > kU32Max || count > kU32Max) return 0;
  if (out.size() < meta_context_payload_size(export_name, queries)) return 0;
  ByteWriter w(out);
  w.u32(uint32_t(export_name.size()));
  w.string(export_name);
  w.u32(uint32_t(count));
  for (const auto &q : queries) {
    std::string_view s(q);
    w.u32(uint32_t(s.size()));
    w.string(s);
  }
  return w.result();
}

struct MetaContextRequestPayload {
  std::string_view export_name;
  uint32_t count = 0;
  ConstBytes queries;  // `count` length-prefixed strings, already validated

  // Calls f(std::string_view) for each query in order.
  template <typename F>
  void for_each_query(F &&f) const {
    ByteReader r(queries);
    for (uint32_t i = 0; i < count; ++i) {
      uint32_t n = r.u32();
      f(r.string(n));
    }
  }
};
// Server side: every query must fit and the queries must end exactly at the payload end.
std::optional<MetaContextRequestPayload> decode_meta_context_payload(ConstBytes payload);

// ---- Option replies ---------------------------------------------------------------------

struct OptionReplyHeader {
  uint32_t option = 0;      // echoes the request's option
  uint32_t reply_type = 0;  // kRep*; errors have kRepErrBit set and carry a message payload
  uint32_t length = 0;      // payload bytes that follow

  bool is_error() const { return is_rep_error(reply_type); }
};

std::optional<OptionReplyHeader> decode_option_reply_header(ConstBytes in);
size_t encode_option_reply_header(MutableBytes out, const OptionReplyHeader &header);

// NBD_REP_SERVER: u32 name length, name, then the rest is a free-form description.
struct ServerReply {
  std::string_view name;
  std::string_view description;
};
std::optional<ServerReply> decode_rep_server(ConstBytes payload);
constexpr size_t rep_server_size(size_t name_length, size_t description_length) {
  return 4 + name_length + description_length;
}
size_t encode_rep_server(MutableBytes out, const ServerReply &reply);

// NBD_REP_INFO: u16 info type, then a type-specific body.
struct ExportInfo {
  uint64_t size = 0;
  uint16_t transmission_flags = 0;
};
struct BlockSizeInfo {
  uint32_t minimum = 0;
  uint32_t preferred = 0;
  uint32_t maximum = 0;
};
struct InfoReply {
  uint16_t info_type = 0;
  ConstBytes body;              // everything after the type, for types we do not know
  ExportInfo export_info;       // kInfoExport (body exactly 10 bytes)
  BlockSizeInfo block_size;     // kInfoBlockSize (body exactly 12 bytes)
  std::string_view text;        // kInfoName / kInfoDescription (the whole body)
};
// Known types must have their exact sizes; unknown types only need the 2-byte type,
// because the spec tells clients to ignore them.
std::optional<InfoReply> decode_rep_info(ConstBytes payload);

inline constexpr size_t kInfoExportReplySize = 12;
inline constexpr size_t kInfoBlockSizeReplySize = 14;
size_t encode_info_export(MutableBytes out, const ExportInfo &info);
size_t encode_info_block_size(MutableBytes out, const BlockSizeInfo &info);
// kInfoName or kInfoDescription: 2 + text bytes.
size_t encode_info_text(MutableBytes out, uint16_t info_type, std::string_view text);

// NBD_REP_META_CONTEXT: u32 context id, then the name as the rest of the payload.
struct MetaContextReply {
  uint32_t context_id = 0;
  std::string_view name;
};
std::optional<MetaContextReply> decode_rep_meta_context(ConstBytes payload);
size_t encode_rep_meta_context(MutableBytes out, const MetaContextReply &reply);

// ---- NBD_OPT_EXPORT_NAME's reply --------------------------------------------------------
// Not framed as an option reply: u64 size, u16 transmission flags, then 124 zeroes
// unless both sides agreed on NO_ZEROES.

constexpr size_t export_name_reply_size(bool no_zeroes) {
  return no_zeroes ? kExportNameReplyShortSize : kExportNameReplySize;
}
// Reads the first 10 bytes; the zeroes, if any, are the caller's to skip.
std::optional<ExportInfo> decode_export_name_reply(ConstBytes in);
size_t encode_export_name_reply(MutableBytes out, const ExportInfo &info, bool no_zeroes);

}  // namespace duplexnbd::wire
