// SPDX-License-Identifier: LGPL-2.1-or-later
// One connection to a server: the transport, the handshake, then the two transmission
// machines (RequestWriter, ReplyReader) and the table of commands between them.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "core/status.h"
#include "engine/command.h"
#include "engine/command_table.h"
#include "engine/completion_queue.h"
#include "engine/deadlines.h"
#include "engine/issue_gate.h"
#include "engine/negotiated.h"
#include "engine/poller_registry.h"
#include "engine/reader_slot.h"
#include "engine/reply_reader.h"
#include "engine/request_writer.h"
#include "engine/send_batching.h"
#include "engine/wait_list.h"
#include "handle/handle.h"
#include "transport/connector.h"
#include "transport/transport.h"
#include "transport/wakeup.h"
#include "uri/nbd_uri.h"

namespace duplexnbd {

namespace handshake {
class Handshake;
}
namespace tls {
class TlsSession;
}
namespace transport {
class Subprocess;
class SocketActivation;
}

// The concurrency protocol (locks, who drives the socket when, how blocked threads are
// woken, where callbacks run) is written down once, in docs/design.md, "Concurrency
// protocol".  The member functions live in one file per concern:
//   connection.cpp    starting, the handshake, the end of the connection, nbd_close
//   transmission.cpp  issuing, the direction, the reader and writer sides, disconnect
//   pollers.cpp       threads blocked in the library: nbd_poll and blocking callers
class Connection {
public:
  explicit Connection(Handle &h);
  ~Connection();
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  Handle &handle() { return h_; }

  // ---- Starting: each moves the handle to Connecting and starts the handshake when
  // the socket is up. Errors leave the handle Dead with the error set by the caller.
  Status start_connector(std::unique_ptr<transport::Connector> c);
  Status start_with_fd(transport::FileDescriptor fd);   // connected socket
  void adopt_subprocess(std::unique_ptr<transport::Subprocess> p);
  void adopt_socket_activation(std::unique_ptr<transport::SocketActivation> a);
  // The server process of connect_command or socket activation, if any.
  transport::Subprocess *subprocess();

  // How the connection was made, for nbd_get_uri (transport unset: not expressible).
  uri::UriInfo uri_info;

  // ---- The classic aio interface.
  int fd() const;                        // -1 before the socket exists
  unsigned direction() const;            // LIBNBD_AIO_DIRECTION_* bits
  // nbd_aio_get_direction: the caller is about to poll, so requests it left queued
  // (see issue()) go out first, many in one sendmsg.
  unsigned direction_for_poll();
  Status notify_read();                  // runs the reader side only
  Status notify_write();                 // runs the writer side only

  // ---- Threads blocked in the library (no handle-wide lock is held while waiting).
  // Polls and runs both directions until `done()` is true or the connection ends.
  // Several threads may wait at once: one leads (polls), the others sleep.
  Status wait_until(const std::function<bool()> &done);
  // nbd_poll / nbd_poll2: 1 if something was handled, 0 on timeout.
  Result<int> poll_once(int timeout_ms, int extra_fd = -1);

  // ---- Handshake (Connecting / Negotiating states).
  handshake::Handshake *handshake() { return handshake_.get(); }  // handshake_mutex() held
  std::mutex &handshake_mutex() { return handshake_mutex_; }
  // Called with handshake_mutex() held after every handshake step: publishes the new
  // state, moves to transmission when the handshake finished.
  void after_handshake_step();

  // ---- Transmission.
  const Negotiated &negotiated() const { return negotiated_; }
  Negotiated &negotiated_for_handshake() { return negotiated_; }

  // Issues a command (already validated). Returns its cookie, or an Error (the command
  // was not issued: its closures are freed without being called).
  Result<uint64_t> issue(CommandPtr cmd);
  // nbd_aio_command_completed / nbd_aio_peek_command_completed / nbd_aio_in_flight.
  int command_completed(uint64_t cookie) { return completions_.command_completed(cookie); }
  int64_t peek_completed() { return completions_.peek_completed(); }
  int in_flight() const { return completions_.in_flight(); }
  // Sends NBD_CMD_DISC (after pending commands unless abandon is set).
  Status disconnect(bool abandon_pending);
  bool disconnect_requested() const { return disconnect_requested_.load(); }
  bool processing() const;                 // something half sent or half received

  // Kills the connection: every command completes with its error (or ENOTCONN).
  void fail(const Error &e);

  // ---- Extensions (duplexnbd.h).
  // Completes the command with `errnum` now, whatever the server does: a request not sent
  // yet is never sent, one in flight is left to a ghost that throws its reply away (see
  // Command::ghost).  False (nothing done) if `cookie` is not a command in flight.
  bool abandon(uint64_t cookie, int errnum);
  // Every thread blocked in a wait or nbd_poll on the handle that began before returns
  // EINTR.  Async-signal-safe.
  void interrupt() { pollers_.interrupt(); }

  // Statistics (nbd_stats_*).
  std::atomic<uint64_t> bytes_sent{0}, chunks_sent{0}, bytes_received{0}, chunks_received{0};

  // The error that ended the connection, for blocking callers to report.
  Error fatal_error() const;

  // nbd_get_handle_size: an estimate of the memory this connection holds, from any
  // thread (takes the writer's lock and the table's, so not from a debug callback).
  size_t memory_estimate();

private:
  // ---- connection.cpp
  Status start_with_fd_locked(transport::FileDescriptor fd);  // handshake_mutex_ held
  Status start_handshake_locked();                             // handshake_mutex_ held
  Status run_handshake_io(bool readable, bool writable);
  void enter_transmission();
  bool ended() const;
  // Moves to Dead or Closed with `why`, once; true for the call that did.
  bool end(State to, const Error &why);
  void on_end_of_stream();
  // Reaps the ended connection's commands now, or leaves it to the reader's owner.
  void reap();
  void reap_with_reader(CompletionList &finished);   // reader slot held
  // Replaces the commands asked for by abandon() with ghosts.  Reader slot held.
  void abandon_with_reader(CompletionList &finished);
  // Completes the commands whose deadline passed, or fails a connect that took too long.
  // True if anything expired.
  bool expire_due();
  // Every release of the reader slot goes through here: a reap owed meanwhile is done
  // before the slot is free, and what finished is completed after.
  void release_reader(CompletionList &finished, CompletionQueue::Budget *budget = nullptr);

  // ---- transmission.cpp
  Status read_side(CompletionQueue::Budget *budget);
  Status write_side(CompletionQueue::Budget *budget);
  // Completes commands collected by the reader/writer, outside their locks; with a
  // budget, those beyond it are handed back.
  void finish_completed(CompletionList &list, CompletionQueue::Budget *budget = nullptr);
  void finish_handed_off(CompletionQueue::Budget *budget = nullptr);
  // Commands the calling thread may not run now (an aio call's): for the next driver.
  void hand_off(CompletionList &list);
  // Sends what is queued, unless another thread holds the writer: only requests
  // deferred by SendBatching, or everything, including what a full socket left.
  enum class Flush { Deferred, Queued };
  void flush_queued(Flush what);
  transport::Transport *live_transport() const {
    return transport_view_.load(std::memory_order_acquire);
  }

  // ---- pollers.cpp
  // One round of polling the socket (and the calling thread's wake-up, and `extra_fd`)
  // and running what is ready.  nbd_poll gives a budget of one completion callback; the
  // blocking callers' leader runs them all.
  Result<int> poll_round(int timeout_ms, int extra_fd, CompletionQueue::Budget *budget,
                         unsigned interrupts_at_start);
  // Wakes blocked callers whose condition now holds (all of them on a state change).
  void notify_waiters();
  void wake_pollers(PollerRegistry::Why why) { pollers_.wake(why); }

  Handle &h_;

  // Guards the connect and the handshake: connector_, handshake_, and every change of
  // transport_ (the socket once connected, the TLS session after STARTTLS).  Lock-free
  // readers see the transport and handshake through the views, published once their
  // objects are complete; neither object is destroyed before the Connection.
  std::mutex handshake_mutex_;
  std::unique_ptr<transport::Connector> connector_;
  std::unique_ptr<transport::Transport> transport_;
  std::atomic<transport::Transport *> transport_view_{nullptr};
  tls::TlsSession *tls_session_ = nullptr;  // transport_ itself once STARTTLS succeeded
  std::unique_ptr<handshake::Handshake> handshake_;
  std::atomic<handshake::Handshake *> handshake_view_{nullptr};
  std::atomic<int> fd_{-1};
  std::unique_ptr<transport::Subprocess> subprocess_;
  std::unique_ptr<transport::SocketActivation> activation_;
  Negotiated negotiated_;

  // Transmission: lock order reader slot -> writer -> table (and the small leaf locks).
  CommandTable table_;
  IssueGate issue_gate_;  // callbacks wait here for their issuing call to return
  CompletionQueue completions_{table_, issue_gate_};
  RequestWriter writer_;
  ReaderSlot reader_slot_;
  ReplyReader reader_{issue_gate_};  // reader_slot_ held
  // A broken stream that an nbd_poll found behind replies it completed is reported by the
  // next round, as libnbd (which handles one reply per nbd_poll) reports it: set with the
  // reader slot held, the error taken by whoever holds it next, before the reader runs.
  std::atomic<bool> broken_stream_pending_{false};
  Error broken_stream_;  // reader_slot_ held
  // Only a live connection has one to report: once it ended some other way (the writer
  // found the socket gone, a timeout), the pending error is moot.
  bool broken_stream_to_report() const {
    return broken_stream_pending_.load(std::memory_order_acquire) && h_.state() == State::Ready;
  }
  SendBatching batching_;
  mutable std::atomic<bool> write_observed_{false};
  std::atomic<bool> disconnect_requested_{false};  // set with the writer's mutex held

  Deadlines deadlines_;
  std::mutex abandon_mutex_;
  std::vector<std::pair<uint64_t, int>> abandon_requests_;  // guarded by abandon_mutex_

  mutable std::mutex fatal_mutex_;
  Error fatal_;  // guarded by fatal_mutex_; the state moves to Dead/Closed under it too

  // Threads blocked in poll(): their wake-ups.
  PollerRegistry pollers_;

  // Leader/follower waiting for blocking calls.
  std::mutex wait_mutex_;
  WaitList followers_;                                  // guarded by wait_mutex_
  bool leader_active_ = false;                          // guarded by wait_mutex_
  std::thread::id leader_id_;                           // guarded by wait_mutex_
  const std::function<bool()> *leader_done_ = nullptr;  // guarded by wait_mutex_
  transport::Wakeup *leader_wakeup_ = nullptr;          // guarded by wait_mutex_
  unsigned followers_interrupts_ = 0;  // interrupts the followers were woken for; wait_mutex_
  std::atomic<int> waiters_{0};
};

}  // namespace duplexnbd
