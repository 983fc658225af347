// SPDX-License-Identifier: LGPL-2.1-or-later
// Error values for the core: the library reports failures as values, never exceptions.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace duplexnbd {

// What went wrong, in the form the C boundary turns into libnbd's thread-local error:
// "nbd_<call>: <message>" followed by ": <strerror(errnum)>" when errnum is not 0.
// So `message` never repeats strerror's text; e.g. {ENOENT, "connect"}.
struct Error {
  int errnum = 0;
  std::string message;
};

// Either success or an Error.
class [[nodiscard]] Status {
public:
  Status() = default;
  Status(Error e) : error_(std::move(e)), failed_(true) {}  // NOLINT: implicit by design

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error &error() const { return error_; }
  Error take_error() { return std::move(error_); }

private:
  Error error_;
  bool failed_ = false;
};

// Either a T or an Error.
template <typename T>
class [[nodiscard]] Result {
public:
  Result(T value) : v_(std::move(value)) {}    // NOLINT: implicit by design
  Result(Error e) : v_(std::move(e)) {}        // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T &value() { return std::get<0>(v_); }
  const T &value() const { return std::get<0>(v_); }
  T &operator*() { return value(); }
  T *operator->() { return &value(); }
  const Error &error() const { return std::get<1>(v_); }
  Error take_error() { return std::move(std::get<1>(v_)); }
  Status status() const { return ok() ? Status() : Status(error()); }

private:
  std::variant<T, Error> v_;
};

// Shorthands for the common cases.
inline Error make_error(int errnum, std::string message) {
  return Error{errnum, std::move(message)};
}
// An Error carrying the current errno (call right after the failing system call).
inline Error errno_error(std::string message) {
  return Error{errno, std::move(message)};
}

}  // namespace duplexnbd
