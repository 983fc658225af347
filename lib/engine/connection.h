// SPDX-License-Identifier: LGPL-2.1-or-later
// One connection to a server: the transport, the handshake, then the two transmission
// machines (RequestWriter, ReplyReader) and the table of commands between them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "core/status.h"
#include "engine/command.h"
#include "engine/command_table.h"
#include "engine/issue_gate.h"
#include "engine/negotiated.h"
#include "engine/reply_reader.h"
#include "engine/request_writer.h"
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

// The short name libnbd uses in "<name>: command failed" messages (NBD_CMD_READ -> "read").
const char *failed_command_name(uint16_t type);

// Lock order (outer first): handshake_mutex_ -> reader -> writer -> table.
// No lock is held while a caller's callback runs, except the reader's ownership
// while chunk/extent callbacks of the reply being parsed run (re-entrant reader
// calls from them return at once instead of deadlocking).
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

  // ---- Blocking helpers (no handle-wide lock is held while waiting).
  // Polls and runs both directions until `done()` is true or the connection fails.
  // Several threads may wait at once: one leads (polls), the others sleep.
  Status wait_until(const std::function<bool()> &done);
  // One round of nbd_poll / nbd_poll2: 1 if something was handled, 0 on timeout.
  Result<int> poll_once(int timeout_ms, int extra_fd = -1, bool leader = false);

  // ---- Handshake (Connecting / Negotiating states).
  handshake::Handshake *handshake() { return handshake_.get(); }
  std::mutex &handshake_mutex() { return handshake_mutex_; }
  // Called with handshake_mutex() held after every handshake step: publishes the new
  // state, moves to transmission when the handshake finished.
  void after_handshake_step();

  // ---- Transmission.
  const Negotiated &negotiated() const { return negotiated_; }
  Negotiated &negotiated_for_handshake() { return negotiated_; }

  // Issues a command (already validated). Returns its cookie, or an Error.
  Result<uint64_t> issue(CommandPtr cmd);
  // nbd_aio_command_completed / nbd_aio_peek_command_completed / nbd_aio_in_flight.
  int command_completed(uint64_t cookie);   // sets the error itself; -1 / 0 / 1
  int64_t peek_completed();
  int in_flight() const;
  // Sends NBD_CMD_DISC (after pending commands unless abandon is set).
  Status disconnect(bool abandon_pending);
  bool disconnect_requested() const { return disconnect_requested_.load(); }
  bool processing() const;                 // something half sent or half received

  // Kills the connection: every command completes with `e.errnum` (or ENOTCONN).
  void fail(const Error &e);

  // Statistics (nbd_stats_*).
  std::atomic<uint64_t> bytes_sent{0}, chunks_sent{0}, bytes_received{0}, chunks_received{0};

  // Wakes a thread blocked in poll inside the library; with none there, it costs no
  // system call.  For a request left queued (QueuedWrite) the blocking callers' leader
  // is only woken if its poll lacks POLLOUT.
  enum class Wake { Any, QueuedWrite };
  void wake_pollers(Wake why = Wake::Any);

  // The error that killed the connection, for blocking callers to report.
  Error fatal_error() const;
  transport::Transport *transport() { return transport_.get(); }

private:
  friend class RequestWriter;
  friend class ReplyReader;

  Status run_handshake_io(bool readable, bool writable);
  Status start_handshake();
  Status on_end_of_stream();
  void reap_dead();
  void enter_transmission();
  // How many completion callbacks one nbd_poll may run: one, as libnbd, whose state
  // machine stops after each reply.  Programs such as nbdfuse re-check their own count
  // of commands in flight between polls and stop polling at zero; running the callback
  // of a command its issuer has not counted yet, in the same poll as the last counted
  // one's, would take that count below zero.  The rest wait in the hand-off list, which
  // keeps the direction WRITE, so the next poll returns at once.
  class CallbackBudget {
  public:
    bool spent() const { return left_ == 0; }
    void spend() { --left_; }
  private:
    int left_ = 1;
  };

  // Completes commands collected by the reader/writer, outside their locks; with a
  // budget, those beyond it are handed back.
  void finish_completed(CompletionList &list, CallbackBudget *budget = nullptr);
  // Commands that the issuing call would have completed: see issue().
  void hand_off(CompletionList &list);
  void hand_back(CompletionList &list);  // to the front of the hand-off list
  void finish_handed_off(CallbackBudget *budget = nullptr);
  Status read_side(CallbackBudget *budget);
  Status write_side(CallbackBudget *budget);
  void run_completion(Command *c);
  void notify_waiters();
  // A thread that drives the handle (direction, notify, poll) and issues commands
  // between two such calls may have its requests wait for the next one: see issue().
  void note_driver();
  bool may_defer_send(uint64_t bytes) const;  // with the writer's mutex held
  // Sends what is queued, unless another thread holds the writer: only requests
  // deferred by may_defer_send, or everything, including what a full socket left.
  enum class Flush { Deferred, Queued };
  void flush_queued(Flush what);

  Handle &h_;
  std::unique_ptr<transport::Connector> connector_;
  std::unique_ptr<transport::Transport> transport_;
  tls::TlsSession *tls_session_ = nullptr;  // transport_ itself once STARTTLS succeeded
  std::atomic<int> fd_{-1};
  std::unique_ptr<transport::Subprocess> subprocess_;
  std::unique_ptr<transport::SocketActivation> activation_;

  std::mutex handshake_mutex_;
  std::unique_ptr<handshake::Handshake> handshake_;
  Negotiated negotiated_;

  CommandTable table_;
  IssueGate issue_gate_;  // callbacks wait here for their issuing call to return
  RequestWriter writer_;
  ReplyReader reader_{issue_gate_};
  std::optional<transport::Wakeup> wakeup_;         // nbd_poll and aio_get_fd users
  std::optional<transport::Wakeup> leader_wakeup_;  // the blocking callers' leader only
  std::atomic<bool> leader_polling_{false};
  std::atomic<uintptr_t> driver_{0};   // the thread that last drove the handle
  std::atomic<unsigned> solo_calls_{0}; // its calls since another thread drove it
  std::atomic<int> in_poll_{0};        // threads blocked in poll_once
  std::atomic<int> wakeup_listeners_{0};  // nbd_poll callers that will wait on wakeup_
  // The leader's current poll includes POLLOUT, so a newly queued request needs no
  // wake-up: the socket's writability reaches the leader anyway (see wake_pollers).
  std::atomic<bool> leader_polls_write_{false};
  std::atomic<unsigned> order_point_{0};  // orders wake_pollers against pollers
  mutable std::atomic<bool> write_observed_{false};
  std::mutex handoff_mutex_;
  CompletionList handoff_;                     // guarded by handoff_mutex_
  std::atomic<bool> handoff_pending_{false};
  mutable std::mutex fatal_mutex_;
  Error fatal_;

  std::atomic<bool> disconnect_requested_{false};

  // Reply processing refills the socket once this many request bytes were answered
  // since it last did: small requests keep waiting for POLLOUT and leave in batches.
  static constexpr uint64_t kRefillBytes = 64 * 1024;
  uint64_t refill_mark_ = 0;  // guarded by reader_.mutex

  // Leader/follower waiting for blocking calls.
  std::mutex wait_mutex_;
  WaitList followers_;                                 // guarded by wait_mutex_
  bool leader_active_ = false;
  std::thread::id leader_id_;
  const std::function<bool()> *leader_done_ = nullptr;  // the leader's condition
  std::atomic<int> waiters_{0};
};

}  // namespace duplexnbd
