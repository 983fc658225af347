// SPDX-License-Identifier: LGPL-2.1-or-later
// The handshake driver: non-blocking I/O for the coroutine, opt-mode requests and their results.
#include "handshake/handshake.h"

#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "handle/debug.h"
#include "handshake/limits.h"

namespace duplexnbd::handshake {

Handshake::Handshake(Config cfg, Negotiated &out, Handle &h)
    : cfg_(std::move(cfg)), out_(out), h_(h), main_(run()) {
  // Runs up to the first read of the greeting; nothing can fail before I/O.
  main_.start();
}

Handshake::~Handshake() = default;

Phase Handshake::phase() const {
  if (done_) return outcome_;
  if (waiting_request_) return Phase::Negotiating;
  return Phase::Running;
}

void Handshake::take_deferred(std::vector<std::function<void()>> &out) {
  for (auto &f : deferred_) out.push_back(std::move(f));
  deferred_.clear();
}

// ---------------------------------------------------------------------------
// I/O for the coroutine.

Handshake::IoAwaiter Handshake::send(std::vector<uint8_t> bytes, bool best_effort) {
  send_buf_ = std::move(bytes);
  send_pos_ = 0;
  send_best_effort_ = best_effort;
  want_.store(Want::Write, std::memory_order_release);
  return IoAwaiter{this};
}

Handshake::IoAwaiter Handshake::recv(size_t n) {
  recv_buf_.resize(n);
  recv_have_ = 0;
  want_.store(Want::Read, std::memory_order_release);
  return IoAwaiter{this};
}

Status Handshake::step(transport::Transport &t) {
  if (failed_) return failure_;
  for (;;) {
    if (done_) return {};
    if (external_) {
      // Someone else's I/O (the TLS handshake) waits for readiness: let it try once per
      // notification; if it still cannot progress, the caller polls again.
      external_ = false;
      want_.store(Want::None, std::memory_order_release);
      Status s = resume_coroutine();
      if (!s || external_ || transport_replaced_) return s;
      continue;
    }
    Want w = want_.load(std::memory_order_relaxed);
    if (w == Want::Write) {
      while (send_pos_ < send_buf_.size()) {
        struct iovec iov = {send_buf_.data() + send_pos_, send_buf_.size() - send_pos_};
        ssize_t n = t.send(&iov, 1, false);
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) return {};
          if (send_best_effort_) {
            debug(h_, "ignoring failure to send the last option: %s", strerror(errno));
            break;
          }
          return fail(errno_error("send"));
        }
        send_pos_ += size_t(n);
        bytes_sent_ += uint64_t(n);
      }
      send_buf_.clear();
      send_pos_ = 0;
    } else if (w == Want::Read) {
      while (recv_have_ < recv_buf_.size()) {
        ssize_t n = t.recv(recv_buf_.data() + recv_have_, recv_buf_.size() - recv_have_);
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) return {};
          return fail(errno_error("recv"));
        }
        // libnbd reports a server hanging up mid-handshake without an errno.
        if (n == 0) return fail(Error{0, "recv: server disconnected unexpectedly"});
        recv_have_ += size_t(n);
        bytes_received_ += uint64_t(n);
      }
    } else {
      return {};
    }
    want_.store(Want::None, std::memory_order_release);
    Status s = resume_coroutine();
    if (!s) return s;
    // The next call brings the new transport.
    if (transport_replaced_) return {};
    // Let Connection run the callbacks collected so far before reading more.
    if (deferred_.size() >= kMaxDeferredPerStep) return {};
  }
}

Status Handshake::resume_coroutine() {
  transport_replaced_ = false;
  std::exchange(resume_, {}).resume();
  if (!main_.done()) return {};
  Status &s = main_.result();
  if (!s) return fail(s.error());
  done_ = true;
  want_.store(Want::None, std::memory_order_release);
  return {};
}

Status Handshake::fail(Error e) {
  if (!failed_) {
    failed_ = true;
    external_ = false;
    failure_ = e;
    want_.store(Want::None, std::memory_order_release);
    if (option_active_) finish_option(e.errnum ? e.errnum : ENOTCONN, e, false);
  }
  return failure_;
}

void Handshake::abandon(const Error &e) {
  if (done_ || failed_) return;
  (void)fail(e);
}

// ---------------------------------------------------------------------------
// Opt mode.

void Handshake::refresh_config(const Config &c) {
  // Only between options: one in flight keeps the settings it started with.
  if (done_ || failed_ || option_active_ || !waiting_request_) return;
  // Normally select_export has already seen the new name; this covers a change made
  // while an option was in flight.
  if (c.export_name != cfg_.export_name) forget_export();
  cfg_.export_name = c.export_name;
  cfg_.request_block_size = c.request_block_size;
  cfg_.full_info = c.full_info;
  cfg_.request_meta_context = c.request_meta_context;
  cfg_.meta_contexts = c.meta_contexts;
}

void Handshake::select_export(const std::string &name) {
  if (done_ || failed_ || option_active_ || !waiting_request_) return;
  if (name == cfg_.export_name) return;
  cfg_.export_name = name;
  forget_export();
}

// What we learnt belongs to the old name, as libnbd forgets it on nbd_set_export_name.
void Handshake::forget_export() {
  out_.info = ExportInfo{};
  out_.meta_valid = false;
  out_.meta_contexts.clear();
}

Status Handshake::start(Request r) {
  if (failed_) return failure_;
  if (done_ || !waiting_request_ || option_active_)
    return Error{EINVAL, "invalid state: the handshake is not waiting for an option"};
  // A server that is not fixed newstyle may drop the connection on any option it does
  // not know, so only the two every newstyle server has are allowed.
  if (!fixed_ && r.kind != Kind::Go && r.kind != Kind::Abort)
    return Error{ENOTSUP, "server is not using fixed newstyle protocol"};
  // LIST_META_CONTEXT and SET_META_CONTEXT go out even without structured replies:
  // these calls exist to probe servers, and the server's answer (often an error, some
  // servers list anyway) is the caller's to see, as with libnbd.
  if (r.kind == Kind::StartTls && !cfg_.upgrade_to_tls)
    return Error{ENOTSUP, "TLS support was not compiled into this library"};

  last_ = OptionResult{};
  last_.id = next_id_++;
  option_active_ = r.kind != Kind::Abort;
  request_ = std::move(r);
  waiting_request_ = false;
  return resume_coroutine();
}

// Records the outcome and queues the callbacks: the completion first, then the frees of
// every closure of the option (libnbd's order).
void Handshake::finish_option(int errnum, Error error, bool refused) {
  last_.finished = true;
  last_.refused = refused;
  last_.errnum = errnum;
  last_.error = std::move(error);
  option_active_ = false;
  Request r = std::move(current_);
  current_ = Request{};
  deferred_.push_back([completion = std::move(r.completion), list = std::move(r.list),
                       context = std::move(r.context), errnum] {
    if (completion && completion->has_callback()) {
      int e = errnum;
      (*completion)(&e);
    }
    if (list) list->reset();
    if (context) context->reset();
    if (completion) completion->reset();
  });
}

Status Handshake::start_go(CompletionCallback completion) {
  Request r;
  r.kind = Kind::Go;
  r.completion = std::make_shared<CompletionCallback>(std::move(completion));
  return start(std::move(r));
}

Status Handshake::start_info(CompletionCallback completion) {
  Request r;
  r.kind = Kind::Info;
  r.completion = std::make_shared<CompletionCallback>(std::move(completion));
  return start(std::move(r));
}

Status Handshake::start_list(ListCallback list, CompletionCallback completion) {
  Request r;
  r.kind = Kind::List;
  r.list = std::make_shared<ListCallback>(std::move(list));
  r.completion = std::make_shared<CompletionCallback>(std::move(completion));
  return start(std::move(r));
}

Status Handshake::start_list_meta_context(std::optional<std::vector<std::string>> queries,
                                          ContextCallback context, CompletionCallback completion) {
  Request r;
  r.kind = Kind::ListMeta;
  r.queries = std::move(queries);
  r.context = std::make_shared<ContextCallback>(std::move(context));
  r.completion = std::make_shared<CompletionCallback>(std::move(completion));
  return start(std::move(r));
}

Status Handshake::start_set_meta_context(std::optional<std::vector<std::string>> queries,
                                         ContextCallback context, CompletionCallback completion) {
  Request r;
  r.kind = Kind::SetMeta;
  r.queries = std::move(queries);
  r.context = std::make_shared<ContextCallback>(std::move(context));
  r.completion = std::make_shared<CompletionCallback>(std::move(completion));
  return start(std::move(r));
}

Status Handshake::start_structured_reply(CompletionCallback completion) {
  Request r;
  r.kind = Kind::StructuredReply;
  r.completion = std::make_shared<CompletionCallback>(std::move(completion));
  return start(std::move(r));
}

Status Handshake::start_extended_headers(CompletionCallback completion) {
  Request r;
  r.kind = Kind::ExtendedHeaders;
  r.completion = std::make_shared<CompletionCallback>(std::move(completion));
  return start(std::move(r));
}

Status Handshake::start_starttls(CompletionCallback completion) {
  Request r;
  r.kind = Kind::StartTls;
  r.completion = std::make_shared<CompletionCallback>(std::move(completion));
  return start(std::move(r));
}

Status Handshake::start_abort() {
  Request r;
  r.kind = Kind::Abort;
  return start(std::move(r));
}

}  // namespace duplexnbd::handshake
