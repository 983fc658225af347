// SPDX-License-Identifier: LGPL-2.1-or-later
// The reader machine: socket -> reply headers, chunks and payloads -> their commands.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"
#include "engine/command.h"
#include "engine/negotiated.h"
#include "transport/transport.h"
#include "wire/reply.h"

namespace duplexnbd {

class CommandTable;
class IssueGate;

// Used only by the owner of the connection's ReaderSlot (the socket's receiving side),
// except for the lock-free mid_reply().
class ReplyReader {
public:
  // Chunk and extent callbacks wait at `gate` for their command's issuing call.
  explicit ReplyReader(IssueGate &gate);

  // Entering transmission: which reply forms the server may use and which meta
  // contexts it agreed to (for naming block-status chunks).
  void configure(const Negotiated &n);

  enum class Outcome { Blocked, EndOfStream };
  // Parses as many replies as the socket holds without blocking. Commands whose final
  // reply arrived and whose writer reference is gone are appended to `finished`.
  // An Error means the stream can no longer be trusted: the connection must die.
  Result<Outcome> run(transport::Transport &t, CommandTable &table, CompletionList &finished,
                      uint64_t &bytes_received, uint64_t &chunks_received);

  // Forgets a half-parsed reply (connection death; the command is failed by the caller).
  void reset();
  // `ghost` takes `c`'s place; if `c`'s reply is being parsed, the rest of it is thrown
  // away instead of reaching `c`'s buffer or callbacks.
  void replace(Command *c, Command *ghost);
  bool mid_reply() const { return mid_reply_.load(std::memory_order_acquire); }
  // Bytes of requests (headers and write payloads) answered so far: what the server has
  // certainly read off the socket.  Only grows.
  uint64_t answered_request_bytes() const { return answered_request_bytes_; }
  // Heap bytes the reader holds, for nbd_get_handle_size: the receive buffer and the
  // chunk payload buffer (kept at its largest size). Any thread may ask.
  size_t memory_bytes() const;

private:
  enum class Step : uint8_t { Header, DataPrefix, Data, Payload, Discard };

  // Buffer management: returns false when the socket has nothing more now.
  size_t avail() const { return tail_ - head_; }
  // Receives at least `want` buffered bytes' worth if the socket has them, but leaves the
  // buffer holding no more than `cap` (a large read's payload is better received directly).
  Result<bool> fill(transport::Transport &t, size_t want, uint64_t &bytes_received,
                    size_t cap = SIZE_MAX);
  // How much to buffer while waiting for a reply header (see expect_large_).
  size_t header_cap() const;

  Status on_header(CommandTable &table, CompletionList &finished);
  // The current chunk's payload of `len` bytes is read past, unused; the chunk ends after.
  void skip_payload(uint64_t len, CompletionList &finished, CommandTable &table);
  Status on_data_prefix();
  void on_data_done(CompletionList &finished, CommandTable &table);
  Status on_payload_done(CompletionList &finished, CommandTable &table);
  void end_chunk(CompletionList &finished, CommandTable &table);
  void finish_reply(CompletionList &finished, CommandTable &table);
  // Records how much of the current data chunk is in the caller's buffer.
  void note_data_progress();
  // `err`: an error already known for this chunk (EPROTO for the wrong width), or 0.
  void deliver_block_status(const wire::BlockStatusChunk &bs, int err);
  // Runs `c`'s chunk callback, if any, once its issuing call has returned; a failing
  // callback's error (starting from `err`) becomes the command's.
  void call_chunk(Command *c, const void *buf, uint64_t len, uint64_t offset, unsigned status,
                  int err);
  const char *context_name(uint32_t id) const;

  IssueGate &gate_;
  bool structured_ = false;
  bool extended_ = false;
  std::vector<MetaContext> contexts_;
  uint64_t export_size_ = 0;     // 0: unknown (no bound on extents)

  std::unique_ptr<uint8_t[]> buf_;
  size_t head_ = 0, tail_ = 0;
  // The last reply carried a large read payload, so the next one probably does too:
  // receive only its header (and data prefix) into the buffer and the payload straight
  // into the caller's memory, instead of a 256 KiB recv whose bytes are then copied out.
  bool expect_large_ = false;
  // This run's last recv returned less than it asked for, so the socket was empty: the
  // next recv would almost surely fail with EAGAIN, one system call per run for nothing.
  // The caller polls again instead (level-triggered, so nothing that arrives is missed).
  bool drained_ = false;
  bool socket_drained(const transport::Transport &t) const { return drained_ && !t.pending_read(); }
  // This run has received something, and no command awaits a reply: the socket holds
  // nothing we expect, so asking it again would only say EAGAIN (after a large payload
  // that filled the last recv exactly, 1 in flight: one system call per request). The
  // first recv of a run is always made, so an end of stream is never missed.
  bool received_ = false;
  bool nothing_awaited(const transport::Transport &t, const CommandTable &table) const;

  Step step_ = Step::Header;
  std::atomic<bool> mid_reply_{false};
  Command *cur_ = nullptr;
  bool simple_ = false;         // current reply is a simple reply
  wire::ReplyChunkHeader chunk_{};
  uint8_t *data_dst_ = nullptr;
  uint64_t data_offset_ = 0;    // image offset of the data being received
  uint64_t data_len_ = 0;
  uint64_t data_left_ = 0;
  std::vector<uint8_t> payload_;
  size_t payload_have_ = 0;
  // payload_.capacity() as memory_bytes() may read it from another thread; written by
  // the reader only when the capacity changes.
  std::atomic<size_t> payload_capacity_{0};
  uint64_t discard_left_ = 0;
  uint64_t answered_request_bytes_ = 0;
};

}  // namespace duplexnbd
