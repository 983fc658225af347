// SPDX-License-Identifier: LGPL-2.1-or-later
// Finishing commands: completion callbacks, the hand-off list, and the completed/in-flight queries.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "engine/command.h"
#include "engine/command_table.h"
#include "engine/issue_gate.h"

namespace duplexnbd {

// A command whose reply is complete (or that the connection's death ended) is finished
// here: its read buffer settled, its completion callback run, its closures freed, and it
// is either retired or queued for nbd_aio_command_completed.  Two rules of libnbd's
// decide *which thread* finishes it:
//
// - Never before the aio call that issued it has returned (libnbd's handle lock keeps
//   reply processing out meanwhile, and programs such as nbdfuse count a command as
//   theirs only once they hold its cookie).  A command carries `issuing` while its call
//   runs and whoever is about to call back waits at the IssueGate; what the issuing call
//   itself would finish is handed off to the next thread that drives the handle.
// - One completion callback per nbd_poll (libnbd's state machine stops after each reply,
//   and nbdfuse re-checks its own count of commands between polls).  The rest wait at the
//   front of the hand-off list, which keeps the direction WRITE, so the next poll returns
//   at once and finishes the next one.
class CompletionQueue {
public:
  CompletionQueue(CommandTable &table, IssueGate &gate) : table_(table), gate_(gate) {}
  ~CompletionQueue();

  // How many completion callbacks one nbd_poll may run.
  class Budget {
  public:
    bool spent() const { return left_ == 0; }
    void spend() { --left_; }

  private:
    int left_ = 1;
  };

  // Queues commands for the next driving thread.  True if there were any (the caller then
  // wakes the pollers).
  bool hand_off(CompletionList &list);
  bool handed_off() const { return pending_.load(std::memory_order_acquire); }

  // Finishes what `list` holds: commands whose issuing call has returned first, then the
  // others as their calls return; with a budget, what is beyond it goes back to the front
  // of the hand-off list.  True if anything was handed back.
  bool finish(CompletionList &list, Budget *budget = nullptr);
  // The same for the hand-off list.
  bool finish_handed_off(Budget *budget = nullptr);

  // nbd_close: calls back every command that never finished, exactly once (libnbd 1.18
  // and later), then frees it.  Handed-off and `finished` commands get their own
  // outcome; `abandoned` ones (still awaiting a reply or a send) their error, or
  // ENOTCONN.  No read buffer is written: the caller may have handed its memory on.
  void close_out(CompletionList &finished, CompletionList &abandoned);

  // nbd_aio_command_completed (sets the error itself: -1 / 0 / 1), peek, in flight.
  int command_completed(uint64_t cookie);
  int64_t peek_completed();
  int in_flight() const { return table_.in_flight(); }

private:
  void run_completion(Command *c);

  CommandTable &table_;
  IssueGate &gate_;
  std::mutex mutex_;
  CompletionList handed_off_;  // guarded by mutex_
  std::atomic<bool> pending_{false};
};

// The short name libnbd uses in "<name>: command failed" messages (NBD_CMD_READ -> "read").
const char *failed_command_name(uint16_t type);

}  // namespace duplexnbd
