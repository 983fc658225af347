// SPDX-License-Identifier: LGPL-2.1-or-later
// The overall handshake: greeting, client flags, automatic options, then GO or the opt-mode loop.
#include <cerrno>
#include <cstring>

#include "handle/debug.h"
#include "handshake/errors.h"
#include "handshake/handshake.h"
#include "wire/protocol.h"

namespace duplexnbd::handshake {

Task<Status> Handshake::run() {
  co_await recv(wire::kGreetingPrefixSize);
  ++chunks_received_;
  std::optional<wire::GreetingKind> kind = wire::classify_greeting(recv_buf_);
  if (!kind)
    co_return protocol_error("server is not either an oldstyle or fixed newstyle NBD server");

  if (*kind == wire::GreetingKind::Oldstyle) {
    // The decoder wants the whole 152 bytes, prefix included.
    std::vector<uint8_t> greeting(recv_buf_.begin(), recv_buf_.end());
    co_await recv(wire::kOldstyleGreetingSize - wire::kGreetingPrefixSize);
    greeting.insert(greeting.end(), recv_buf_.begin(), recv_buf_.end());
    std::optional<wire::OldstyleGreeting> g = wire::decode_oldstyle_greeting(greeting);
    if (!g) co_return protocol_error("invalid oldstyle greeting");
    out_.protocol = "oldstyle";
    out_.gflags = g->handshake_flags;
    if (cfg_.tls == LIBNBD_TLS_REQUIRE)
      co_return Error{ENOTSUP,
                      "handshake: server is oldstyle, but handle TLS setting is "
                      "'require' (2)"};
    Status s = set_export_info(g->export_size, g->transmission_flags);
    if (!s) co_return s;
    note_export_opened();
    // There is nothing to negotiate with an oldstyle server, so opt mode ends here.
    outcome_ = Phase::Done;
    co_return Status{};
  }

  co_await recv(wire::kNewstyleGreetingSize - wire::kGreetingPrefixSize);
  const uint16_t gflags = wire::load_be16(recv_buf_.data());
  out_.gflags = gflags;
  const uint32_t allowed = cfg_.handshake_flags & LIBNBD_HANDSHAKE_FLAG_MASK;
  uint32_t cflags = 0;
  if ((gflags & wire::kFlagFixedNewstyle) && (allowed & LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE))
    cflags |= wire::kFlagCFixedNewstyle;
  if ((gflags & wire::kFlagNoZeroes) && (allowed & LIBNBD_HANDSHAKE_FLAG_NO_ZEROES))
    cflags |= wire::kFlagCNoZeroes;
  fixed_ = (cflags & wire::kFlagCFixedNewstyle) != 0;
  no_zeroes_ = (cflags & wire::kFlagCNoZeroes) != 0;
  out_.protocol = fixed_ ? "newstyle-fixed" : "newstyle";

  std::vector<uint8_t> flags(wire::kClientFlagsSize);
  (void)wire::encode_client_flags(flags, cflags);
  co_await send(std::move(flags));

  {
    Task<Status> tls = apply_tls_policy();
    Status s = co_await tls;
    if (!s) co_return s;
  }

  if (fixed_ && cfg_.request_extended_headers) {
    Task<Result<uint32_t>> t = simple_option(wire::kOptExtendedHeaders);
    Result<uint32_t> rt = co_await t;
    if (!rt) co_return rt.status();
    if (*rt == wire::kRepAck) {
      out_.extended_headers = true;
      out_.structured_replies = true;
      debug(h_, "negotiated extended headers on this connection");
    } else {
      debug(h_, "extended headers are not supported by this server");
    }
  }
  if (fixed_ && cfg_.request_structured_replies && !out_.extended_headers) {
    Task<Result<uint32_t>> t = simple_option(wire::kOptStructuredReply);
    Result<uint32_t> rt = co_await t;
    if (!rt) co_return rt.status();
    if (*rt == wire::kRepAck) {
      out_.structured_replies = true;
      debug(h_, "negotiated structured replies on this connection");
    } else {
      debug(h_, "structured replies are not supported by this server");
    }
  }

  if (cfg_.opt_mode) {
    Task<Status> loop = option_loop();
    co_return co_await loop;
  }
  Task<Status> t = automatic();
  co_return co_await t;
}

Task<Status> Handshake::apply_tls_policy() {
  if (cfg_.tls == LIBNBD_TLS_DISABLE) co_return Status{};
  const bool required = cfg_.tls == LIBNBD_TLS_REQUIRE;
  if (!fixed_) {
    if (required)
      co_return Error{ENOTSUP,
                      "handshake: server is not using fixed newstyle, but handle TLS "
                      "setting is 'require' (2)"};
    debug(h_, "server is not using fixed newstyle, continuing without TLS");
    co_return Status{};
  }
  if (!cfg_.upgrade_to_tls) {
    if (required) co_return Error{ENOTSUP, "handshake: TLS support was not compiled into this library"};
    debug(h_, "TLS support was not compiled into this library, continuing without TLS");
    co_return Status{};
  }
  Task<Result<uint32_t>> t = starttls();
  Result<uint32_t> rt = co_await t;
  if (!rt) co_return rt.status();
  if (*rt == wire::kRepAck) co_return Status{};
  if (required)
    co_return Error{ENOTSUP,
                    "handshake: server refused TLS, but handle TLS setting is "
                    "'require' (2)"};
  debug(h_, "server refused TLS, continuing with an unencrypted connection");
  co_return Status{};
}

// A normal connect: open the export, or give up gracefully.
Task<Status> Handshake::automatic() {
  Task<Result<uint32_t>> t = open_export();
  Result<uint32_t> rt = co_await t;
  if (!rt) co_return rt.status();
  if (*rt == wire::kRepAck) {
    outcome_ = Phase::Done;
    co_return Status{};
  }
  Error e = go_failure(*rt, cfg_.export_name, server_message_);
  // Tell the server we are leaving, as libnbd does, but report the refusal whatever
  // happens to that last message.
  Task<Status> a = abort();
  (void)co_await a;
  co_return e;
}

// Opt mode: serve the caller's option requests until GO succeeds or ABORT is sent.
Task<Status> Handshake::option_loop() {
  for (;;) {
    current_ = co_await next_request();
    const char *what = nullptr;
    bool errno_from_reply = false;
    Result<uint32_t> rt = uint32_t(wire::kRepAck);
    switch (current_.kind) {
      case Kind::Abort: {
        if (!fixed_) {
          finish_option(0, Error{}, false);
          outcome_ = Phase::Dropped;
          co_return Status{};
        }
        Task<Status> a = abort();
        Status s = co_await a;
        if (!s) co_return s;
        finish_option(0, Error{}, false);
        outcome_ = Phase::Closed;
        co_return Status{};
      }
      case Kind::Go: {
        Task<Result<uint32_t>> t = open_export();
        rt = co_await t;
        what = "opt_go";
        errno_from_reply = true;
        break;
      }
      case Kind::Info: {
        if (want_meta_on_go()) {
          // As with GO, the server is asked for the contexts it would give this export.
          Task<Status> m = automatic_set_meta();
          Status ms = co_await m;
          if (!ms) co_return ms;
        }
        Task<Result<uint32_t>> t = info_or_go(wire::kOptInfo);
        rt = co_await t;
        what = "opt_info";
        errno_from_reply = true;
        break;
      }
      case Kind::List: {
        Task<Result<uint32_t>> t = list_exports(current_.list);
        rt = co_await t;
        what = "list";
        break;
      }
      case Kind::ListMeta:
      case Kind::SetMeta: {
        const bool set = current_.kind == Kind::SetMeta;
        std::vector<std::string> queries =
            current_.queries ? std::move(*current_.queries) : cfg_.meta_contexts;
        Task<Result<uint32_t>> t =
            meta_context(set ? wire::kOptSetMetaContext : wire::kOptListMetaContext,
                         std::move(queries), current_.context);
        rt = co_await t;
        what = "meta context";
        break;
      }
      case Kind::StructuredReply: {
        Task<Result<uint32_t>> t = simple_option(wire::kOptStructuredReply);
        rt = co_await t;
        if (rt && *rt == wire::kRepAck) out_.structured_replies = true;
        what = "structured reply";
        errno_from_reply = true;
        break;
      }
      case Kind::ExtendedHeaders: {
        Task<Result<uint32_t>> t = simple_option(wire::kOptExtendedHeaders);
        rt = co_await t;
        if (rt && *rt == wire::kRepAck) out_.extended_headers = out_.structured_replies = true;
        what = "extended headers";
        errno_from_reply = true;
        break;
      }
      case Kind::StartTls: {
        Task<Result<uint32_t>> t = starttls();
        rt = co_await t;
        what = "starttls";
        errno_from_reply = true;
        break;
      }
    }
    if (!rt) co_return rt.status();
    if (*rt == wire::kRepAck) {
      const bool opened = current_.kind == Kind::Go;
      finish_option(0, Error{}, false);
      if (opened) {
        outcome_ = Phase::Done;
        co_return Status{};
      }
      continue;
    }
    // Refused: the handle stays negotiating, so another attempt can follow.  Contexts
    // were agreed for the export that was refused, so they no longer mean anything.
    if (current_.kind == Kind::Info || current_.kind == Kind::Go) {
      out_.meta_valid = false;
      out_.meta_contexts.clear();
    }
    if (current_.kind == Kind::Info || current_.kind == Kind::Go) {
      // Worded as libnbd 1.22 words the refusal; the completion callback is told ENOTSUP
      // where that carries no errno (a policy refusal).
      Error e = go_failure(*rt, cfg_.export_name, server_message_);
      const int err = e.errnum ? e.errnum : ENOTSUP;
      finish_option(err, std::move(e), true);
      continue;
    }
    const int err = errno_from_reply ? option_errno(*rt) : ENOTSUP;
    finish_option(err, Error{err, std::string("server replied with error to ") + what + " request"},
                  true);
  }
}

}  // namespace duplexnbd::handshake
