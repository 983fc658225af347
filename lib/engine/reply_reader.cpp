// SPDX-License-Identifier: LGPL-2.1-or-later
// The reader machine: one large recv, then as many replies parsed out of it as it holds;
// read payloads go straight into the caller's buffer when they are large.
#include "engine/reply_reader.h"

#include <cerrno>
#include <cstring>

#include "engine/command_table.h"
#include "engine/issue_gate.h"
#include "libnbd.h"
#include "wire/byte_order.h"
#include "wire/protocol.h"

namespace duplexnbd {
namespace {

constexpr size_t kBufferSize = 256 * 1024;
// Below this a payload remainder is received through the buffer, so the replies behind
// it come in the same system call; above it straight into the caller's memory.
constexpr uint64_t kDirectThreshold = 32 * 1024;
// Largest non-data chunk payload accepted (block status, errors). libnbd's own limit on
// a request is 64 MiB; a reply describing it never needs more than this.
constexpr uint64_t kMaxPayload = 64ull * 1024 * 1024;

void set_cmd_error(Command *c, int err) {
  if (c->error == 0) c->error = err ? err : EPROTO;
}

// A stream the server broke ends the connection. libnbd 1.22.2 reports that with errno 0
// and the reason in the message (nbd_get_errno(3) allows 0 where no errno applies), and
// programs that switch on the errno see the same here; the commands in flight still
// complete with ENOTCONN.
Error protocol_error(const char *what) { return make_error(0, what); }

}  // namespace

ReplyReader::ReplyReader(IssueGate &gate) : gate_(gate), buf_(new uint8_t[kBufferSize]) {}

size_t ReplyReader::memory_bytes() const {
  return kBufferSize + payload_capacity_.load(std::memory_order_relaxed);
}

void ReplyReader::configure(const Negotiated &n) {
  structured_ = n.structured_replies;
  extended_ = n.extended_headers;
  contexts_ = n.meta_contexts;
  export_size_ = n.info.valid ? n.info.size : 0;
}

void ReplyReader::reset() {
  step_ = Step::Header;
  cur_ = nullptr;
  head_ = tail_ = 0;
  mid_reply_.store(false, std::memory_order_release);
}

void ReplyReader::replace(Command *c, Command *ghost) {
  if (cur_ != c) return;
  cur_ = ghost;
  data_dst_ = nullptr;
}

Result<bool> ReplyReader::fill(transport::Transport &t, size_t want, uint64_t &bytes_received,
                               size_t cap) {
  if (head_ == tail_) {
    head_ = tail_ = 0;
  } else if (head_ + want > kBufferSize) {
    memmove(buf_.get(), buf_.get() + head_, avail());
    tail_ -= head_;
    head_ = 0;
  }
  size_t len = kBufferSize - tail_;
  if (cap > avail() && cap - avail() < len) len = cap - avail();
  ssize_t r = t.recv(buf_.get() + tail_, len);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    return errno_error("recv");
  }
  if (r == 0) return make_error(0, "");  // end of stream, told apart by errnum 0
  drained_ = size_t(r) < len;
  received_ = true;
  tail_ += size_t(r);
  bytes_received += uint64_t(r);
  return true;
}

bool ReplyReader::nothing_awaited(const transport::Transport &t, const CommandTable &table) const {
  return received_ && !t.pending_read() && table.awaiting_reply() == 0;
}

size_t ReplyReader::header_cap() const {
  if (!expect_large_) return SIZE_MAX;
  if (!structured_) return wire::kSimpleReplySize;
  // The chunk header and the data chunk's offset prefix, in one small recv.
  return wire::reply_header_size(extended_ ? wire::ReplyKind::Extended
                                           : wire::ReplyKind::Structured) +
         wire::kOffsetDataPrefixSize;
}

const char *ReplyReader::context_name(uint32_t id) const {
  for (const auto &c : contexts_)
    if (c.id == id) return c.name.c_str();
  return nullptr;
}

Result<ReplyReader::Outcome> ReplyReader::run(transport::Transport &t, CommandTable &table,
                                             CompletionList &finished, uint64_t &bytes_received,
                                             uint64_t &chunks_received) {
  drained_ = false;  // the caller was told the socket is readable
  received_ = false;
  for (;;) {
    switch (step_) {
      case Step::Header: {
        size_t need = wire::kReplyMagicSize;
        if (avail() >= need) {
          auto kind = wire::classify_reply({buf_.get() + head_, avail()});
          need = wire::reply_header_size(kind);
          if (need == 0) return protocol_error("invalid reply magic");
          if ((kind == wire::ReplyKind::Extended) != extended_ &&
              !(kind == wire::ReplyKind::Simple && !extended_))
            return protocol_error("server sent a reply header of the wrong form");
          if (kind == wire::ReplyKind::Structured && !structured_) {
            // libnbd 1.22.2 blames the command here: EPROTO, not 0.
            return make_error(EPROTO, "server sent a structured reply that was not negotiated");
          }
        }
        if (avail() < need) {
          if (socket_drained(t)) return Outcome::Blocked;
          if (avail() == 0 && nothing_awaited(t, table)) return Outcome::Blocked;
          auto r = fill(t, need, bytes_received, header_cap());
          if (!r) {
            if (r.error().errnum == 0) {
              if (avail() != 0 || mid_reply()) return protocol_error("server closed the connection in the middle of a reply");
              return Outcome::EndOfStream;
            }
            return r.take_error();
          }
          if (!*r) return Outcome::Blocked;
          continue;
        }
        chunks_received++;
        Status s = on_header(table, finished);
        if (!s) return s.take_error();
        break;
      }
      case Step::DataPrefix: {
        if (avail() < wire::kOffsetDataPrefixSize) {
          auto r = fill(t, wire::kOffsetDataPrefixSize, bytes_received,
                        expect_large_ ? wire::kOffsetDataPrefixSize : SIZE_MAX);
          if (!r) return r.error().errnum ? r.take_error() : protocol_error("server closed the connection in the middle of a reply");
          if (!*r) return Outcome::Blocked;
          continue;
        }
        Status s = on_data_prefix();
        if (!s) return s.take_error();
        break;
      }
      case Step::Data: {
        if (avail() > 0) {
          uint64_t n = std::min<uint64_t>(avail(), data_left_);
          if (data_dst_) memcpy(data_dst_ + (data_len_ - data_left_), buf_.get() + head_, n);
          head_ += n;
          data_left_ -= n;
          note_data_progress();
        }
        if (data_left_ == 0) {
          on_data_done(finished, table);
          break;
        }
        // No socket_drained() check here: mid-payload the server is usually still
        // writing, and a poll round trip would cost more than the recv it saves.
        if (data_dst_ && data_left_ >= kDirectThreshold) {
          ssize_t r = t.recv(data_dst_ + (data_len_ - data_left_), data_left_);
          if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return Outcome::Blocked;
            return errno_error("recv");
          }
          if (r == 0) return protocol_error("server closed the connection in the middle of a reply");
          received_ = true;
          drained_ = uint64_t(r) < data_left_;
          bytes_received += uint64_t(r);
          data_left_ -= uint64_t(r);
          note_data_progress();
          continue;
        }
        auto r = fill(t, 1, bytes_received);
        if (!r) return r.error().errnum ? r.take_error() : protocol_error("server closed the connection in the middle of a reply");
        if (!*r) return Outcome::Blocked;
        break;
      }
      case Step::Payload: {
        size_t want = payload_.size() - payload_have_;
        size_t n = std::min(avail(), want);
        memcpy(payload_.data() + payload_have_, buf_.get() + head_, n);
        head_ += n;
        payload_have_ += n;
        if (payload_have_ == payload_.size()) {
          Status s = on_payload_done(finished, table);
          if (!s) return s.take_error();
          break;
        }
        auto r = fill(t, 1, bytes_received);
        if (!r) return r.error().errnum ? r.take_error() : protocol_error("server closed the connection in the middle of a reply");
        if (!*r) return Outcome::Blocked;
        break;
      }
      case Step::Discard: {
        uint64_t n = std::min<uint64_t>(avail(), discard_left_);
        head_ += n;
        discard_left_ -= n;
        if (discard_left_ == 0) {
          end_chunk(finished, table);
          break;
        }
        auto r = fill(t, 1, bytes_received);
        if (!r) return r.error().errnum ? r.take_error() : protocol_error("server closed the connection in the middle of a reply");
        if (!*r) return Outcome::Blocked;
        break;
      }
    }
  }
}

Status ReplyReader::on_header(CommandTable &table, CompletionList &finished) {
  wire::ConstBytes in{buf_.get() + head_, avail()};
  auto kind = wire::classify_reply(in);
  uint64_t cookie;
  if (kind == wire::ReplyKind::Simple) {
    auto r = wire::decode_simple_reply(in);
    if (!r) return protocol_error("invalid simple reply");
    head_ += wire::kSimpleReplySize;
    cookie = r->cookie;
    cur_ = table.find_in_flight(cookie);
    if (!cur_ && r->error != 0) {
      // An error reply carries no payload, so the stream is still whole: skipped, as
      // libnbd 1.22.2 skips it.
      return {};
    }
    // A simple reply without an error may be followed by read data of unknown length:
    // libnbd 1.22.2 gives up with EPROTO here (0 for a structured chunk, below).
    if (!cur_) return make_error(EPROTO, "no matching command for the server's reply cookie");
    mid_reply_.store(true, std::memory_order_release);
    simple_ = true;
    cur_->reply_started = true;
    if (r->error != 0) {
      set_cmd_error(cur_, wire::errno_of_nbd_error(r->error));
      finish_reply(finished, table);
      return {};
    }
    if (cur_->type == wire::kCmdRead) {
      cur_->before_fill(0);
      data_dst_ = cur_->ghost ? nullptr : static_cast<uint8_t *>(cur_->read_buf);
      data_offset_ = cur_->offset;
      data_len_ = data_left_ = cur_->count;
      step_ = Step::Data;
      return {};
    }
    finish_reply(finished, table);
    return {};
  }

  std::optional<wire::ReplyChunkHeader> h = kind == wire::ReplyKind::Structured
                                                ? wire::decode_structured_chunk_header(in)
                                                : wire::decode_extended_reply_header(in);
  if (!h) return protocol_error("invalid structured reply header");
  head_ += wire::reply_header_size(kind);
  chunk_ = *h;
  simple_ = false;
  cur_ = table.find_in_flight(chunk_.cookie);
  if (!cur_) {
    // A chunk without payload for a cookie not in flight leaves the stream whole: it is
    // skipped, as libnbd 1.22.2 skips it; one with a payload ends the connection there.
    if (chunk_.length != 0) return protocol_error("no matching command for the server's reply cookie");
    return {};  // the next header follows at once
  }
  mid_reply_.store(true, std::memory_order_release);
  cur_->reply_started = true;

  const uint16_t type = chunk_.type;
  const uint64_t len = chunk_.length;
  if (kind == wire::ReplyKind::Extended && chunk_.offset != cur_->offset) {
    // An extended reply header echoes its request's offset. libnbd 1.22.2 fails the
    // command and skips the chunk (though it then leaves the payload unread, its bug:
    // docs/hostile-servers.md, [skipped-payload]); here the payload is skipped too.
    if (len > cur_->count + kMaxPayload) return protocol_error("reply chunk too large");
    set_cmd_error(cur_, EPROTO);
    skip_payload(len, finished, table);
    return {};
  }
  if (type == wire::kReplyTypeNone) {
    if (!chunk_.done() || len != 0) set_cmd_error(cur_, EPROTO);
    skip_payload(len, finished, table);
    return {};
  }
  if (type == wire::kReplyTypeOffsetData) {
    // A chunk of the offset alone is accepted, as libnbd accepts it: the spec calls
    // zero-length replies broken, but nothing is written and the stream stays whole.
    // Data (or, in on_payload_done, a hole) outside its read: the framing is intact, but
    // the server has lost track of the request, and libnbd 1.22.2 ends the connection.
    if (cur_->type == wire::kCmdRead && len >= wire::kOffsetDataPrefixSize &&
        len - wire::kOffsetDataPrefixSize > cur_->count)
      return protocol_error("data chunk longer than its request");
    if (cur_->type != wire::kCmdRead || len < wire::kOffsetDataPrefixSize) {
      if (len > cur_->count + kMaxPayload) return protocol_error("data chunk too large");
      set_cmd_error(cur_, EPROTO);
      skip_payload(len, finished, table);
      return {};
    }
    step_ = Step::DataPrefix;
    return {};
  }
  if (len > kMaxPayload) return protocol_error("reply chunk too large");
  bool known = type == wire::kReplyTypeOffsetHole || type == wire::kReplyTypeBlockStatus ||
               type == wire::kReplyTypeBlockStatusExt || wire::is_error_chunk_type(type);
  if (!known) {
    // An unknown non-error chunk: the spec says the command failed, the stream is fine.
    set_cmd_error(cur_, EPROTO);
    skip_payload(len, finished, table);
    return {};
  }
  payload_.resize(len);
  if (payload_.capacity() != payload_capacity_.load(std::memory_order_relaxed))
    payload_capacity_.store(payload_.capacity(), std::memory_order_relaxed);
  payload_have_ = 0;
  step_ = Step::Payload;
  if (len == 0) return on_payload_done(finished, table);
  return {};
}

void ReplyReader::skip_payload(uint64_t len, CompletionList &finished, CommandTable &table) {
  discard_left_ = len;
  step_ = Step::Discard;
  if (len == 0) end_chunk(finished, table);
}

Status ReplyReader::on_data_prefix() {
  auto p = wire::decode_offset_data_prefix({buf_.get() + head_, avail()}, chunk_.length);
  head_ += wire::kOffsetDataPrefixSize;
  uint64_t data_len = chunk_.length - wire::kOffsetDataPrefixSize;
  Command *c = cur_;
  if (!p || p->offset < c->offset || p->offset - c->offset > c->count - data_len)
    return protocol_error("data chunk outside its request");
  if (c->ghost) {
    data_dst_ = nullptr;  // nobody wants it any more
  } else {
    c->before_fill(p->offset - c->offset);
    data_dst_ = static_cast<uint8_t *>(c->read_buf) + (p->offset - c->offset);
  }
  data_offset_ = p->offset;
  data_len_ = data_left_ = data_len;
  step_ = Step::Data;
  return {};
}

void ReplyReader::note_data_progress() {
  // The data received so far is the server's: if the connection ends before the rest, it
  // stays in the buffer (as libnbd leaves it) and only what never came is zeroed.
  if (data_dst_ && cur_)
    cur_->after_fill(uint64_t(data_dst_ - static_cast<uint8_t *>(cur_->read_buf)),
                     data_len_ - data_left_);
}

void ReplyReader::call_chunk(Command *c, const void *buf, uint64_t len, uint64_t offset,
                             unsigned status, int err) {
  if (!c->chunk) return;
  gate_.wait(c);
  if (c->chunk(buf, size_t(len), offset, status, &err) == -1) set_cmd_error(c, err);
}

void ReplyReader::on_data_done(CompletionList &finished, CommandTable &table) {
  Command *c = cur_;
  expect_large_ = data_len_ >= kDirectThreshold;
  if (data_dst_) {
    c->after_fill(uint64_t(data_dst_ - static_cast<uint8_t *>(c->read_buf)), data_len_);
    c->data_seen += data_len_;
    call_chunk(c, data_dst_, data_len_, data_offset_, LIBNBD_READ_DATA, c->error);
  }
  if (simple_) {
    finish_reply(finished, table);
    return;
  }
  end_chunk(finished, table);
}

Status ReplyReader::on_payload_done(CompletionList &finished, CommandTable &table) {
  Command *c = cur_;
  const uint16_t type = chunk_.type;
  wire::ConstBytes payload{payload_.data(), payload_.size()};
  if (type == wire::kReplyTypeOffsetHole) {
    auto hole = wire::decode_offset_hole(payload);
    // A zero-length hole is reported to the chunk callback, as libnbd 1.22.2 does (the
    // read then fails unless the other chunks cover it: finish_reply).
    if (c->type == wire::kCmdRead && hole &&
        (hole->offset < c->offset || hole->offset - c->offset > c->count ||
         hole->length > c->count - (hole->offset - c->offset)))
      return protocol_error("hole chunk outside its request");
    if (c->type != wire::kCmdRead || !hole) {
      set_cmd_error(c, EPROTO);
    } else if (!c->ghost) {
      const uint64_t at = hole->offset - c->offset;
      uint8_t *dst = static_cast<uint8_t *>(c->read_buf) + at;
      c->before_fill(at);
      memset(dst, 0, hole->length);
      c->after_fill(at, hole->length);
      c->data_seen += hole->length;
      call_chunk(c, dst, hole->length, hole->offset, LIBNBD_READ_HOLE, c->error);
    }
  } else if (type == wire::kReplyTypeBlockStatus || type == wire::kReplyTypeBlockStatusExt) {
    auto bs = wire::decode_block_status_chunk(type, payload);
    bool wide_ok = (type == wire::kReplyTypeBlockStatusExt) == extended_;
    if (c->type != wire::kCmdBlockStatus || !bs)
      set_cmd_error(c, EPROTO);
    else
      deliver_block_status(*bs, wide_ok ? 0 : EPROTO);
  } else if (wire::is_error_chunk_type(type)) {
    auto e = wire::decode_error_chunk(type, payload);
    if (!e) {
      // A message length that overruns the chunk: the server's error still stands, as
      // libnbd 1.22.2 reports it; without even an error field, a protocol error.
      int err = EPROTO;
      if (payload.size() >= 6)
        if (int x = wire::errno_of_nbd_error(wire::load_be32(payload.data()))) err = x;
      set_cmd_error(c, err);
    } else {
      int err = wire::errno_of_nbd_error(e->error);
      if (err == 0) err = EPROTO;  // an error chunk must carry an error
      if (e->offset && c->type == wire::kCmdRead && c->chunk) {
        // An offset outside the request is not reported to the callback; the command
        // fails with the server's error all the same (as in libnbd 1.22.2).
        if (*e->offset >= c->offset && *e->offset - c->offset <= c->count) {
          uint8_t *at = static_cast<uint8_t *>(c->read_buf) + (*e->offset - c->offset);
          call_chunk(c, at, 0, *e->offset, LIBNBD_READ_ERROR, err);
        }
      }
      set_cmd_error(c, err);
    }
  }
  payload_.clear();
  end_chunk(finished, table);
  return {};
}

void ReplyReader::deliver_block_status(const wire::BlockStatusChunk &bs, int err) {
  Command *c = cur_;
  const char *name = context_name(bs.context_id);
  // A context the server never agreed to is ignored, as libnbd 1.22.2 ignores it.
  if (!name) return;
  // What the callback sees follows libnbd 1.22.2, rule by rule and in its order: an extent
  // too long for the callback is cut (to 64 MiB below the limit) and ends the list; for a
  // 32-bit callback, flags beyond 32 bits end the list before that extent, or, when it is
  // the first, are cut with EOVERFLOW; an extent crossing the end of the export is cut at
  // the end, with EPROTO, and ends the list; a zero-length extent ends it (alone, with
  // EPROTO, when it is the first). Whenever the callback is handed an error the command
  // fails with it.
  struct Entry {
    uint64_t length, flags;
  };
  constexpr uint64_t kCut = 64 << 20;
  const bool narrow = !c->extent64;
  const uint64_t cap = export_size_ == 0 ? UINT64_MAX
                       : c->offset <= export_size_ ? export_size_ - c->offset : 0;
  std::vector<Entry> entries;
  const size_t n = bs.count();
  entries.reserve(n);
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    auto e = bs.extent(i);
    uint64_t len = e.length, flags = e.flags;
    bool stop = false;
    if (len > uint64_t(INT64_MAX)) {
      stop = true;
      len = uint64_t(INT64_MAX) + 1 - kCut;
    }
    if (narrow && len > UINT32_MAX) {
      stop = true;
      len = uint64_t(UINT32_MAX) + 1 - kCut;
    }
    if (narrow && flags > UINT32_MAX) {
      stop = true;
      if (i > 0) break;
      err = err ? err : EOVERFLOW;
      flags = uint32_t(flags);
    }
    if (len > cap - total) {
      len = cap - total;
      stop = true;
      err = err ? err : EPROTO;
    }
    if (len == 0) {
      stop = true;
      if (i > 0) break;
      err = err ? err : EPROTO;
    }
    total += len;
    entries.push_back({len, flags});
    if (stop) break;
  }
  if (entries.empty()) {
    set_cmd_error(c, err ? err : EPROTO);
    return;
  }
  if (c->extent64 || c->extent) gate_.wait(c);
  if (c->extent64) {
    std::vector<nbd_extent> out(entries.size());
    for (size_t i = 0; i < entries.size(); i++) {
      out[i].length = entries[i].length;
      out[i].flags = entries[i].flags;
    }
    int e = c->error ? c->error : err;
    if (c->extent64(name, c->offset, out.data(), out.size(), &e) == -1) set_cmd_error(c, e);
  } else if (c->extent) {
    std::vector<uint32_t> out;
    out.reserve(2 * entries.size());
    for (const Entry &x : entries) {  // each fits in 32 bits (see above)
      out.push_back(uint32_t(x.length));
      out.push_back(uint32_t(x.flags));
    }
    int e = c->error ? c->error : err;
    if (c->extent(name, c->offset, out.data(), out.size(), &e) == -1) set_cmd_error(c, e);
  }
  if (err) set_cmd_error(c, err);
}

void ReplyReader::end_chunk(CompletionList &finished, CommandTable &table) {
  if (chunk_.done()) {
    finish_reply(finished, table);
    return;
  }
  step_ = Step::Header;
}

void ReplyReader::finish_reply(CompletionList &finished, CommandTable &table) {
  Command *c = cur_;
  // A successful structured read must have covered the request exactly, as libnbd
  // 1.22.2 requires: too little (nothing, or a gap) or too much (chunks that overlap).
  if (!simple_ && c->type == wire::kCmdRead && c->error == 0 && c->data_seen != c->count)
    set_cmd_error(c, EPROTO);
  table.remove_in_flight(c);
  // The header's size in either form is near enough for deciding when to refill.
  answered_request_bytes_ += wire::kRequestHeaderSize + c->payload_len;
  if (c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) finished.push(c);
  cur_ = nullptr;
  step_ = Step::Header;
  mid_reply_.store(false, std::memory_order_release);
}

}  // namespace duplexnbd
