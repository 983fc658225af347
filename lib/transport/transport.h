// SPDX-License-Identifier: LGPL-2.1-or-later
// The byte pipe between the engine and the server: plain sockets now, TLS later.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include "transport/file_descriptor.h"

namespace duplexnbd::transport {

// A connected, non-blocking byte stream.
//
// Threading contract: send() and shutdown_write() belong to the sending side,
// recv() to the receiving side, and the two sides may run concurrently on two
// different threads (one sender, one receiver) without any locking by the
// caller.  Implementations must therefore keep no mutable state shared between
// the directions (a TLS implementation will need its own arrangement for the
// session state).  fd() and pending_read() may be called from either side.
// close() and destruction require that neither side is inside a call.
//
// Neither direction ever blocks: when no progress is possible the call returns
// -1 with errno set to EAGAIN, and the caller should poll fd() (POLLOUT for
// send, POLLIN for recv; but see pending_read()).  EINTR is retried internally.
class Transport {
public:
  Transport() = default;
  Transport(const Transport &) = delete;
  Transport &operator=(const Transport &) = delete;
  virtual ~Transport();

  // Sends a prefix of the gathered buffers; returns the number of bytes sent or
  // -1 with errno.  `more` hints that the caller has further data to send right
  // away (MSG_MORE), letting the kernel coalesce a header with its payload.
  // A peer that has gone away yields EPIPE (never SIGPIPE) or ECONNRESET.
  virtual ssize_t send(const struct iovec *iov, int iovcnt, bool more) = 0;

  // Receives up to `len` bytes; returns the count, 0 at end of stream, or -1
  // with errno.
  virtual ssize_t recv(void *buf, size_t len) = 0;

  // The descriptor to poll, or -1 once closed.
  virtual int fd() const = 0;

  // True if recv() can return data without the descriptor becoming readable,
  // because bytes are already buffered inside the transport (e.g. decrypted
  // TLS records); the receiver must then call recv() before polling.
  virtual bool pending_read() const = 0;

  // Tells the peer no more data will be sent, while still receiving.
  virtual void shutdown_write() = 0;

  // Releases the connection; later calls fail with EBADF.
  virtual void close() = 0;
};

// A Transport over a connected socket.  Descriptors that turn out not to be
// sockets (the caller of nbd_connect_socket may hand us anything) fall back to
// writev/read, with SIGPIPE suppressed by hand.
class SocketTransport final : public Transport {
public:
  explicit SocketTransport(FileDescriptor fd);
  ~SocketTransport() override;

  ssize_t send(const struct iovec *iov, int iovcnt, bool more) override;
  ssize_t recv(void *buf, size_t len) override;
  int fd() const override { return fd_.get(); }
  bool pending_read() const override { return false; }
  void shutdown_write() override;
  void close() override;

private:
  FileDescriptor fd_;
  // Decided once at construction so that neither direction has to discover
  // (and record) it later, which would be state shared between the threads.
  bool is_socket_ = true;
};

}  // namespace duplexnbd::transport
