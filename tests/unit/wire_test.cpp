// SPDX-License-Identifier: LGPL-2.1-or-later
// Unit tests for lib/wire: spec byte layouts, round trips, rejection of bad input, fuzzing.
#include <gtest/gtest.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "wire/byte_order.h"
#include "wire/option.h"
#include "wire/protocol.h"
#include "wire/reply.h"
#include "wire/request.h"

namespace duplexnbd::wire {
namespace {

using Bytes = std::vector<uint8_t>;

// Builds expected wire images field by field, independently of the code under test.
struct Be {
  Bytes b;
  Be &u8(uint8_t v) { b.push_back(v); return *this; }
  Be &u16(uint16_t v) { return u8(uint8_t(v >> 8)).u8(uint8_t(v)); }
  Be &u32(uint32_t v) { return u16(uint16_t(v >> 16)).u16(uint16_t(v)); }
  Be &u64(uint64_t v) { return u32(uint32_t(v >> 32)).u32(uint32_t(v)); }
  // A loop, not insert(): GCC 12 at -O3 warns (-Wstringop-overflow, a false positive) about
  // inserting into the empty vector, which fails a Release build.
  Be &str(std::string_view s) {
    for (char c : s) b.push_back(uint8_t(c));
    return *this;
  }
  Be &zeroes(size_t n) { b.insert(b.end(), n, 0); return *this; }
};

ConstBytes cb(const Bytes &b) { return {b.data(), b.size()}; }

// A heap copy of exactly `n` bytes, so AddressSanitizer flags any read past the end.
Bytes truncated(const Bytes &b, size_t n) { return Bytes(b.begin(), b.begin() + long(n)); }

bool within(ConstBytes inner, ConstBytes outer) {
  if (inner.empty()) return true;
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}
bool within(std::string_view inner, ConstBytes outer) { return within(bytes_of(inner), outer); }

// ---- byte_order -------------------------------------------------------------------------

constexpr std::array<uint8_t, 8> kSample = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
static_assert(load_be16(kSample.data()) == 0x0102);
static_assert(load_be32(kSample.data()) == 0x01020304);
static_assert(load_be64(kSample.data()) == 0x0102030405060708);
static_assert(host_to_be32(be32_to_host(0xdeadbeef)) == 0xdeadbeef);
constexpr uint64_t stored_then_loaded() {
  std::array<uint8_t, 8> b{};
  store_be64(b.data(), 0x1122334455667788);
  return load_be64(b.data());
}
static_assert(stored_then_loaded() == 0x1122334455667788);

TEST(ByteOrder, UnalignedLoadStore) {
  alignas(8) uint8_t buf[24] = {};
  for (size_t off = 0; off < 8; ++off) {
    store_be64(buf + off, 0x0102030405060708);
    EXPECT_EQ(buf[off], 0x01);
    EXPECT_EQ(buf[off + 7], 0x08);
    EXPECT_EQ(load_be64(buf + off), 0x0102030405060708u);
    store_be32(buf + off + 9, 0xa1b2c3d4);
    EXPECT_EQ(buf[off + 9], 0xa1);
    EXPECT_EQ(load_be32(buf + off + 9), 0xa1b2c3d4u);
    store_be16(buf + off + 13, 0xbeef);
    EXPECT_EQ(buf[off + 13], 0xbe);
    EXPECT_EQ(load_be16(buf + off + 13), 0xbeef);
  }
}

// ---- protocol ---------------------------------------------------------------------------

uint64_t ascii_magic(const char (&s)[9]) {
  return load_be64(reinterpret_cast<const uint8_t *>(s));
}

TEST(Protocol, MagicsMatchSpec) {
  EXPECT_EQ(kInitPasswd, ascii_magic("NBDMAGIC"));
  EXPECT_EQ(kIHaveOpt, ascii_magic("IHAVEOPT"));
  EXPECT_EQ(kOldstyleMagic, 0x00420281861253u);
  EXPECT_EQ(kOptionReplyMagic, 0x3e889045565a9u);
  EXPECT_EQ(kRequestMagic, 0x25609513u);
  EXPECT_EQ(kExtendedRequestMagic, 0x21e41c71u);
  EXPECT_EQ(kSimpleReplyMagic, 0x67446698u);
  EXPECT_EQ(kStructuredReplyMagic, 0x668e33efu);
  EXPECT_EQ(kExtendedReplyMagic, 0x6e8a278cu);
}

TEST(Protocol, CodesMatchSpec) {
  EXPECT_EQ(kOptGo, 7u);
  EXPECT_EQ(kOptExtendedHeaders, 11u);
  EXPECT_EQ(kRepErrUnsup, 0x80000001u);
  EXPECT_EQ(kRepErrExtHeaderReqd, 0x8000000au);
  EXPECT_TRUE(is_rep_error(kRepErrTooBig));
  EXPECT_FALSE(is_rep_error(kRepMetaContext));
  EXPECT_EQ(kReplyTypeError, 32769);
  EXPECT_EQ(kReplyTypeErrorOffset, 32770);
  EXPECT_TRUE(is_error_chunk_type(0x8123));
  EXPECT_FALSE(is_error_chunk_type(kReplyTypeBlockStatusExt));
  EXPECT_EQ(kFlagBlockStatPayload, 0x1000);
  EXPECT_EQ(kCmdFlagPayloadLen, 0x20);
  EXPECT_EQ(kNbdEshutdown, 108u);
  EXPECT_EQ(kOldstyleGreetingSize, 152u);
  EXPECT_EQ(kExportNameReplySize, 134u);
}

TEST(Protocol, Names) {
  EXPECT_STREQ(option_name(kOptSetMetaContext), "NBD_OPT_SET_META_CONTEXT");
  EXPECT_STREQ(option_reply_name(kRepErrTlsReqd), "NBD_REP_ERR_TLS_REQD");
  EXPECT_STREQ(info_name(kInfoBlockSize), "NBD_INFO_BLOCK_SIZE");
  EXPECT_STREQ(command_name(kCmdWriteZeroes), "NBD_CMD_WRITE_ZEROES");
  EXPECT_STREQ(chunk_type_name(kReplyTypeErrorOffset), "NBD_REPLY_TYPE_ERROR_OFFSET");
  EXPECT_STREQ(nbd_error_name(kNbdEoverflow), "NBD_EOVERFLOW");
  EXPECT_EQ(option_name(999), nullptr);
  EXPECT_EQ(command_name(99), nullptr);
}

// ---- request ----------------------------------------------------------------------------

const RequestHeader kSampleRequest{kCmdFlagFua, kCmdWrite, 0x1122334455667788, 0x0000000100000200,
                                   0x1000};

TEST(Request, CompactLayout) {
  Bytes expect = Be()
                     .u32(0x25609513)
                     .u16(kCmdFlagFua)
                     .u16(kCmdWrite)
                     .u64(0x1122334455667788)
                     .u64(0x0000000100000200)
                     .u32(0x1000)
                     .b;
  ASSERT_EQ(expect.size(), kRequestHeaderSize);
  Bytes buf(64, 0xee);
  ASSERT_EQ(encode_request(buf, kSampleRequest), 28u);
  EXPECT_EQ(truncated(buf, 28), expect);
  EXPECT_EQ(buf[28], 0xee);

  auto decoded = decode_request(cb(expect));
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->flags, kCmdFlagFua);
  EXPECT_EQ(decoded->type, kCmdWrite);
  EXPECT_EQ(decoded->cookie, 0x1122334455667788u);
  EXPECT_EQ(decoded->offset, 0x0000000100000200u);
  EXPECT_EQ(decoded->length, 0x1000u);
}

TEST(Request, ExtendedLayout) {
  RequestHeader req = kSampleRequest;
  req.flags = kCmdFlagPayloadLen;
  req.length = 0x123456789a;
  Bytes expect = Be()
                     .u32(0x21e41c71)
                     .u16(kCmdFlagPayloadLen)
                     .u16(kCmdWrite)
                     .u64(req.cookie)
                     .u64(req.offset)
                     .u64(0x123456789a)
                     .b;
  Bytes buf(32);
  ASSERT_EQ(encode_extended_request(buf, req), 32u);
  EXPECT_EQ(buf, expect);
  ASSERT_EQ(encode_request_header(buf, req, true), 32u);
  auto decoded = decode_request_header(cb(buf), true);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->length, 0x123456789au);
  EXPECT_FALSE(decode_request(cb(buf)));  // the compact decoder wants the compact magic
}

TEST(Request, RejectsBadInput) {
  Bytes buf(28, 0xee);
  EXPECT_EQ(encode_request(MutableBytes(buf).first(27), kSampleRequest), 0u);
  EXPECT_EQ(buf, Bytes(28, 0xee));  // nothing written on failure
  RequestHeader big = kSampleRequest;
  big.length = 1ull << 32;
  EXPECT_EQ(encode_request(buf, big), 0u);
  EXPECT_EQ(encode_extended_request(buf, kSampleRequest), 0u);  // 28 < 32

  ASSERT_EQ(encode_request(buf, kSampleRequest), 28u);
  for (size_t n = 0; n < 28; ++n) EXPECT_FALSE(decode_request(cb(truncated(buf, n))));
  buf[0] ^= 1;
  EXPECT_FALSE(decode_request(cb(buf)));
}

TEST(Request, BlockStatusPayload) {
  const std::array<uint32_t, 2> ids = {1, 0xabcdef01};
  Bytes expect = Be().u64(1ull << 33).u32(1).u32(0xabcdef01).b;
  ASSERT_EQ(block_status_payload_size(ids.size()), 16u);
  Bytes buf(16);
  ASSERT_EQ(encode_block_status_payload(buf, 1ull << 33, ids), 16u);
  EXPECT_EQ(buf, expect);
  EXPECT_EQ(encode_block_status_payload(MutableBytes(buf).first(15), 1, ids), 0u);

  auto p = decode_block_status_payload(cb(buf));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->effect_length, 1ull << 33);
  ASSERT_EQ(p->count(), 2u);
  EXPECT_EQ(p->id(0), 1u);
  EXPECT_EQ(p->id(1), 0xabcdef01u);
  EXPECT_FALSE(decode_block_status_payload(cb(truncated(buf, 15))));
  EXPECT_FALSE(decode_block_status_payload(cb(truncated(buf, 7))));
  Bytes effect_only = truncated(buf, 8);
  auto empty = decode_block_status_payload(cb(effect_only));
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->count(), 0u);
}

// ---- reply headers ----------------------------------------------------------------------

TEST(Reply, Classify) {
  EXPECT_EQ(classify_reply(cb(Be().u32(0x67446698).b)), ReplyKind::Simple);
  EXPECT_EQ(classify_reply(cb(Be().u32(0x668e33ef).b)), ReplyKind::Structured);
  EXPECT_EQ(classify_reply(cb(Be().u32(0x6e8a278c).u32(0).b)), ReplyKind::Extended);
  EXPECT_EQ(classify_reply(cb(Be().u32(0x25609513).b)), ReplyKind::Unknown);
  EXPECT_EQ(classify_reply(cb(Be().u16(0x6744).u8(0x66).b)), ReplyKind::Unknown);
  EXPECT_EQ(reply_header_size(ReplyKind::Simple), 16u);
  EXPECT_EQ(reply_header_size(ReplyKind::Structured), 20u);
  EXPECT_EQ(reply_header_size(ReplyKind::Extended), 32u);
  EXPECT_EQ(reply_header_size(ReplyKind::Unknown), 0u);
}

TEST(Reply, SimpleLayout) {
  Bytes wire = Be().u32(0x67446698).u32(kNbdEnospc).u64(0xfeedfacecafebeef).b;
  auto r = decode_simple_reply(cb(wire));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error, kNbdEnospc);
  EXPECT_EQ(r->cookie, 0xfeedfacecafebeefu);
  Bytes buf(16);
  ASSERT_EQ(encode_simple_reply(buf, *r), 16u);
  EXPECT_EQ(buf, wire);
  for (size_t n = 0; n < 16; ++n) EXPECT_FALSE(decode_simple_reply(cb(truncated(wire, n))));
  wire[3] ^= 0x80;
  EXPECT_FALSE(decode_simple_reply(cb(wire)));
}

TEST(Reply, StructuredLayout) {
  Bytes wire = Be()
                   .u32(0x668e33ef)
                   .u16(kReplyFlagDone)
                   .u16(kReplyTypeOffsetData)
                   .u64(42)
                   .u32(4104)
                   .b;
  auto h = decode_structured_chunk_header(cb(wire));
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->done());
  EXPECT_EQ(h->type, kReplyTypeOffsetData);
  EXPECT_EQ(h->cookie, 42u);
  EXPECT_EQ(h->offset, 0u);
  EXPECT_EQ(h->length, 4104u);
  Bytes buf(20);
  ASSERT_EQ(encode_structured_chunk_header(buf, *h), 20u);
  EXPECT_EQ(buf, wire);
  ReplyChunkHeader big = *h;
  big.length = 1ull << 32;
  EXPECT_EQ(encode_structured_chunk_header(buf, big), 0u);
  for (size_t n = 0; n < 20; ++n)
    EXPECT_FALSE(decode_structured_chunk_header(cb(truncated(wire, n))));
  EXPECT_FALSE(decode_extended_reply_header(cb(wire)));
}

TEST(Reply, ExtendedLayout) {
  Bytes wire = Be()
                   .u32(0x6e8a278c)
                   .u16(0)
                   .u16(kReplyTypeBlockStatusExt)
                   .u64(7)
                   .u64(1ull << 40)
                   .u64(24)
                   .b;
  auto h = decode_extended_reply_header(cb(wire));
  ASSERT_TRUE(h);
  EXPECT_FALSE(h->done());
  EXPECT_EQ(h->type, kReplyTypeBlockStatusExt);
  EXPECT_EQ(h->cookie, 7u);
  EXPECT_EQ(h->offset, 1ull << 40);
  EXPECT_EQ(h->length, 24u);
  Bytes buf(32);
  ASSERT_EQ(encode_extended_reply_header(buf, *h), 32u);
  EXPECT_EQ(buf, wire);
  for (size_t n = 0; n < 32; ++n)
    EXPECT_FALSE(decode_extended_reply_header(cb(truncated(wire, n))));
  EXPECT_FALSE(decode_structured_chunk_header(cb(wire)));
}

// ---- chunk payloads ---------------------------------------------------------------------

TEST(Chunk, OffsetData) {
  Bytes prefix = Be().u64(0x10000).b;
  auto d = decode_offset_data_prefix(cb(prefix), 8 + 512);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->offset, 0x10000u);
  EXPECT_EQ(d->data_length, 512u);
  auto empty = decode_offset_data_prefix(cb(prefix), 8);  // the offset alone, as libnbd accepts
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->data_length, 0u);
  EXPECT_FALSE(decode_offset_data_prefix(cb(prefix), 7));
  EXPECT_FALSE(decode_offset_data_prefix(cb(truncated(prefix, 7)), 100));
  Bytes buf(8);
  ASSERT_EQ(encode_offset_data_prefix(buf, 0x10000), 8u);
  EXPECT_EQ(buf, prefix);
}

TEST(Chunk, OffsetHole) {
  Bytes wire = Be().u64(4096).u32(8192).b;
  auto h = decode_offset_hole(cb(wire));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->offset, 4096u);
  EXPECT_EQ(h->length, 8192u);
  Bytes buf(12);
  ASSERT_EQ(encode_offset_hole(buf, *h), 12u);
  EXPECT_EQ(buf, wire);
  EXPECT_FALSE(decode_offset_hole(cb(truncated(wire, 11))));
  Bytes longer = wire;
  longer.push_back(0);
  EXPECT_FALSE(decode_offset_hole(cb(longer)));
}

TEST(Chunk, Error) {
  Bytes wire = Be().u32(kNbdEio).u16(5).str("oops!").b;
  auto e = decode_error_chunk(kReplyTypeError, cb(wire));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error, kNbdEio);
  EXPECT_EQ(e->message, "oops!");
  EXPECT_FALSE(e->offset);
  Bytes buf(error_chunk_size(5, false));
  ASSERT_EQ(encode_error_chunk(buf, *e), 11u);
  EXPECT_EQ(buf, wire);

  EXPECT_FALSE(decode_error_chunk(kReplyTypeError, cb(truncated(wire, 10))));  // message overruns
  EXPECT_FALSE(decode_error_chunk(kReplyTypeError, cb(truncated(wire, 5))));
  Bytes trailing = wire;
  trailing.push_back('x');
  EXPECT_FALSE(decode_error_chunk(kReplyTypeError, cb(trailing)));
  // An unknown error type only needs its message to fit.
  auto unknown = decode_error_chunk(0x8077, cb(trailing));
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->message, "oops!");
  EXPECT_FALSE(decode_error_chunk(kReplyTypeOffsetHole, cb(wire)));  // not an error type

  Bytes empty_msg = Be().u32(kNbdEperm).u16(0).b;
  auto e0 = decode_error_chunk(kReplyTypeError, cb(empty_msg));
  ASSERT_TRUE(e0);
  EXPECT_TRUE(e0->message.empty());
}

TEST(Chunk, ErrorOffset) {
  Bytes wire = Be().u32(kNbdEio).u16(3).str("bad").u64(0x2000).b;
  auto e = decode_error_chunk(kReplyTypeErrorOffset, cb(wire));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->message, "bad");
  ASSERT_TRUE(e->offset);
  EXPECT_EQ(*e->offset, 0x2000u);
  Bytes buf(error_chunk_size(3, true));
  ASSERT_EQ(encode_error_chunk(buf, *e), 17u);
  EXPECT_EQ(buf, wire);
  for (size_t n = 0; n < wire.size(); ++n)
    EXPECT_FALSE(decode_error_chunk(kReplyTypeErrorOffset, cb(truncated(wire, n))));
  // A message length claiming the offset's bytes leaves no room for the offset.
  Bytes overlong = Be().u32(kNbdEio).u16(11).str("bad").u64(0x2000).b;
  EXPECT_FALSE(decode_error_chunk(kReplyTypeErrorOffset, cb(overlong)));
}

TEST(Chunk, BlockStatus) {
  Bytes wire = Be().u32(3).u32(4096).u32(kStateHole | kStateZero).u32(512).u32(0).b;
  auto bs = decode_block_status(cb(wire));
  ASSERT_TRUE(bs);
  EXPECT_EQ(bs->context_id, 3u);
  EXPECT_FALSE(bs->wide);
  ASSERT_EQ(bs->count(), 2u);
  EXPECT_EQ(bs->extent(0).length, 4096u);
  EXPECT_EQ(bs->extent(0).flags, kStateHole | kStateZero);
  EXPECT_EQ(bs->extent(1).length, 512u);
  EXPECT_TRUE(decode_block_status_chunk(kReplyTypeBlockStatus, cb(wire)));
  EXPECT_FALSE(decode_block_status_chunk(kReplyTypeNone, cb(wire)));

  const std::array<BlockStatusExtent, 2> extents = {{{4096, 3}, {512, 0}}};
  Bytes buf(block_status_chunk_size(2, false));
  ASSERT_EQ(encode_block_status_chunk(buf, 3, extents, false), 20u);
  EXPECT_EQ(buf, wire);
  const std::array<BlockStatusExtent, 1> too_big = {{{1ull << 32, 0}}};
  EXPECT_EQ(encode_block_status_chunk(buf, 3, too_big, false), 0u);

  EXPECT_FALSE(decode_block_status(cb(truncated(wire, 4))));   // no descriptor
  EXPECT_FALSE(decode_block_status(cb(truncated(wire, 19))));  // ragged
  EXPECT_FALSE(decode_block_status(cb(truncated(wire, 3))));
}

TEST(Chunk, BlockStatusExt) {
  Bytes wire = Be().u32(9).u32(2).u64(1ull << 35).u64(kStateZero).u64(4096).u64(0).b;
  auto bs = decode_block_status_ext(cb(wire));
  ASSERT_TRUE(bs);
  EXPECT_EQ(bs->context_id, 9u);
  EXPECT_TRUE(bs->wide);
  ASSERT_EQ(bs->count(), 2u);
  EXPECT_EQ(bs->extent(0).length, 1ull << 35);
  EXPECT_EQ(bs->extent(0).flags, kStateZero);
  EXPECT_EQ(bs->extent(1).length, 4096u);

  const std::array<BlockStatusExtent, 2> extents = {{{1ull << 35, kStateZero}, {4096, 0}}};
  Bytes buf(block_status_chunk_size(2, true));
  ASSERT_EQ(encode_block_status_chunk(buf, 9, extents, true), 40u);
  EXPECT_EQ(buf, wire);

  Bytes zero_count = wire;
  store_be32(zero_count.data() + 4, 0);  // not "implied by the length": libnbd 1.22.2 refuses it
  EXPECT_FALSE(decode_block_status_ext(cb(zero_count)));
  Bytes wrong_count = wire;
  store_be32(wrong_count.data() + 4, 3);
  EXPECT_FALSE(decode_block_status_ext(cb(wrong_count)));
  EXPECT_FALSE(decode_block_status_ext(cb(truncated(wire, 8))));
  EXPECT_FALSE(decode_block_status_ext(cb(truncated(wire, 39))));
  EXPECT_FALSE(decode_block_status_ext(cb(truncated(wire, 28))));  // narrow-sized, not wide
}

TEST(Chunk, ErrnoMapping) {
  EXPECT_EQ(errno_of_nbd_error(0), 0);
  EXPECT_EQ(errno_of_nbd_error(kNbdEperm), EPERM);
  EXPECT_EQ(errno_of_nbd_error(kNbdEio), EIO);
  EXPECT_EQ(errno_of_nbd_error(kNbdEnomem), ENOMEM);
  EXPECT_EQ(errno_of_nbd_error(kNbdEinval), EINVAL);
  EXPECT_EQ(errno_of_nbd_error(kNbdEnospc), ENOSPC);
  EXPECT_EQ(errno_of_nbd_error(kNbdEoverflow), EOVERFLOW);
  EXPECT_EQ(errno_of_nbd_error(kNbdEnotsup), ENOTSUP);
  EXPECT_EQ(errno_of_nbd_error(kNbdEshutdown), ESHUTDOWN);
  EXPECT_EQ(errno_of_nbd_error(2), EINVAL);  // ENOENT is not an NBD error value
  EXPECT_EQ(errno_of_nbd_error(0xffffffff), EINVAL);

  for (uint32_t e : {kNbdSuccess, kNbdEperm, kNbdEio, kNbdEnomem, kNbdEinval, kNbdEnospc,
                     kNbdEoverflow, kNbdEnotsup, kNbdEshutdown})
    EXPECT_EQ(nbd_error_of_errno(errno_of_nbd_error(e)), e);
  EXPECT_EQ(nbd_error_of_errno(EDQUOT), kNbdEnospc);
  EXPECT_EQ(nbd_error_of_errno(EFBIG), kNbdEnospc);
  EXPECT_EQ(nbd_error_of_errno(EROFS), kNbdEperm);
  EXPECT_EQ(nbd_error_of_errno(EOPNOTSUPP), kNbdEnotsup);
  EXPECT_EQ(nbd_error_of_errno(ENOENT), kNbdEinval);
}

// ---- handshake --------------------------------------------------------------------------

TEST(Handshake, NewstyleGreeting) {
  Bytes wire = Be().str("NBDMAGIC").str("IHAVEOPT").u16(kFlagFixedNewstyle | kFlagNoZeroes).b;
  EXPECT_EQ(classify_greeting(cb(wire)), GreetingKind::Newstyle);
  EXPECT_EQ(decode_newstyle_greeting(cb(wire)), kFlagFixedNewstyle | kFlagNoZeroes);
  Bytes buf(18);
  ASSERT_EQ(encode_newstyle_greeting(buf, kFlagFixedNewstyle | kFlagNoZeroes), 18u);
  EXPECT_EQ(buf, wire);
  EXPECT_FALSE(decode_newstyle_greeting(cb(truncated(wire, 17))));
  EXPECT_FALSE(classify_greeting(cb(truncated(wire, 15))));
  Bytes bad = wire;
  bad[0] = 'X';
  EXPECT_FALSE(classify_greeting(cb(bad)));
  EXPECT_FALSE(decode_oldstyle_greeting(cb(wire)));
}

TEST(Handshake, OldstyleGreeting) {
  Bytes wire = Be()
                   .str("NBDMAGIC")
                   .u64(0x00420281861253)
                   .u64(1ull << 30)
                   .u16(0)
                   .u16(kFlagHasFlags | kFlagReadOnly)
                   .zeroes(124)
                   .b;
  ASSERT_EQ(wire.size(), kOldstyleGreetingSize);
  EXPECT_EQ(classify_greeting(cb(wire)), GreetingKind::Oldstyle);
  auto g = decode_oldstyle_greeting(cb(wire));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->export_size, 1ull << 30);
  EXPECT_EQ(g->handshake_flags, 0);
  EXPECT_EQ(g->transmission_flags, kFlagHasFlags | kFlagReadOnly);
  Bytes buf(152, 0xee);
  ASSERT_EQ(encode_oldstyle_greeting(buf, *g), 152u);
  EXPECT_EQ(buf, wire);
  EXPECT_FALSE(decode_oldstyle_greeting(cb(truncated(wire, 151))));
  EXPECT_FALSE(decode_newstyle_greeting(cb(wire)));
}

TEST(Handshake, ClientFlags) {
  Bytes buf(4);
  ASSERT_EQ(encode_client_flags(buf, kFlagCFixedNewstyle | kFlagCNoZeroes), 4u);
  EXPECT_EQ(buf, Be().u32(3).b);
  EXPECT_EQ(decode_client_flags(cb(buf)), 3u);
  EXPECT_FALSE(decode_client_flags(cb(truncated(buf, 3))));
}

TEST(Handshake, OptionRequestHeader) {
  Bytes wire = Be().str("IHAVEOPT").u32(kOptExportName).u32(6).str("export").b;
  Bytes buf(22);
  ASSERT_EQ(encode_option_request(buf, kOptExportName, bytes_of("export")), 22u);
  EXPECT_EQ(buf, wire);
  ASSERT_EQ(encode_option_request_header(buf, {kOptExportName, 6}), 16u);
  EXPECT_EQ(buf, wire);
  auto h = decode_option_request_header(cb(wire));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->option, kOptExportName);
  EXPECT_EQ(h->length, 6u);
  EXPECT_FALSE(decode_option_request_header(cb(truncated(wire, 15))));
  EXPECT_EQ(encode_option_request(MutableBytes(buf).first(21), kOptExportName, bytes_of("export")),
            0u);
}

TEST(Handshake, InfoPayload) {
  const std::array<uint16_t, 2> requests = {kInfoBlockSize, kInfoName};
  Bytes wire = Be().u32(4).str("disk").u16(2).u16(kInfoBlockSize).u16(kInfoName).b;
  ASSERT_EQ(info_payload_size(4, 2), wire.size());
  Bytes buf(wire.size());
  ASSERT_EQ(encode_info_payload(buf, "disk", requests), wire.size());
  EXPECT_EQ(buf, wire);
  EXPECT_EQ(encode_info_payload(MutableBytes(buf).first(13), "disk", requests), 0u);

  auto p = decode_info_payload(cb(wire));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->export_name, "disk");
  ASSERT_EQ(p->count(), 2u);
  EXPECT_EQ(p->request(0), kInfoBlockSize);
  EXPECT_EQ(p->request(1), kInfoName);
  for (size_t n = 0; n < wire.size(); ++n)
    EXPECT_FALSE(decode_info_payload(cb(truncated(wire, n))));
  Bytes longer = wire;
  longer.push_back(0);
  EXPECT_FALSE(decode_info_payload(cb(longer)));

  Bytes empty = Be().u32(0).u16(0).b;  // default export, no requests
  Bytes buf2(6);
  ASSERT_EQ(encode_info_payload(buf2, "", {}), 6u);
  EXPECT_EQ(buf2, empty);
}

TEST(Handshake, MetaContextPayload) {
  const std::vector<std::string> queries = {"base:allocation", "qemu:dirty-bitmap:b"};
  Bytes wire = Be()
                   .u32(3)
                   .str("exp")
                   .u32(2)
                   .u32(15)
                   .str("base:allocation")
                   .u32(19)
                   .str("qemu:dirty-bitmap:b")
                   .b;
  ASSERT_EQ(meta_context_payload_size("exp", queries), wire.size());
  Bytes buf(wire.size());
  ASSERT_EQ(encode_meta_context_payload(buf, "exp", queries), wire.size());
  EXPECT_EQ(buf, wire);
  EXPECT_EQ(encode_meta_context_payload(MutableBytes(buf).first(wire.size() - 1), "exp", queries),
            0u);
  const std::array<std::string_view, 0> none{};
  Bytes buf0(11);
  ASSERT_EQ(encode_meta_context_payload(buf0, "exp", none), 11u);
  EXPECT_EQ(buf0, Be().u32(3).str("exp").u32(0).b);

  auto p = decode_meta_context_payload(cb(wire));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->export_name, "exp");
  EXPECT_EQ(p->count, 2u);
  std::vector<std::string> seen;
  p->for_each_query([&](std::string_view q) { seen.emplace_back(q); });
  EXPECT_EQ(seen, queries);
  for (size_t n = 0; n < wire.size(); ++n)
    EXPECT_FALSE(decode_meta_context_payload(cb(truncated(wire, n))));
  Bytes hostile = Be().u32(0).u32(0xffffffff).u32(0).b;  // claims 4G queries
  EXPECT_FALSE(decode_meta_context_payload(cb(hostile)));
  Bytes longer = wire;
  longer.push_back(0);
  EXPECT_FALSE(decode_meta_context_payload(cb(longer)));
}

TEST(Handshake, OptionReplyHeader) {
  Bytes wire = Be().u64(0x3e889045565a9).u32(kOptGo).u32(kRepErrUnknown).u32(9).b;
  auto h = decode_option_reply_header(cb(wire));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->option, kOptGo);
  EXPECT_EQ(h->reply_type, kRepErrUnknown);
  EXPECT_TRUE(h->is_error());
  EXPECT_EQ(h->length, 9u);
  Bytes buf(20);
  ASSERT_EQ(encode_option_reply_header(buf, *h), 20u);
  EXPECT_EQ(buf, wire);
  for (size_t n = 0; n < 20; ++n)
    EXPECT_FALSE(decode_option_reply_header(cb(truncated(wire, n))));
  wire[7] ^= 1;
  EXPECT_FALSE(decode_option_reply_header(cb(wire)));
}

TEST(Handshake, RepServer) {
  Bytes wire = Be().u32(4).str("disk").str("a fine disk").b;
  auto s = decode_rep_server(cb(wire));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "disk");
  EXPECT_EQ(s->description, "a fine disk");
  Bytes buf(rep_server_size(4, 11));
  ASSERT_EQ(encode_rep_server(buf, *s), wire.size());
  EXPECT_EQ(buf, wire);
  Bytes name_only = truncated(wire, 8);
  auto bare = decode_rep_server(cb(name_only));
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->name, "disk");
  EXPECT_TRUE(bare->description.empty());
  EXPECT_FALSE(decode_rep_server(cb(truncated(wire, 7))));
  EXPECT_FALSE(decode_rep_server(cb(truncated(wire, 3))));
}

TEST(Handshake, RepInfo) {
  Bytes exp = Be().u16(kInfoExport).u64(1ull << 32).u16(kFlagHasFlags | kFlagSendFlush).b;
  auto i = decode_rep_info(cb(exp));
  ASSERT_TRUE(i);
  EXPECT_EQ(i->info_type, kInfoExport);
  EXPECT_EQ(i->export_info.size, 1ull << 32);
  EXPECT_EQ(i->export_info.transmission_flags, kFlagHasFlags | kFlagSendFlush);
  Bytes buf(kInfoExportReplySize);
  ASSERT_EQ(encode_info_export(buf, i->export_info), 12u);
  EXPECT_EQ(buf, exp);
  EXPECT_FALSE(decode_rep_info(cb(truncated(exp, 11))));
  Bytes exp_long = exp;
  exp_long.push_back(0);
  EXPECT_FALSE(decode_rep_info(cb(exp_long)));

  Bytes bs = Be().u16(kInfoBlockSize).u32(512).u32(4096).u32(1u << 25).b;
  auto b = decode_rep_info(cb(bs));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->block_size.minimum, 512u);
  EXPECT_EQ(b->block_size.preferred, 4096u);
  EXPECT_EQ(b->block_size.maximum, 1u << 25);
  Bytes buf2(kInfoBlockSizeReplySize);
  ASSERT_EQ(encode_info_block_size(buf2, b->block_size), 14u);
  EXPECT_EQ(buf2, bs);
  EXPECT_FALSE(decode_rep_info(cb(truncated(bs, 13))));

  Bytes name = Be().u16(kInfoName).str("canonical").b;
  auto n = decode_rep_info(cb(name));
  ASSERT_TRUE(n);
  EXPECT_EQ(n->text, "canonical");
  Bytes buf3(11);
  ASSERT_EQ(encode_info_text(buf3, kInfoName, "canonical"), 11u);
  EXPECT_EQ(buf3, name);
  Bytes empty_desc = Be().u16(kInfoDescription).b;
  auto desc = decode_rep_info(cb(empty_desc));
  ASSERT_TRUE(desc);
  EXPECT_TRUE(desc->text.empty());

  Bytes future = Be().u16(77).u32(1).b;
  auto unknown = decode_rep_info(cb(future));
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->info_type, 77);
  EXPECT_EQ(unknown->body.size(), 4u);
  EXPECT_FALSE(decode_rep_info(cb(Be().u8(0).b)));
}

TEST(Handshake, RepMetaContext) {
  Bytes wire = Be().u32(0x11).str("base:allocation").b;
  auto m = decode_rep_meta_context(cb(wire));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->context_id, 0x11u);
  EXPECT_EQ(m->name, "base:allocation");
  Bytes buf(wire.size());
  ASSERT_EQ(encode_rep_meta_context(buf, *m), wire.size());
  EXPECT_EQ(buf, wire);
  EXPECT_FALSE(decode_rep_meta_context(cb(truncated(wire, 3))));
}

TEST(Handshake, ExportNameReply) {
  ExportInfo info{0x1234567890, kFlagHasFlags | kFlagSendTrim};
  Bytes full = Be().u64(0x1234567890).u16(kFlagHasFlags | kFlagSendTrim).zeroes(124).b;
  Bytes buf(134, 0xee);
  ASSERT_EQ(encode_export_name_reply(buf, info, false), 134u);
  EXPECT_EQ(buf, full);
  Bytes short_buf(10);
  ASSERT_EQ(encode_export_name_reply(short_buf, info, true), 10u);
  EXPECT_EQ(short_buf, truncated(full, 10));
  EXPECT_EQ(encode_export_name_reply(short_buf, info, false), 0u);
  auto d = decode_export_name_reply(cb(short_buf));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->size, 0x1234567890u);
  EXPECT_EQ(d->transmission_flags, kFlagHasFlags | kFlagSendTrim);
  EXPECT_FALSE(decode_export_name_reply(cb(truncated(full, 9))));
}

// ---- fuzzing ----------------------------------------------------------------------------

// Runs every decoder over `in` and checks that whatever comes back points into `in`.
// Returns how many payload decoders accepted it, so the fuzz tests can show they reach
// the accepting paths rather than bouncing off the first length check.
int decode_everything(const Bytes &in) {
  ConstBytes s = cb(in);
  int accepted = 0;
  (void)classify_reply(s);
  (void)decode_request(s);
  (void)decode_extended_request(s);
  if (auto p = decode_block_status_payload(s)) {
    ++accepted;
    EXPECT_TRUE(within(p->ids, s));
    for (size_t i = 0; i < p->count(); ++i) (void)p->id(i);
  }
  (void)decode_simple_reply(s);
  (void)decode_structured_chunk_header(s);
  (void)decode_extended_reply_header(s);
  (void)decode_offset_data_prefix(s, in.size());
  (void)decode_offset_hole(s);
  for (uint16_t type : {kReplyTypeError, kReplyTypeErrorOffset, uint16_t(0x8fff)}) {
    if (auto e = decode_error_chunk(type, s)) {
      ++accepted;
      EXPECT_TRUE(within(e->message, s));
    }
  }
  for (uint16_t type : {kReplyTypeBlockStatus, kReplyTypeBlockStatusExt}) {
    if (auto bs = decode_block_status_chunk(type, s)) {
      ++accepted;
      EXPECT_TRUE(within(bs->descriptors, s));
      EXPECT_GE(bs->count(), 1u);
      for (size_t i = 0; i < bs->count(); ++i) (void)bs->extent(i);
    }
  }
  (void)classify_greeting(s);
  (void)decode_newstyle_greeting(s);
  (void)decode_oldstyle_greeting(s);
  (void)decode_client_flags(s);
  (void)decode_option_request_header(s);
  if (auto p = decode_info_payload(s)) {
    ++accepted;
    EXPECT_TRUE(within(p->export_name, s));
    EXPECT_TRUE(within(p->requests, s));
    for (size_t i = 0; i < p->count(); ++i) (void)p->request(i);
  }
  if (auto p = decode_meta_context_payload(s)) {
    ++accepted;
    EXPECT_TRUE(within(p->export_name, s));
    p->for_each_query([&](std::string_view q) { EXPECT_TRUE(within(q, s)); });
  }
  (void)decode_option_reply_header(s);
  if (auto r = decode_rep_server(s)) {
    EXPECT_TRUE(within(r->name, s));
    EXPECT_TRUE(within(r->description, s));
  }
  if (auto r = decode_rep_info(s)) {
    ++accepted;
    EXPECT_TRUE(within(r->body, s));
    EXPECT_TRUE(within(r->text, s));
  }
  if (auto r = decode_rep_meta_context(s)) {
    EXPECT_TRUE(within(r->name, s));
  }
  (void)decode_export_name_reply(s);
  return accepted;
}

TEST(Fuzz, RandomSpans) {
  std::mt19937_64 rng(0x6e6264);  // fixed seed: failures must reproduce
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    Bytes in(rng() % 72);
    // Small values in length fields reach the deeper paths more often than uniform bytes.
    bool small = rng() % 2;
    for (auto &b : in) b = uint8_t(small ? rng() % 4 : rng());
    accepted += decode_everything(in);
  }
  EXPECT_GT(accepted, 1000);
}

TEST(Fuzz, MutatedValidMessages) {
  std::vector<Bytes> seeds = {
      Be().u32(4).str("disk").u16(1).u16(kInfoBlockSize).b,
      Be().u32(3).str("exp").u32(2).u32(15).str("base:allocation").u32(1).str("x").b,
      Be().u32(kNbdEio).u16(3).str("bad").u64(0x2000).b,
      Be().u32(9).u32(1).u64(4096).u64(1).b,
      Be().u32(3).u32(4096).u32(1).b,
      Be().u16(kInfoExport).u64(1).u16(1).b,
      Be().u64(1).u32(7).u32(8).b,
      Be().u32(4).str("disk").str("desc").b,
  };
  std::mt19937_64 rng(42);
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    Bytes in = seeds[rng() % seeds.size()];
    for (int flips = int(rng() % 3); flips >= 0 && !in.empty(); --flips)
      in[rng() % in.size()] = uint8_t(rng() % 3 == 0 ? rng() : rng() % 24);
    if (rng() % 2) in.resize(rng() % (in.size() + 4));
    Bytes exact(in.begin(), in.end());  // exact-size heap block for ASan
    accepted += decode_everything(exact);
  }
  EXPECT_GT(accepted, 1000);
}

}  // namespace
}  // namespace duplexnbd::wire
