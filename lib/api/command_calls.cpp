// SPDX-License-Identifier: LGPL-2.1-or-later
// Transmission commands (blocking and aio forms), disconnecting, and the aio plumbing.
#include <cerrno>
#include <cinttypes>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <vector>

#include "api/command_checks.h"
#include "api_impl.h"
#include "engine/connection.h"
#include "handle/debug.h"
#include "handle/error.h"
#include "libnbd.h"
#include "wire/protocol.h"
#include "wire/request.h"

namespace duplexnbd::api {
namespace {

// The connection, once a connect call created it. Reading the published state first
// orders us after the thread that created it (in Created it may be being assigned).
Connection *live_connection(Handle &h) {
  if (h.state() == State::Created) return nullptr;
  return h.connection.get();
}

// Every command entry point is only reached in the Ready state, so a connection exists;
// this guards against a handle torn down underneath a misbehaving caller all the same.
Connection *command_connection(Handle &h) {
  Connection *c = live_connection(h);
  if (!c) set_error(ENOTCONN, "the handle is not connected");
  return c;
}

bool has_flag(uint16_t eflags, uint16_t flag) { return (eflags & flag) != 0; }

CommandPtr new_command(uint16_t type, uint32_t flags, uint64_t offset, uint64_t count) {
  auto c = std::make_unique<Command>();
  c->type = type;
  // The entry point has refused flags that do not fit the wire's 16 bits.
  c->flags = uint16_t(flags);
  c->offset = offset;
  c->count = count;
  return c;
}

// What every command goes through after its own checks, in libnbd's order: no command
// after NBD_CMD_DISC, the range checks (all commands but flush, which pass
// bounds_errno 0), then the size limits; then the hand-off to the engine.
// `filter_len` is the size of a block-status filter payload (0: not a filtered request).
int64_t submit(Connection &conn, uint32_t strict, CommandPtr cmd, int bounds_errno,
               uint64_t filter_len = 0) {
  if (conn.disconnect_requested()) {
    set_error(EINVAL, "cannot request more commands after NBD_CMD_DISC");
    return -1;
  }
  const Negotiated &n = conn.negotiated();
  if (bounds_errno != 0 && !check_range(strict, n, cmd->offset, cmd->count, bounds_errno))
    return -1;
  if (filter_len != 0 ? !check_filter_length(strict, n, filter_len)
                      : !check_length(strict, n, cmd->type, cmd->count))
    return -1;
  Result<uint64_t> r = conn.issue(std::move(cmd));
  if (!r) {
    set_error(r.error());
    return -1;
  }
  return int64_t(*r);
}

// ---- the commands, shared by the aio and the blocking forms --------------------------

int64_t start_read(Handle &h, void *buf, size_t count, uint64_t offset, ChunkCallback chunk,
                   CompletionCallback completion, uint32_t flags, bool structured) {
  // The entry point zeroes buf if this fails; once issued, the command does (see Command).
  Connection *conn = command_connection(h);
  if (!conn) return -1;
  const uint32_t strict = h.strict.load(std::memory_order_relaxed);
  if (structured && (strict & LIBNBD_STRICT_COMMANDS) && (flags & LIBNBD_CMD_FLAG_DF) &&
      !has_flag(effective_eflags(conn->negotiated()), wire::kFlagSendDf)) {
    set_error(EINVAL, "server does not support the DF flag");
    return -1;
  }
  CommandPtr c = new_command(wire::kCmdRead, flags, offset, count);
  c->read_buf = buf;
  c->zero_unfilled = buf != nullptr && pread_initialize(h);
  c->chunk = std::move(chunk);
  c->completion = std::move(completion);
  return submit(*conn, strict, std::move(c), EINVAL);
}

// Strict-mode checks shared by every command that modifies the export: a read-only
// export refuses them, and FUA needs the server's consent.  Sets the error when false.
bool writes_permitted(uint16_t ef, uint32_t flags) {
  if (has_flag(ef, wire::kFlagReadOnly)) {
    set_error(EPERM, "server does not support write operations");
    return false;
  }
  if ((flags & LIBNBD_CMD_FLAG_FUA) && !has_flag(ef, wire::kFlagSendFua)) {
    set_error(EINVAL, "server does not support the FUA flag");
    return false;
  }
  return true;
}

int64_t start_write(Handle &h, const void *buf, size_t count, uint64_t offset,
                    CompletionCallback completion, uint32_t flags) {
  Connection *conn = command_connection(h);
  if (!conn) return -1;
  const uint32_t strict = h.strict.load(std::memory_order_relaxed);
  const Negotiated &n = conn->negotiated();
  // PAYLOAD_LEN changes the wire format, so libnbd sets it to match what was negotiated
  // unless the caller took that over by clearing STRICT_AUTO_FLAG.
  if (strict & LIBNBD_STRICT_AUTO_FLAG) {
    if (n.extended_headers)
      flags |= LIBNBD_CMD_FLAG_PAYLOAD_LEN;
    else
      flags &= ~uint32_t(LIBNBD_CMD_FLAG_PAYLOAD_LEN);
  }
  if (strict & LIBNBD_STRICT_COMMANDS) {
    const uint16_t ef = effective_eflags(n);
    if (!writes_permitted(ef, flags)) return -1;
    if (((flags & LIBNBD_CMD_FLAG_PAYLOAD_LEN) != 0) != n.extended_headers) {
      set_error(EINVAL, "incorrect setting for PAYLOAD_LEN flag");
      return -1;
    }
  }
  CommandPtr c = new_command(wire::kCmdWrite, flags, offset, count);
  c->payload = buf;
  c->payload_len = count;
  c->completion = std::move(completion);
  return submit(*conn, strict, std::move(c), ENOSPC);
}

int64_t start_flush(Handle &h, CompletionCallback completion, uint32_t flags) {
  Connection *conn = command_connection(h);
  if (!conn) return -1;
  const uint32_t strict = h.strict.load(std::memory_order_relaxed);
  if ((strict & LIBNBD_STRICT_COMMANDS) &&
      !has_flag(effective_eflags(conn->negotiated()), wire::kFlagSendFlush)) {
    set_error(EINVAL, "server does not support flush operations");
    return -1;
  }
  CommandPtr c = new_command(wire::kCmdFlush, flags, 0, 0);
  c->completion = std::move(completion);
  return submit(*conn, strict, std::move(c), 0);
}

int64_t start_trim(Handle &h, uint64_t count, uint64_t offset, CompletionCallback completion,
                   uint32_t flags) {
  Connection *conn = command_connection(h);
  if (!conn) return -1;
  const uint32_t strict = h.strict.load(std::memory_order_relaxed);
  if (strict & LIBNBD_STRICT_COMMANDS) {
    const uint16_t ef = effective_eflags(conn->negotiated());
    if (!has_flag(ef, wire::kFlagSendTrim)) {
      set_error(EINVAL, "server does not support trim operations");
      return -1;
    }
    if (!writes_permitted(ef, flags)) return -1;
  }
  CommandPtr c = new_command(wire::kCmdTrim, flags, offset, count);
  c->completion = std::move(completion);
  return submit(*conn, strict, std::move(c), ENOSPC);
}

int64_t start_cache(Handle &h, uint64_t count, uint64_t offset, CompletionCallback completion,
                    uint32_t flags) {
  Connection *conn = command_connection(h);
  if (!conn) return -1;
  const uint32_t strict = h.strict.load(std::memory_order_relaxed);
  // Some servers honour NBD_CMD_CACHE without advertising it; strict mode trusts the flag.
  if ((strict & LIBNBD_STRICT_COMMANDS) &&
      !has_flag(effective_eflags(conn->negotiated()), wire::kFlagSendCache)) {
    set_error(EINVAL, "server does not support cache operations");
    return -1;
  }
  CommandPtr c = new_command(wire::kCmdCache, flags, offset, count);
  c->completion = std::move(completion);
  return submit(*conn, strict, std::move(c), EINVAL);
}

int64_t start_zero(Handle &h, uint64_t count, uint64_t offset, CompletionCallback completion,
                   uint32_t flags) {
  Connection *conn = command_connection(h);
  if (!conn) return -1;
  const uint32_t strict = h.strict.load(std::memory_order_relaxed);
  if (strict & LIBNBD_STRICT_COMMANDS) {
    const uint16_t ef = effective_eflags(conn->negotiated());
    if (!has_flag(ef, wire::kFlagSendWriteZeroes)) {
      set_error(EINVAL, "server does not support zero operations");
      return -1;
    }
    if (!writes_permitted(ef, flags)) return -1;
    if ((flags & LIBNBD_CMD_FLAG_FAST_ZERO) && !has_flag(ef, wire::kFlagSendFastZero)) {
      set_error(EINVAL, "server does not support the fast zero flag");
      return -1;
    }
  }
  CommandPtr c = new_command(wire::kCmdWriteZeroes, flags, offset, count);
  c->completion = std::move(completion);
  return submit(*conn, strict, std::move(c), ENOSPC);
}

// Block status needs a structured reply and something to report on.
bool block_status_possible(uint32_t strict, const Negotiated &n) {
  if (!(strict & LIBNBD_STRICT_COMMANDS)) return true;
  if (!n.structured_replies) {
    set_error(ENOTSUP, "server does not support structured replies");
    return false;
  }
  if (!n.meta_valid || n.meta_contexts.empty()) {
    set_error(ENOTSUP,
              "did not negotiate any metadata contexts, either you did not call "
              "nbd_add_meta_context before connecting or the server does not support it");
    return false;
  }
  return true;
}

int64_t start_block_status(Handle &h, uint64_t count, uint64_t offset, ExtentCallback extent,
                           Extent64Callback extent64, CompletionCallback completion,
                           uint32_t flags) {
  Connection *conn = command_connection(h);
  if (!conn) return -1;
  const uint32_t strict = h.strict.load(std::memory_order_relaxed);
  if (!block_status_possible(strict, conn->negotiated())) return -1;
  CommandPtr c = new_command(wire::kCmdBlockStatus, flags, offset, count);
  c->extent = std::move(extent);
  c->extent64 = std::move(extent64);
  c->completion = std::move(completion);
  return submit(*conn, strict, std::move(c), EINVAL);
}

int64_t start_block_status_filter(Handle &h, uint64_t count, uint64_t offset, char **contexts,
                                  Extent64Callback extent64, CompletionCallback completion,
                                  uint32_t flags) {
  Connection *conn = command_connection(h);
  if (!conn) return -1;
  const uint32_t strict = h.strict.load(std::memory_order_relaxed);
  const Negotiated &n = conn->negotiated();
  if (!block_status_possible(strict, n)) return -1;
  // The filter travels as a payload, which only extended headers can announce.
  if (strict & LIBNBD_STRICT_AUTO_FLAG) {
    if (!n.extended_headers) {
      set_error(ENOTSUP, "server does not support extended headers");
      return -1;
    }
    flags |= LIBNBD_CMD_FLAG_PAYLOAD_LEN;
  }
  if (strict & LIBNBD_STRICT_COMMANDS) {
    if (!has_flag(effective_eflags(n), wire::kFlagBlockStatPayload)) {
      set_error(EINVAL, "server does not support the block status payload flag");
      return -1;
    }
    if (!(flags & LIBNBD_CMD_FLAG_PAYLOAD_LEN)) {
      set_error(EINVAL, "incorrect setting for PAYLOAD_LEN flag");
      return -1;
    }
  }
  // Names to the ids the server gave them; a name never negotiated has no id to send.
  std::vector<uint32_t> ids;
  for (char **p = contexts; *p != nullptr; p++) {
    const MetaContext *found = nullptr;
    if (n.meta_valid) {
      for (const MetaContext &m : n.meta_contexts)
        if (m.name == *p) {
          found = &m;
          break;
        }
    }
    if (!found) {
      set_error(EINVAL, "context %s not negotiated", *p);
      return -1;
    }
    ids.push_back(found->id);
  }
  CommandPtr c = new_command(wire::kCmdBlockStatus, flags, offset, count);
  const size_t len = wire::block_status_payload_size(ids.size());
  // Sent only when the header can say so; otherwise (strict mode relaxed) this is a plain
  // block status request and the server sees no filter.
  if (n.extended_headers && (flags & LIBNBD_CMD_FLAG_PAYLOAD_LEN)) {
    c->owned_payload.resize(len);
    wire::encode_block_status_payload(c->owned_payload, count, ids);
    c->payload = c->owned_payload.data();
    c->payload_len = len;
  }
  c->extent64 = std::move(extent64);
  c->completion = std::move(completion);
  return submit(*conn, strict, std::move(c), EINVAL, len);
}

// ---- blocking forms --------------------------------------------------------------------

// Joins a blocking call to its command. The command carries a completion closure of
// ours that records the outcome and retires the command at once (the caller never sees
// its cookie, so nothing else may retire it or find it in the done queue). Reference
// counted: the engine's closure may outlive the waiting call or vice versa.
class SyncWait {
public:
  SyncWait() = default;
  SyncWait(const SyncWait &) = delete;
  SyncWait &operator=(const SyncWait &) = delete;

  // The engine's reference, as the command's completion closure.
  CompletionCallback completion() {
    refs_.fetch_add(1, std::memory_order_relaxed);
    return CompletionCallback(nbd_completion_callback{&on_complete, this, &on_free});
  }

  void release() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Waits for the command started as `cookie` (-1: it failed to start, error set) and
  // turns its outcome into the blocking call's return value.
  int finish(Handle &h, int64_t cookie, uint16_t type) {
    if (cookie < 0) return -1;
    Connection &conn = *h.connection;
    Status s = conn.wait_until([this] { return done(); });
    if (!done() && !s && s.error().errnum == EINTR) {
      // duplexnbd_interrupt: the call returns at once, its command cancelled (the
      // caller's buffer is its own again); the connection goes on.
      conn.abandon(uint64_t(cookie), EINTR);
      wait_finished();
      if (error_ == EINTR) {
        set_error(s.error());
        return -1;
      }
      s = {};  // it completed just before: report its own outcome
    }
    if (!done()) {
      // The connection ended (or the wait failed) first.  The engine still owns the
      // command and might yet write into the caller's buffer: it must be finished before
      // we return.  Ending the connection makes sure it is (reaping always happens).
      conn.fail(s ? make_error(ENOTCONN, "the connection is closed") : s.error());
      wait_finished();
    }
    if (!s && error_ != 0) {
      // Our command died with the connection: say why the connection died.
      set_error(s.error());
      return -1;
    }
    if (error_ != 0) {
      set_error(error_, "%s: command failed", failed_command_name(type));
      return -1;
    }
    return 0;
  }

private:
  ~SyncWait() = default;

  bool done() const { return done_.load(std::memory_order_acquire); }

  void wait_finished() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return done(); });
  }

  static int on_complete(void *user_data, int *error) {
    auto *w = static_cast<SyncWait *>(user_data);
    {
      std::lock_guard lock(w->mutex_);
      w->error_ = *error;
      w->done_.store(true, std::memory_order_release);
    }
    w->cv_.notify_all();
    return 1;  // retire now
  }

  static void on_free(void *user_data) { static_cast<SyncWait *>(user_data)->release(); }

  std::atomic<int> refs_{1};
  std::atomic<bool> done_{false};
  int error_ = 0;  // written before done_ is set
  std::mutex mutex_;
  std::condition_variable cv_;
};

// The blocking call's own reference.
class SyncRef {
public:
  SyncRef() : w_(new SyncWait) {}
  ~SyncRef() { w_->release(); }
  SyncRef(const SyncRef &) = delete;
  SyncRef &operator=(const SyncRef &) = delete;
  SyncWait *operator->() { return w_; }

private:
  SyncWait *w_;
};

}  // namespace

// ---- aio forms -------------------------------------------------------------------------

int64_t aio_pread(Handle &h, void *buf, size_t count, uint64_t offset,
                  Closure<nbd_completion_callback> &&completion_callback, uint32_t flags) {
  return start_read(h, buf, count, offset, ChunkCallback(), std::move(completion_callback), flags,
                    false);
}

int64_t aio_pread_structured(Handle &h, void *buf, size_t count, uint64_t offset,
                             Closure<nbd_chunk_callback> &&chunk_callback,
                             Closure<nbd_completion_callback> &&completion_callback, uint32_t flags) {
  return start_read(h, buf, count, offset, std::move(chunk_callback),
                    std::move(completion_callback), flags, true);
}

int64_t aio_pwrite(Handle &h, const void *buf, size_t count, uint64_t offset,
                   Closure<nbd_completion_callback> &&completion_callback, uint32_t flags) {
  return start_write(h, buf, count, offset, std::move(completion_callback), flags);
}

int64_t aio_flush(Handle &h, Closure<nbd_completion_callback> &&completion_callback, uint32_t flags) {
  return start_flush(h, std::move(completion_callback), flags);
}

int64_t aio_trim(Handle &h, uint64_t count, uint64_t offset,
                 Closure<nbd_completion_callback> &&completion_callback, uint32_t flags) {
  return start_trim(h, count, offset, std::move(completion_callback), flags);
}

int64_t aio_cache(Handle &h, uint64_t count, uint64_t offset,
                  Closure<nbd_completion_callback> &&completion_callback, uint32_t flags) {
  return start_cache(h, count, offset, std::move(completion_callback), flags);
}

int64_t aio_zero(Handle &h, uint64_t count, uint64_t offset,
                 Closure<nbd_completion_callback> &&completion_callback, uint32_t flags) {
  return start_zero(h, count, offset, std::move(completion_callback), flags);
}

int64_t aio_block_status(Handle &h, uint64_t count, uint64_t offset,
                         Closure<nbd_extent_callback> &&extent_callback,
                         Closure<nbd_completion_callback> &&completion_callback, uint32_t flags) {
  return start_block_status(h, count, offset, std::move(extent_callback), Extent64Callback(),
                            std::move(completion_callback), flags);
}

int64_t aio_block_status_64(Handle &h, uint64_t count, uint64_t offset,
                            Closure<nbd_extent64_callback> &&extent64_callback,
                            Closure<nbd_completion_callback> &&completion_callback, uint32_t flags) {
  return start_block_status(h, count, offset, ExtentCallback(), std::move(extent64_callback),
                            std::move(completion_callback), flags);
}

int64_t aio_block_status_filter(Handle &h, uint64_t count, uint64_t offset, char **contexts,
                                Closure<nbd_extent64_callback> &&extent64_callback,
                                Closure<nbd_completion_callback> &&completion_callback,
                                uint32_t flags) {
  return start_block_status_filter(h, count, offset, contexts, std::move(extent64_callback),
                                   std::move(completion_callback), flags);
}

int aio_disconnect(Handle &h, uint32_t flags) {
  (void)flags;  // no flag is defined for NBD_CMD_DISC; the entry point checked them
  Connection *conn = command_connection(h);
  if (!conn) return -1;
  if (conn->disconnect_requested()) {
    set_error(EINVAL, "cannot request more commands after NBD_CMD_DISC");
    return -1;
  }
  // Like any queued command, a failure to send shows up later (the handle is dead).
  Status s = conn->disconnect(false);
  if (!s) debug(h, "disconnect queued, connection failed: %s", s.error().message.c_str());
  return 0;
}

// ---- blocking forms --------------------------------------------------------------------

// A blocking read that could not be issued zeroes its buffer; an issued one leaves what the
// server sent in it, even when the read then fails (as libnbd does), and zeroes the rest.
int pread(Handle &h, void *buf, size_t count, uint64_t offset, uint32_t flags) {
  SyncRef w;
  int64_t cookie =
      start_read(h, buf, count, offset, ChunkCallback(), w->completion(), flags, false);
  if (cookie < 0) initialize_read_buffer(h, buf, count);
  return w->finish(h, cookie, wire::kCmdRead);
}

int pread_structured(Handle &h, void *buf, size_t count, uint64_t offset,
                     Closure<nbd_chunk_callback> &&chunk_callback, uint32_t flags) {
  SyncRef w;
  int64_t cookie =
      start_read(h, buf, count, offset, std::move(chunk_callback), w->completion(), flags, true);
  if (cookie < 0) initialize_read_buffer(h, buf, count);
  return w->finish(h, cookie, wire::kCmdRead);
}

int pwrite(Handle &h, const void *buf, size_t count, uint64_t offset, uint32_t flags) {
  SyncRef w;
  int64_t cookie = start_write(h, buf, count, offset, w->completion(), flags);
  return w->finish(h, cookie, wire::kCmdWrite);
}

int flush(Handle &h, uint32_t flags) {
  SyncRef w;
  int64_t cookie = start_flush(h, w->completion(), flags);
  return w->finish(h, cookie, wire::kCmdFlush);
}

int trim(Handle &h, uint64_t count, uint64_t offset, uint32_t flags) {
  SyncRef w;
  int64_t cookie = start_trim(h, count, offset, w->completion(), flags);
  return w->finish(h, cookie, wire::kCmdTrim);
}

int cache(Handle &h, uint64_t count, uint64_t offset, uint32_t flags) {
  SyncRef w;
  int64_t cookie = start_cache(h, count, offset, w->completion(), flags);
  return w->finish(h, cookie, wire::kCmdCache);
}

int zero(Handle &h, uint64_t count, uint64_t offset, uint32_t flags) {
  SyncRef w;
  int64_t cookie = start_zero(h, count, offset, w->completion(), flags);
  return w->finish(h, cookie, wire::kCmdWriteZeroes);
}

int block_status(Handle &h, uint64_t count, uint64_t offset,
                 Closure<nbd_extent_callback> &&extent_callback, uint32_t flags) {
  SyncRef w;
  int64_t cookie = start_block_status(h, count, offset, std::move(extent_callback),
                                      Extent64Callback(), w->completion(), flags);
  return w->finish(h, cookie, wire::kCmdBlockStatus);
}

int block_status_64(Handle &h, uint64_t count, uint64_t offset,
                    Closure<nbd_extent64_callback> &&extent64_callback, uint32_t flags) {
  SyncRef w;
  int64_t cookie = start_block_status(h, count, offset, ExtentCallback(),
                                      std::move(extent64_callback), w->completion(), flags);
  return w->finish(h, cookie, wire::kCmdBlockStatus);
}

int block_status_filter(Handle &h, uint64_t count, uint64_t offset, char **contexts,
                        Closure<nbd_extent64_callback> &&extent64_callback, uint32_t flags) {
  SyncRef w;
  int64_t cookie = start_block_status_filter(h, count, offset, contexts,
                                             std::move(extent64_callback), w->completion(), flags);
  return w->finish(h, cookie, wire::kCmdBlockStatus);
}

int shutdown(Handle &h, uint32_t flags) {
  Connection *conn = command_connection(h);
  if (!conn) return -1;
  if (h.state() == State::Negotiating) {
    // Still in opt mode: end the negotiation instead (NBD_OPT_ABORT).
    if (aio_opt_abort(h) == -1) return -1;
  } else if (!conn->disconnect_requested()) {
    // Queued behind the pending commands, or ahead of those not started yet.
    Status s = conn->disconnect((flags & LIBNBD_SHUTDOWN_ABANDON_PENDING) != 0);
    if (!s) debug(h, "disconnect queued, connection failed: %s", s.error().message.c_str());
  }
  Status s = conn->wait_until([&h] {
    State st = h.state();
    return st == State::Closed || st == State::Dead;
  });
  if (!s) {
    set_error(s.error());
    return -1;
  }
  if (h.state() == State::Dead) {
    set_error(conn->fatal_error());
    return -1;
  }
  return 0;
}

// ---- aio plumbing ----------------------------------------------------------------------

int aio_get_fd(Handle &h) {
  State s = h.state();
  Connection *conn = live_connection(h);
  int fd = conn ? conn->fd() : -1;
  // A closed or dead connection has given its socket up, as in libnbd.
  if (fd < 0 || s == State::Closed || s == State::Dead) {
    set_error(EINVAL, "connection is not in a connected state");
    return -1;
  }
  return fd;
}

unsigned aio_get_direction(Handle &h) {
  Connection *conn = live_connection(h);
  return conn ? conn->direction_for_poll() : 0;
}

namespace {

// libnbd's names for the events in "external event N is invalid in state X".
constexpr int kEventNotifyRead = 0;
constexpr int kEventNotifyWrite = 1;

Connection *notifiable(Handle &h, int event) {
  State s = h.state();
  Connection *conn = live_connection(h);
  bool valid = conn && s != State::Created && s != State::Closed && s != State::Dead;
  if (valid && (s == State::Connecting || s == State::Negotiating)) {
    // Before transmission libnbd accepts only the event it waits for: WRITE while
    // connect(2) completes, neither while opt mode waits for the caller.
    const unsigned wanted = event == kEventNotifyRead ? LIBNBD_AIO_DIRECTION_READ
                                                      : LIBNBD_AIO_DIRECTION_WRITE;
    valid = (conn->direction() & wanted) != 0;
  }
  if (!valid) {
    set_error(EINVAL, "external event %d is invalid in state %s", event, state_name(s));
    return nullptr;
  }
  return conn;
}

}  // namespace

int aio_notify_read(Handle &h) {
  Connection *conn = notifiable(h, kEventNotifyRead);
  if (!conn) return -1;
  Status s = conn->notify_read();
  if (!s) {
    set_error(s.error());
    return -1;
  }
  return 0;
}

int aio_notify_write(Handle &h) {
  Connection *conn = notifiable(h, kEventNotifyWrite);
  if (!conn) return -1;
  Status s = conn->notify_write();
  if (!s) {
    // A failure that left the connection alive is the engine refusing the event (nothing
    // was waiting to be written): say so as libnbd's state machine does.
    State st = h.state();
    if (st == State::Ready && s.error().errnum == EINVAL)
      set_error(EINVAL, "external event %d is invalid in state %s", kEventNotifyWrite,
                state_name(st));
    else
      set_error(s.error());
    return -1;
  }
  return 0;
}

namespace {

int poll_with(Handle &h, int extra_fd, int timeout) {
  Connection *conn = live_connection(h);
  if (!conn) {
    set_error(EINVAL, "nothing to poll for in state %s", state_name(h.state()));
    return -1;
  }
  Result<int> r = conn->poll_once(timeout, extra_fd);
  if (!r) {
    set_error(r.error());
    return -1;
  }
  return *r;
}

// libnbd keeps NBD_CMD_DISC in flight (uncollectable) until the connection closes.
bool disconnect_in_flight(Handle &h, Connection &conn) {
  return conn.disconnect_requested() && h.state() == State::Ready;
}

}  // namespace

int poll(Handle &h, int timeout) { return poll_with(h, -1, timeout); }

int poll2(Handle &h, int fd, int timeout) { return poll_with(h, fd, timeout); }

int aio_command_completed(Handle &h, uint64_t cookie) {
  if (cookie == 0) {
    set_error(EINVAL, "invalid aio cookie %" PRId64, int64_t(cookie));
    return -1;
  }
  Connection *conn = live_connection(h);
  if (!conn) return 0;
  return conn->command_completed(cookie);
}

int64_t aio_peek_command_completed(Handle &h) {
  Connection *conn = live_connection(h);
  if (!conn) {
    set_error(EINVAL, "no commands are in flight");
    return -1;
  }
  int64_t r = conn->peek_completed();
  if (r == -1 && disconnect_in_flight(h, *conn)) r = 0;
  // libnbd leaves a (zero errno) note even though this is not a failure.
  if (r == 0) set_error(0, "no in-flight command has completed yet");
  return r;
}

int aio_in_flight(Handle &h) {
  Connection *conn = live_connection(h);
  if (!conn) return 0;
  return conn->in_flight() + (disconnect_in_flight(h, *conn) ? 1 : 0);
}

}  // namespace duplexnbd::api
