// SPDX-License-Identifier: LGPL-2.1-or-later
// A TLS client session over a plain transport: a non-blocking handshake, then a full-duplex Transport.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "tls/tls_config.h"
#include "transport/file_descriptor.h"
#include "transport/transport.h"

namespace duplexnbd::tls {

// True when the library was built with GnuTLS (nbd_supports_tls).
constexpr bool tls_compiled_in() { return DUPLEXNBD_HAVE_TLS != 0; }

// What the handshake needs next.
enum class HandshakeProgress {
  Done,       // the session is up: send()/recv() carry application data now
  WantRead,   // poll fd() for POLLIN, then call handshake_step() again
  WantWrite,  // poll fd() for POLLOUT, then call handshake_step() again
};

// The session is itself the Transport that replaces the plain one after STARTTLS:
// the connection swaps its transport for this object at once, drives handshake_step()
// from its readable/writable events until Done, and then simply keeps using it.
//
// Threading contract (the same as transport::Transport once the handshake is Done):
//  - handshake_step() runs on one thread at a time and never concurrently with
//    send()/recv() (the engine runs it only in the handshake phase, under its
//    handshake lock).
//  - After Done, one thread may be inside send()/shutdown_write() while another is
//    inside recv(), with no locking by the caller.  Internally each call into GnuTLS
//    (one record: at most 16 KiB of crypto plus one non-blocking syscall) holds a
//    session mutex, because GnuTLS's own "one sender, one receiver" guarantee does
//    not survive TLS 1.3 key updates (see gnutls_session.cpp); nothing ever waits
//    for the socket while holding it, so the two sides still overlap everywhere
//    else and neither can stall the other for longer than one record.
//  - A server's KeyUpdate request is honoured (the receiving side learns of it, the
//    next send performs it).  Renegotiation (a TLS 1.2 HelloRequest) is refused:
//    recv() fails with EIO; it never waits for the sending side.
//  - pending_read() and fd() may be called from either side at any time.
//
// send() keeps a record, once encrypted, whole: when the socket takes only part of
// one, the rest waits inside the session and the record's last byte is reported
// unsent, so a caller that keeps unsent data queued keeps polling for POLLOUT until
// the record has left.  The next send() skips that byte (it is already encrypted)
// whatever the buffer holds by then.  (GnuTLS itself never holds an interrupted
// record: its retry path would send the data twice if a KeyUpdate request arrived
// in between.)
//
// Errors: send()/recv() report failures as -1 with errno like any Transport (EAGAIN,
// EPIPE/ECONNRESET from the socket, EIO for a TLS-level failure); the TLS-level
// message, worded like libnbd's ("gnutls_record_recv: <GnuTLS text>", errnum 0), is
// then available from recv_error()/send_error() on the same side's thread.
class TlsSession : public transport::Transport {
public:
  // Runs the TLS handshake as far as it can without blocking.  Failure is fatal for
  // the connection: {0, "gnutls_handshake: <GnuTLS text> (<last in>/<last out>)"},
  // exactly as libnbd words it (no reason appended for verification failures).
  virtual Result<HandshakeProgress> handshake_step() = 0;
  virtual bool handshake_done() const = 0;

  // Human-readable protocol/cipher summary for debug messages (empty before Done).
  virtual std::string description() const = 0;

  // After handshake_step() failed because the server's certificate was rejected:
  // GnuTLS's account of why (untrusted issuer, name mismatch, expired...), for a
  // debug message, since the error itself reads exactly as libnbd's and says only
  // "Error in the certificate verification."  Empty otherwise.
  virtual std::string verification_failure() const = 0;

  // The last TLS-level failure of each side (errnum 0 when none, or for TLS errors
  // whose only description is GnuTLS's text).
  virtual Error send_error() const = 0;
  virtual Error recv_error() const = 0;
};

// Starts a client session on top of `plain` (normally the connection's SocketTransport,
// right after the server acknowledged NBD_OPT_STARTTLS).  Loads the credentials named
// by `config` first; on failure `plain` is left untouched (the caller still owns the
// connection and reports the error), on success it is moved into the session.
// Without GnuTLS this always fails with ENOTSUP.
Result<std::unique_ptr<TlsSession>> start_tls_client(
    std::unique_ptr<transport::Transport> &plain, const TlsConfig &config);

// Convenience for tests and callers holding a bare connected socket.
Result<std::unique_ptr<TlsSession>> start_tls_client(transport::FileDescriptor fd,
                                                     const TlsConfig &config);

}  // namespace duplexnbd::tls
