// SPDX-License-Identifier: LGPL-2.1-or-later
// Who owns the receiving side of a connection, and the reaping its owner owes on release.
#pragma once

#include <mutex>
#include <utility>

namespace duplexnbd {

// The reader is never waited for: a thread that finds it taken has nothing to add (the
// owner reads whatever arrived), and the owner may be inside a caller's chunk callback
// for a long time, or waiting for a command's issuing call to return.  Killing the
// connection must still reap the commands the reader holds, and only the reader's owner
// may touch them; so whoever cannot take the slot leaves the reap to the owner, who finds
// it owed when it releases and does it before anyone else can take the slot.  Nothing is
// ever left unreaped, and nobody blocks on the reader.
//
// Work requested while the slot is busy is owed in the same way (see Work).
//
// This is also how re-entry is handled: a callback that calls back into the reader (a
// notify or a poll from inside a chunk callback) finds the slot taken by its own thread
// and returns at once.
class ReaderSlot {
public:
  // Work that only the slot's owner may do, and that may be owed to it.
  enum Work : unsigned {
    kReap = 1,     // the connection ended: complete every command it holds
    kAbandon = 2,  // commands timed out or cancelled: detach them from the wire
  };

  // Takes the slot if free.
  bool try_acquire() {
    std::lock_guard lock(mutex_);
    if (busy_) return false;
    busy_ = true;
    return true;
  }

  // Takes the slot to do `work`, or, if it is taken, owes the work to its owner.  True
  // when the caller holds the slot and must do it.
  bool acquire_or_owe(unsigned work) {
    std::lock_guard lock(mutex_);
    if (busy_) {
      owed_ |= work;
      return false;
    }
    busy_ = true;
    return true;
  }

  // Releases the slot, unless work was owed meanwhile: then the caller keeps the slot,
  // must do the work returned, and call again.  0 means released.
  [[nodiscard]] unsigned release_or_owed() {
    std::lock_guard lock(mutex_);
    if (owed_ != 0) return std::exchange(owed_, 0u);
    busy_ = false;
    return 0;
  }

private:
  std::mutex mutex_;
  bool busy_ = false;    // guarded by mutex_
  unsigned owed_ = 0;    // guarded by mutex_
};

}  // namespace duplexnbd
