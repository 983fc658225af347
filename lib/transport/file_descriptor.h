// SPDX-License-Identifier: LGPL-2.1-or-later
// RAII ownership of a file descriptor, so no error path can leak or double-close one.
#pragma once

#include <unistd.h>

#include <utility>

namespace duplexnbd::transport {

class FileDescriptor {
public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor &) = delete;
  FileDescriptor &operator=(const FileDescriptor &) = delete;
  FileDescriptor(FileDescriptor &&other) noexcept : fd_(other.release()) {}
  FileDescriptor &operator=(FileDescriptor &&other) noexcept {
    if (this != &other)
      reset(other.release());
    return *this;
  }
  ~FileDescriptor() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }

  // Gives up ownership without closing.
  int release() { return std::exchange(fd_, -1); }

  // Closes the current descriptor (if any) and takes ownership of `fd`.
  // close() is not retried on EINTR: on Linux the descriptor is gone either
  // way, and retrying could close a descriptor another thread just opened.
  void reset(int fd = -1) {
    int old = std::exchange(fd_, fd);
    if (old >= 0)
      ::close(old);
  }

private:
  int fd_ = -1;
};

}  // namespace duplexnbd::transport
