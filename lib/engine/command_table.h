// SPDX-License-Identifier: LGPL-2.1-or-later
// Commands between issue and retirement: in flight (awaiting a reply), completing (callbacks
// running) or done (awaiting nbd_aio_command_completed). Shared by both machines, one small lock.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "engine/command.h"
#include "engine/cookie_map.h"

namespace duplexnbd {

class CommandTable {
public:
  ~CommandTable();

  // The cookie for the next command (never 0: it marks the in-flight map's empty slots).
  uint64_t next_cookie();
  // Registers the command, its cookie already set, as in flight.
  void insert(Command *c);
  // The reader's lookup; marks the command claimed, so it can no longer be abandoned.
  Command *find_in_flight(uint64_t cookie);
  // Takes a command that was never sent out of flight (nbd_shutdown's ABANDON_PENDING),
  // unless the reader already holds it (a reply for an unsent cookie). False if held.
  bool abandon(Command *c);
  // Moves a command from in flight to completing (its reply is complete).
  void remove_in_flight(Command *c);
  // Forgets a command that failed before it could be queued; it never completes.
  void forget(Command *c);
  // Moves every in-flight command to completing (connection death).
  std::vector<Command *> take_all_in_flight();
  // The command in flight under `cookie` (ghosts included), or nullptr.
  Command *find(uint64_t cookie);
  // `ghost` takes `c`'s place in flight; `c` moves to completing.  A ghost is not counted
  // by in_flight(), since the caller's command has completed.
  void replace_with_ghost(Command *c, Command *ghost);
  // A ghost whose reply came (or whose connection ended) leaves; the caller deletes it.
  void ghost_gone(Command *ghost);

  // Its callbacks are about to run: from now until push_done/retired, take_done waits.
  void begin_callbacks(Command *c);
  // Ends completing: into the done queue (in completion order), or retired by its
  // completion callback (the caller deletes it).
  void push_done(Command *c);
  void retired(Command *c);
  // For nbd_aio_command_completed: the command if done (removed), else nullptr and
  // *in_flight tells whether the cookie is still in flight.  A command whose callbacks
  // are running in another thread is waited for: once the completion callback has
  // signalled, the caller must see the command completed (nbdfuse relies on it).  One
  // whose callbacks have not started is simply still in flight: waiting for it could
  // mean waiting for a thread that drives the handle, and there may be none.
  Command *take_done(uint64_t cookie, bool *in_flight);
  bool is_done(uint64_t cookie);
  // First done cookie, 0 if none.
  uint64_t first_done();

  // In flight or completing, as libnbd counts a command until its callback has returned.
  int in_flight() const;
  // Whether `cookie` is the caller's command in flight (not done, not a ghost).
  bool is_in_flight(uint64_t cookie);
  // Only those whose reply has not been read completely yet.
  size_t awaiting_reply() const;

  // Heap bytes of the table and of the commands it holds (for nbd_get_handle_size).
  size_t memory_bytes() const;

  std::mutex &mutex() { return mutex_; }

private:
  static bool erase(std::vector<uint64_t> &v, uint64_t cookie);  // with mutex_ held

  mutable std::mutex mutex_;
  uint64_t next_cookie_ = 1;
  CookieMap in_flight_;
  std::vector<uint64_t> completing_;       // reply done; few at a time: a vector beats a set
  std::vector<uint64_t> running_;          // callbacks running
  std::condition_variable completed_cv_;   // a completing command left completing_
  size_t ghosts_ = 0;                      // ghosts in in_flight_ or completing_
  Command *done_head_ = nullptr;
  Command *done_tail_ = nullptr;
};

}  // namespace duplexnbd
