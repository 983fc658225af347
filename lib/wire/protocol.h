// SPDX-License-Identifier: LGPL-2.1-or-later
// NBD protocol constants: magics, option/reply/command codes, flags and fixed header sizes.
#pragma once

#include <cstddef>
#include <cstdint>

// Names follow the spec with NBD_ dropped and a k prefix: the kernel's <linux/nbd.h>
// defines NBD_* macros, which would silently rewrite identifiers spelled the same way.
namespace duplexnbd::wire {

// ---- Magic numbers ----------------------------------------------------------------------

inline constexpr uint64_t kInitPasswd = 0x4e42444d41474943;     // "NBDMAGIC"
inline constexpr uint64_t kIHaveOpt = 0x49484156454f5054;       // "IHAVEOPT"
inline constexpr uint64_t kOldstyleMagic = 0x0000420281861253;  // cliserv_magic
// Every option request starts with IHAVEOPT again.
inline constexpr uint64_t kOptionRequestMagic = kIHaveOpt;
inline constexpr uint64_t kOptionReplyMagic = 0x0003e889045565a9;

inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kExtendedRequestMagic = 0x21e41c71;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
inline constexpr uint32_t kExtendedReplyMagic = 0x6e8a278c;

// ---- Handshake flags (u16, server) and client flags (u32) --------------------------------

inline constexpr uint16_t kFlagFixedNewstyle = 1u << 0;
inline constexpr uint16_t kFlagNoZeroes = 1u << 1;

inline constexpr uint32_t kFlagCFixedNewstyle = 1u << 0;
inline constexpr uint32_t kFlagCNoZeroes = 1u << 1;

// ---- Option types -----------------------------------------------------------------------

inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptPeekExport = 4;  // withdrawn; kept so debug output can name it
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 9;
inline constexpr uint32_t kOptSetMetaContext = 10;
inline constexpr uint32_t kOptExtendedHeaders = 11;

// ---- Option reply types -----------------------------------------------------------------

inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepMetaContext = 4;

inline constexpr uint32_t kRepErrBit = 1u << 31;
inline constexpr uint32_t kRepErrUnsup = kRepErrBit + 1;
inline constexpr uint32_t kRepErrPolicy = kRepErrBit + 2;
inline constexpr uint32_t kRepErrInvalid = kRepErrBit + 3;
inline constexpr uint32_t kRepErrPlatform = kRepErrBit + 4;
inline constexpr uint32_t kRepErrTlsReqd = kRepErrBit + 5;
inline constexpr uint32_t kRepErrUnknown = kRepErrBit + 6;
inline constexpr uint32_t kRepErrShutdown = kRepErrBit + 7;
inline constexpr uint32_t kRepErrBlockSizeReqd = kRepErrBit + 8;
inline constexpr uint32_t kRepErrTooBig = kRepErrBit + 9;
inline constexpr uint32_t kRepErrExtHeaderReqd = kRepErrBit + 10;

constexpr bool is_rep_error(uint32_t reply_type) { return (reply_type & kRepErrBit) != 0; }

// ---- NBD_INFO_* (inside NBD_REP_INFO, and requested by NBD_OPT_INFO/GO) -----------------

inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// ---- Transmission flags (u16, per export) -----------------------------------------------

inline constexpr uint16_t kFlagHasFlags = 1u << 0;
inline constexpr uint16_t kFlagReadOnly = 1u << 1;
inline constexpr uint16_t kFlagSendFlush = 1u << 2;
inline constexpr uint16_t kFlagSendFua = 1u << 3;
inline constexpr uint16_t kFlagRotational = 1u << 4;
inline constexpr uint16_t kFlagSendTrim = 1u << 5;
inline constexpr uint16_t kFlagSendWriteZeroes = 1u << 6;
inline constexpr uint16_t kFlagSendDf = 1u << 7;
inline constexpr uint16_t kFlagCanMultiConn = 1u << 8;
inline constexpr uint16_t kFlagSendResize = 1u << 9;
inline constexpr uint16_t kFlagSendCache = 1u << 10;
inline constexpr uint16_t kFlagSendFastZero = 1u << 11;
inline constexpr uint16_t kFlagBlockStatPayload = 1u << 12;

// ---- Command types (u16) ----------------------------------------------------------------

inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;
inline constexpr uint16_t kCmdResize = 8;

// ---- Command flags (u16) ----------------------------------------------------------------

inline constexpr uint16_t kCmdFlagFua = 1u << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1u << 1;
inline constexpr uint16_t kCmdFlagDf = 1u << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1u << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1u << 4;
// Extended headers only: length counts payload bytes following the header.
inline constexpr uint16_t kCmdFlagPayloadLen = 1u << 5;

// ---- Structured/extended reply flags and chunk types (u16) ------------------------------

inline constexpr uint16_t kReplyFlagDone = 1u << 0;

inline constexpr uint16_t kReplyTypeErrorBit = 1u << 15;
inline constexpr uint16_t kReplyTypeNone = 0;
inline constexpr uint16_t kReplyTypeOffsetData = 1;
inline constexpr uint16_t kReplyTypeOffsetHole = 2;
inline constexpr uint16_t kReplyTypeBlockStatus = 5;
inline constexpr uint16_t kReplyTypeBlockStatusExt = 6;
inline constexpr uint16_t kReplyTypeError = kReplyTypeErrorBit + 1;
inline constexpr uint16_t kReplyTypeErrorOffset = kReplyTypeErrorBit + 2;

constexpr bool is_error_chunk_type(uint16_t type) { return (type & kReplyTypeErrorBit) != 0; }

// ---- base:allocation status flags -------------------------------------------------------

inline constexpr uint32_t kStateHole = 1u << 0;
inline constexpr uint32_t kStateZero = 1u << 1;

// ---- Error values carried in replies (u32) ----------------------------------------------

inline constexpr uint32_t kNbdSuccess = 0;
inline constexpr uint32_t kNbdEperm = 1;
inline constexpr uint32_t kNbdEio = 5;
inline constexpr uint32_t kNbdEnomem = 12;
inline constexpr uint32_t kNbdEinval = 22;
inline constexpr uint32_t kNbdEnospc = 28;
inline constexpr uint32_t kNbdEoverflow = 75;
inline constexpr uint32_t kNbdEnotsup = 95;
inline constexpr uint32_t kNbdEshutdown = 108;

// ---- Limits -----------------------------------------------------------------------------

// Export names, context names, queries and error messages.
inline constexpr size_t kMaxStringSize = 4096;

// ---- Fixed sizes on the wire (bytes) ----------------------------------------------------

inline constexpr size_t kGreetingPrefixSize = 16;      // NBDMAGIC + second magic
inline constexpr size_t kNewstyleGreetingSize = 18;    // + u16 handshake flags
inline constexpr size_t kHandshakeReservedZeroes = 124;
inline constexpr size_t kOldstyleGreetingSize = 16 + 8 + 4 + kHandshakeReservedZeroes;  // 152
inline constexpr size_t kClientFlagsSize = 4;
inline constexpr size_t kOptionRequestHeaderSize = 16;
inline constexpr size_t kOptionReplyHeaderSize = 20;
inline constexpr size_t kExportNameReplyShortSize = 10;  // with NO_ZEROES negotiated
inline constexpr size_t kExportNameReplySize = kExportNameReplyShortSize + kHandshakeReservedZeroes;

inline constexpr size_t kRequestHeaderSize = 28;
inline constexpr size_t kExtendedRequestHeaderSize = 32;
inline constexpr size_t kReplyMagicSize = 4;
inline constexpr size_t kSimpleReplySize = 16;
inline constexpr size_t kStructuredReplyHeaderSize = 20;
inline constexpr size_t kExtendedReplyHeaderSize = 32;

// Fixed parts of chunk payloads.
inline constexpr size_t kOffsetDataPrefixSize = 8;
inline constexpr size_t kOffsetHolePayloadSize = 12;
inline constexpr size_t kErrorChunkFixedSize = 6;         // error u32 + message length u16
inline constexpr size_t kErrorOffsetChunkFixedSize = 14;  // + offset u64 after the message
inline constexpr size_t kBlockStatusHeaderSize = 4;       // context id
inline constexpr size_t kBlockStatusDescriptorSize = 8;
inline constexpr size_t kBlockStatusExtHeaderSize = 8;    // context id + descriptor count
inline constexpr size_t kBlockStatusExtDescriptorSize = 16;

// ---- Names for debug output and error messages ------------------------------------------
// Spelled as in the spec (and as libnbd prints them); nullptr when unknown.

const char *option_name(uint32_t option);
const char *option_reply_name(uint32_t reply_type);
const char *info_name(uint16_t info);
const char *command_name(uint16_t type);
const char *chunk_type_name(uint16_t type);
const char *nbd_error_name(uint32_t error);

}  // namespace duplexnbd::wire
