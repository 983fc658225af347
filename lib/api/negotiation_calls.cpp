// SPDX-License-Identifier: LGPL-2.1-or-later
// The nbd_opt_* calls of option mode, blocking and aio forms, on top of the handshake machine.
#include <cerrno>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api_impl.h"
#include "engine/connection.h"
#include "handle/error.h"
#include "handshake/config.h"
#include "handshake/handshake.h"

namespace duplexnbd::api {
namespace {

using handshake::Handshake;
using handshake::OptionResult;
// Closures are captured by reference: the caller's frame owns them until start_* takes
// them, so a call that fails before that point still frees them (when the frame ends).
using StartFn = std::function<Status(Handshake &)>;

std::vector<std::string> to_vector(char **list) {
  std::vector<std::string> v;
  for (size_t i = 0; list[i] != nullptr; i++) v.emplace_back(list[i]);
  return v;
}

// Starts one option: the settings that may have changed while negotiating are picked up,
// the request is queued under the handshake mutex, the callbacks it released run outside
// it, and then the request is written at once if the socket takes it (libnbd's aio_opt_*
// calls also send before returning).  Returns the option's id, or 0 with the error set.
uint64_t start_option(Handle &h, const StartFn &start) {
  Connection *conn = h.connection.get();
  if (conn == nullptr) {
    set_error(ENOTCONN, "invalid state: the handle is not connected");
    return 0;
  }
  handshake::Config cfg;
  {
    std::lock_guard lock(h.settings_mutex);
    cfg = handshake::config_from(h.settings);
  }
  std::vector<std::function<void()>> deferred;
  Status s;
  bool fatal = false;
  uint64_t id = 0;
  {
    std::lock_guard lock(conn->handshake_mutex());
    Handshake *hs = conn->handshake();
    if (hs == nullptr) {
      s = Error{EINVAL, "invalid state: the handshake is over"};
    } else {
      hs->refresh_config(cfg);
      s = start(*hs);
      if (s) {
        id = hs->last_result().id;
        conn->after_handshake_step();
      }
      fatal = hs->failed();
      hs->take_deferred(deferred);
    }
  }
  for (auto &f : deferred) f();
  if (!s) {
    if (fatal) conn->fail(s.error());
    set_error(s.error());
    return 0;
  }
  // A failure here kills the connection, and the option then completes with that error
  // (its completion callback is told, the blocking form reports it): the option itself
  // was issued, so this call succeeds.
  (void)conn->notify_write();
  return id;
}

// Blocks until option `id` has its answer.  Returns its result, or nullopt with the
// error set when the connection failed first.  A result that is missing because the
// handshake already handed over to transmission means the GO succeeded.
std::optional<OptionResult> wait_option(Handle &h, uint64_t id) {
  Connection &conn = *h.connection;
  Status w = conn.wait_until([&h] { return h.state() != State::Connecting; });
  std::optional<OptionResult> r;
  {
    std::lock_guard lock(conn.handshake_mutex());
    Handshake *hs = conn.handshake();
    if (hs != nullptr && hs->last_result().id == id && hs->last_result().finished)
      r = hs->last_result();
  }
  if (r) {
    // errnum without a refusal: the connection died with the option in flight.
    if (r->errnum != 0 && !r->refused) {
      set_error(r->error);
      return std::nullopt;
    }
    return r;
  }
  if (w && h.state() == State::Ready) {
    OptionResult opened;
    opened.id = id;
    opened.finished = true;
    return opened;
  }
  set_error(!w ? w.error() : conn.fatal_error());
  return std::nullopt;
}

// nbd_opt_go / nbd_opt_info: 0, or -1 with the server's refusal as the error.
int run_err(Handle &h, const StartFn &start) {
  uint64_t id = start_option(h, start);
  if (id == 0) return -1;
  std::optional<OptionResult> r = wait_option(h, id);
  if (!r) return -1;
  if (r->errnum != 0) {
    set_error(r->error);
    return -1;
  }
  return 0;
}

// The list calls: the number of entries, or -1 when the server refused.
int run_count(Handle &h, const StartFn &start) {
  uint64_t id = start_option(h, start);
  if (id == 0) return -1;
  std::optional<OptionResult> r = wait_option(h, id);
  if (!r) return -1;
  if (r->errnum != 0) {
    set_error(r->error);
    return -1;
  }
  return r->count > uint64_t(INT32_MAX) ? INT32_MAX : int(r->count);
}

// Options that only change a mode: true if accepted, false if refused, -1 if no answer.
int run_bool(Handle &h, const StartFn &start) {
  uint64_t id = start_option(h, start);
  if (id == 0) return -1;
  std::optional<OptionResult> r = wait_option(h, id);
  if (!r) return -1;
  return r->refused ? 0 : 1;
}

int run_aio(Handle &h, const StartFn &start) { return start_option(h, start) == 0 ? -1 : 0; }

}  // namespace

// ---- blocking ------------------------------------------------------------------------------

int opt_go(Handle &h) {
  return run_err(h, [](Handshake &hs) { return hs.start_go(CompletionCallback{}); });
}

int opt_abort(Handle &h) {
  uint64_t id = start_option(h, [](Handshake &hs) { return hs.start_abort(); });
  if (id == 0) return -1;
  // The answer is not awaited; what matters is that the session ended, and libnbd reports
  // success even when the server hangs up on the ABORT.
  (void)h.connection->wait_until([&h] { return h.state() != State::Connecting; });
  return 0;
}

int opt_starttls(Handle &h) {
  return run_bool(h, [](Handshake &hs) { return hs.start_starttls(CompletionCallback{}); });
}

int opt_extended_headers(Handle &h) {
  return run_bool(h, [](Handshake &hs) { return hs.start_extended_headers(CompletionCallback{}); });
}

int opt_structured_reply(Handle &h) {
  return run_bool(h, [](Handshake &hs) { return hs.start_structured_reply(CompletionCallback{}); });
}

int opt_list(Handle &h, Closure<nbd_list_callback> &&list_callback) {
  return run_count(h, [&](Handshake &hs) {
    return hs.start_list(std::move(list_callback), CompletionCallback{});
  });
}

int opt_info(Handle &h) {
  return run_err(h, [](Handshake &hs) { return hs.start_info(CompletionCallback{}); });
}

int opt_list_meta_context(Handle &h, Closure<nbd_context_callback> &&context_callback) {
  return run_count(h, [&](Handshake &hs) {
    return hs.start_list_meta_context(std::nullopt, std::move(context_callback),
                                      CompletionCallback{});
  });
}

int opt_list_meta_context_queries(Handle &h, char **queries,
                                  Closure<nbd_context_callback> &&context_callback) {
  std::vector<std::string> q = to_vector(queries);
  return run_count(h, [&](Handshake &hs) {
    return hs.start_list_meta_context(std::move(q), std::move(context_callback),
                                      CompletionCallback{});
  });
}

int opt_set_meta_context(Handle &h, Closure<nbd_context_callback> &&context_callback) {
  return run_count(h, [&](Handshake &hs) {
    return hs.start_set_meta_context(std::nullopt, std::move(context_callback),
                                     CompletionCallback{});
  });
}

int opt_set_meta_context_queries(Handle &h, char **queries,
                                 Closure<nbd_context_callback> &&context_callback) {
  std::vector<std::string> q = to_vector(queries);
  return run_count(h, [&](Handshake &hs) {
    return hs.start_set_meta_context(std::move(q), std::move(context_callback),
                                     CompletionCallback{});
  });
}

// ---- aio ------------------------------------------------------------------------------------

int aio_opt_go(Handle &h, Closure<nbd_completion_callback> &&completion_callback) {
  return run_aio(h, [&](Handshake &hs) { return hs.start_go(std::move(completion_callback)); });
}

int aio_opt_abort(Handle &h) {
  return run_aio(h, [](Handshake &hs) { return hs.start_abort(); });
}

int aio_opt_starttls(Handle &h, Closure<nbd_completion_callback> &&completion_callback) {
  return run_aio(h,
                 [&](Handshake &hs) { return hs.start_starttls(std::move(completion_callback)); });
}

int aio_opt_extended_headers(Handle &h, Closure<nbd_completion_callback> &&completion_callback) {
  return run_aio(
      h, [&](Handshake &hs) { return hs.start_extended_headers(std::move(completion_callback)); });
}

int aio_opt_structured_reply(Handle &h, Closure<nbd_completion_callback> &&completion_callback) {
  return run_aio(
      h, [&](Handshake &hs) { return hs.start_structured_reply(std::move(completion_callback)); });
}

int aio_opt_list(Handle &h, Closure<nbd_list_callback> &&list_callback,
                 Closure<nbd_completion_callback> &&completion_callback) {
  return run_aio(h, [&](Handshake &hs) {
    return hs.start_list(std::move(list_callback), std::move(completion_callback));
  });
}

int aio_opt_info(Handle &h, Closure<nbd_completion_callback> &&completion_callback) {
  return run_aio(h, [&](Handshake &hs) { return hs.start_info(std::move(completion_callback)); });
}

int aio_opt_list_meta_context(Handle &h, Closure<nbd_context_callback> &&context_callback,
                              Closure<nbd_completion_callback> &&completion_callback) {
  return run_aio(h, [&](Handshake &hs) {
    return hs.start_list_meta_context(std::nullopt, std::move(context_callback),
                                      std::move(completion_callback));
  });
}

int aio_opt_list_meta_context_queries(Handle &h, char **queries,
                                      Closure<nbd_context_callback> &&context_callback,
                                      Closure<nbd_completion_callback> &&completion_callback) {
  std::vector<std::string> q = to_vector(queries);
  return run_aio(h, [&](Handshake &hs) {
    return hs.start_list_meta_context(std::move(q), std::move(context_callback),
                                      std::move(completion_callback));
  });
}

int aio_opt_set_meta_context(Handle &h, Closure<nbd_context_callback> &&context_callback,
                             Closure<nbd_completion_callback> &&completion_callback) {
  return run_aio(h, [&](Handshake &hs) {
    return hs.start_set_meta_context(std::nullopt, std::move(context_callback),
                                     std::move(completion_callback));
  });
}

int aio_opt_set_meta_context_queries(Handle &h, char **queries,
                                     Closure<nbd_context_callback> &&context_callback,
                                     Closure<nbd_completion_callback> &&completion_callback) {
  std::vector<std::string> q = to_vector(queries);
  return run_aio(h, [&](Handshake &hs) {
    return hs.start_set_meta_context(std::move(q), std::move(context_callback),
                                     std::move(completion_callback));
  });
}

}  // namespace duplexnbd::api
