// SPDX-License-Identifier: LGPL-2.1-or-later
// NBD_OPT_LIST: the export list, delivered to the caller's callback one entry at a time.
#include <string>

#include "handshake/errors.h"
#include "handshake/handshake.h"
#include "handshake/limits.h"
#include "wire/protocol.h"

namespace duplexnbd::handshake {

Task<Result<uint32_t>> Handshake::list_exports(std::shared_ptr<ListCallback> cb) {
  co_await send(option_request(wire::kOptList, {}));
  for (;;) {
    Task<Result<Reply>> t = recv_reply(wire::kOptList);
    Result<Reply> r = co_await t;
    if (!r) co_return r.take_error();
    const uint32_t type = r->header.reply_type;
    if (type == wire::kRepAck || r->header.is_error()) co_return type;
    if (type != wire::kRepServer) co_return protocol_error("unexpected option reply type %u", type);
    std::optional<wire::ServerReply> s = wire::decode_rep_server(r->payload);
    if (!s) co_return protocol_error("invalid export length in NBD_REP_SERVER reply");
    if (s->name.size() > kMaxString || s->description.size() > kMaxString)
      co_return protocol_error("export name or description in NBD_REP_SERVER reply is too long");
    ++last_.count;
    if (cb && cb->has_callback()) {
      deferred_.push_back([cb, name = std::string(s->name), desc = std::string(s->description)] {
        (*cb)(name.c_str(), desc.c_str());
      });
    }
  }
}

}  // namespace duplexnbd::handshake
