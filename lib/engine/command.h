// SPDX-License-Identifier: LGPL-2.1-or-later
// One transmission-phase command, from the caller's aio_* call until it is retired.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "handle/closure.h"

namespace duplexnbd {

struct Command final {
  // Storage comes from a pool of recycled commands (command_pool.cpp).
  static void *operator new(size_t size);
  static void operator delete(void *p) noexcept;

  uint64_t cookie = 0;
  uint16_t type = 0;            // wire::kCmd*
  uint16_t flags = 0;           // wire::kCmdFlag* as sent
  uint64_t offset = 0;
  uint64_t count = 0;           // effect length

  void *read_buf = nullptr;     // NBD_CMD_READ destination, `count` bytes
  const void *payload = nullptr;  // bytes sent after the header (write data, BS filter)
  uint64_t payload_len = 0;
  std::vector<uint8_t> owned_payload;  // when the library builds the payload itself

  ChunkCallback chunk;          // pread_structured
  ExtentCallback extent;        // block_status
  Extent64Callback extent64;    // block_status_64 / block_status_filter
  CompletionCallback completion;

  int error = 0;                // first error seen (errno value); 0 = success
  uint64_t data_seen = 0;       // read bytes covered by data/hole chunks

  // set_pread_initialize: rather than zeroing the whole read buffer when the command is
  // issued (a memset as large as the read, most of it overwritten at once), the part the
  // server did not write is zeroed when the command ends, before any callback can see
  // the buffer. `filled` is the prefix written by complete data and hole chunks; a chunk
  // that does not extend it zeroes everything past it first, so that from then on only
  // server data ever lands on the buffer and nothing is left to do.
  bool zero_unfilled = false;
  uint64_t filled = 0;

  bool reply_started = false;   // a reply chunk arrived (for the simple/structured checks)
  // Stands in on the wire for a command that timed out or was cancelled (see
  // Connection::abandon): it has no buffer and no closures, the reply it receives is
  // thrown away, and it is deleted unseen when that reply (or the connection's end) comes.
  bool ghost = false;
  bool claimed = false;         // the reader looked it up (guarded by the table lock)

  // The writer and the reader each hold one reference; whoever drops the last one hands
  // the command on for completion. This is how the writer can let go of a command whose
  // reply may already have been parsed by another thread, without touching it after.
  std::atomic<int> refs{2};
  // True while the aio call that issued it is still running: its callbacks wait, as with
  // libnbd, whose handle lock holds reply processing off until that call has returned.
  std::atomic<bool> issuing{false};

  Command *next = nullptr;      // CompletionList / CommandTable done queue link

  // Before the reader writes read_buf from `at` on.
  void before_fill(uint64_t at) {
    if (zero_unfilled && at != filled) zero_rest();
  }
  // After the reader wrote read_buf[at, at + len) in full (before_fill(at) came first).
  void after_fill(uint64_t at, uint64_t len) {
    if (zero_unfilled) filled = at + len;
  }
  // When the command ends, whatever its outcome.
  void settle_read_buffer() {
    if (zero_unfilled) zero_rest();
  }
  // Mid-command callbacks' .free before the completion callback's, as libnbd orders them
  // (members would go the other way).  The read buffer is not touched: a command destroyed
  // here was abandoned by nbd_close or never issued, and its buffer may be gone already.
  ~Command() {
    chunk.reset();
    extent.reset();
    extent64.reset();
  }

private:
  void zero_rest() {
    std::memset(static_cast<uint8_t *>(read_buf) + filled, 0, count - filled);
    zero_unfilled = false;
  }
};

using CommandPtr = std::unique_ptr<Command>;

// An intrusive FIFO of commands that reached the end of their life in a machine and must
// now be finished (callbacks, done queue) by the caller once it has dropped its locks.
class CompletionList {
public:
  void push(Command *c) {
    c->next = nullptr;
    if (tail_)
      tail_->next = c;
    else
      head_ = c;
    tail_ = c;
  }
  Command *pop() {
    Command *c = head_;
    if (c) {
      head_ = c->next;
      if (!head_) tail_ = nullptr;
      c->next = nullptr;
    }
    return c;
  }
  bool empty() const { return head_ == nullptr; }
  // Moves all of `front` before this list's commands, keeping its order.
  void splice_front(CompletionList &front) {
    if (front.empty()) return;
    front.tail_->next = head_;
    if (!head_) tail_ = front.tail_;
    head_ = front.head_;
    front.head_ = front.tail_ = nullptr;
  }

private:
  Command *head_ = nullptr;
  Command *tail_ = nullptr;
};

}  // namespace duplexnbd
