// SPDX-License-Identifier: LGPL-2.1-or-later
// The NBD handshake as a resumable, non-blocking machine driven by socket readiness.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/negotiated.h"
#include "handle/closure.h"
#include "handle/handle.h"
#include "handshake/config.h"
#include "handshake/task.h"
#include "transport/transport.h"
#include "wire/option.h"

namespace duplexnbd::handshake {

// Running: exchanging bytes (handle state Connecting).
// Negotiating: opt mode, paused until a start_* call (handle state Negotiating).
// Done: the export is open (OPT_GO, EXPORT_NAME or oldstyle): transmission starts.
// Closed: opt_abort was sent: the connection is over.
// After an Error was returned the handshake is dead: phase() stays Running, wants() None.
// Dropped: the client hung up without a clean close (opt_abort to a server that is not
// fixed newstyle, which might not understand NBD_OPT_ABORT); the handle becomes DEAD.
enum class Phase : uint8_t { Running, Negotiating, Done, Closed, Dropped };

// The outcome of the most recent option started in opt mode.
struct OptionResult {
  uint64_t id = 0;        // 1 for the first start_* call, then 2, ...
  bool finished = false;
  bool refused = false;   // the server answered with an error reply
  int errnum = 0;         // what the completion callback was given; 0 = success
  Error error;            // when errnum != 0: what the blocking nbd_opt_* call reports
  uint64_t count = 0;     // exports (list) or contexts (meta context calls) delivered
};

// Threading: every member function except wants() must be called with Connection's
// handshake mutex held.  Callbacks (completion, list, context) never run inside; they are
// queued and handed out by take_deferred(), to be run once that mutex is released.
class Handshake {
public:
  // Starts at once (nothing is sent before the server's greeting is read).  Writes what
  // it learns into `out`, which nothing else may write while the handshake is alive.
  Handshake(Config cfg, Negotiated &out, Handle &h);
  ~Handshake();
  Handshake(const Handshake &) = delete;
  Handshake &operator=(const Handshake &) = delete;

  Want wants() const { return want_.load(std::memory_order_acquire); }
  Phase phase() const;
  // True once an Error was returned (or abandon() called): the handshake is over.
  bool failed() const { return failed_; }

  // Each does all the non-blocking I/O it can, whatever the notification was.  An Error
  // means the connection is unusable; any option in flight has been completed with it.
  Status on_readable(transport::Transport &t) { return step(t); }
  Status on_writable(transport::Transport &t) { return step(t); }

  void take_deferred(std::vector<std::function<void()>> &out);

  // Totals since construction.
  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }
  uint64_t chunks_sent() const { return chunks_sent_; }          // option requests
  uint64_t chunks_received() const { return chunks_received_; }  // greeting + option replies

  // ---- Opt mode.  Each start_* is valid in phase Negotiating only; on success the phase
  // is Running until the reply is complete, then Negotiating again (Done after a
  // successful GO, Closed after ABORT).  An Error return means nothing was sent.
  //
  // Picks up the settings that may change while negotiating (export name, requests, the
  // meta context list); call before each start_*.  A new export name forgets what was
  // learnt about the previous one.
  void refresh_config(const Config &c);
  // nbd_set_export_name while negotiating: what was learnt about the previous export
  // (size, flags, contexts) is forgotten at once, so the getters fail until the next
  // successful OPT_INFO / OPT_GO.  Ignored while an option is in flight (that option
  // keeps its name; the next refresh_config catches up).
  void select_export(const std::string &name);
  Status start_go(CompletionCallback completion);
  Status start_info(CompletionCallback completion);
  Status start_list(ListCallback list, CompletionCallback completion);
  // `queries` unset: the handle's list (nbd_add_meta_context).
  Status start_list_meta_context(std::optional<std::vector<std::string>> queries,
                                 ContextCallback context, CompletionCallback completion);
  Status start_set_meta_context(std::optional<std::vector<std::string>> queries,
                                ContextCallback context, CompletionCallback completion);
  Status start_structured_reply(CompletionCallback completion);
  Status start_extended_headers(CompletionCallback completion);
  Status start_starttls(CompletionCallback completion);
  Status start_abort();
  const OptionResult &last_result() const { return last_; }

  // The connection failed for a reason outside the handshake: an option in flight
  // completes with e.errnum (ENOTCONN if 0) and the handshake does nothing more.
  void abandon(const Error &e);

private:
  enum class Kind : uint8_t {
    Go, Info, List, ListMeta, SetMeta, StructuredReply, ExtendedHeaders, StartTls, Abort
  };
  struct Request {
    Kind kind = Kind::Go;
    std::shared_ptr<CompletionCallback> completion;
    std::shared_ptr<ListCallback> list;
    std::shared_ptr<ContextCallback> context;
    std::optional<std::vector<std::string>> queries;
  };
  struct Reply {
    wire::OptionReplyHeader header;
    std::vector<uint8_t> payload;
  };

  // ---- Awaiters: the only places the coroutine suspends.
  struct IoAwaiter {
    Handshake *hs;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> c) const noexcept { hs->resume_ = c; }
    void await_resume() const noexcept {}
  };
  // Waits for readiness on behalf of someone else's I/O (the TLS handshake).
  struct ExternalAwaiter {
    Handshake *hs;
    Want want;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> c) const noexcept {
      hs->resume_ = c;
      hs->external_ = true;
      hs->want_.store(want, std::memory_order_release);
    }
    void await_resume() const noexcept {}
  };
  struct RequestAwaiter {
    Handshake *hs;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> c) const noexcept {
      hs->resume_ = c;
      hs->waiting_request_ = true;
    }
    Request await_resume() const noexcept { return std::move(hs->request_); }
  };
  // Queue bytes and wait until they are all written; a best-effort send (the ABORT sent
  // on the way out of a failed handshake) treats a write error as done.
  IoAwaiter send(std::vector<uint8_t> bytes, bool best_effort = false);
  // Wait for exactly n bytes; they are in recv_buf_ afterwards.  Exact reads matter: whatever
  // follows the handshake (transmission replies, a TLS handshake) is not ours to consume.
  IoAwaiter recv(size_t n);
  RequestAwaiter next_request() { return RequestAwaiter{this}; }

  // ---- The coroutine (greeting.cpp: the overall sequence).
  Task<Status> run();
  Task<Status> automatic();
  Task<Status> option_loop();
  Task<Status> apply_tls_policy();

  // ---- Option exchanges (exchange.cpp, options.cpp, meta_context.cpp, go.cpp).  Those
  // returning Result<uint32_t> give the reply type that ended the exchange: kRepAck or an
  // error type; an Error is fatal to the connection.
  std::vector<uint8_t> option_request(uint32_t option, wire::ConstBytes payload);
  Task<Result<Reply>> recv_reply(uint32_t option);
  Task<Result<uint32_t>> simple_option(uint32_t option);
  Task<Result<uint32_t>> starttls();
  Task<Result<uint32_t>> list_exports(std::shared_ptr<ListCallback> cb);
  // `delivered`, when given, receives the number of NBD_REP_META_CONTEXT replies.
  Task<Result<uint32_t>> meta_context(uint32_t option, std::vector<std::string> queries,
                                      std::shared_ptr<ContextCallback> cb,
                                      size_t *delivered = nullptr);
  // The SET_META_CONTEXT that OPT_GO / OPT_INFO send first when contexts are wanted.
  Task<Status> automatic_set_meta();
  Task<Result<uint32_t>> info_or_go(uint32_t option);
  Task<Status> export_name();
  Task<Status> abort();
  // Opens the export: GO (after SET_META_CONTEXT when wanted), or EXPORT_NAME when the
  // server is not fixed newstyle or does not know GO.  kRepAck when it is open.
  Task<Result<uint32_t>> open_export();
  Status set_export_info(uint64_t size, uint16_t eflags);
  void forget_export();
  void note_export_opened();
  bool want_meta_on_go() const;

  // ---- Opt-mode bookkeeping (handshake.cpp).
  Status start(Request r);
  void finish_option(int errnum, Error error, bool refused);

  // ---- Driver (handshake.cpp).
  Status step(transport::Transport &t);
  Status resume_coroutine();
  Status fail(Error e);

  Config cfg_;
  Negotiated &out_;
  Handle &h_;

  Task<Status> main_;
  std::coroutine_handle<> resume_;
  std::atomic<Want> want_{Want::None};
  bool waiting_request_ = false;
  bool external_ = false;
  // Set when upgrade_to_tls swapped the transport: the one the current on_readable /
  // on_writable call was given must not be touched again.
  bool transport_replaced_ = false;
  bool done_ = false;
  bool failed_ = false;
  Phase outcome_ = Phase::Done;
  Error failure_;

  std::vector<uint8_t> send_buf_;
  size_t send_pos_ = 0;
  bool send_best_effort_ = false;
  std::vector<uint8_t> recv_buf_;
  std::string server_message_;  // what the last error reply said, if anything
  size_t recv_have_ = 0;
  uint64_t bytes_sent_ = 0, bytes_received_ = 0, chunks_sent_ = 0, chunks_received_ = 0;

  // What the greeting decided.
  bool fixed_ = false;
  bool no_zeroes_ = false;

  Request request_;   // handed from start_* to the coroutine
  Request current_;   // the option being processed
  bool option_active_ = false;
  OptionResult last_;
  uint64_t next_id_ = 1;
  std::vector<std::function<void()>> deferred_;
};

}  // namespace duplexnbd::handshake
