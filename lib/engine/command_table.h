// SPDX-License-Identifier: LGPL-2.1-or-later
// Commands between issue and retirement: in flight (awaiting a reply) or done (awaiting
// nbd_aio_command_completed). Shared by both machines under one small lock.
#pragma once

#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/command.h"

namespace duplexnbd {

class CommandTable {
public:
  ~CommandTable();

  // Assigns the next cookie and registers the command as in flight.
  uint64_t add(Command *c);
  // The reader's lookup; marks the command claimed, so it can no longer be abandoned.
  Command *find_in_flight(uint64_t cookie);
  // Takes a command that was never sent out of flight (nbd_shutdown's ABANDON_PENDING),
  // unless the reader already holds it (a reply for an unsent cookie). False if held.
  bool abandon(Command *c);
  // Removes a command from in flight (its reply is complete, or the connection died).
  void remove_in_flight(Command *c);
  // Takes every in-flight command (connection death).
  std::vector<Command *> take_all_in_flight();

  // Done queue, in completion order.
  void push_done(Command *c);
  // For nbd_aio_command_completed: the command if done (removed), else nullptr and
  // *in_flight tells whether the cookie is still in flight.
  Command *take_done(uint64_t cookie, bool *in_flight);
  bool is_done(uint64_t cookie);
  // First done cookie, 0 if none.
  uint64_t first_done();

  int in_flight() const;

  std::mutex &mutex() { return mutex_; }

private:
  mutable std::mutex mutex_;
  uint64_t next_cookie_ = 1;
  std::unordered_map<uint64_t, Command *> in_flight_;
  Command *done_head_ = nullptr;
  Command *done_tail_ = nullptr;
};

}  // namespace duplexnbd
