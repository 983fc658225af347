// SPDX-License-Identifier: LGPL-2.1-or-later
// Connection lifecycle: connecting, the handshake, the end of the connection, and nbd_close.
#include "engine/connection.h"

#include <sys/socket.h>

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

namespace duplexnbd {

Connection::Connection(Handle &h) : h_(h) {}

Connection::~Connection() {
  // nbd_close.  Requests that waited for the driving thread's next poll still go out,
  // once, as libnbd would have sent them from their issuing calls (the server may act on
  // them).  A dead or closed connection has cleared its queue already.
  CompletionList finished;
  {
    std::lock_guard lock(writer_.mutex);
    uint64_t bytes = 0;
    if (writer_.deferred() && h_.state() == State::Ready && transport_)
      (void)writer_.run(*transport_, finished, bytes);
    writer_.clear(finished);
  }
  // Whatever never finished is called back now, exactly once, and freed (the table still
  // holds the commands awaiting a reply, the queued ones among them).
  CompletionList abandoned;
  for (Command *c : table_.take_all_in_flight()) abandoned.push(c);
  completions_.close_out(finished, abandoned);
  if (transport_) transport_->close();
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

int Connection::fd() const { return fd_.load(std::memory_order_acquire); }

// A GnuTLS client session's own allocations, which GnuTLS does not report: its session
// state (some KiB) and the receive and send record buffers, each sized for the largest
// TLS record (16 KiB plus headroom).  Loaded credentials are not included.
constexpr size_t kTlsSessionEstimate = 48 * 1024;

size_t Connection::memory_estimate() {
  size_t bytes = sizeof(Connection) + reader_.memory_bytes() + table_.memory_bytes();
  {
    std::lock_guard lock(writer_.mutex);
    bytes += writer_.memory_bytes();
  }
  // The views are published once their objects are complete, and neither object goes
  // before the Connection, so reading through them needs no lock.
  if (handshake_view_.load(std::memory_order_acquire) != nullptr)
    bytes += sizeof(handshake::Handshake);
  if (transport::Transport *t = live_transport()) {
    if (dynamic_cast<tls::TlsSession *>(t) != nullptr)
      bytes += kTlsSessionEstimate;
    else
      bytes += sizeof(transport::SocketTransport);
  }
  return bytes;
}

// ---------------------------------------------------------------------------
// Starting.

Status Connection::start_connector(std::unique_ptr<transport::Connector> c) {
  std::vector<std::function<void()>> deferred;
  Status s;
  if (uint32_t ms = h_.connect_timeout_ms.load(std::memory_order_relaxed))
    deadlines_.set_connect(Deadlines::now() + int64_t(ms) * 1000000);
  {
    std::lock_guard lock(handshake_mutex_);
    h_.set_state(State::Connecting);
    connector_ = std::move(c);
    if (connector_->done()) {
      s = start_with_fd_locked(connector_->take_fd());
      if (handshake_) handshake_->take_deferred(deferred);
    } else {
      fd_.store(connector_->fd(), std::memory_order_release);
    }
  }
  for (auto &f : deferred) f();
  return s;
}

Status Connection::start_with_fd(transport::FileDescriptor fd) {
  std::vector<std::function<void()>> deferred;
  Status s;
  if (uint32_t ms = h_.connect_timeout_ms.load(std::memory_order_relaxed))
    deadlines_.set_connect(Deadlines::now() + int64_t(ms) * 1000000);
  {
    std::lock_guard lock(handshake_mutex_);
    s = start_with_fd_locked(std::move(fd));
    if (handshake_) handshake_->take_deferred(deferred);
  }
  for (auto &f : deferred) f();
  return s;
}

Status Connection::start_with_fd_locked(transport::FileDescriptor fd) {
  h_.set_state(State::Connecting);
  fd_.store(fd.get(), std::memory_order_release);
  transport_ = std::make_unique<transport::SocketTransport>(std::move(fd));
  transport_view_.store(transport_.get(), std::memory_order_release);
  return start_handshake_locked();
}

Status Connection::start_handshake_locked() {
  handshake::Config cfg;
  tls::TlsConfig tls_cfg;
  {
    std::lock_guard lock(h_.settings_mutex);
    cfg = handshake::config_from(h_.settings);
    tls_cfg = tls::TlsConfig::from_settings(h_.settings);
  }
  if (tls::tls_compiled_in()) {
    // STARTTLS accepted: the TLS session replaces the plain socket for everything after,
    // handshake and both transmission machines alike.  Both run inside a handshake step,
    // with handshake_mutex_ held.
    cfg.upgrade_to_tls = [this, tls_cfg]() -> Status {
      auto s = tls::start_tls_client(transport_, tls_cfg);
      if (!s) return s.take_error();
      tls_session_ = s->get();
      transport_ = std::move(*s);
      transport_view_.store(transport_.get(), std::memory_order_release);
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
  handshake_ = std::make_unique<handshake::Handshake>(std::move(cfg), negotiated_, h_);
  handshake_view_.store(handshake_.get(), std::memory_order_release);
  after_handshake_step();
  return {};
}

Status Connection::run_handshake_io(bool readable, bool writable) {
  std::vector<std::function<void()>> deferred;
  Status s;
  {
    std::lock_guard lock(handshake_mutex_);
    if (!transport_) {
      // Still connecting: only the socket becoming writable moves it on.
      if (writable && connector_) {
        s = connector_->on_writable();
        if (s && connector_->done()) s = start_with_fd_locked(connector_->take_fd());
      }
    } else if (handshake_ && (h_.state() == State::Connecting || h_.state() == State::Negotiating)) {
      uint64_t sent0 = handshake_->bytes_sent(), recv0 = handshake_->bytes_received();
      const uint64_t csent0 = handshake_->chunks_sent(), crecv0 = handshake_->chunks_received();
      if (readable) s = handshake_->on_readable(*transport_);
      if (s && writable) s = handshake_->on_writable(*transport_);
      bytes_sent.fetch_add(handshake_->bytes_sent() - sent0, std::memory_order_relaxed);
      bytes_received.fetch_add(handshake_->bytes_received() - recv0, std::memory_order_relaxed);
      chunks_sent.fetch_add(handshake_->chunks_sent() - csent0, std::memory_order_relaxed);
      chunks_received.fetch_add(handshake_->chunks_received() - crecv0, std::memory_order_relaxed);
      if (s) after_handshake_step();
    }
    if (handshake_) handshake_->take_deferred(deferred);
  }
  for (auto &f : deferred) f();
  if (!s) {
    Error e = s.take_error();
    fail(e);
    return e;
  }
  return {};
}

void Connection::after_handshake_step() {
  switch (handshake_->phase()) {
    case handshake::Phase::Running:
      h_.set_state(State::Connecting);
      return;
    case handshake::Phase::Negotiating:
      h_.set_state(State::Negotiating);
      break;
    case handshake::Phase::Done:
      enter_transmission();
      break;
    case handshake::Phase::Closed:
      if (transport_) transport_->shutdown_write();
      {
        std::lock_guard lock(fatal_mutex_);
        h_.set_state(State::Closed);
      }
      break;
    case handshake::Phase::Dropped:
      if (transport_) transport_->shutdown_write();
      {
        std::lock_guard lock(fatal_mutex_);
        fatal_ = make_error(ENOTCONN, "connection dropped: the server is not fixed newstyle");
        h_.set_state(State::Dead);
      }
      break;
  }
  // The connect timeout covers connecting, TLS and the handshake up to here.
  deadlines_.set_connect(0);
  // A state change: every blocked thread looks again.
  notify_waiters();
  wake_pollers(PollerRegistry::Why::Progress);
}

void Connection::enter_transmission() {
  // Before the state says Ready nobody runs the reader, so it is configured unguarded.
  reader_.configure(negotiated_);
  write_observed_.store(false);
  h_.set_state(State::Ready);
  debug(h_, "connected: %s, size %" PRIu64, negotiated_.protocol.c_str(), negotiated_.info.size);
}

// ---------------------------------------------------------------------------
// The end of the connection.

bool Connection::ended() const {
  State s = h_.state();
  return s == State::Dead || s == State::Closed;
}

bool Connection::end(State to, const Error &why) {
  State was;
  {
    std::lock_guard lock(fatal_mutex_);
    was = h_.state();
    if (was == State::Dead || was == State::Closed) return false;
    fatal_ = why;
    h_.set_state(to);
  }
  if (was == State::Connecting || was == State::Negotiating) {
    // An option in flight during negotiation completes with the error, exactly once.
    std::vector<std::function<void()>> deferred;
    {
      std::lock_guard lock(handshake_mutex_);
      if (handshake_) {
        handshake_->abandon(why);
        handshake_->take_deferred(deferred);
      }
    }
    for (auto &f : deferred) f();
  }
  // The server learns at once, as libnbd closes its socket on the way to DEAD.  Shut
  // down rather than closed: another thread may be in a call on the descriptor, and a
  // closed number could be reused under it; nbd_close closes it.
  if (to == State::Dead) {
    const int sock = fd_.load(std::memory_order_acquire);
    if (sock >= 0) ::shutdown(sock, SHUT_RDWR);
  }
  // From here on no command is issued (issue() checks the state under the writer's
  // mutex) and every one issued before is reaped.
  reap();
  notify_waiters();
  wake_pollers(PollerRegistry::Why::Progress);
  return true;
}

void Connection::fail(const Error &e) {
  if (end(State::Dead, e)) debug(h_, "connection failed: %s", e.message.c_str());
}

void Connection::on_end_of_stream() {
  // A clean end of stream closes the handle, as libnbd's does; commands still waiting
  // for a reply can never get one and fail with ENOTCONN.
  const bool stranded = table_.awaiting_reply() != 0 || writer_.pending();
  if (end(State::Closed, make_error(ENOTCONN, "server closed the connection")))
    debug(h_, stranded ? "server closed the connection with commands in flight"
                       : "server closed the connection");
}

void Connection::reap() {
  CompletionList finished;
  if (!reader_slot_.acquire_or_owe(ReaderSlot::kReap)) return;  // its owner reaps on release
  reap_with_reader(finished);
  release_reader(finished);
}

void Connection::reap_with_reader(CompletionList &finished) {
  reader_.reset();
  {
    std::lock_guard lock(writer_.mutex);
    writer_.clear(finished);
  }
  // As libnbd reports them: a command the ended connection strands failed with ENOTCONN,
  // whatever ended it (nbd_aio_in_flight(3)); but ETIMEDOUT when a timeout ended it
  // (DUPLEXNBD_TIMEOUT_CLOSE_CONNECTION).
  const int err = fatal_error().errnum == ETIMEDOUT ? ETIMEDOUT : ENOTCONN;
  for (Command *c : table_.take_all_in_flight()) {
    if (c->error == 0) c->error = err;
    if (c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) finished.push(c);
  }
}

void Connection::release_reader(CompletionList &finished, CompletionQueue::Budget *budget) {
  while (unsigned work = reader_slot_.release_or_owed()) {
    if (work & ReaderSlot::kAbandon) abandon_with_reader(finished);
    if (work & ReaderSlot::kReap) reap_with_reader(finished);
  }
  // Nobody drives an ended connection: what was handed off completes now too.
  if (ended()) finish_handed_off();
  finish_completed(finished, budget);
}

// ---------------------------------------------------------------------------
// Timeouts and cancellation (duplexnbd.h).

bool Connection::abandon(uint64_t cookie, int errnum) {
  CompletionList finished;
  bool on_wire = false;
  {
    std::lock_guard lock(writer_.mutex);
    Command *c = table_.find(cookie);
    if (!c || c->ghost) return false;
    if (writer_.queued_unsent(c) && table_.abandon(c)) {
      // Never sent, and now never will be; no reply can come for it.
      writer_.drop_unsent(c);
      c->error = errnum;
      c->refs.store(0, std::memory_order_relaxed);
      finished.push(c);
    } else {
      on_wire = true;
      std::lock_guard alock(abandon_mutex_);
      abandon_requests_.emplace_back(cookie, errnum);
    }
  }
  if (on_wire && reader_slot_.acquire_or_owe(ReaderSlot::kAbandon)) {
    abandon_with_reader(finished);
    release_reader(finished);
    return true;
  }
  finish_completed(finished);
  return true;
}

void Connection::abandon_with_reader(CompletionList &finished) {
  std::vector<std::pair<uint64_t, int>> requests;
  {
    std::lock_guard lock(abandon_mutex_);
    requests.swap(abandon_requests_);
  }
  std::lock_guard lock(writer_.mutex);
  for (auto [cookie, errnum] : requests) {
    // Completed meanwhile (its reply came first), or already abandoned: nothing to do.
    Command *c = table_.find(cookie);
    if (!c || c->ghost) continue;
    // The ghost takes the command's place on the wire: its references, the rest of its
    // request and its reply.  The command itself completes now, as any other.
    auto *g = new Command;
    g->ghost = true;
    g->cookie = c->cookie;
    g->type = c->type;
    g->flags = c->flags;
    g->offset = c->offset;
    g->count = c->count;
    g->payload_len = c->payload_len;
    g->reply_started = c->reply_started;
    g->data_seen = c->data_seen;
    g->refs.store(c->refs.load(std::memory_order_relaxed), std::memory_order_relaxed);
    writer_.retarget(c, g);
    table_.replace_with_ghost(c, g);
    reader_.replace(c, g);
    c->error = errnum;
    c->refs.store(0, std::memory_order_relaxed);
    finished.push(c);
  }
}

bool Connection::expire_due() {
  const int64_t next = deadlines_.next(), connect_at = deadlines_.connect();
  if (next == 0 && connect_at == 0) return false;
  const int64_t now = Deadlines::now();
  bool expired = false;
  if (connect_at != 0 && now >= connect_at) {
    deadlines_.set_connect(0);
    if (h_.state() == State::Connecting) {
      fail(make_error(ETIMEDOUT, "connection timed out"));
      expired = true;
    }
  }
  if (next == 0 || now < next) return expired;
  std::vector<uint64_t> due;
  deadlines_.take_due(now, due);
  const bool close = h_.timeout_policy.load(std::memory_order_relaxed) != 0;
  for (uint64_t cookie : due) {
    if (!table_.is_in_flight(cookie)) continue;
    expired = true;
    if (close) {
      // DUPLEXNBD_TIMEOUT_CLOSE_CONNECTION: the handle dies, and every command with it.
      fail(make_error(ETIMEDOUT, "command timed out: closing the connection"));
      break;
    }
    (void)abandon(cookie, ETIMEDOUT);
  }
  return expired;
}

}  // namespace duplexnbd
