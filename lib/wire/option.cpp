// SPDX-License-Identifier: LGPL-2.1-or-later
// Encoding and decoding of handshake-phase messages.
#include "wire/option.h"

#include <algorithm>

namespace duplexnbd::wire {

namespace {

constexpr size_t kU32Max = std::numeric_limits<uint32_t>::max();
constexpr size_t kU16Max = std::numeric_limits<uint16_t>::max();

// A reader over just the fixed-size message, so trailing bytes in `in` are never consumed.
ByteReader prefix_reader(ConstBytes in, size_t size) {
  return ByteReader(in.first(std::min(in.size(), size)));
}

}  // namespace

// ---- Greetings --------------------------------------------------------------------------

std::optional<GreetingKind> classify_greeting(ConstBytes in) {
  ByteReader r = prefix_reader(in, kGreetingPrefixSize);
  uint64_t passwd = r.u64();
  uint64_t magic = r.u64();
  if (!r.ok() || passwd != kInitPasswd) return std::nullopt;
  if (magic == kIHaveOpt) return GreetingKind::Newstyle;
  if (magic == kOldstyleMagic) return GreetingKind::Oldstyle;
  return std::nullopt;
}

std::optional<uint16_t> decode_newstyle_greeting(ConstBytes in) {
  if (in.size() < kNewstyleGreetingSize || classify_greeting(in) != GreetingKind::Newstyle)
    return std::nullopt;
  return load_be16(in.data() + kGreetingPrefixSize);
}

size_t encode_newstyle_greeting(MutableBytes out, uint16_t handshake_flags) {
  if (out.size() < kNewstyleGreetingSize) return 0;
  ByteWriter w(out);
  w.u64(kInitPasswd);
  w.u64(kIHaveOpt);
  w.u16(handshake_flags);
  return w.result();
}

std::optional<OldstyleGreeting> decode_oldstyle_greeting(ConstBytes in) {
  if (in.size() < kOldstyleGreetingSize || classify_greeting(in) != GreetingKind::Oldstyle)
    return std::nullopt;
  ByteReader r(in.subspan(kGreetingPrefixSize));
  OldstyleGreeting g;
  g.export_size = r.u64();
  g.handshake_flags = r.u16();
  g.transmission_flags = r.u16();
  if (!r.ok()) return std::nullopt;
  return g;
}

size_t encode_oldstyle_greeting(MutableBytes out, const OldstyleGreeting &greeting) {
  if (out.size() < kOldstyleGreetingSize) return 0;
  ByteWriter w(out);
  w.u64(kInitPasswd);
  w.u64(kOldstyleMagic);
  w.u64(greeting.export_size);
  w.u16(greeting.handshake_flags);
  w.u16(greeting.transmission_flags);
  w.zeroes(kHandshakeReservedZeroes);
  return w.result();
}

size_t encode_client_flags(MutableBytes out, uint32_t client_flags) {
  if (out.size() < kClientFlagsSize) return 0;
  store_be32(out.data(), client_flags);
  return kClientFlagsSize;
}

std::optional<uint32_t> decode_client_flags(ConstBytes in) {
  if (in.size() < kClientFlagsSize) return std::nullopt;
  return load_be32(in.data());
}

// ---- Option requests --------------------------------------------------------------------

size_t encode_option_request_header(MutableBytes out, const OptionRequestHeader &header) {
  if (out.size() < kOptionRequestHeaderSize) return 0;
  ByteWriter w(out);
  w.u64(kOptionRequestMagic);
  w.u32(header.option);
  w.u32(header.length);
  return w.result();
}

std::optional<OptionRequestHeader> decode_option_request_header(ConstBytes in) {
  ByteReader r = prefix_reader(in, kOptionRequestHeaderSize);
  uint64_t magic = r.u64();
  OptionRequestHeader h;
  h.option = r.u32();
  h.length = r.u32();
  if (!r.ok() || magic != kOptionRequestMagic) return std::nullopt;
  return h;
}

size_t encode_option_request(MutableBytes out, uint32_t option, ConstBytes payload) {
  if (payload.size() > kU32Max || out.size() < kOptionRequestHeaderSize + payload.size())
    return 0;
  ByteWriter w(out);
  w.u64(kOptionRequestMagic);
  w.u32(option);
  w.u32(uint32_t(payload.size()));
  w.bytes(payload);
  return w.result();
}

size_t encode_info_payload(MutableBytes out, std::string_view export_name,
                           std::span<const uint16_t> info_requests) {
  if (export_name.size() > kU32Max || info_requests.size() > kU16Max) return 0;
  if (out.size() < info_payload_size(export_name.size(), info_requests.size())) return 0;
  ByteWriter w(out);
  w.u32(uint32_t(export_name.size()));
  w.string(export_name);
  w.u16(uint16_t(info_requests.size()));
  for (uint16_t info : info_requests) w.u16(info);
  return w.result();
}

std::optional<InfoRequestPayload> decode_info_payload(ConstBytes payload) {
  ByteReader r(payload);
  InfoRequestPayload p;
  uint32_t name_length = r.u32();
  p.export_name = r.string(name_length);
  uint16_t count = r.u16();
  p.requests = r.bytes(2 * uint64_t(count));
  if (!r.at_end()) return std::nullopt;
  return p;
}

std::optional<MetaContextRequestPayload> decode_meta_context_payload(ConstBytes payload) {
  ByteReader r(payload);
  MetaContextRequestPayload p;
  uint32_t name_length = r.u32();
  p.export_name = r.string(name_length);
  p.count = r.u32();
  if (!r.ok()) return std::nullopt;
  ConstBytes queries = r.rest();
  // Walk once here so for_each_query can trust the layout.  Each query takes at least 4
  // bytes, so a hostile count fails on bytes, not after 2^32 iterations of nothing.
  ByteReader walk(queries);
  for (uint32_t i = 0; i < p.count && walk.ok(); ++i) walk.bytes(walk.u32());
  if (!walk.at_end()) return std::nullopt;
  p.queries = queries;
  return p;
}

// ---- Option replies ---------------------------------------------------------------------

std::optional<OptionReplyHeader> decode_option_reply_header(ConstBytes in) {
  ByteReader r = prefix_reader(in, kOptionReplyHeaderSize);
  uint64_t magic = r.u64();
  OptionReplyHeader h;
  h.option = r.u32();
  h.reply_type = r.u32();
  h.length = r.u32();
  if (!r.ok() || magic != kOptionReplyMagic) return std::nullopt;
  return h;
}

size_t encode_option_reply_header(MutableBytes out, const OptionReplyHeader &header) {
  if (out.size() < kOptionReplyHeaderSize) return 0;
  ByteWriter w(out);
  w.u64(kOptionReplyMagic);
  w.u32(header.option);
  w.u32(header.reply_type);
  w.u32(header.length);
  return w.result();
}

std::optional<ServerReply> decode_rep_server(ConstBytes payload) {
  ByteReader r(payload);
  ServerReply reply;
  uint32_t name_length = r.u32();
  reply.name = r.string(name_length);
  reply.description = r.string(r.remaining());
  if (!r.ok()) return std::nullopt;
  return reply;
}

size_t encode_rep_server(MutableBytes out, const ServerReply &reply) {
  if (reply.name.size() > kU32Max) return 0;
  if (out.size() < rep_server_size(reply.name.size(), reply.description.size())) return 0;
  ByteWriter w(out);
  w.u32(uint32_t(reply.name.size()));
  w.string(reply.name);
  w.string(reply.description);
  return w.result();
}

std::optional<InfoReply> decode_rep_info(ConstBytes payload) {
  ByteReader r(payload);
  InfoReply info;
  info.info_type = r.u16();
  if (!r.ok()) return std::nullopt;
  info.body = payload.subspan(2);
  ByteReader body(info.body);
  switch (info.info_type) {
    case kInfoExport:
      info.export_info.size = body.u64();
      info.export_info.transmission_flags = body.u16();
      break;
    case kInfoBlockSize:
      info.block_size.minimum = body.u32();
      info.block_size.preferred = body.u32();
      info.block_size.maximum = body.u32();
      break;
    case kInfoName:
    case kInfoDescription:
      info.text = body.string(body.remaining());
      break;
    default:
      body.rest();
      break;
  }
  if (!body.at_end()) return std::nullopt;
  return info;
}

size_t encode_info_export(MutableBytes out, const ExportInfo &info) {
  if (out.size() < kInfoExportReplySize) return 0;
  ByteWriter w(out);
  w.u16(kInfoExport);
  w.u64(info.size);
  w.u16(info.transmission_flags);
  return w.result();
}

size_t encode_info_block_size(MutableBytes out, const BlockSizeInfo &info) {
  if (out.size() < kInfoBlockSizeReplySize) return 0;
  ByteWriter w(out);
  w.u16(kInfoBlockSize);
  w.u32(info.minimum);
  w.u32(info.preferred);
  w.u32(info.maximum);
  return w.result();
}

size_t encode_info_text(MutableBytes out, uint16_t info_type, std::string_view text) {
  if (out.size() < 2 || out.size() - 2 < text.size()) return 0;
  ByteWriter w(out);
  w.u16(info_type);
  w.string(text);
  return w.result();
}

std::optional<MetaContextReply> decode_rep_meta_context(ConstBytes payload) {
  ByteReader r(payload);
  MetaContextReply reply;
  reply.context_id = r.u32();
  reply.name = r.string(r.remaining());
  if (!r.ok()) return std::nullopt;
  return reply;
}

size_t encode_rep_meta_context(MutableBytes out, const MetaContextReply &reply) {
  if (out.size() < 4 || out.size() - 4 < reply.name.size()) return 0;
  ByteWriter w(out);
  w.u32(reply.context_id);
  w.string(reply.name);
  return w.result();
}

// ---- NBD_OPT_EXPORT_NAME's reply --------------------------------------------------------

std::optional<ExportInfo> decode_export_name_reply(ConstBytes in) {
  ByteReader r = prefix_reader(in, kExportNameReplyShortSize);
  ExportInfo info;
  info.size = r.u64();
  info.transmission_flags = r.u16();
  if (!r.ok()) return std::nullopt;
  return info;
}

size_t encode_export_name_reply(MutableBytes out, const ExportInfo &info, bool no_zeroes) {
  if (out.size() < export_name_reply_size(no_zeroes)) return 0;
  ByteWriter w(out);
  w.u64(info.size);
  w.u16(info.transmission_flags);
  if (!no_zeroes) w.zeroes(kHandshakeReservedZeroes);
  return w.result();
}

}  // namespace duplexnbd::wire
