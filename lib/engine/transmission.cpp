// SPDX-License-Identifier: LGPL-2.1-or-later
// Transmission: issuing commands, the direction, the reader and writer sides, disconnecting.
#include <cerrno>
#include <vector>

#include "engine/connection.h"
#include "handle/debug.h"
#include "handle/error.h"
#include "handshake/handshake.h"
#include "libnbd.h"
#include "wire/protocol.h"
#include "wire/request.h"

namespace duplexnbd {

// ---------------------------------------------------------------------------
// Direction and notifications.

unsigned Connection::direction() const {
  switch (h_.state()) {
    case State::Connecting: {
      const handshake::Handshake *hs = handshake_view_.load(std::memory_order_acquire);
      if (!hs) return LIBNBD_AIO_DIRECTION_WRITE;  // connect() in progress
      switch (hs->wants()) {
        case handshake::Want::Read: return LIBNBD_AIO_DIRECTION_READ;
        case handshake::Want::Write: return LIBNBD_AIO_DIRECTION_WRITE;
        default: return 0;
      }
    }
    case State::Ready:
      // Always READ in transmission, to notice replies and the server hanging up; WRITE
      // while requests are queued or completions wait for a driver (see hand_off).
      if (writer_.pending() || completions_.handed_off()) {
        write_observed_.store(true, std::memory_order_relaxed);
        return LIBNBD_AIO_DIRECTION_BOTH;
      }
      return LIBNBD_AIO_DIRECTION_READ;
    default:
      return 0;
  }
}

unsigned Connection::direction_for_poll() {
  batching_.note_driver();
  expire_due();
  flush_queued(Flush::Deferred);
  return direction();
}

bool Connection::processing() const {
  // Deferred requests are not being sent yet: libnbd would have sent them and be ready.
  return h_.state() == State::Ready &&
         ((writer_.pending() && !writer_.deferred()) || reader_.mid_reply());
}

Status Connection::notify_read() {
  batching_.note_driver();
  expire_due();
  finish_handed_off();
  return read_side(nullptr);
}

Status Connection::notify_write() {
  batching_.note_driver();
  expire_due();
  return write_side(nullptr);
}

Status Connection::read_side(CompletionQueue::Budget *budget) {
  switch (h_.state()) {
    case State::Connecting:
    case State::Negotiating:
      return run_handshake_io(true, false);
    case State::Ready:
      break;
    default:
      return {};
  }
  // A second reader (another thread, or a callback re-entering) has nothing to add.
  if (!reader_slot_.try_acquire()) return {};
  CompletionList finished;
  Result<ReplyReader::Outcome> r = ReplyReader::Outcome::Blocked;
  uint64_t bytes = 0, chunks = 0;
  bool refill = false;
  transport::Transport *t = live_transport();
  if (broken_stream_pending_.load(std::memory_order_acquire)) {
    // Found by the last nbd_poll round behind its replies: this round reports it.
    Error e = std::move(broken_stream_);
    broken_stream_pending_.store(false, std::memory_order_relaxed);
    release_reader(finished, budget);
    fail(e);
    return e;
  }
  if (h_.state() == State::Ready && t) {
    r = reader_.run(*t, table_, finished, bytes, chunks);
    refill = batching_.refill_due(reader_.answered_request_bytes());
    if (!r && budget && !finished.empty() && !disconnect_requested()) {
      // nbd_poll: libnbd handles one reply per call, so the call that completes replies
      // does not also find the stream broken behind them; the next call does.  Other
      // threads blocked in poll rounds are woken to report it (see poll_round).
      broken_stream_ = r.take_error();
      broken_stream_pending_.store(true, std::memory_order_release);
      r = ReplyReader::Outcome::Blocked;
      wake_pollers(PollerRegistry::Why::Progress);
    }
  }
  bytes_received.fetch_add(bytes, std::memory_order_relaxed);
  chunks_received.fetch_add(chunks, std::memory_order_relaxed);
  release_reader(finished, budget);
  if (!r) {
    // After NBD_CMD_DISC with nothing left to answer, the server may end the session any
    // way it likes (a TLS server often without close_notify, or with a reset): that is
    // the close we asked for, not a failure.
    if (disconnect_requested() && table_.in_flight() == 0 && !writer_.pending()) {
      debug(h_, "server ended the session after disconnect: %s", r.error().message.c_str());
      on_end_of_stream();
      return {};
    }
    Error e = r.take_error();
    fail(e);
    return e;
  }
  if (h_.state() == State::Dead) return fatal_error();
  if (h_.state() == State::Closed) return {};
  if (*r == ReplyReader::Outcome::EndOfStream) {
    on_end_of_stream();
    return {};
  }
  // Requests issued from the callbacks just run go out now; and so does what waits
  // behind a full socket once the replies show that the server has read a good part of
  // it (see SendBatching).
  flush_queued(refill ? Flush::Queued : Flush::Deferred);
  return {};
}

Status Connection::write_side(CompletionQueue::Budget *budget) {
  switch (h_.state()) {
    case State::Connecting:
    case State::Negotiating:
      return run_handshake_io(false, true);
    case State::Ready:
      break;
    default:
      return {};
  }
  if (completions_.handed_off()) {
    finish_handed_off(budget);
    if (!writer_.pending()) return {};
  }
  if (!writer_.pending()) {
    // Nothing queued. That is a caller's mistake only if nothing could have been queued
    // since it last saw WRITE: a second thread may legitimately have sent it already.
    if (!write_observed_.exchange(false, std::memory_order_relaxed) && table_.in_flight() == 0)
      return make_error(EINVAL, "nothing to write: the handle is not blocked on writing");
    return {};
  }
  CompletionList finished;
  Status s;
  uint64_t bytes = 0;
  {
    std::lock_guard lock(writer_.mutex);
    transport::Transport *t = live_transport();
    if (h_.state() != State::Ready || !t) return {};
    s = writer_.run(*t, finished, bytes);
  }
  bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
  finish_completed(finished, budget);
  if (!s) {
    Error e = s.take_error();
    fail(e);
    return e;
  }
  return {};
}

// ---------------------------------------------------------------------------
// Finishing commands on the right thread.

void Connection::finish_completed(CompletionList &list, CompletionQueue::Budget *budget) {
  if (list.empty()) return;
  // Nobody drives an ended connection: no budget, nothing is handed back.
  if (ended()) budget = nullptr;
  if (completions_.finish(list, budget)) {
    // Handed back beyond the budget: the direction says WRITE until they are done.
    wake_pollers(PollerRegistry::Why::Progress);
    // An end after our check drains the list itself, but only what it finds there.
    if (ended()) completions_.finish_handed_off();
  }
  notify_waiters();
}

void Connection::finish_handed_off(CompletionQueue::Budget *budget) {
  if (!completions_.handed_off()) return;
  if (ended()) budget = nullptr;
  if (completions_.finish_handed_off(budget)) {
    wake_pollers(PollerRegistry::Why::Progress);
    if (ended()) completions_.finish_handed_off();
  }
  notify_waiters();
}

void Connection::hand_off(CompletionList &list) {
  if (!completions_.hand_off(list)) return;
  // The direction now includes WRITE, so a POLLOUT poll (nbd_poll, a blocking call's
  // leader, a classic loop) comes back to a notify at once and finishes them.
  wake_pollers(PollerRegistry::Why::Progress);
  notify_waiters();
  // An ended connection has no next driver: whoever hands off finishes (see end()).
  if (ended()) finish_handed_off();
}

// ---------------------------------------------------------------------------
// Commands.

Result<uint64_t> Connection::issue(CommandPtr cmd) {
  Command *c = cmd.get();
  const bool extended = negotiated_.extended_headers;
  WriteEntry e;
  e.payload = static_cast<const uint8_t *>(c->payload);
  e.payload_len = c->payload_len;
  e.cmd = c;
  CompletionList finished;
  Status s;
  uint64_t bytes = 0, cookie = 0;
  bool left_pending = false, deferred = false;
  {
    std::lock_guard lock(writer_.mutex);
    // Both checked under the writer's mutex: disconnect() sets its flag under it before
    // it queues NBD_CMD_DISC, so no request follows that onto the wire; and end() moves
    // the state before its reap clears the queue and the table under it, so every
    // command issued is either refused here or reaped.
    if (disconnect_requested_.load(std::memory_order_relaxed))
      return make_error(EINVAL, "cannot request more commands after NBD_CMD_DISC");
    transport::Transport *t = live_transport();
    if (h_.state() != State::Ready || !t) return fatal_error();
    wire::RequestHeader rh;
    rh.flags = c->flags;
    rh.type = c->type;
    rh.cookie = cookie = table_.next_cookie();
    rh.offset = c->offset;
    // Only a request that carries a payload has its payload length in the header; any
    // other command the caller flagged anyway (strict mode off) keeps its effect length.
    rh.length = (extended && (c->flags & wire::kCmdFlagPayloadLen) && c->payload) ? c->payload_len
                                                                                  : c->count;
    e.header_len = uint8_t(wire::encode_request_header({e.header, sizeof e.header}, rh, extended));
    // Cannot happen after the entry point's checks; the command was never registered.
    if (e.header_len == 0) return make_error(EINVAL, "request cannot be encoded");
    // While this call runs, nobody calls back for the command (see CompletionQueue).
    c->issuing.store(true, std::memory_order_relaxed);
    c->cookie = cookie;
    // Registered before a byte is sent: the reply may arrive before this call returns.
    table_.insert(cmd.release());
    const SendBatching::QueueView view{writer_.pending() && !writer_.deferred(),
                                       writer_.deferred_bytes(), writer_.queued(),
                                       table_.awaiting_reply(), pollers_.anyone_polling()};
    if (batching_.may_defer(e.total(), view)) {
      // The caller drives the handle itself and already waits for a reply, so it will be
      // back in get_direction, a notify or a poll before anything else can happen: the
      // requests it issues until then leave in one sendmsg.  Until then the direction
      // says WRITE, as the documentation of nbd_aio_get_direction allows.
      writer_.push_deferred(e);
      deferred = true;
    } else {
      writer_.push(e);
      // Send at once from the caller's thread when the socket takes it, as libnbd does;
      // what does not fit stays queued for whoever polls for POLLOUT.
      s = writer_.run(*t, finished, bytes);
    }
    left_pending = writer_.pending();
  }
  bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
  chunks_sent.fetch_add(1, std::memory_order_relaxed);
  // duplexnbd_set_request_timeout: the command's deadline, by cookie (the command itself
  // may be gone by the time it passes).  A new earliest deadline shortens the polls.
  if (uint32_t ms = h_.request_timeout_ms.load(std::memory_order_relaxed)) {
    if (deadlines_.add(Deadlines::now() + int64_t(ms) * 1000000, cookie))
      wake_pollers(PollerRegistry::Why::Progress);
  }
  // From here on another thread may call back for the command and free it; only what
  // this thread's send finished (perhaps the command itself) is still ours, and goes to
  // the next thread that drives the handle: libnbd never calls back inside the aio call.
  issue_gate_.open(c);
  hand_off(finished);
  if (!s) {
    fail(s.error());
    return cookie;
  }
  // A deferred request needs no wake-up: no other thread polls (see SendBatching).
  if (left_pending && !deferred) wake_pollers(PollerRegistry::Why::QueuedWrite);
  return cookie;
}

void Connection::flush_queued(Flush what) {
  auto wanted = [&] { return what == Flush::Queued ? writer_.pending() : writer_.deferred(); };
  if (!wanted()) return;
  CompletionList finished;
  uint64_t bytes = 0;
  {
    // Another thread holding the writer sends them anyway.
    std::unique_lock lock(writer_.mutex, std::try_to_lock);
    transport::Transport *t = live_transport();
    if (!lock || !wanted() || h_.state() != State::Ready || !t) return;
    // A failure leaves the requests queued and the direction WRITE: the caller's next
    // notify reports it, as it would have without the deferral.
    (void)writer_.run(*t, finished, bytes);
  }
  bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
  hand_off(finished);
}

Status Connection::disconnect(bool abandon_pending) {
  CompletionList finished;
  Status s;
  uint64_t bytes = 0;
  {
    std::lock_guard lock(writer_.mutex);
    if (disconnect_requested_.exchange(true)) return {};
    transport::Transport *t = live_transport();
    if (h_.state() != State::Ready || !t) return {};
    // Requests not yet started never reach the server; they fail here.  Deferred ones go
    // out first: libnbd would have sent them from their issuing calls.
    if (abandon_pending && writer_.deferred()) s = writer_.run(*t, finished, bytes);
    if (abandon_pending) writer_.abandon_unsent(table_, finished);
    WriteEntry e;
    wire::RequestHeader rh;
    rh.type = wire::kCmdDisc;
    e.header_len = uint8_t(wire::encode_request_header({e.header, sizeof e.header}, rh,
                                                       negotiated_.extended_headers));
    writer_.push(e);
    if (s) s = writer_.run(*t, finished, bytes);
  }
  bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
  chunks_sent.fetch_add(1, std::memory_order_relaxed);
  finish_completed(finished);
  if (!s) {
    fail(s.error());
    return s;
  }
  if (writer_.pending()) wake_pollers(PollerRegistry::Why::QueuedWrite);
  return {};
}

}  // namespace duplexnbd
