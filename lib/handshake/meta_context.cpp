// SPDX-License-Identifier: LGPL-2.1-or-later
// NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
#include <string>

#include "handle/debug.h"
#include "handshake/errors.h"
#include "handshake/handshake.h"
#include "handshake/limits.h"
#include "wire/protocol.h"

namespace duplexnbd::handshake {

// LIST only reports names (ids are meaningless there).  SET replaces the negotiated
// contexts: they are void from the moment it is sent, and valid again only once the
// server ACKs; a refusal leaves none (libnbd's semantics for can_meta_context).
Task<Result<uint32_t>> Handshake::meta_context(uint32_t option, std::vector<std::string> queries,
                                               std::shared_ptr<ContextCallback> cb,
                                               size_t *delivered) {
  const bool set = option == wire::kOptSetMetaContext;
  std::vector<uint8_t> payload(wire::meta_context_payload_size(cfg_.export_name, queries));
  // Names are capped at 4096 bytes by the setters, so this always fits its field.
  if (wire::encode_meta_context_payload(payload, cfg_.export_name, queries) == 0)
    co_return Error{EINVAL, "meta context request cannot be encoded"};
  if (set) {
    out_.meta_valid = false;
    out_.meta_contexts.clear();
  }
  co_await send(option_request(option, payload));
  std::vector<MetaContext> found;
  for (;;) {
    Task<Result<Reply>> t = recv_reply(option);
    Result<Reply> r = co_await t;
    if (!r) co_return r.take_error();
    const uint32_t type = r->header.reply_type;
    if (type == wire::kRepAck) {
      if (set) {
        out_.meta_contexts = std::move(found);
        out_.meta_valid = true;
      }
      co_return type;
    }
    if (r->header.is_error()) co_return type;
    if (type != wire::kRepMetaContext)
      co_return protocol_error("unexpected option reply type %u", type);
    std::optional<wire::MetaContextReply> m = wire::decode_rep_meta_context(r->payload);
    if (!m) co_return protocol_error("invalid NBD_REP_META_CONTEXT reply length");
    if (m->name.size() > kMaxString)
      co_return protocol_error("meta context name in NBD_REP_META_CONTEXT reply is too long");
    ++last_.count;
    if (delivered) ++*delivered;
    if (set) {
      if (found.size() >= kMaxMetaContexts) co_return protocol_error("too many meta contexts");
      debug(h_, "negotiated %.*s with context ID %u", int(m->name.size()), m->name.data(),
            m->context_id);
      found.push_back(MetaContext{std::string(m->name), m->context_id});
    }
    if (cb && cb->has_callback()) {
      deferred_.push_back([cb, name = std::string(m->name)] { (*cb)(name.c_str()); });
    }
  }
}

// A refusal is not fatal: GO / INFO go ahead.  When the server sent no context before
// refusing, the answer is final and empty (can_meta_context says false rather than
// failing), as libnbd treats it; after partial answers nothing is known.
Task<Status> Handshake::automatic_set_meta() {
  size_t delivered = 0;
  Task<Result<uint32_t>> m =
      meta_context(wire::kOptSetMetaContext, cfg_.meta_contexts, nullptr, &delivered);
  Result<uint32_t> mr = co_await m;
  if (!mr) co_return mr.take_error();
  if (*mr != wire::kRepAck) {
    debug(h_, "server refused to set meta contexts");
    out_.meta_valid = delivered == 0;
  }
  co_return Status{};
}

}  // namespace duplexnbd::handshake
