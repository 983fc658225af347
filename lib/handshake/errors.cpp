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

Error go_failure(uint32_t reply_type, std::string_view export_name) {
  switch (reply_type) {
    case wire::kRepErrPolicy:
    case wire::kRepErrPlatform:
      // libnbd reports this one without an errno; keep nbd_get_errno() identical.
      return Error{0, "handshake: server policy prevents NBD_OPT_GO"};
    case wire::kRepErrInvalid:
    case wire::kRepErrTooBig:
      return Error{EINVAL, "handshake: server rejected NBD_OPT_GO as invalid"};
    case wire::kRepErrTlsReqd:
      return Error{ENOTSUP, "handshake: server requires TLS encryption first"};
    case wire::kRepErrUnknown:
      return Error{ENOENT,
                   "handshake: server has no export named '" + std::string(export_name) + "'"};
    case wire::kRepErrShutdown: return Error{ESHUTDOWN, "handshake: server is shutting down"};
    case wire::kRepErrBlockSizeReqd:
      return Error{EINVAL, "handshake: server requires specific block sizes"};
    default: {
      char buf[64];
      snprintf(buf, sizeof buf, "handshake: unknown reply from NBD_OPT_GO: 0x%x", reply_type);
      return Error{0, buf};
    }
  }
}

Error protocol_error(const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return Error{EPROTO, std::string("handshake: ") + buf};
}

std::string printable(std::string_view text) {
  std::string out;
  for (char c : text) {
    unsigned char u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  return out;
}

}  // namespace duplexnbd::handshake
