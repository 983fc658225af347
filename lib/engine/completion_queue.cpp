// SPDX-License-Identifier: LGPL-2.1-or-later
// CompletionQueue: runs completion callbacks in libnbd's order, on the thread libnbd would.
#include "engine/completion_queue.h"

#include <cerrno>

#include "handle/error.h"
#include "wire/protocol.h"

namespace duplexnbd {

CompletionQueue::~CompletionQueue() {
  std::lock_guard lock(mutex_);
  while (Command *c = handed_off_.pop()) delete c;
}

bool CompletionQueue::hand_off(CompletionList &list) {
  if (list.empty()) return false;
  std::lock_guard lock(mutex_);
  while (Command *c = list.pop()) handed_off_.push(c);
  pending_.store(true, std::memory_order_release);
  return true;
}

bool CompletionQueue::finish(CompletionList &list, Budget *budget) {
  if (list.empty()) return false;
  auto spent = [budget] { return budget && budget->spent(); };
  auto complete = [&](Command *c) {
    if (c->ghost) {
      // Its caller's command completed when it was abandoned; nobody is told anything.
      table_.ghost_gone(c);
      delete c;
      return;
    }
    bool calls_back = bool(c->completion);
    run_completion(c);
    if (budget && calls_back) budget->spend();
  };
  // Commands whose issuing call has not returned yet go last, so that a poll waits for
  // an issuer only when nothing else is ready.  Once the budget is spent the rest is
  // handed back unscanned.
  CompletionList issuing;
  while (!spent()) {
    Command *c = list.pop();
    if (!c) break;
    if (c->issuing.load(std::memory_order_acquire))
      issuing.push(c);
    else
      complete(c);
  }
  while (!spent()) {
    Command *c = issuing.pop();
    if (!c) break;
    gate_.wait(c);
    complete(c);
  }
  list.splice_front(issuing);
  if (list.empty()) return false;
  std::lock_guard lock(mutex_);
  handed_off_.splice_front(list);
  pending_.store(true, std::memory_order_release);
  return true;
}

bool CompletionQueue::finish_handed_off(Budget *budget) {
  if (!pending_.load(std::memory_order_acquire)) return false;
  if (budget && budget->spent()) return true;
  CompletionList list;
  {
    std::lock_guard lock(mutex_);
    list.splice_front(handed_off_);
    pending_.store(false, std::memory_order_release);
  }
  return finish(list, budget);
}

void CompletionQueue::run_completion(Command *c) {
  c->settle_read_buffer();
  table_.begin_callbacks(c);
  bool retire = false;
  if (c->completion) {
    int err = c->error;
    int r = c->completion(&err);
    // As for every callback with an error parameter, only a failing callback (-1) may
    // change the command's error, and never to 0.
    if (r == -1 && err != 0) c->error = err;
    retire = (r == 1);
  }
  // The closures live as long as the command: libnbd 1.22 runs their .free when the command
  // is retired (here, by nbd_aio_command_completed or nbd_close), not when it completes, so
  // user_data stays valid until then.  ~Command frees mid-command callbacks, then completion.
  if (retire) {
    table_.retired(c);
    delete c;
  } else {
    table_.push_done(c);
  }
}

void CompletionQueue::close_out(CompletionList &finished, CompletionList &abandoned) {
  auto call_back = [](Command *c, int err) {
    if (c->completion) (void)c->completion(&err);
    delete c;  // frees the mid-command closures first, then the completion's
  };
  {
    std::lock_guard lock(mutex_);
    finished.splice_front(handed_off_);
    pending_.store(false, std::memory_order_release);
  }
  while (Command *c = finished.pop()) call_back(c, c->error);
  while (Command *c = abandoned.pop()) call_back(c, c->error ? c->error : ENOTCONN);
}

int CompletionQueue::command_completed(uint64_t cookie) {
  bool in_flight = false;
  Command *c = table_.take_done(cookie, &in_flight);
  // As in libnbd, a cookie that is not (or no longer) known is simply "not completed".
  if (!c) return 0;
  int err = c->error;
  uint16_t type = c->type;
  delete c;
  if (err != 0) {
    set_error(err, "%s: command failed", failed_command_name(type));
    return -1;
  }
  return 1;
}

int64_t CompletionQueue::peek_completed() {
  uint64_t cookie = table_.first_done();
  if (cookie) return int64_t(cookie);
  if (table_.in_flight() > 0) return 0;
  set_error(EINVAL, "no commands are in flight");
  return -1;
}

const char *failed_command_name(uint16_t type) {
  switch (type) {
    case wire::kCmdRead: return "read";
    case wire::kCmdWrite: return "write";
    case wire::kCmdDisc: return "disconnect";
    case wire::kCmdFlush: return "flush";
    case wire::kCmdTrim: return "trim";
    case wire::kCmdCache: return "cache";
    case wire::kCmdWriteZeroes: return "write-zeroes";
    case wire::kCmdBlockStatus: return "block-status";
    default: return "UNKNOWN!";
  }
}

}  // namespace duplexnbd
