// SPDX-License-Identifier: LGPL-2.1-or-later
// One test-server connection: option haggling, then a request reader and a reply writer.
#include "session.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <utility>

#include "wire/option.h"
#include "wire/protocol.h"
#include "wire/reply.h"

namespace duplexnbd::testserver {

namespace w = duplexnbd::wire;

namespace {

// The meta contexts this server knows.  The ids are deliberately neither 0 nor 1 nor
// consecutive, so a client that confuses ids with positions gets caught.
struct ContextDef {
  uint32_t id;
  std::string_view name;
};
constexpr uint32_t kAllocationId = 7;
constexpr uint32_t kDataId = 9;
constexpr ContextDef kContexts[] = {
    {kAllocationId, "base:allocation"},
    // Bit 0 set where a page holds written data: the inverse of base:allocation's hole
    // bit, so a test can tell the two contexts' extents apart.
    {kDataId, "duplexnbd:data"},
};

// Option payloads are small; anything bigger is a hostile or broken client.
constexpr uint32_t kMaxOptionLength = 1u << 20;
// Writes and reads above this are refused (reads) or end the connection (writes, whose
// payload would otherwise have to be swallowed).
constexpr uint64_t kMaxRequestPayload = 64ull << 20;
constexpr size_t kMaxExtents = 4096;
// Compact block-status descriptors carry 32-bit lengths: keep them 4 KiB aligned.
constexpr uint64_t kMaxNarrowExtent = 0xfffff000ull;
// Paced units go out in slices this big, with a sleep after each.
constexpr size_t kPacedSlice = 64 * 1024;

}  // namespace

Session::Session(int fd, const Options &options, SparseStore &store)
    : fd_(fd), options_(options), store_(store) {}

Session::~Session() { ::close(fd_); }

void Session::run() {
  if (handshake()) transmission();
  log("connection closed");
}

// ---- Handshake ---------------------------------------------------------------------------

bool Session::handshake() {
  uint8_t greeting[w::kNewstyleGreetingSize];
  w::encode_newstyle_greeting(greeting, w::kFlagFixedNewstyle | w::kFlagNoZeroes);
  if (!write_all(greeting, sizeof greeting)) return false;

  uint8_t client_flags_buf[w::kClientFlagsSize];
  if (!read_exact(client_flags_buf, sizeof client_flags_buf)) return false;
  uint32_t client_flags = *w::decode_client_flags(client_flags_buf);
  if (client_flags & ~(w::kFlagCFixedNewstyle | w::kFlagCNoZeroes)) {
    log("unknown client flags 0x%x", client_flags);  // the spec says: drop the connection
    return false;
  }
  no_zeroes_ = (client_flags & w::kFlagCNoZeroes) != 0;

  for (;;) {
    uint8_t header[w::kOptionRequestHeaderSize];
    if (!read_exact(header, sizeof header)) return false;
    auto h = w::decode_option_request_header(header);
    if (!h) {
      log("bad option magic");
      return false;
    }
    if (h->length > kMaxOptionLength) {
      log("option %u: payload of %u bytes refused", h->option, h->length);
      return false;
    }
    std::vector<uint8_t> payload(h->length);
    if (!payload.empty() && !read_exact(payload.data(), payload.size())) return false;
    log("option %s (%u), %u bytes", w::option_name(h->option) ? w::option_name(h->option) : "?",
        h->option, h->length);
    bool enter = false;
    if (!handle_option(h->option, payload, enter)) return false;
    if (enter) return true;
  }
}

bool Session::handle_option(uint32_t option, const std::vector<uint8_t> &payload, bool &enter) {
  switch (option) {
    case w::kOptExportName: {
      std::string_view name(reinterpret_cast<const char *>(payload.data()), payload.size());
      // NBD_OPT_EXPORT_NAME cannot fail politely: an unknown name ends the session.
      if (!known_export(name)) return false;
      uint8_t buf[w::kExportNameReplySize];
      size_t n = w::encode_export_name_reply(buf, {options_.size, transmission_flags()}, no_zeroes_);
      if (n == 0 || !write_all(buf, n)) return false;
      enter = true;
      return true;
    }
    case w::kOptAbort:
      send_option_reply(option, w::kRepAck, {});
      return false;
    case w::kOptList: {
      if (!payload.empty()) return send_option_error(option, w::kRepErrInvalid, "NBD_OPT_LIST takes no payload");
      std::vector<uint8_t> rep(w::rep_server_size(options_.export_name.size(), options_.description.size()));
      w::encode_rep_server(rep, {options_.export_name, options_.description});
      if (!send_option_reply(option, w::kRepServer, rep)) return false;
      return send_option_reply(option, w::kRepAck, {});
    }
    case w::kOptInfo:
    case w::kOptGo:
      return handle_info_or_go(option, payload, enter);
    case w::kOptStructuredReply:
      if (!options_.structured)
        return send_option_error(option, w::kRepErrUnsup, "structured replies are disabled (--no-structured)");
      if (!payload.empty()) return send_option_error(option, w::kRepErrInvalid, "unexpected payload");
      // Extended headers already imply structured replies; asking again is an error.
      if (extended_)
        return send_option_error(option, w::kRepErrExtHeaderReqd, "extended headers already negotiated");
      structured_ = true;
      return send_option_reply(option, w::kRepAck, {});
    case w::kOptExtendedHeaders:
      if (!options_.extended)
        return send_option_error(option, w::kRepErrUnsup, "extended headers are disabled (--no-extended)");
      if (!payload.empty()) return send_option_error(option, w::kRepErrInvalid, "unexpected payload");
      if (extended_) return send_option_error(option, w::kRepErrInvalid, "extended headers already negotiated");
      extended_ = true;
      structured_ = true;
      return send_option_reply(option, w::kRepAck, {});
    case w::kOptListMetaContext:
    case w::kOptSetMetaContext:
      return handle_meta_context(option, payload);
    default:
      // Including NBD_OPT_STARTTLS: this server has no TLS.
      return send_option_error(option, w::kRepErrUnsup, "option not supported by the test server");
  }
}

bool Session::send_option_reply(uint32_t option, uint32_t type, const std::vector<uint8_t> &payload) {
  std::vector<uint8_t> buf(w::kOptionReplyHeaderSize + payload.size());
  w::encode_option_reply_header(buf, {option, type, uint32_t(payload.size())});
  if (!payload.empty()) std::memcpy(buf.data() + w::kOptionReplyHeaderSize, payload.data(), payload.size());
  return write_all(buf.data(), buf.size());
}

bool Session::send_option_error(uint32_t option, uint32_t type, std::string_view message) {
  log("option %u refused: %.*s", option, int(message.size()), message.data());
  return send_option_reply(option, type, std::vector<uint8_t>(message.begin(), message.end()));
}

bool Session::handle_info_or_go(uint32_t option, const std::vector<uint8_t> &payload, bool &enter) {
  auto p = w::decode_info_payload(payload);
  if (!p) return send_option_error(option, w::kRepErrInvalid, "malformed NBD_OPT_INFO/GO payload");
  if (!known_export(p->export_name)) return send_option_error(option, w::kRepErrUnknown, "no such export");

  uint8_t export_info[w::kInfoExportReplySize];
  w::encode_info_export(export_info, {options_.size, transmission_flags()});
  if (!send_option_reply(option, w::kRepInfo,
                         std::vector<uint8_t>(export_info, export_info + sizeof export_info)))
    return false;

  for (size_t i = 0; i < p->count(); ++i) {
    std::vector<uint8_t> body;
    switch (p->request(i)) {
      case w::kInfoName:
        body.resize(2 + options_.export_name.size());
        w::encode_info_text(body, w::kInfoName, options_.export_name);
        break;
      case w::kInfoDescription:
        if (options_.description.empty()) continue;
        body.resize(2 + options_.description.size());
        w::encode_info_text(body, w::kInfoDescription, options_.description);
        break;
      case w::kInfoBlockSize:
        body.resize(w::kInfoBlockSizeReplySize);
        w::encode_info_block_size(body, {1, 4096, options_.max_payload});
        break;
      default:
        continue;  // the spec lets servers ignore requests they do not know
    }
    if (!send_option_reply(option, w::kRepInfo, body)) return false;
  }
  if (!send_option_reply(option, w::kRepAck, {})) return false;
  enter = option == w::kOptGo;
  return true;
}

bool Session::handle_meta_context(uint32_t option, const std::vector<uint8_t> &payload) {
  const bool set = option == w::kOptSetMetaContext;
  if (set && !structured_)
    return send_option_error(option, w::kRepErrInvalid, "meta contexts need structured replies");
  auto p = w::decode_meta_context_payload(payload);
  if (!p) return send_option_error(option, w::kRepErrInvalid, "malformed meta context payload");
  if (!known_export(p->export_name)) return send_option_error(option, w::kRepErrUnknown, "no such export");

  std::vector<const ContextDef *> matches;
  auto add = [&](const ContextDef &c) {
    if (std::find(matches.begin(), matches.end(), &c) == matches.end()) matches.push_back(&c);
  };
  if (p->count == 0) {
    if (!set)  // LIST with no queries lists everything; SET with none selects nothing
      for (const auto &c : kContexts) add(c);
  } else {
    p->for_each_query([&](std::string_view q) {
      for (const auto &c : kContexts) {
        // "namespace:" wildcards are only defined for LIST.
        bool wildcard = !set && !q.empty() && q.back() == ':' && c.name.substr(0, q.size()) == q;
        if (q == c.name || wildcard) add(c);
      }
    });
  }
  if (set) {
    contexts_.clear();
    for (const auto *c : matches) contexts_.push_back(c->id);
  }
  for (const auto *c : matches) {
    std::vector<uint8_t> rep(4 + c->name.size());
    w::encode_rep_meta_context(rep, {c->id, c->name});
    if (!send_option_reply(option, w::kRepMetaContext, rep)) return false;
  }
  return send_option_reply(option, w::kRepAck, {});
}

uint16_t Session::transmission_flags() const {
  uint16_t f = w::kFlagHasFlags | w::kFlagSendFlush | w::kFlagSendFua | w::kFlagSendTrim |
               w::kFlagSendWriteZeroes | w::kFlagSendDf | w::kFlagCanMultiConn | w::kFlagSendCache |
               w::kFlagSendFastZero;
  // The payload form of NBD_CMD_BLOCK_STATUS exists only with extended headers.
  if (extended_) f |= w::kFlagBlockStatPayload;
  return f;
}

// ---- Transmission ------------------------------------------------------------------------

void Session::transmission() {
  log("transmission: %s headers", extended_ ? "extended" : structured_ ? "structured" : "simple");
  std::thread writer([this] { writer_loop(); });
  const size_t header_size = w::request_header_size(extended_);
  uint64_t requests = 0;
  bool ending = false;
  for (;;) {
    if (requests++ == options_.end_after) {
      log("ending the session after %llu requests", (unsigned long long)options_.end_after);
      ending = true;
      break;
    }
    uint8_t header[w::kExtendedRequestHeaderSize];
    if (!read_exact(header, header_size)) break;
    auto req = w::decode_request_header({header, header_size}, extended_);
    if (!req) {
      log("bad request magic");
      break;
    }
    // Writes always carry a payload; with extended headers any command may, flagged
    // PAYLOAD_LEN (block status uses it for its id filter).
    uint64_t payload_length = 0;
    if (req->type == w::kCmdWrite || (extended_ && (req->flags & w::kCmdFlagPayloadLen)))
      payload_length = req->length;
    if (payload_length > kMaxRequestPayload) {
      log("request payload of %llu bytes: disconnecting", (unsigned long long)payload_length);
      break;
    }
    std::vector<uint8_t> payload(payload_length);
    if (payload_length && !read_exact(payload.data(), payload.size())) break;
    log("request %s cookie=%llu offset=%llu length=%llu flags=0x%x",
        w::command_name(req->type) ? w::command_name(req->type) : "?",
        (unsigned long long)req->cookie, (unsigned long long)req->offset,
        (unsigned long long)req->length, req->flags);
    if (req->type == w::kCmdDisc) break;
    handle_request(*req, payload);
  }
  {
    std::lock_guard lock(mutex_);
    reader_done_ = true;
  }
  cv_.notify_all();
  writer.join();  // sends what is still queued (soft disconnect), then stops
  if (ending) {
    // End of stream for the client, whose requests still find a reader: it sees a clean
    // close, not a failed send.
    ::shutdown(fd_, SHUT_WR);
    uint8_t discard[65536];
    while (::read(fd_, discard, sizeof discard) > 0) {
    }
  }
  ::shutdown(fd_, SHUT_RDWR);
}

void Session::handle_request(const wire::RequestHeader &req, std::vector<uint8_t> &payload) {
  const uint64_t size = store_.size();
  auto in_bounds = [&](uint64_t length) { return req.offset <= size && length <= size - req.offset; };

  switch (req.type) {
    case w::kCmdRead:
      if (req.length > kMaxRequestPayload) return queue(error_reply(req, EINVAL, "read too large"));
      if (!in_bounds(req.length)) return queue(error_reply(req, EINVAL, "read beyond the end"));
      return queue(read_reply(req));
    case w::kCmdWrite:
      if (!in_bounds(payload.size())) return queue(error_reply(req, ENOSPC, "write beyond the end"));
      store_.write(req.offset, payload.data(), payload.size());
      return queue(success_reply(req));
    case w::kCmdFlush:
      return queue(success_reply(req));
    case w::kCmdTrim:
    case w::kCmdWriteZeroes:
    case w::kCmdCache:
      if (!in_bounds(req.length)) return queue(error_reply(req, EINVAL, "range beyond the end"));
      if (req.type == w::kCmdTrim) store_.zero(req.offset, req.length, true);
      else if (req.type == w::kCmdWriteZeroes)
        store_.zero(req.offset, req.length, (req.flags & w::kCmdFlagNoHole) == 0);
      return queue(success_reply(req));
    case w::kCmdBlockStatus: {
      if (contexts_.empty()) return queue(error_reply(req, EINVAL, "no meta context negotiated"));
      uint64_t effect_length = req.length;
      std::vector<uint32_t> ids = contexts_;
      if (req.flags & w::kCmdFlagPayloadLen) {
        auto p = w::decode_block_status_payload(payload);
        if (!p || p->count() == 0)
          return queue(error_reply(req, EINVAL, "malformed block status payload"));
        effect_length = p->effect_length;
        ids.clear();
        for (size_t i = 0; i < p->count(); ++i) {
          uint32_t id = p->id(i);
          if (std::find(contexts_.begin(), contexts_.end(), id) == contexts_.end())
            return queue(error_reply(req, EINVAL, "context id not negotiated"));
          if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
        }
      }
      if (effect_length == 0 || !in_bounds(effect_length))
        return queue(error_reply(req, EINVAL, "bad block status range"));
      return queue(block_status_reply(req, effect_length, ids));
    }
    default:
      return queue(error_reply(req, EINVAL, "command not supported by the test server"));
  }
}

Session::Reply Session::read_reply(const wire::RequestHeader &req) {
  Reply r;
  const bool paced = options_.slow_read_bytes_per_ms > 0;
  if (!structured_) {
    const uint64_t bad = options_.fail_reads_at;
    if (bad >= req.offset && bad - req.offset < req.length) return error_reply(req, EIO, "injected read error");
    // One simple reply, header and data inseparable.
    Unit u;
    u.bytes.resize(w::kSimpleReplySize + req.length);
    w::encode_simple_reply(u.bytes, {0, req.cookie});
    store_.read(req.offset, req.length, u.bytes.data() + w::kSimpleReplySize);
    u.paced = paced;
    r.units.push_back(std::move(u));
    return r;
  }

  // Structured: one OFFSET_DATA chunk per read_chunk bytes of data, OFFSET_HOLE for
  // holes (unless DF forbids fragmenting), the last chunk flagged DONE.  Chunks are
  // built in place (header, prefix, data straight from the store): reads are large.
  enum class Kind { Data, Hole, Error };
  struct Piece {
    uint64_t offset, length;
    Kind kind;
  };
  std::vector<Piece> pieces;
  std::vector<SparseStore::Run> runs;
  if (req.flags & w::kCmdFlagDf) runs.push_back({req.offset, req.length, true});
  else runs = store_.runs(req.offset, req.length, std::numeric_limits<size_t>::max());
  const uint64_t max_piece = (req.flags & w::kCmdFlagDf) ? req.length : std::max<uint64_t>(options_.read_chunk, 1);
  for (const auto &run : runs) {
    if (!run.allocated) {
      pieces.push_back({run.offset, run.length, Kind::Hole});
      continue;
    }
    for (uint64_t pos = run.offset; pos < run.offset + run.length; pos += max_piece)
      pieces.push_back({pos, std::min(max_piece, run.offset + run.length - pos), Kind::Data});
  }
  // --fail-reads-at: the bytes before the bad offset are sent, then an ERROR_OFFSET chunk.
  const uint64_t bad = options_.fail_reads_at;
  const bool fails = bad >= req.offset && bad - req.offset < req.length;
  if (fails) {
    std::vector<Piece> before;
    for (Piece p : pieces) {
      if (p.offset >= bad) break;
      p.length = std::min(p.length, bad - p.offset);
      before.push_back(p);
    }
    pieces.swap(before);
  }
  // --reverse-chunks: the spec lets chunks of one reply come in any order (only the
  // DONE chunk must be last); the client must place data by offset, not by arrival.
  if (options_.reverse_chunks) std::reverse(pieces.begin(), pieces.end());
  if (fails) pieces.push_back({bad, 0, Kind::Error});
  if (pieces.empty()) {  // zero-length read
    r.units.push_back({chunk(req, w::kReplyFlagDone, w::kReplyTypeNone, {}), false});
    return r;
  }
  static constexpr std::string_view kInjected = "injected read error (--fail-reads-at)";
  const size_t header_size = extended_ ? w::kExtendedReplyHeaderSize : w::kStructuredReplyHeaderSize;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece &piece = pieces[i];
    uint64_t payload = 0;
    uint16_t type = 0;
    switch (piece.kind) {
      case Kind::Data:
        payload = w::kOffsetDataPrefixSize + piece.length;
        type = w::kReplyTypeOffsetData;
        break;
      case Kind::Hole:
        payload = w::kOffsetHolePayloadSize;
        type = w::kReplyTypeOffsetHole;
        break;
      case Kind::Error:
        payload = w::error_chunk_size(kInjected.size(), true);
        type = w::kReplyTypeErrorOffset;
        break;
    }
    w::ReplyChunkHeader h{uint16_t(i + 1 == pieces.size() ? w::kReplyFlagDone : 0), type, req.cookie,
                          req.offset, payload};
    Unit u;
    u.paced = paced;
    u.bytes.resize(header_size + payload);
    if (extended_) w::encode_extended_reply_header(u.bytes, h);
    else w::encode_structured_chunk_header(u.bytes, h);
    w::MutableBytes body = std::span(u.bytes).subspan(header_size);
    switch (piece.kind) {
      case Kind::Data:
        w::encode_offset_data_prefix(body, piece.offset);
        store_.read(piece.offset, piece.length, body.data() + w::kOffsetDataPrefixSize);
        break;
      case Kind::Hole:
        w::encode_offset_hole(body, {piece.offset, uint32_t(piece.length)});  // reads are <= 64 MiB
        break;
      case Kind::Error:
        w::encode_error_chunk(body, {w::kNbdEio, kInjected, piece.offset});
        break;
    }
    r.units.push_back(std::move(u));
  }
  return r;
}

Session::Reply Session::block_status_reply(const wire::RequestHeader &req, uint64_t effect_length,
                                           const std::vector<uint32_t> &ids) {
  Reply r;
  const auto runs = store_.runs(req.offset, effect_length, kMaxExtents);
  const bool req_one = (req.flags & w::kCmdFlagReqOne) != 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::vector<w::BlockStatusExtent> extents;
    for (const auto &run : runs) {
      uint64_t flags = ids[i] == kAllocationId ? (run.allocated ? 0 : w::kStateHole | w::kStateZero)
                                               : (run.allocated ? 1 : 0);
      for (uint64_t left = run.length; left > 0 && extents.size() < kMaxExtents;) {
        // Compact replies need 32-bit lengths; extended ones carry any length.
        uint64_t n = extended_ ? left : std::min(left, kMaxNarrowExtent);
        extents.push_back({n, flags});
        left -= n;
        if (req_one) break;
      }
      if (req_one || extents.size() >= kMaxExtents) break;
    }
    std::vector<uint8_t> payload(w::block_status_chunk_size(extents.size(), extended_));
    w::encode_block_status_chunk(payload, ids[i], extents, extended_);
    uint16_t flags = i + 1 == ids.size() ? w::kReplyFlagDone : 0;
    uint16_t type = extended_ ? w::kReplyTypeBlockStatusExt : w::kReplyTypeBlockStatus;
    r.units.push_back({chunk(req, flags, type, payload), false});
  }
  return r;
}

Session::Reply Session::success_reply(const wire::RequestHeader &req) {
  Reply r;
  if (extended_) {
    // No simple replies with extended headers: an empty NONE chunk says "done, fine".
    r.units.push_back({chunk(req, w::kReplyFlagDone, w::kReplyTypeNone, {}), false});
  } else {
    // Structured replies still allow a simple reply for data-less successes; using it
    // makes the client handle both kinds on one connection.
    Unit u;
    u.bytes.resize(w::kSimpleReplySize);
    w::encode_simple_reply(u.bytes, {0, req.cookie});
    r.units.push_back(std::move(u));
  }
  return r;
}

Session::Reply Session::error_reply(const wire::RequestHeader &req, int errnum, std::string_view message) {
  log("cookie=%llu fails: %.*s", (unsigned long long)req.cookie, int(message.size()), message.data());
  Reply r;
  const uint32_t error = w::nbd_error_of_errno(errnum);
  if (structured_) {
    std::vector<uint8_t> payload(w::error_chunk_size(message.size(), false));
    w::encode_error_chunk(payload, {error, message, std::nullopt});
    r.units.push_back({chunk(req, w::kReplyFlagDone, w::kReplyTypeError, payload), false});
  } else {
    Unit u;
    u.bytes.resize(w::kSimpleReplySize);
    w::encode_simple_reply(u.bytes, {error, req.cookie});
    r.units.push_back(std::move(u));
  }
  return r;
}

std::vector<uint8_t> Session::chunk(const wire::RequestHeader &req, uint16_t flags, uint16_t type,
                                    const std::vector<uint8_t> &payload) const {
  // Extended headers echo the request's offset; structured chunks have no such field.
  w::ReplyChunkHeader h{flags, type, req.cookie, req.offset, payload.size()};
  const size_t header_size = extended_ ? w::kExtendedReplyHeaderSize : w::kStructuredReplyHeaderSize;
  std::vector<uint8_t> out(header_size + payload.size());
  if (extended_) w::encode_extended_reply_header(out, h);
  else w::encode_structured_chunk_header(out, h);
  if (!payload.empty()) std::memcpy(out.data() + header_size, payload.data(), payload.size());
  return out;
}

void Session::queue(Reply reply) {
  reply.due = Clock::now() + std::chrono::milliseconds(options_.delay_ms);
  if (options_.jitter_ms > 0) {
    // Per-reply random delays make later requests overtake earlier ones.
    thread_local std::minstd_rand rng(std::random_device{}());
    reply.due += std::chrono::microseconds(rng() % (uint64_t(options_.jitter_ms) * 1000 + 1));
  }
  {
    std::lock_guard lock(mutex_);
    if (writer_failed_) return;
    pending_.push_back(std::move(reply));
  }
  cv_.notify_all();
}

void Session::writer_loop() {
  for (;;) {
    Unit unit;
    {
      std::unique_lock lock(mutex_);
      for (;;) {
        const auto now = Clock::now();
        auto best = pending_.end();
        auto earliest = Clock::time_point::max();
        // Replies that are due go out oldest first, except that a short unpaced unit
        // (a write's ack, say) overtakes a slow read between two of its chunks: this
        // is what lets a client see a later write complete before an earlier read.
        for (auto it = pending_.begin(); it != pending_.end(); ++it) {
          if (it->due > now) {
            earliest = std::min(earliest, it->due);
            continue;
          }
          if (!it->units.front().paced) {
            best = it;
            break;
          }
          if (best == pending_.end()) best = it;
        }
        if (best != pending_.end()) {
          unit = std::move(best->units.front());
          best->units.pop_front();
          if (best->units.empty()) pending_.erase(best);
          break;
        }
        if (pending_.empty() && reader_done_) return;
        if (earliest == Clock::time_point::max()) cv_.wait(lock);
        else cv_.wait_until(lock, earliest);
      }
    }
    log("sending %zu bytes%s", unit.bytes.size(), unit.paced ? " (paced)" : "");
    if (!send_unit(unit)) {
      std::lock_guard lock(mutex_);
      writer_failed_ = true;
      pending_.clear();
      return;
    }
  }
}

bool Session::send_unit(const Unit &unit) {
  const uint64_t rate = options_.slow_read_bytes_per_ms;
  if (!unit.paced || rate == 0) return write_all(unit.bytes.data(), unit.bytes.size());
  auto next = Clock::now();
  for (size_t pos = 0; pos < unit.bytes.size();) {
    size_t n = std::min(kPacedSlice, unit.bytes.size() - pos);
    if (!write_all(unit.bytes.data() + pos, n)) return false;
    pos += n;
    next += std::chrono::microseconds(n * 1000 / rate);
    std::this_thread::sleep_until(next);
  }
  return true;
}

// ---- Socket helpers ------------------------------------------------------------------------

bool Session::read_exact(void *buf, size_t n) {
  auto *p = static_cast<uint8_t *>(buf);
  while (n > 0) {
    ssize_t r = ::recv(fd_, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= size_t(r);
  }
  return true;
}

bool Session::write_all(const void *buf, size_t n) {
  const auto *p = static_cast<const uint8_t *>(buf);
  while (n > 0) {
    ssize_t r = ::send(fd_, p, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= size_t(r);
  }
  return true;
}

void Session::log(const char *fmt, ...) const {
  if (!options_.verbose) return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  // Milliseconds since the server started, to read timing-sensitive tests from the log.
  static const auto t0 = Clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::fprintf(stderr, "duplexnbd_test_server[fd %d] %lld ms: %s\n", fd_, static_cast<long long>(ms), line);
}

}  // namespace duplexnbd::testserver
