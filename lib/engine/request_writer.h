// SPDX-License-Identifier: LGPL-2.1-or-later
// The writer machine: queued requests -> socket, many requests per sendmsg.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>

#include "core/status.h"
#include "engine/command.h"
#include "transport/transport.h"

namespace duplexnbd {

class CommandTable;

// One request as it travels: its encoded header, the payload (caller's buffer) and the
// command whose writer reference is dropped once the last byte is out. The entry owns a
// copy of the header, so the writer never reads the command after queueing it.
struct WriteEntry {
  uint8_t header[32];
  uint8_t header_len = 0;
  const uint8_t *payload = nullptr;
  uint64_t payload_len = 0;
  uint64_t sent = 0;            // bytes of header + payload already sent
  Command *cmd = nullptr;       // may be null (nothing to release)

  uint64_t total() const { return header_len + payload_len; }
};

class RequestWriter {
public:
  // Guards the queue and the socket's sending side. Never held while blocking.
  std::mutex mutex;

  // All but the lock-free views require `mutex`.
  void push(const WriteEntry &e);
  // Queues without sending: the issuing thread will be back (see Connection::issue).
  // Only onto an empty queue or deferred entries (SendBatching::may_defer checks).
  void push_deferred(const WriteEntry &e);
  size_t queued() const { return queue_.size(); }
  // Heap bytes of the queue (payloads belong to the callers and are not counted).
  size_t memory_bytes() const { return queue_.size() * sizeof(WriteEntry); }
  uint64_t deferred_bytes() const { return deferred_bytes_; }
  // Sends until the queue is empty or the socket would block. Commands whose last byte
  // went out and whose reader reference is already gone are appended to `finished`.
  Status run(transport::Transport &t, CompletionList &finished, uint64_t &bytes_sent);
  // Drops everything queued (connection death): releases writer references.
  void clear(CompletionList &finished);
  // Drops the queued requests of which no byte was sent yet (nbd_shutdown's
  // ABANDON_PENDING): they fail with ENOTCONN and leave the table, so both of their
  // references go here. A half-sent request stays, or the stream would be corrupt.
  void abandon_unsent(CommandTable &table, CompletionList &finished);

  // For a command that timed out or was cancelled, and so leaves the caller's hands:
  // whether it is queued with no byte of it sent, and then dropping that entry (the
  // caller then owns the writer reference).
  bool queued_unsent(const Command *c) const;
  void drop_unsent(Command *c);
  // Its request is partly sent: the rest goes out from `ghost`, which takes the entry (and
  // the writer reference) and a copy of the payload, so the caller's buffer is never read
  // again.  Nothing happens if the command is not queued.
  void retarget(Command *c, Command *ghost);

  // Lock-free views for nbd_aio_get_direction and the pollers.
  bool pending() const { return pending_.load(std::memory_order_acquire); }
  // Everything queued was deferred and no send was tried since.
  bool deferred() const { return deferred_.load(std::memory_order_acquire); }

private:
  void release(Command *c, CompletionList &finished);

  std::deque<WriteEntry> queue_;
  std::atomic<bool> pending_{false};
  std::atomic<bool> deferred_{false};
  uint64_t deferred_bytes_ = 0;  // queued by push_deferred since the last run
};

}  // namespace duplexnbd
