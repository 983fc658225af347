// SPDX-License-Identifier: LGPL-2.1-or-later
// The writer machine: gathers queued headers and payloads into few large sendmsg calls.
#include "engine/request_writer.h"

#include <sys/uio.h>

#include <cerrno>

#include "engine/command_table.h"

namespace duplexnbd {
namespace {
// Enough iovecs for 64 requests with payloads; more gains nothing once the socket buffer
// is full, and bounds the stack use.
constexpr int kMaxIov = 128;
}  // namespace

void RequestWriter::push(const WriteEntry &e) {
  queue_.push_back(e);
  pending_.store(true, std::memory_order_release);
}

void RequestWriter::push_deferred(const WriteEntry &e) {
  deferred_bytes_ += e.total();
  deferred_.store(true, std::memory_order_release);
  push(e);
}

void RequestWriter::release(Command *c, CompletionList &finished) {
  if (c && c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) finished.push(c);
}

Status RequestWriter::run(transport::Transport &t, CompletionList &finished, uint64_t &bytes_sent) {
  deferred_.store(false, std::memory_order_release);
  deferred_bytes_ = 0;
  while (!queue_.empty()) {
    struct iovec iov[kMaxIov];
    int n = 0;
    size_t entries = 0;
    for (auto it = queue_.begin(); it != queue_.end() && n + 2 <= kMaxIov; ++it, ++entries) {
      WriteEntry &e = *it;
      uint64_t skip = e.sent;
      if (skip < e.header_len) {
        iov[n].iov_base = e.header + skip;
        iov[n].iov_len = e.header_len - skip;
        n++;
        skip = 0;
      } else {
        skip -= e.header_len;
      }
      if (e.payload_len > skip) {
        iov[n].iov_base = const_cast<uint8_t *>(e.payload) + skip;
        iov[n].iov_len = e.payload_len - skip;
        n++;
      }
    }
    bool more = entries < queue_.size();
    ssize_t r = t.send(iov, n, more);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      pending_.store(!queue_.empty(), std::memory_order_release);
      return errno_error("send");
    }
    bytes_sent += uint64_t(r);
    uint64_t left = uint64_t(r);
    while (left > 0 && !queue_.empty()) {
      WriteEntry &e = queue_.front();
      uint64_t want = e.total() - e.sent;
      if (left < want) {
        e.sent += left;
        left = 0;
        break;
      }
      left -= want;
      Command *c = e.cmd;
      queue_.pop_front();
      release(c, finished);
    }
  }
  pending_.store(!queue_.empty(), std::memory_order_release);
  return {};
}

void RequestWriter::clear(CompletionList &finished) {
  while (!queue_.empty()) {
    Command *c = queue_.front().cmd;
    queue_.pop_front();
    release(c, finished);
  }
  pending_.store(false, std::memory_order_release);
  deferred_.store(false, std::memory_order_release);
}

bool RequestWriter::queued_unsent(const Command *c) const {
  for (const WriteEntry &e : queue_)
    if (e.cmd == c) return e.sent == 0;
  return false;
}

void RequestWriter::drop_unsent(Command *c) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->cmd != c || it->sent != 0) continue;
    if (deferred_bytes_ >= it->total()) deferred_bytes_ -= it->total();
    queue_.erase(it);
    pending_.store(!queue_.empty(), std::memory_order_release);
    if (queue_.empty()) deferred_.store(false, std::memory_order_release);
    return;
  }
}

void RequestWriter::retarget(Command *c, Command *ghost) {
  for (WriteEntry &e : queue_) {
    if (e.cmd != c) continue;
    if (e.payload_len) {
      ghost->owned_payload.assign(e.payload, e.payload + e.payload_len);
      e.payload = ghost->owned_payload.data();
    }
    e.cmd = ghost;
    return;
  }
}

void RequestWriter::abandon_unsent(CommandTable &table, CompletionList &finished) {
  std::deque<WriteEntry> kept;
  for (WriteEntry &e : queue_) {
    Command *c = e.cmd;
    if (e.sent == 0 && c && table.abandon(c)) {
      if (c->error == 0) c->error = ENOTCONN;
      if (c->refs.fetch_sub(2, std::memory_order_acq_rel) == 2) finished.push(c);
      continue;
    }
    kept.push_back(e);
  }
  queue_.swap(kept);
  pending_.store(!queue_.empty(), std::memory_order_release);
}

}  // namespace duplexnbd
