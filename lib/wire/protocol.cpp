// SPDX-License-Identifier: LGPL-2.1-or-later
// Spec names of protocol codes, for debug output and error messages.
#include "wire/protocol.h"

namespace duplexnbd::wire {

const char *option_name(uint32_t option) {
  switch (option) {
    case kOptExportName: return "NBD_OPT_EXPORT_NAME";
    case kOptAbort: return "NBD_OPT_ABORT";
    case kOptList: return "NBD_OPT_LIST";
    case kOptPeekExport: return "NBD_OPT_PEEK_EXPORT";
    case kOptStartTls: return "NBD_OPT_STARTTLS";
    case kOptInfo: return "NBD_OPT_INFO";
    case kOptGo: return "NBD_OPT_GO";
    case kOptStructuredReply: return "NBD_OPT_STRUCTURED_REPLY";
    case kOptListMetaContext: return "NBD_OPT_LIST_META_CONTEXT";
    case kOptSetMetaContext: return "NBD_OPT_SET_META_CONTEXT";
    case kOptExtendedHeaders: return "NBD_OPT_EXTENDED_HEADERS";
    default: return nullptr;
  }
}

const char *option_reply_name(uint32_t reply_type) {
  switch (reply_type) {
    case kRepAck: return "NBD_REP_ACK";
    case kRepServer: return "NBD_REP_SERVER";
    case kRepInfo: return "NBD_REP_INFO";
    case kRepMetaContext: return "NBD_REP_META_CONTEXT";
    case kRepErrUnsup: return "NBD_REP_ERR_UNSUP";
    case kRepErrPolicy: return "NBD_REP_ERR_POLICY";
    case kRepErrInvalid: return "NBD_REP_ERR_INVALID";
    case kRepErrPlatform: return "NBD_REP_ERR_PLATFORM";
    case kRepErrTlsReqd: return "NBD_REP_ERR_TLS_REQD";
    case kRepErrUnknown: return "NBD_REP_ERR_UNKNOWN";
    case kRepErrShutdown: return "NBD_REP_ERR_SHUTDOWN";
    case kRepErrBlockSizeReqd: return "NBD_REP_ERR_BLOCK_SIZE_REQD";
    case kRepErrTooBig: return "NBD_REP_ERR_TOO_BIG";
    case kRepErrExtHeaderReqd: return "NBD_REP_ERR_EXT_HEADER_REQD";
    default: return nullptr;
  }
}

const char *info_name(uint16_t info) {
  switch (info) {
    case kInfoExport: return "NBD_INFO_EXPORT";
    case kInfoName: return "NBD_INFO_NAME";
    case kInfoDescription: return "NBD_INFO_DESCRIPTION";
    case kInfoBlockSize: return "NBD_INFO_BLOCK_SIZE";
    default: return nullptr;
  }
}

const char *command_name(uint16_t type) {
  switch (type) {
    case kCmdRead: return "NBD_CMD_READ";
    case kCmdWrite: return "NBD_CMD_WRITE";
    case kCmdDisc: return "NBD_CMD_DISC";
    case kCmdFlush: return "NBD_CMD_FLUSH";
    case kCmdTrim: return "NBD_CMD_TRIM";
    case kCmdCache: return "NBD_CMD_CACHE";
    case kCmdWriteZeroes: return "NBD_CMD_WRITE_ZEROES";
    case kCmdBlockStatus: return "NBD_CMD_BLOCK_STATUS";
    case kCmdResize: return "NBD_CMD_RESIZE";
    default: return nullptr;
  }
}

const char *chunk_type_name(uint16_t type) {
  switch (type) {
    case kReplyTypeNone: return "NBD_REPLY_TYPE_NONE";
    case kReplyTypeOffsetData: return "NBD_REPLY_TYPE_OFFSET_DATA";
    case kReplyTypeOffsetHole: return "NBD_REPLY_TYPE_OFFSET_HOLE";
    case kReplyTypeBlockStatus: return "NBD_REPLY_TYPE_BLOCK_STATUS";
    case kReplyTypeBlockStatusExt: return "NBD_REPLY_TYPE_BLOCK_STATUS_EXT";
    case kReplyTypeError: return "NBD_REPLY_TYPE_ERROR";
    case kReplyTypeErrorOffset: return "NBD_REPLY_TYPE_ERROR_OFFSET";
    default: return nullptr;
  }
}

const char *nbd_error_name(uint32_t error) {
  switch (error) {
    case kNbdSuccess: return "NBD_SUCCESS";
    case kNbdEperm: return "NBD_EPERM";
    case kNbdEio: return "NBD_EIO";
    case kNbdEnomem: return "NBD_ENOMEM";
    case kNbdEinval: return "NBD_EINVAL";
    case kNbdEnospc: return "NBD_ENOSPC";
    case kNbdEoverflow: return "NBD_EOVERFLOW";
    case kNbdEnotsup: return "NBD_ENOTSUP";
    case kNbdEshutdown: return "NBD_ESHUTDOWN";
    default: return nullptr;
  }
}

}  // namespace duplexnbd::wire
