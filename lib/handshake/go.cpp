// SPDX-License-Identifier: LGPL-2.1-or-later
// Opening the export: NBD_OPT_INFO / NBD_OPT_GO and their NBD_INFO replies, or NBD_OPT_EXPORT_NAME.
// NBD_OPT_EXPORT_NAME.
#include <cerrno>
#include <string>

#include "handle/debug.h"
#include "handshake/errors.h"
#include "handshake/handshake.h"
#include "handshake/limits.h"
#include "wire/protocol.h"

namespace duplexnbd::handshake {

bool Handshake::want_meta_on_go() const {
  return cfg_.request_meta_context && out_.structured_replies && !cfg_.meta_contexts.empty();
}

Status Handshake::set_export_info(uint64_t size, uint16_t eflags) {
  debug(h_, "exportsize: %llu eflags: 0x%x", static_cast<unsigned long long>(size), eflags);
  // HAS_FLAGS is mandatory, so 0 can only come from a broken server.
  if (eflags == 0) return Error{EINVAL, "handshake: invalid eflags == 0 from server"};
  // The raw flags are kept; the can_* calls drop claims that depend on something not
  // negotiated (see api/command_checks.h).
  out_.info.valid = true;
  out_.info.size = size;
  out_.info.eflags = eflags;
  return {};
}

// The export is known.  Without structured replies no context can be negotiated, and
// without requested contexts there is nothing to negotiate: either way the (empty) set
// of contexts is final, so can_meta_context answers instead of failing.
void Handshake::note_export_opened() {
  if (cfg_.request_meta_context && (!out_.structured_replies || cfg_.meta_contexts.empty())) {
    out_.meta_valid = true;
    out_.meta_contexts.clear();
  }
}

Task<Result<uint32_t>> Handshake::open_export() {
  if (fixed_) {
    if (want_meta_on_go()) {
      Task<Status> m = automatic_set_meta();
      Status ms = co_await m;
      if (!ms) co_return ms.take_error();
    }
    Task<Result<uint32_t>> t = info_or_go(wire::kOptGo);
    Result<uint32_t> rt = co_await t;
    if (!rt || *rt != wire::kRepErrUnsup) co_return rt;
    debug(h_, "server does not support NBD_OPT_GO, falling back to NBD_OPT_EXPORT_NAME");
  }
  Task<Status> e = export_name();
  Status s = co_await e;
  if (!s) co_return s.take_error();
  co_return uint32_t(wire::kRepAck);
}

Task<Result<uint32_t>> Handshake::info_or_go(uint32_t option) {
  std::vector<uint16_t> wanted;
  if (cfg_.request_block_size) wanted.push_back(wire::kInfoBlockSize);
  if (cfg_.full_info) {
    wanted.push_back(wire::kInfoName);
    wanted.push_back(wire::kInfoDescription);
  }
  std::vector<uint8_t> payload(wire::info_payload_size(cfg_.export_name.size(), wanted.size()));
  if (wire::encode_info_payload(payload, cfg_.export_name, wanted) == 0)
    co_return Error{EINVAL, "export name cannot be encoded"};
  co_await send(option_request(option, payload));

  // Whatever was known is replaced by what this reply says, or forgotten if it fails.
  out_.info = ExportInfo{};
  for (;;) {
    Task<Result<Reply>> t = recv_reply(option);
    Result<Reply> r = co_await t;
    if (!r) co_return r.take_error();
    const uint32_t type = r->header.reply_type;
    if (type == wire::kRepAck) {
      // A server that skipped NBD_INFO_EXPORT is accepted, as libnbd does; the size
      // and flag calls then fail until something tells us more.
      if (out_.info.valid) note_export_opened();
      co_return type;
    }
    if (r->header.is_error()) {
      out_.info = ExportInfo{};
      co_return type;
    }
    if (type != wire::kRepInfo) co_return protocol_error("unexpected option reply type %u", type);

    const std::vector<uint8_t> &p = r->payload;
    if (p.size() < 2) co_return protocol_error("invalid option reply length");
    const uint16_t info = wire::load_be16(p.data());
    std::optional<wire::InfoReply> ir = wire::decode_rep_info(p);
    switch (info) {
      case wire::kInfoExport: {
        if (!ir) co_return protocol_error("incorrect NBD_INFO_EXPORT option reply length");
        Status s = set_export_info(ir->export_info.size, ir->export_info.transmission_flags);
        if (!s) co_return s.take_error();
        break;
      }
      case wire::kInfoBlockSize:
        if (!ir) co_return protocol_error("incorrect NBD_INFO_BLOCK_SIZE option reply length");
        debug(h_, "server block size constraints: min: %u preferred: %u max: %u",
              ir->block_size.minimum, ir->block_size.preferred, ir->block_size.maximum);
        // Kept as sent; an inconsistent set is ignored where it is used.
        out_.info.block_minimum = ir->block_size.minimum;
        out_.info.block_preferred = ir->block_size.preferred;
        out_.info.block_maximum = ir->block_size.maximum;
        break;
      case wire::kInfoName:
      case wire::kInfoDescription:
        if (!ir || ir->text.size() > kMaxString)
          co_return protocol_error("export name or description in NBD_INFO reply is too long");
        if (info == wire::kInfoName)
          out_.info.canonical_name = std::string(ir->text);
        else
          out_.info.description = std::string(ir->text);
        break;
      default:
        // The spec tells clients to ignore information they did not ask for.
        debug(h_, "ignoring unknown NBD_INFO type %u", info);
        break;
    }
  }
}

Task<Status> Handshake::export_name() {
  co_await send(option_request(wire::kOptExportName, wire::bytes_of(cfg_.export_name)));
  // No option framing here: the reply is the bare size and flags (plus zeroes unless
  // NO_ZEROES was agreed); a server that does not know the export just hangs up.
  co_await recv(wire::export_name_reply_size(no_zeroes_));
  std::optional<wire::ExportInfo> e = wire::decode_export_name_reply(recv_buf_);
  if (!e) co_return protocol_error("invalid NBD_OPT_EXPORT_NAME reply");
  ++chunks_received_;
  out_.info = ExportInfo{};
  Status s = set_export_info(e->size, e->transmission_flags);
  if (!s) co_return s;
  note_export_opened();
  co_return Status{};
}

}  // namespace duplexnbd::handshake
