// SPDX-License-Identifier: LGPL-2.1-or-later
// The command table: cookie lookup for the reader, done queue for aio_command_completed.
#include "engine/command_table.h"

#include <algorithm>

#include "handle/closure.h"

namespace duplexnbd {

CommandTable::~CommandTable() {
  in_flight_.for_each([](uint64_t, Command *c) { delete c; });
  while (done_head_) {
    Command *c = done_head_;
    done_head_ = c->next;
    delete c;
  }
}

uint64_t CommandTable::next_cookie() {
  std::lock_guard lock(mutex_);
  return next_cookie_++;
}

void CommandTable::insert(Command *c) {
  std::lock_guard lock(mutex_);
  in_flight_.insert(c->cookie, c);
}

Command *CommandTable::find_in_flight(uint64_t cookie) {
  std::lock_guard lock(mutex_);
  Command *c = in_flight_.find(cookie);
  if (c) c->claimed = true;
  return c;
}

bool CommandTable::abandon(Command *c) {
  std::lock_guard lock(mutex_);
  if (c->claimed) return false;
  in_flight_.erase(c->cookie);
  completing_.push_back(c->cookie);
  return true;
}

void CommandTable::remove_in_flight(Command *c) {
  std::lock_guard lock(mutex_);
  in_flight_.erase(c->cookie);
  completing_.push_back(c->cookie);
}

void CommandTable::forget(Command *c) {
  std::lock_guard lock(mutex_);
  in_flight_.erase(c->cookie);
}

bool CommandTable::erase(std::vector<uint64_t> &v, uint64_t cookie) {
  auto it = std::find(v.begin(), v.end(), cookie);
  if (it == v.end()) return false;
  *it = v.back();
  v.pop_back();
  return true;
}

void CommandTable::begin_callbacks(Command *c) {
  std::lock_guard lock(mutex_);
  if (erase(completing_, c->cookie)) running_.push_back(c->cookie);
}

std::vector<Command *> CommandTable::take_all_in_flight() {
  std::lock_guard lock(mutex_);
  std::vector<Command *> out;
  out.reserve(in_flight_.size());
  in_flight_.for_each([&](uint64_t cookie, Command *c) {
    out.push_back(c);
    completing_.push_back(cookie);
  });
  in_flight_.clear();
  // Newest first, the order libnbd 1.22.2 runs their callbacks in when a connection ends.
  std::sort(out.begin(), out.end(), [](Command *a, Command *b) { return a->cookie > b->cookie; });
  return out;
}

Command *CommandTable::find(uint64_t cookie) {
  std::lock_guard lock(mutex_);
  return in_flight_.find(cookie);
}

bool CommandTable::is_in_flight(uint64_t cookie) {
  std::lock_guard lock(mutex_);
  Command *c = in_flight_.find(cookie);
  return c && !c->ghost;
}

void CommandTable::replace_with_ghost(Command *c, Command *ghost) {
  std::lock_guard lock(mutex_);
  in_flight_.erase(c->cookie);
  in_flight_.insert(ghost->cookie, ghost);
  completing_.push_back(c->cookie);
  ghosts_++;
}

void CommandTable::ghost_gone(Command *ghost) {
  std::lock_guard lock(mutex_);
  // Reaped ghosts are still in flight; those whose reply came are completing.
  if (in_flight_.find(ghost->cookie) == ghost) in_flight_.erase(ghost->cookie);
  else erase(completing_, ghost->cookie);
  ghosts_--;
}

void CommandTable::push_done(Command *c) {
  {
    std::lock_guard lock(mutex_);
    c->next = nullptr;
    if (done_tail_)
      done_tail_->next = c;
    else
      done_head_ = c;
    done_tail_ = c;
    if (!erase(running_, c->cookie)) erase(completing_, c->cookie);
  }
  completed_cv_.notify_all();
}

void CommandTable::retired(Command *c) {
  {
    std::lock_guard lock(mutex_);
    if (!erase(running_, c->cookie)) erase(completing_, c->cookie);
  }
  completed_cv_.notify_all();
}

Command *CommandTable::take_done(uint64_t cookie, bool *in_flight) {
  std::unique_lock lock(mutex_);
  for (;;) {
    Command *prev = nullptr;
    for (Command *c = done_head_; c; prev = c, c = c->next) {
      if (c->cookie != cookie) continue;
      if (prev)
        prev->next = c->next;
      else
        done_head_ = c->next;
      if (done_tail_ == c) done_tail_ = prev;
      c->next = nullptr;
      *in_flight = false;
      return c;
    }
    const bool running = std::find(running_.begin(), running_.end(), cookie) != running_.end();
    // From inside a callback the completion may be this thread's own job: answer "not yet".
    if (!running || in_callback()) {
      *in_flight = running || in_flight_.find(cookie) != nullptr ||
                   std::find(completing_.begin(), completing_.end(), cookie) != completing_.end();
      return nullptr;
    }
    completed_cv_.wait(lock);
  }
}

bool CommandTable::is_done(uint64_t cookie) {
  std::lock_guard lock(mutex_);
  for (Command *c = done_head_; c; c = c->next)
    if (c->cookie == cookie) return true;
  return false;
}

uint64_t CommandTable::first_done() {
  std::lock_guard lock(mutex_);
  return done_head_ ? done_head_->cookie : 0;
}

size_t CommandTable::awaiting_reply() const {
  std::lock_guard lock(mutex_);
  return in_flight_.size();
}

int CommandTable::in_flight() const {
  std::lock_guard lock(mutex_);
  return int(in_flight_.size() + completing_.size() + running_.size() - ghosts_);
}

size_t CommandTable::memory_bytes() const {
  auto command_bytes = [](const Command *c) { return sizeof(Command) + c->owned_payload.capacity(); };
  std::lock_guard lock(mutex_);
  size_t bytes = in_flight_.memory_bytes() +
                 (completing_.capacity() + running_.capacity()) * sizeof(uint64_t);
  in_flight_.for_each([&](uint64_t, Command *c) { bytes += command_bytes(c); });
  // Only cookies are kept for commands whose callbacks are due or running.
  bytes += (completing_.size() + running_.size()) * sizeof(Command);
  for (const Command *c = done_head_; c; c = c->next) bytes += command_bytes(c);
  return bytes;
}

}  // namespace duplexnbd
