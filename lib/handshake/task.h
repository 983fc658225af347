// SPDX-License-Identifier: LGPL-2.1-or-later
// A minimal lazily-started coroutine returning a value, awaitable from another such coroutine.
#pragma once

#include <cerrno>
#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

#include "core/status.h"

namespace duplexnbd::handshake {

// The handshake is written as one sequential coroutine made of nested Tasks.  A Task does
// nothing until awaited (or start()ed at the top); when it finishes it transfers control
// straight back to whoever awaited it (symmetric transfer, so nesting never grows the
// stack).  Suspension points live only in the Handshake's I/O awaiters, which remember the
// innermost suspended coroutine; resuming that one resumes the whole chain.
//
// T must be constructible from Error: an exception escaping a coroutine body (only
// std::bad_alloc can: the core throws nothing else) becomes an ENOMEM result instead of
// unwinding through the driver.
template <typename T>
class [[nodiscard]] Task {
public:
  struct promise_type;
  using Handle = std::coroutine_handle<promise_type>;

  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(Handle h) const noexcept {
      std::coroutine_handle<> next = h.promise().continuation;
      return next ? next : std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };

  struct promise_type {
    std::optional<T> value;
    std::coroutine_handle<> continuation;

    Task get_return_object() { return Task(Handle::from_promise(*this)); }
    std::suspend_always initial_suspend() const noexcept { return {}; }
    FinalAwaiter final_suspend() const noexcept { return {}; }
    template <typename U>
    void return_value(U &&v) {
      value.emplace(std::forward<U>(v));
    }
    void unhandled_exception() noexcept { value.emplace(Error{ENOMEM, "out of memory"}); }
  };

  Task(Task &&o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task &operator=(Task &&o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task &) = delete;
  Task &operator=(const Task &) = delete;
  // Destroying a suspended chain destroys every frame in it: each frame owns the Task
  // it is awaiting.
  ~Task() {
    if (h_) h_.destroy();
  }

  // ---- Awaited from another coroutine.
  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> caller) noexcept {
    h_.promise().continuation = caller;
    return h_;
  }
  T await_resume() { return std::move(*h_.promise().value); }

  // ---- Driven from plain code (the top-level task).
  void start() { h_.resume(); }
  bool done() const { return h_ && h_.done(); }
  T &result() { return *h_.promise().value; }

private:
  explicit Task(Handle h) : h_(h) {}
  Handle h_;
};

}  // namespace duplexnbd::handshake
