// SPDX-License-Identifier: LGPL-2.1-or-later
// Connection: drives the handshake, then runs the writer and reader machines side by side.
#include "engine/connection.h"

#include <poll.h>

#include <cerrno>
#include <cinttypes>
#include <vector>

#include "handle/debug.h"
#include "handle/error.h"
#include "handshake/handshake.h"
#include "libnbd.h"
#include "tls/tls_config.h"
#include "tls/tls_session.h"
#include "transport/socket_activation.h"
#include "transport/subprocess.h"
#include "wire/protocol.h"
#include "wire/request.h"

namespace duplexnbd {

Connection::Connection(Handle &h) : h_(h) {
  auto w = transport::Wakeup::create();
  if (w) wakeup_.emplace(std::move(*w));
  auto l = transport::Wakeup::create();
  if (l) leader_wakeup_.emplace(std::move(*l));
}

Connection::~Connection() {
  // Commands still queued or in flight are abandoned: their closures are freed without
  // their callbacks running, as libnbd does when a handle is closed.
  CompletionList dropped;
  {
    std::lock_guard lock(writer_.mutex);
    // Requests that waited for the driving thread's next poll still go out, once, as
    // libnbd would have sent them from their issuing calls (the server may act on them).
    uint64_t bytes = 0;
    // (A dead or closed connection has cleared its queue; the handle's state is already
    // gone at this point, see Handle.)
    if (writer_.deferred() && transport_) (void)writer_.run(*transport_, dropped, bytes);
    writer_.clear(dropped);
  }
  // The table deletes what it still holds; these it no longer does.
  while (Command *c = dropped.pop()) delete c;
  {
    std::lock_guard lock(handoff_mutex_);
    while (Command *c = handoff_.pop()) delete c;
  }
  if (transport_) transport_->close();
  handshake_.reset();
}

void Connection::adopt_subprocess(std::unique_ptr<transport::Subprocess> p) { subprocess_ = std::move(p); }
void Connection::adopt_socket_activation(std::unique_ptr<transport::SocketActivation> a) {
  activation_ = std::move(a);
}

transport::Subprocess *Connection::subprocess() {
  if (subprocess_) return subprocess_.get();
  if (activation_) return &activation_->process();
  return nullptr;
}

Error Connection::fatal_error() const {
  std::lock_guard lock(fatal_mutex_);
  if (fatal_.errnum == 0 && fatal_.message.empty()) return make_error(ENOTCONN, "connection is dead");
  return fatal_;
}

// ---------------------------------------------------------------------------
// Starting.

Status Connection::start_connector(std::unique_ptr<transport::Connector> c) {
  h_.set_state(State::Connecting);
  connector_ = std::move(c);
  if (connector_->done()) return start_with_fd(connector_->take_fd());
  fd_.store(connector_->fd());
  return {};
}

Status Connection::start_with_fd(transport::FileDescriptor fd) {
  h_.set_state(State::Connecting);
  connector_.reset();
  fd_.store(fd.get());
  transport_ = std::make_unique<transport::SocketTransport>(std::move(fd));
  return start_handshake();
}

Status Connection::start_handshake() {
  handshake::Config cfg;
  tls::TlsConfig tls_cfg;
  {
    std::lock_guard lock(h_.settings_mutex);
    cfg = handshake::config_from(h_.settings);
    tls_cfg = tls::TlsConfig::from_settings(h_.settings);
  }
  if (tls::tls_compiled_in()) {
    // STARTTLS accepted: the TLS session replaces the plain socket for everything after,
    // handshake and both transmission machines alike.
    cfg.upgrade_to_tls = [this, tls_cfg]() -> Status {
      auto s = tls::start_tls_client(transport_, tls_cfg);
      if (!s) return s.take_error();
      tls_session_ = s->get();
      transport_ = std::move(*s);
      return {};
    };
    cfg.tls_handshake_step = [this]() -> Result<handshake::Want> {
      auto r = tls_session_->handshake_step();
      if (!r) {
        if (std::string why = tls_session_->verification_failure(); !why.empty())
          debug(h_, "server certificate rejected: %s", why.c_str());
        return r.take_error();
      }
      switch (*r) {
        case tls::HandshakeProgress::WantRead: return handshake::Want::Read;
        case tls::HandshakeProgress::WantWrite: return handshake::Want::Write;
        case tls::HandshakeProgress::Done: break;
      }
      debug(h_, "connection is using TLS: %s", tls_session_->description().c_str());
      return handshake::Want::None;
    };
  }
  std::vector<std::function<void()>> deferred;
  {
    std::lock_guard lock(handshake_mutex_);
    handshake_ = std::make_unique<handshake::Handshake>(std::move(cfg), negotiated_, h_);
    after_handshake_step();
    handshake_->take_deferred(deferred);
  }
  for (auto &f : deferred) f();
  return {};
}

// ---------------------------------------------------------------------------
// Direction and notifications.

int Connection::fd() const { return fd_.load(std::memory_order_acquire); }

unsigned Connection::direction() const {
  switch (h_.state()) {
    case State::Connecting:
      if (!transport_) return LIBNBD_AIO_DIRECTION_WRITE;  // connect() in progress
      switch (handshake_ ? handshake_->wants() : handshake::Want::None) {
        case handshake::Want::Read: return LIBNBD_AIO_DIRECTION_READ;
        case handshake::Want::Write: return LIBNBD_AIO_DIRECTION_WRITE;
        default: return 0;
      }
    case State::Ready: {
      // Always READ in transmission, to notice replies and the server hanging up.
      if (writer_.pending() || handoff_pending_.load(std::memory_order_acquire)) {
        write_observed_.store(true, std::memory_order_relaxed);
        return LIBNBD_AIO_DIRECTION_BOTH;
      }
      return LIBNBD_AIO_DIRECTION_READ;
    }
    default:
      return 0;
  }
}

bool Connection::processing() const {
  // Deferred requests are not being sent yet: libnbd would have sent them and be ready.
  return h_.state() == State::Ready &&
         ((writer_.pending() && !writer_.deferred()) || reader_.mid_reply());
}

Status Connection::read_side(CallbackBudget *budget) {
  switch (h_.state()) {
    case State::Connecting:
    case State::Negotiating:
      return run_handshake_io(true, false);
    case State::Ready:
      break;
    default:
      return {};
  }
  CompletionList finished;
  Result<ReplyReader::Outcome> r = ReplyReader::Outcome::Blocked;
  uint64_t bytes = 0, chunks = 0;
  bool refill = false;
  {
    // A second reader (another thread, or a callback re-entering) has nothing to add.
    std::unique_lock lock(reader_.mutex, std::try_to_lock);
    if (!lock) return {};
    if (h_.state() != State::Ready || !transport_) return {};
    r = reader_.run(*transport_, table_, finished, bytes, chunks);
    const uint64_t answered = reader_.answered_request_bytes();
    if (answered - refill_mark_ >= kRefillBytes) {
      refill_mark_ = answered;
      refill = true;
    }
  }
  bytes_received.fetch_add(bytes, std::memory_order_relaxed);
  chunks_received.fetch_add(chunks, std::memory_order_relaxed);
  finish_completed(finished, budget);
  if (!r) {
    // After NBD_CMD_DISC with nothing left to answer, the server may end the session any
    // way it likes (a TLS server often without close_notify, or with a reset): that is
    // the close we asked for, not a failure.
    if (disconnect_requested() && table_.in_flight() == 0 && !writer_.pending()) {
      debug(h_, "server ended the session after disconnect: %s", r.error().message.c_str());
      return on_end_of_stream();
    }
    Error e = r.take_error();
    fail(e);
    return e;
  }
  if (h_.state() == State::Dead) {
    reap_dead();
    return fatal_error();
  }
  if (h_.state() == State::Closed) {
    reap_dead();
    return {};
  }
  if (*r == ReplyReader::Outcome::EndOfStream) return on_end_of_stream();
  // Requests issued from the callbacks just run go out now; and so does what waits
  // behind a full socket once the replies show that the server has read a good part of
  // it. Left to POLLOUT, which a Unix socket reports only once its queue is down to a
  // quarter of the send buffer, the queue would run low before a writer refilled it
  // whenever requests are large.
  flush_queued(refill ? Flush::Queued : Flush::Deferred);
  return {};
}

Status Connection::on_end_of_stream() {
  // A clean end of stream closes the handle, as libnbd's does; commands still waiting
  // for a reply can never get one and fail with ENOTCONN.
  bool stranded = table_.in_flight() != 0 || writer_.pending();
  {
    std::lock_guard lock(fatal_mutex_);
    if (h_.state() == State::Dead || h_.state() == State::Closed) return {};
    fatal_ = make_error(ENOTCONN, "server closed the connection");
    h_.set_state(State::Closed);
  }
  debug(h_, stranded ? "server closed the connection with commands in flight"
                     : "server closed the connection");
  reap_dead();
  notify_waiters();
  wake_pollers();
  return {};
}

Status Connection::write_side(CallbackBudget *budget) {
  switch (h_.state()) {
    case State::Connecting:
    case State::Negotiating:
      return run_handshake_io(false, true);
    case State::Ready:
      break;
    default:
      return {};
  }
  if (handoff_pending_.load(std::memory_order_acquire)) {
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
    if (h_.state() != State::Ready || !transport_) return {};
    s = writer_.run(*transport_, finished, bytes);
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

Status Connection::run_handshake_io(bool readable, bool writable) {
  std::vector<std::function<void()>> deferred;
  Status s;
  bool start = false;
  {
    std::lock_guard lock(handshake_mutex_);
    if (!transport_) {
      if (writable && connector_) {
        s = connector_->on_writable();
        if (s && connector_->done()) start = true;
      }
    } else if (handshake_) {
      uint64_t sent0 = handshake_->bytes_sent(), recv0 = handshake_->bytes_received();
      const uint64_t csent0 = handshake_->chunks_sent(), crecv0 = handshake_->chunks_received();
      if (readable) s = handshake_->on_readable(*transport_);
      if (s && writable) s = handshake_->on_writable(*transport_);
      bytes_sent.fetch_add(handshake_->bytes_sent() - sent0, std::memory_order_relaxed);
      bytes_received.fetch_add(handshake_->bytes_received() - recv0, std::memory_order_relaxed);
      chunks_sent.fetch_add(handshake_->chunks_sent() - csent0, std::memory_order_relaxed);
      chunks_received.fetch_add(handshake_->chunks_received() - crecv0, std::memory_order_relaxed);
      if (s) after_handshake_step();
      handshake_->take_deferred(deferred);
    }
  }
  for (auto &f : deferred) f();
  if (!s) {
    Error e = s.take_error();
    fail(e);
    return e;
  }
  if (start) {
    auto fd = connector_->take_fd();
    return start_with_fd(std::move(fd));
  }
  return {};
}

void Connection::after_handshake_step() {
  switch (handshake_->phase()) {
    case handshake::Phase::Running:
      h_.set_state(State::Connecting);
      break;
    case handshake::Phase::Negotiating:
      h_.set_state(State::Negotiating);
      notify_waiters();
      break;
    case handshake::Phase::Done:
      enter_transmission();
      break;
    case handshake::Phase::Closed:
      if (transport_) transport_->shutdown_write();
      h_.set_state(State::Closed);
      notify_waiters();
      break;
    case handshake::Phase::Dropped:
      if (transport_) transport_->shutdown_write();
      {
        std::lock_guard lock(fatal_mutex_);
        fatal_ = make_error(ENOTCONN, "connection dropped: the server is not fixed newstyle");
        h_.set_state(State::Dead);
      }
      notify_waiters();
      break;
  }
}

void Connection::enter_transmission() {
  {
    std::lock_guard lock(reader_.mutex);
    reader_.configure(negotiated_);
  }
  write_observed_.store(false);
  h_.set_state(State::Ready);
  debug(h_, "connected: %s, size %" PRIu64, negotiated_.protocol.c_str(), negotiated_.info.size);
  notify_waiters();
}

// ---------------------------------------------------------------------------
// Commands.

Result<uint64_t> Connection::issue(CommandPtr cmd) {
  if (disconnect_requested_.load(std::memory_order_acquire))
    return make_error(ESHUTDOWN, "cannot issue a command after disconnect was requested");
  Command *c = cmd.release();
  WriteEntry e;
  const bool extended = negotiated_.extended_headers;
  // The issuing call holds a third reference until it is done with the command, so the
  // reader, however fast the reply, never completes a command whose aio call has not
  // returned yet.  libnbd's handle lock gives programs that guarantee, and nbdfuse (for
  // one) counts a command as its own only once the aio call has returned.
  c->refs.fetch_add(1, std::memory_order_relaxed);
  c->issuing.store(true, std::memory_order_relaxed);
  // Registered before a byte is sent: the reply may arrive before this call returns.
  uint64_t cookie = table_.add(c);
  wire::RequestHeader rh;
  rh.flags = c->flags;
  rh.type = c->type;
  rh.cookie = cookie;
  rh.offset = c->offset;
  // Only a request that carries a payload has its payload length in the header; any
  // other command the caller flagged anyway (strict mode off) keeps its effect length.
  rh.length = (extended && (c->flags & wire::kCmdFlagPayloadLen) && c->payload) ? c->payload_len
                                                                                : c->count;
  e.header_len = uint8_t(wire::encode_request_header({e.header, sizeof e.header}, rh, extended));
  e.payload = static_cast<const uint8_t *>(c->payload);
  e.payload_len = c->payload_len;
  e.cmd = c;
  if (e.header_len == 0) {
    // Cannot happen after the entry point's checks; fail the command, not the handle.
    table_.forget(c);
    delete c;
    return make_error(EINVAL, "request cannot be encoded");
  }
  CompletionList finished;
  Status s;
  uint64_t bytes = 0;
  bool left_pending;
  bool deferred = false;
  {
    std::lock_guard lock(writer_.mutex);
    if (may_defer_send(e.total())) {
      // The caller drives the handle itself and already waits for a reply, so it will be
      // back in get_direction, a notify or a poll before anything else can happen: the
      // requests it issues until then leave in one sendmsg (one system call and socket
      // buffer instead of one per request, and the server wakes once for all of them).
      // Its next get_direction sends them before it polls; until then the direction
      // says WRITE, as the documentation of nbd_aio_get_direction allows.
      writer_.push_deferred(e);
      deferred = true;
    } else {
      writer_.push(e);
      // Send at once from the caller's thread when the socket takes it, as libnbd does;
      // what does not fit stays queued for whoever polls for POLLOUT.
      s = writer_.run(*transport_, finished, bytes);
    }
    left_pending = writer_.pending();
  }
  bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
  chunks_sent.fetch_add(1, std::memory_order_relaxed);
  // Whatever would complete now, this command included once the issuing reference is
  // dropped, would run its callbacks inside the aio call, before the caller has the
  // cookie: libnbd never does that, so it is handed to the next thread that drives the
  // handle.
  if (c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) finished.push(c);
  hand_off(finished);
  // Even a hand-off is not enough on its own: another thread could take it over before
  // this call has returned.  Its callbacks wait for this (IssueGate).
  issue_gate_.open(c);
  if (!s) {
    fail(s.error());
    return cookie;
  }
  // A deferred request needs no wake-up: no other thread polls (see may_defer_send).
  if (left_pending && !deferred) wake_pollers(Wake::QueuedWrite);
  return cookie;
}

namespace {
// At most this much waits for the driving thread's next poll (see may_defer_send).
constexpr uint64_t kMaxDeferredBytes = 64 * 1024;
// How many calls in a row one thread must drive the handle before its requests wait:
// where two threads take turns (one notify_read, one notify_write) the other one
// would often be the thread that ends up sending them.
constexpr unsigned kSoloCalls = 16;

// Identifies the calling thread cheaply (std::thread::id is not lock-free to share).
uintptr_t this_thread_token() {
  static thread_local char token;
  return reinterpret_cast<uintptr_t>(&token);
}
}  // namespace

void Connection::note_driver() {
  // Plain loads and stores: a count lost to a race only delays or ends one batch.
  uintptr_t me = this_thread_token();
  if (driver_.load(std::memory_order_relaxed) != me) {
    driver_.store(me, std::memory_order_relaxed);
    solo_calls_.store(0, std::memory_order_relaxed);
    return;
  }
  unsigned n = solo_calls_.load(std::memory_order_relaxed);
  if (n < kSoloCalls) solo_calls_.store(n + 1, std::memory_order_relaxed);
}

bool Connection::may_defer_send(uint64_t bytes) const {
  // Only for the thread that drives the handle alone: nobody else is blocked in one of
  // our polls (it would not be polling for POLLOUT), and the last threads to ask for the
  // direction, notify or poll were this one, so it will do so again.  And only while a
  // request already sent awaits its reply: the caller must come back for that reply, and
  // every such call sends what was deferred, so a caller that polls only for POLLIN
  // delays its requests but never hangs.
  if (driver_.load(std::memory_order_relaxed) != this_thread_token()) return false;
  if (solo_calls_.load(std::memory_order_relaxed) < kSoloCalls) return false;
  if (in_poll_.load(std::memory_order_relaxed) != 0) return false;
  if (leader_polling_.load(std::memory_order_relaxed)) return false;
  // Behind a half-sent request the socket is full: nothing is gained by waiting.
  if (writer_.pending() && !writer_.deferred()) return false;
  // Batching pays for small requests, whose cost is the system call and the socket
  // buffer per send; a large payload is worth sending now, while the server may be idle.
  if (writer_.deferred_bytes() + bytes > kMaxDeferredBytes) return false;
  // The new command is in the table and, like the queued ones, not yet sent.
  return table_.awaiting_reply() > writer_.queued() + 1;
}

void Connection::flush_queued(Flush what) {
  auto wanted = [&] { return what == Flush::Queued ? writer_.pending() : writer_.deferred(); };
  if (!wanted()) return;
  CompletionList finished;
  uint64_t bytes = 0;
  {
    // Another thread holding the writer sends them anyway.
    std::unique_lock lock(writer_.mutex, std::try_to_lock);
    if (!lock || !wanted() || h_.state() != State::Ready || !transport_) return;
    // A failure leaves the requests queued and the direction WRITE: the caller's next
    // notify reports it, as it would have without the deferral.
    (void)writer_.run(*transport_, finished, bytes);
  }
  bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
  hand_off(finished);
}

unsigned Connection::direction_for_poll() {
  note_driver();
  flush_queued(Flush::Deferred);
  return direction();
}

Status Connection::notify_read() {
  note_driver();
  return read_side(nullptr);
}

Status Connection::notify_write() {
  note_driver();
  return write_side(nullptr);
}

void Connection::hand_off(CompletionList &list) {
  if (list.empty()) return;
  {
    std::lock_guard lock(handoff_mutex_);
    while (Command *c = list.pop()) handoff_.push(c);
    handoff_pending_.store(true, std::memory_order_release);
  }
  // Direction now includes WRITE, so a POLLOUT poll (nbd_poll, a blocking call's
  // leader, a classic loop) comes back to notify_write at once and finishes them.
  wake_pollers();
  notify_waiters();
}

void Connection::hand_back(CompletionList &list) {
  {
    std::lock_guard lock(handoff_mutex_);
    handoff_.splice_front(list);
    handoff_pending_.store(true, std::memory_order_release);
  }
  wake_pollers();
}

void Connection::finish_handed_off(CallbackBudget *budget) {
  if (!handoff_pending_.load(std::memory_order_acquire)) return;
  if (budget && budget->spent()) return;
  CompletionList list;
  {
    std::lock_guard lock(handoff_mutex_);
    list.splice_front(handoff_);
    handoff_pending_.store(false, std::memory_order_release);
  }
  finish_completed(list, budget);
}

Status Connection::disconnect(bool abandon_pending) {
  if (disconnect_requested_.exchange(true)) return {};
  CompletionList finished;
  Status s;
  uint64_t bytes = 0;
  {
    std::lock_guard lock(writer_.mutex);
    // Requests not yet started never reach the server; they fail here.  Deferred ones go
    // out first: libnbd would have sent them from their issuing calls.
    if (abandon_pending && writer_.deferred()) s = writer_.run(*transport_, finished, bytes);
    if (abandon_pending) writer_.abandon_unsent(table_, finished);
    WriteEntry e;
    wire::RequestHeader rh;
    rh.type = wire::kCmdDisc;
    e.header_len = uint8_t(wire::encode_request_header({e.header, sizeof e.header}, rh,
                                                       negotiated_.extended_headers));
    writer_.push(e);
    if (s) s = writer_.run(*transport_, finished, bytes);
  }
  bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
  chunks_sent.fetch_add(1, std::memory_order_relaxed);
  finish_completed(finished);
  if (!s) {
    fail(s.error());
    return s;
  }
  wake_pollers();
  return {};
}

void Connection::finish_completed(CompletionList &list, CallbackBudget *budget) {
  if (list.empty()) return;
  auto spent = [budget] { return budget && budget->spent(); };
  auto complete = [&](Command *c) {
    bool calls_back = bool(c->completion);
    run_completion(c);
    if (budget && calls_back) budget->spend();
  };
  // Commands whose issuing call has not returned yet go last, so that a poll waits for
  // an issuer only when nothing else is ready.  Once the budget is spent the rest is
  // handed back unscanned.
  CompletionList issuing;
  while (!spent()) {
    Command *c = list.pop();
    if (!c) break;
    if (c->issuing.load(std::memory_order_acquire))
      issuing.push(c);
    else
      complete(c);
  }
  while (!spent()) {
    Command *c = issuing.pop();
    if (!c) break;
    issue_gate_.wait(c);
    complete(c);
  }
  list.splice_front(issuing);
  if (!list.empty()) hand_back(list);
  notify_waiters();
}

void Connection::run_completion(Command *c) {
  c->settle_read_buffer();
  table_.begin_callbacks(c);
  bool retire = false;
  if (c->completion) {
    int err = c->error;
    int r = c->completion(&err);
    // As for every callback with an error parameter, only a failing callback (-1) may
    // change the command's error, and never to 0.
    if (r == -1 && err != 0) c->error = err;
    retire = (r == 1);
  }
  // Mid-command callbacks, then completion, then the frees, as libnbd orders them.
  c->chunk.reset();
  c->extent.reset();
  c->extent64.reset();
  c->completion.reset();
  if (retire) {
    table_.retired(c);
    delete c;
  } else {
    table_.push_done(c);
  }
}

const char *failed_command_name(uint16_t type) {
  switch (type) {
    case wire::kCmdRead: return "read";
    case wire::kCmdWrite: return "write";
    case wire::kCmdDisc: return "disconnect";
    case wire::kCmdFlush: return "flush";
    case wire::kCmdTrim: return "trim";
    case wire::kCmdCache: return "cache";
    case wire::kCmdWriteZeroes: return "write-zeroes";
    case wire::kCmdBlockStatus: return "block-status";
    default: return "UNKNOWN!";
  }
}

int Connection::command_completed(uint64_t cookie) {
  bool in_flight = false;
  Command *c = table_.take_done(cookie, &in_flight);
  // As in libnbd, a cookie that is not (or no longer) known is simply "not completed".
  if (!c) return 0;
  int err = c->error;
  uint16_t type = c->type;
  delete c;
  if (err != 0) {
    set_error(err, "%s: command failed", failed_command_name(type));
    return -1;
  }
  return 1;
}

int64_t Connection::peek_completed() {
  uint64_t cookie = table_.first_done();
  if (cookie) return int64_t(cookie);
  if (table_.in_flight() > 0) return 0;
  set_error(EINVAL, "no commands are in flight");
  return -1;
}

int Connection::in_flight() const { return table_.in_flight(); }

void Connection::fail(const Error &e) {
  bool first;
  {
    std::lock_guard lock(fatal_mutex_);
    // A closed handle stays closed; only the reaping below is still owed.
    first = h_.state() != State::Dead && h_.state() != State::Closed;
    if (first) {
      fatal_ = e;
      h_.set_state(State::Dead);
    }
  }
  if (first) debug(h_, "connection failed: %s", e.message.c_str());
  if (first) {
    // An option in flight during negotiation completes with the error, exactly once.
    std::vector<std::function<void()>> deferred;
    {
      std::unique_lock lock(handshake_mutex_, std::try_to_lock);
      if (lock && handshake_) {
        handshake_->abandon(e);
        handshake_->take_deferred(deferred);
      }
    }
    for (auto &f : deferred) f();
  }
  // Reaping is retried even when already dead: an earlier attempt may have found the
  // reader busy, and that thread may have left without reaping (its own failure ends
  // here too). Commands must all complete, or blocking callers would wait for ever.
  reap_dead();
  if (!first) return;
  notify_waiters();
  wake_pollers();
}

void Connection::reap_dead() {
  // The reader may be inside a callback of the very command we would complete (and
  // perhaps that callback is what failed). Then it is the reader's owner that reaps,
  // once it lets go of the reader (see notify_read).
  std::unique_lock rlock(reader_.mutex, std::try_to_lock);
  if (!rlock) return;
  reader_.reset();
  // Nobody drives a dead handle: what was handed off completes now.
  finish_handed_off();
  CompletionList finished;
  {
    std::lock_guard wlock(writer_.mutex);
    writer_.clear(finished);
  }
  // As libnbd reports them: a command the dead connection strands failed with ENOTCONN,
  // whatever killed the connection (nbd_aio_in_flight(3)).
  const int err = ENOTCONN;
  for (Command *c : table_.take_all_in_flight()) {
    if (c->error == 0) c->error = err;
    if (c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) finished.push(c);
  }
  rlock.unlock();
  finish_completed(finished);
}

// ---------------------------------------------------------------------------
// Waiting.

void Connection::wake_pollers(Wake why) {
  // Pairs with the same read-modify-write in wait_until and at the start of each poll
  // round (all such RMWs on one atomic are ordered, and each later one acquires the
  // earlier): either the poller sees what the caller just published when it next
  // computes its direction, or the caller sees the poller (in wakeup_listeners_, or as
  // the leader) and wakes it.  (An RMW rather than a fence, which ThreadSanitizer does
  // not model.)
  order_point_.fetch_add(0, std::memory_order_acq_rel);
  // Most signals come from the only thread that polls, between its own polls (an
  // nbd_poll loop that issues from callbacks or hands back completions): it will compute
  // its direction afresh, so the eventfd write, and the read that drains it, are saved.
  if (wakeup_ && wakeup_listeners_.load(std::memory_order_relaxed) != 0) wakeup_->signal();
  if (!leader_polling_.load(std::memory_order_relaxed) || !leader_wakeup_) return;
  // A queued request needs no wake-up when the leader's round polls for POLLOUT: the round
  // clears leader_polls_write_ before its RMW and sets it only once its direction included
  // WRITE, so we see either this round's flag or the round sees our request.  A leader
  // that leaves hands over to a successor whose first round is such a round too.
  if (why == Wake::QueuedWrite && leader_polls_write_.load(std::memory_order_relaxed)) return;
  leader_wakeup_->signal();
}

void Connection::notify_waiters() {
  // Orders what the caller just published (a command's outcome, a state) before the
  // check, against a waiter that registers (an RMW on waiters_ too) and then checks its
  // condition: RMWs on one atomic are ordered, the later acquiring the earlier, so either
  // this sees the waiter or the waiter sees the outcome.  (Not a fence: ThreadSanitizer
  // does not model fences.)
  if (waiters_.fetch_add(0, std::memory_order_acq_rel) == 0) return;
  // Outside transmission every change is a state change that every waiter must see.
  const bool all = h_.state() != State::Ready;
  bool wake_leader;
  WaitList::Waiter *woken;
  {
    std::lock_guard lock(wait_mutex_);
    woken = followers_.take_done(all);
    // The leader is in poll(); only interrupt it when it has something to return for.
    wake_leader = leader_active_ && leader_id_ != std::this_thread::get_id() &&
                  (all || (*leader_done_)());
  }
  WaitList::post(woken);
  if (wake_leader && leader_wakeup_) leader_wakeup_->signal();
}

Result<int> Connection::poll_once(int timeout_ms, int extra_fd, bool leader) {
  if (leader) {
    leader_polls_write_.store(false, std::memory_order_relaxed);
    order_point_.fetch_add(0, std::memory_order_acq_rel);  // see wake_pollers
  }
  note_driver();
  unsigned dir = direction();
  int sock = fd();
  if (dir == 0 || sock < 0) {
    return make_error(EINVAL, std::string("nothing to poll for in state ") + state_name(h_.state()));
  }
  // nbd_poll runs one completion callback per call (see CallbackBudget); the blocking
  // callers' leader runs them all.
  CallbackBudget one;
  CallbackBudget *budget = leader ? nullptr : &one;
  if (budget && handoff_pending_.load(std::memory_order_acquire)) {
    // Completions left by an earlier poll (or handed off by an issuing call) are
    // progress enough without asking the kernel.
    finish_handed_off(budget);
    return 1;
  }
  // Only now, when the kernel is asked: requests issued between rounds that each ran one
  // handed-off callback leave together.
  if (writer_.deferred()) {
    flush_queued(Flush::Deferred);
    dir = direction();
  }
  if (transport_ && (dir & LIBNBD_AIO_DIRECTION_READ) && transport_->pending_read()) {
    Status s = read_side(budget);
    if (!s) return s.take_error();
    return 1;
  }
  // An nbd_poll caller about to wait on wakeup_ counts as listening before it computes
  // the direction it polls for, so whatever another thread publishes after that wakes
  // it (see wake_pollers); and only while it waits, as what it does itself before and
  // after, reply processing included, is seen by its caller's next poll.
  const bool listens = !leader && wakeup_;
  if (listens) {
    wakeup_listeners_.fetch_add(1, std::memory_order_relaxed);
    order_point_.fetch_add(0, std::memory_order_acq_rel);  // see wake_pollers
    dir = direction();
    if (dir == 0) {
      // The state changed meanwhile: the caller looks again.
      wakeup_listeners_.fetch_sub(1, std::memory_order_relaxed);
      return 1;
    }
  }
  struct pollfd fds[3];
  int n = 0;
  fds[n++] = {sock, short(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                          ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0)), 0};
  int wake_index = -1, extra_index = -1;
  // The blocking callers' leader has a wakeup of its own: several threads polling one
  // eventfd lose wake-ups (one drains it before the kernel has the others look), and
  // the leader must never miss the one saying its command is done.
  transport::Wakeup *wakeup = leader ? (leader_wakeup_ ? &*leader_wakeup_ : nullptr)
                                     : (wakeup_ ? &*wakeup_ : nullptr);
  if (wakeup) {
    wake_index = n;
    fds[n++] = {wakeup->fd(), POLLIN, 0};
  }
  if (extra_fd >= 0) {
    extra_index = n;
    fds[n++] = {extra_fd, POLLIN, 0};
  }
  if (leader && (dir & LIBNBD_AIO_DIRECTION_WRITE))
    leader_polls_write_.store(true, std::memory_order_relaxed);
  in_poll_.fetch_add(1, std::memory_order_relaxed);
  int r = ::poll(fds, nfds_t(n), timeout_ms);
  in_poll_.fetch_sub(1, std::memory_order_relaxed);
  if (listens) wakeup_listeners_.fetch_sub(1, std::memory_order_relaxed);
  if (r < 0) {
    if (errno == EINTR) return 0;
    return errno_error("poll");
  }
  if (r == 0) return 0;
  if (wake_index >= 0 && (fds[wake_index].revents & POLLIN)) wakeup->drain();
  short rev = fds[0].revents;
  // Both directions in one round: a single-threaded caller still gets full progress.
  if (rev & (POLLIN | POLLHUP | POLLERR)) {
    Status s = read_side(budget);
    if (!s) return s.take_error();
  }
  if ((rev & POLLOUT) && (direction() & LIBNBD_AIO_DIRECTION_WRITE)) {
    Status s = write_side(budget);
    if (!s) return s.take_error();
  }
  (void)extra_index;
  return 1;
}

Status Connection::wait_until(const std::function<bool()> &done) {
  waiters_.fetch_add(1);
  std::unique_lock lock(wait_mutex_);
  Status result;
  bool leading = false;
  for (;;) {
    if (done()) break;
    State s = h_.state();
    if (s == State::Dead) {
      result = fatal_error();
      break;
    }
    if (s == State::Closed || s == State::Created) {
      result = make_error(ENOTCONN, "the connection is closed");
      break;
    }
    if (!leader_active_) {
      leader_active_ = true;
      leader_id_ = std::this_thread::get_id();
      leader_done_ = &done;
      leader_polling_.store(true, std::memory_order_relaxed);
      order_point_.fetch_add(0, std::memory_order_acq_rel);  // see wake_pollers
      leading = true;
    }
    if (!leading) {
      // Woken only when our condition holds, the state changed, or the lead is ours.
      WaitList::Waiter me(done);
      followers_.push(me);
      lock.unlock();
      me.sleep();
      lock.lock();
      followers_.woken_one_ran();
      continue;
    }
    // The leader keeps the lead until its own condition holds: handing it over after
    // every poll round would cost a wake-up per round.
    lock.unlock();
    auto r = (direction() == 0) ? Result<int>(0) : poll_once(-1, -1, true);
    lock.lock();
    if (!r) {
      result = r.take_error();
      break;
    }
    if (direction() == 0 && !done() && h_.state() == State::Negotiating) {
      // Nothing can happen without the caller: negotiation waits for an opt_* call.
      result = make_error(EINVAL, "the handle is waiting for an option in opt mode");
      break;
    }
  }
  if (leading) {
    leader_active_ = false;
    leader_id_ = {};
    leader_done_ = nullptr;
    leader_polling_.store(false, std::memory_order_relaxed);
  }
  // Whoever leaves while nobody leads hands the lead to one follower, so followers never
  // all sleep without a leader (a follower woken to lead may itself be done and leave).
  WaitList::Waiter *successor = leader_active_ ? nullptr : followers_.take_successor();
  lock.unlock();
  WaitList::post(successor);
  waiters_.fetch_sub(1);
  return result;
}

}  // namespace duplexnbd
