// SPDX-License-Identifier: LGPL-2.1-or-later
// Who owns the receiving side of a connection, and the reaping its owner owes on release.
#pragma once

#include <mutex>

namespace duplexnbd {

// The reader is never waited for: a thread that finds it taken has nothing to add (the
// owner reads whatever arrived), and the owner may be inside a caller's chunk callback
// for a long time, or waiting for a command's issuing call to return.  Killing the
// connection must still reap the commands the reader holds, and only the reader's owner
// may touch them; so whoever cannot take the slot leaves the reap to the owner, who finds
// it owed when it releases and does it before anyone else can take the slot.  Nothing is
// ever left unreaped, and nobody blocks on the reader.
//
// This is also how re-entry is handled: a callback that calls back into the reader (a
// notify or a poll from inside a chunk callback) finds the slot taken by its own thread
// and returns at once.
class ReaderSlot {
public:
  // Takes the slot if free.
  bool try_acquire() {
    std::lock_guard lock(mutex_);
    if (busy_) return false;
    busy_ = true;
    return true;
  }

  // Takes the slot to reap, or, if it is taken, owes the reap to its owner.  True when
  // the caller holds the slot and must reap.
  bool acquire_or_owe_reap() {
    std::lock_guard lock(mutex_);
    if (busy_) {
      reap_owed_ = true;
      return false;
    }
    busy_ = true;
    return true;
  }

  // Releases the slot, unless a reap was owed meanwhile: then the caller keeps the slot,
  // must reap, and release again.  True means "reap now".
  [[nodiscard]] bool release_or_reap() {
    std::lock_guard lock(mutex_);
    if (reap_owed_) {
      reap_owed_ = false;
      return true;
    }
    busy_ = false;
    return false;
  }

private:
  std::mutex mutex_;
  bool busy_ = false;       // guarded by mutex_
  bool reap_owed_ = false;  // guarded by mutex_
};

}  // namespace duplexnbd
