// SPDX-License-Identifier: LGPL-2.1-or-later
// Mapping of NBD_REP_ERR_* replies to errno and messages, as libnbd reports them.
#include "handshake/errors.h"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "wire/protocol.h"

namespace duplexnbd::handshake {

int option_errno(uint32_t reply_type) {
  switch (reply_type) {
    case wire::kRepErrInvalid:
    case wire::kRepErrBlockSizeReqd:
    case wire::kRepErrTooBig: return EINVAL;
    case wire::kRepErrUnknown: return ENOENT;
    case wire::kRepErrShutdown: return ESHUTDOWN;
    default:
      // UNSUP, POLICY, PLATFORM, TLS_REQD and anything newer than we know.
      return ENOTSUP;
  }
}

Error go_failure(uint32_t reply_type, std::string_view export_name,
                 std::string_view server_message) {
  Error e;
  switch (reply_type) {
    case wire::kRepErrUnsup:
      e = Error{ENOTSUP, "the operation is not supported by the server"};
      break;
    case wire::kRepErrPolicy:
      e = Error{0, "server policy prevents the operation"};
      break;
    case wire::kRepErrPlatform:
      e = Error{0, "the operation is not supported by the server platform"};
      break;
    case wire::kRepErrInvalid:
      e = Error{EINVAL, "the server rejected this operation as invalid"};
      break;
    case wire::kRepErrTooBig:
      e = Error{EINVAL, "the operation is too large to process"};
      break;
    case wire::kRepErrTlsReqd:
      e = Error{ENOTSUP, "the server requires TLS encryption first"};
      break;
    case wire::kRepErrUnknown:
      e = Error{ENOENT, "the server has no export named '" + std::string(export_name) + "'"};
      break;
    case wire::kRepErrShutdown:
      e = Error{ESHUTDOWN, "the server is shutting down"};
      break;
    case wire::kRepErrBlockSizeReqd:
      e = Error{EINVAL, "the server requires specific block sizes"};
      break;
    default: {
      char buf[64];
      snprintf(buf, sizeof buf, "handshake: unknown reply from the server: 0x%x", reply_type);
      e = Error{0, buf};
    }
  }
  if (!server_message.empty()) e.message += ": " + printable(server_message);
  return e;
}

Error protocol_error(const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return Error{0, std::string("handshake: ") + buf};
}

std::string printable(std::string_view text) {
  std::string out;
  for (char c : text) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      char esc[5];
      snprintf(esc, sizeof esc, "\\x%02x", u);
      out += esc;
    }
  }
  return out;
}

}  // namespace duplexnbd::handshake
