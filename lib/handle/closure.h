// SPDX-License-Identifier: LGPL-2.1-or-later
// Ownership of a C closure struct: its .free runs exactly once, whatever path the call takes.
#pragma once

#include <utility>

#include "libnbd.h"

namespace duplexnbd {

// How many user callbacks the current thread is inside.  A call made from a callback must
// never wait for the library to make progress: the progress may be this very thread's.
inline thread_local int callback_depth = 0;
inline bool in_callback() { return callback_depth > 0; }

// Wraps one of libnbd's {callback, user_data, free} structs. The public entry point wraps
// every closure argument before any check, so a call that fails still frees it; a call that
// succeeds moves it into the command or handle that will invoke it, whose destruction frees it.
template <typename C>
class Closure {
public:
  Closure() = default;
  explicit Closure(const C &c) : c_(c) {}
  ~Closure() { reset(); }

  Closure(Closure &&o) noexcept : c_(std::exchange(o.c_, C{})) {}
  Closure &operator=(Closure &&o) noexcept {
    if (this != &o) {
      reset();
      c_ = std::exchange(o.c_, C{});
    }
    return *this;
  }
  Closure(const Closure &) = delete;
  Closure &operator=(const Closure &) = delete;

  // Any closure may be passed with callback == NULL (libnbd does not reject one, and its
  // tests pass a closure holding only .free); it is then never called, and free still runs.
  bool has_callback() const { return c_.callback != nullptr; }
  explicit operator bool() const { return has_callback(); }

  template <typename... A>
  int operator()(A &&...args) const {
    if (c_.callback == nullptr) return 0;
    struct Depth {
      Depth() { ++callback_depth; }
      ~Depth() { --callback_depth; }
    } depth;
    return c_.callback(c_.user_data, std::forward<A>(args)...);
  }

  // Runs .free now (if any) and forgets the closure.
  void reset() {
    C old = std::exchange(c_, C{});
    if (old.free) old.free(old.user_data);
  }

  const C &raw() const { return c_; }

private:
  C c_{};
};

using ChunkCallback = Closure<nbd_chunk_callback>;
using CompletionCallback = Closure<nbd_completion_callback>;
using DebugCallback = Closure<nbd_debug_callback>;
using ExtentCallback = Closure<nbd_extent_callback>;
using Extent64Callback = Closure<nbd_extent64_callback>;
using ListCallback = Closure<nbd_list_callback>;
using ContextCallback = Closure<nbd_context_callback>;

}  // namespace duplexnbd
