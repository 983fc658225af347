// SPDX-License-Identifier: LGPL-2.1-or-later
// One option request and its replies: framing and bounds checks shared by every option.
#include <cerrno>

#include "handle/debug.h"
#include "handshake/errors.h"
#include "handshake/handshake.h"
#include "handshake/limits.h"
#include "wire/protocol.h"

namespace duplexnbd::handshake {

std::vector<uint8_t> Handshake::option_request(uint32_t option, wire::ConstBytes payload) {
  std::vector<uint8_t> bytes(wire::kOptionRequestHeaderSize + payload.size());
  // Cannot fail: the buffer is sized for it, and our payloads are far below 4 GiB.
  (void)wire::encode_option_request(bytes, option, payload);
  ++chunks_sent_;
  const char *name = wire::option_name(option);
  debug(h_, "sending option %s", name ? name : "(unknown)");
  return bytes;
}

// Reads one reply to `option`.  Every length is checked before anything is allocated,
// and the payload is read exactly, so a lying server cannot make us consume its next
// reply (or a TLS handshake) as part of this one.
Task<Result<Handshake::Reply>> Handshake::recv_reply(uint32_t option) {
  co_await recv(wire::kOptionReplyHeaderSize);
  std::optional<wire::OptionReplyHeader> hdr = wire::decode_option_reply_header(recv_buf_);
  if (!hdr || hdr->option != option)
    co_return protocol_error("invalid option reply magic or option");
  if (hdr->length > kMaxOptionReplyPayload ||
      (hdr->reply_type == wire::kRepAck && hdr->length != 0))
    co_return protocol_error("invalid option reply length");
  Reply r;
  r.header = *hdr;
  if (hdr->length != 0) {
    co_await recv(hdr->length);
    r.payload = std::move(recv_buf_);
    recv_buf_ = {};
  }
  ++chunks_received_;
  server_message_.clear();
  if (r.header.is_error() && !r.payload.empty()) {
    server_message_.assign(reinterpret_cast<const char *>(r.payload.data()), r.payload.size());
    debug(h_, "handshake: server error message: %s", printable(server_message_).c_str());
  }
  co_return r;
}

// Options answered by a bare ACK or an error (STRUCTURED_REPLY, EXTENDED_HEADERS,
// STARTTLS).
Task<Result<uint32_t>> Handshake::simple_option(uint32_t option) {
  co_await send(option_request(option, {}));
  Task<Result<Reply>> t = recv_reply(option);
  Result<Reply> r = co_await t;
  if (!r) co_return r.take_error();
  const uint32_t type = r->header.reply_type;
  if (type == wire::kRepAck || r->header.is_error()) co_return type;
  co_return protocol_error("unexpected option reply type %u", type);
}

Task<Result<uint32_t>> Handshake::starttls() {
  Task<Result<uint32_t>> t = simple_option(wire::kOptStartTls);
  Result<uint32_t> rt = co_await t;
  if (!rt || *rt != wire::kRepAck) co_return rt;
  Status s = cfg_.upgrade_to_tls();
  if (!s) co_return s.take_error();
  transport_replaced_ = true;
  while (cfg_.tls_handshake_step) {
    Result<Want> w = cfg_.tls_handshake_step();
    if (!w) co_return w.take_error();
    if (*w == Want::None) break;
    co_await ExternalAwaiter{this, *w};
  }
  debug(h_, "connection is using TLS");
  // Nothing agreed in plaintext may survive into the encrypted session (a man in the
  // middle could have forged it: CVE-2021-3716); the options are negotiated afresh.
  out_.tls = true;
  out_.structured_replies = false;
  out_.extended_headers = false;
  out_.meta_valid = false;
  out_.meta_contexts.clear();
  out_.info = ExportInfo{};
  co_return rt;
}

// NBD_OPT_ABORT.  The reply is not awaited: the spec lets the client close straight
// away, and a server that never answers must not keep us hanging.
Task<Status> Handshake::abort() {
  co_await send(option_request(wire::kOptAbort, {}), true);
  co_return Status{};
}

}  // namespace duplexnbd::handshake
