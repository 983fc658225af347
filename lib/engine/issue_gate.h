// SPDX-License-Identifier: LGPL-2.1-or-later
// Holds a command's callbacks off until the aio call that issued it has returned.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "engine/command.h"

namespace duplexnbd {

// libnbd's handle lock keeps reply processing out while an aio call runs, so no callback
// of a command (chunk, extent or completion) ever runs before its issuer has the cookie;
// programs count a command as theirs only then (nbdfuse does).  Here another thread may
// read the reply first: the command carries `issuing` while its call runs, and whoever is
// about to call back waits at this gate.
class IssueGate {
public:
  // The issuing call is done with `c`; after this `c` may be completed and freed.
  void open(Command *c);
  // Returns once `c`'s issuing call has opened the gate (at once when it already has).
  void wait(const Command *c);

private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::atomic<int> waiters_{0};
};

}  // namespace duplexnbd
