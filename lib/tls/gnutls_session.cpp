// SPDX-License-Identifier: LGPL-2.1-or-later
// GnuTLS client sessions: non-blocking handshake, then a full-duplex Transport over the plain one.
#include <arpa/inet.h>
#include <poll.h>
#include <sys/uio.h>

#include <gnutls/gnutls.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tls/gnutls_credentials.h"
#include "tls/tls_session.h"

namespace duplexnbd::tls {

namespace {

// The largest plaintext record TLS allows; records are never bigger, whatever the
// negotiated limit says.
constexpr size_t kMaxRecord = 16384;

// How long shutdown_write() may wait for the close_notify alert to leave when the
// socket buffer is full.  The connection is ending, so this bounds a rare wait rather
// than blocking the engine indefinitely; past it the alert is given up on.
constexpr int kByeTimeoutMs = 1000;
constexpr int kByePollStepMs = 100;

Error gnutls_error(std::string_view call, int err) {
  return make_error(0, std::string(call) + ": " + gnutls_strerror(err));
}

// An IP literal is not a valid SNI name (RFC 6066), but it is still verified against
// the certificate's IP address entries.
bool is_ip_literal(const std::string &host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Locking.  GnuTLS documents one thread in gnutls_record_send and another in
// gnutls_record_recv as safe, but with TLS 1.3 it is not: processing a KeyUpdate
// (ours, or the server's, which happens inside record_recv) duplicates the whole
// current epoch, write and read sequence numbers included, while the other thread
// keeps advancing them; the stale copy then breaks the next record ("Decryption has
// failed", seen in tests with a server requesting key updates).  So every call into
// the session holds session_mutex_.  Each such call is one non-blocking record
// operation (at most 16 KiB of crypto and one non-blocking syscall), so the two
// sides still overlap everywhere else: waiting in poll, the engine's parsing and
// copying, and the socket I/O of the plain transport underneath.
class GnutlsSession final : public TlsSession {
public:
  explicit GnutlsSession(std::unique_ptr<transport::Transport> plain)
      : plain_(std::move(plain)) {}
  ~GnutlsSession() override;

  // Creates the GnuTLS session and loads credentials; `plain_` is not used until
  // the handshake starts, so a failure here has sent nothing.
  Status init(const TlsConfig &config);
  std::unique_ptr<transport::Transport> take_plain() { return std::move(plain_); }

  Result<HandshakeProgress> handshake_step() override;
  bool handshake_done() const override { return handshake_done_.load(std::memory_order_acquire); }
  std::string description() const override;
  std::string verification_failure() const override { return verification_failure_; }
  Error send_error() const override { return send_error_; }
  Error recv_error() const override { return recv_error_; }

  ssize_t send(const struct iovec *iov, int iovcnt, bool more) override;
  ssize_t recv(void *buf, size_t len) override;
  int fd() const override;
  bool pending_read() const override { return pending_read_.load(std::memory_order_acquire); }
  void shutdown_write() override;
  void close() override;

private:
  // GnuTLS transport callbacks, always run under session_mutex_.  errno is left as
  // the plain transport set it for GnuTLS to read (gnutls_transport_set_errno would
  // be one more piece of shared state).
  static ssize_t push(gnutls_transport_ptr_t self, const giovec_t *iov, int iovcnt);
  static ssize_t pull(gnutls_transport_ptr_t self, void *buf, size_t len);
  static int pull_timeout(gnutls_transport_ptr_t self, unsigned int ms);

  // Need session_mutex_.
  int flush_out(bool more);
  bool out_empty() const { return out_off_ == out_.size(); }
  Result<HandshakeProgress> handshake_step_locked();
  HandshakeProgress finish_handshake();
  Error handshake_failure(int err);

  ssize_t send_records(const struct iovec *iov, int iovcnt, size_t total, bool more);
  ssize_t fail_send(int gnutls_err, int push_errno);
  ssize_t fail_send_errno(int err);
  ssize_t fail_recv(int gnutls_err, int pull_errno);

  std::unique_ptr<transport::Transport> plain_;
  Credentials creds_;  // declared before session_: GnuTLS borrows them until deinit
  gnutls_session_t session_ = nullptr;
  mutable std::mutex session_mutex_;

  std::atomic<bool> handshake_done_{false};
  std::atomic<bool> closed_{false};
  // Updated after each recv(): whether GnuTLS holds decrypted bytes, which would
  // never make the socket readable.  Only record_recv buffers data, so this is exact
  // without the sending side ever having to look into the session.
  std::atomic<bool> pending_read_{false};
  // Set by shutdown_write(), read by recv(): once our side has said goodbye, a server
  // that hangs up without close_notify (qemu-nbd does) is just end of stream.
  std::atomic<bool> writes_shut_{false};

  // Written when handshake_step() fails on the server's certificate and read after
  // that, by the thread driving the handshake (no other side exists before Done).
  std::string verification_failure_;

  // ---- Under session_mutex_.
  bool gnutls_finished_ = false;  // gnutls_handshake returned 0
  bool push_more_ = false;        // MSG_MORE hint for the next push
  int push_errno_ = 0;            // why the last push failed (EPIPE, ECONNRESET...)
  int pull_errno_ = 0;            // why the last pull failed
  // Ciphertext the socket has not taken yet (from out_off_ on).  push() parks it
  // here instead of returning EAGAIN, so GnuTLS never holds an interrupted record:
  // its retry path re-encrypts the data when a KeyUpdate request arrives in
  // between, which would put the bytes on the wire twice.
  std::vector<uint8_t> out_;
  size_t out_off_ = 0;

  // ---- Sending side only.
  size_t max_record_ = kMaxRecord;
  std::unique_ptr<uint8_t[]> stage_;  // plaintext of a record spanning several buffers
  // The last plaintext byte of a record parked in out_ is reported unsent: the
  // caller keeps it queued and so keeps polling for POLLOUT until the record has
  // left, and the next send() skips it (it is already encrypted).
  bool held_byte_ = false;
  bool send_failed_ = false;
  int send_failed_errno_ = 0;
  Error send_error_;

  // ---- Receiving side only.
  bool recv_failed_ = false;
  int recv_failed_errno_ = 0;
  Error recv_error_;
};

GnutlsSession::~GnutlsSession() {
  if (session_ != nullptr)
    gnutls_deinit(session_);
}

Status GnutlsSession::init(const TlsConfig &config) {
  // GNUTLS_NONBLOCK: the engine polls, GnuTLS must never wait itself.  No handshake
  // timeout is set: the engine owns timeouts.
  int err = gnutls_init(&session_, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
  if (err < 0) {
    session_ = nullptr;
    return make_error(ENOMEM, std::string("gnutls_init: ") + gnutls_strerror(err));
  }

  if (config.sni_hostname && !is_ip_literal(*config.sni_hostname)) {
    err = gnutls_server_name_set(session_, GNUTLS_NAME_DNS, config.sni_hostname->data(),
                                 config.sni_hostname->size());
    if (err < 0)
      return gnutls_error("gnutls_server_name_set", err);
  }

  Status s = set_up_credentials(session_, config, creds_);
  if (!s)
    return s;

  gnutls_transport_set_ptr(session_, this);
  gnutls_transport_set_vec_push_function(session_, &GnutlsSession::push);
  gnutls_transport_set_pull_function(session_, &GnutlsSession::pull);
  gnutls_transport_set_pull_timeout_function(session_, &GnutlsSession::pull_timeout);
  return {};
}

// ---- Transport callbacks ------------------------------------------------------------

ssize_t GnutlsSession::push(gnutls_transport_ptr_t p, const giovec_t *iov, int iovcnt) {
  auto *self = static_cast<GnutlsSession *>(p);
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i)
    total += iov[i].iov_len;
  // What the socket does not take now is kept, in order, behind whatever is already
  // waiting; GnuTLS is told it all went.
  size_t skip = 0;
  if (self->out_empty()) {
    ssize_t r = self->plain_->send(iov, iovcnt, self->push_more_);
    if (r < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        self->push_errno_ = errno;
        return -1;
      }
      r = 0;
    }
    skip = static_cast<size_t>(r);
    self->out_.clear();
    self->out_off_ = 0;
  }
  for (int i = 0; i < iovcnt; ++i) {
    const uint8_t *b = static_cast<const uint8_t *>(iov[i].iov_base);
    size_t n = iov[i].iov_len;
    if (skip >= n) {
      skip -= n;
      continue;
    }
    self->out_.insert(self->out_.end(), b + skip, b + n);
    skip = 0;
  }
  return static_cast<ssize_t>(total);
}

ssize_t GnutlsSession::pull(gnutls_transport_ptr_t p, void *buf, size_t len) {
  auto *self = static_cast<GnutlsSession *>(p);
  ssize_t r = self->plain_->recv(buf, len);
  if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    self->pull_errno_ = errno;
  return r;
}

int GnutlsSession::pull_timeout(gnutls_transport_ptr_t p, unsigned int ms) {
  // In non-blocking mode GnuTLS asks only with ms == 0, but never wait regardless:
  // the engine must not block inside the transport.
  (void)ms;
  auto *self = static_cast<GnutlsSession *>(p);
  if (self->plain_->pending_read())
    return 1;
  struct pollfd pfd = {self->plain_->fd(), POLLIN, 0};
  int r;
  do {
    r = ::poll(&pfd, 1, 0);
  } while (r == -1 && errno == EINTR);
  return r;
}

int GnutlsSession::flush_out(bool more) {
  while (!out_empty()) {
    struct iovec iov = {out_.data() + out_off_, out_.size() - out_off_};
    ssize_t r = plain_->send(&iov, 1, more);
    if (r < 0)
      return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    out_off_ += static_cast<size_t>(r);
  }
  out_.clear();
  out_off_ = 0;
  return 1;
}

// ---- Handshake ----------------------------------------------------------------------

Error GnutlsSession::handshake_failure(int err) {
  // Where in the handshake it failed, as libnbd reports it (the values are
  // gnutls_handshake_description_t: the last message received / sent).
  std::string msg = std::string("gnutls_handshake: ") + gnutls_strerror(err) + " (" +
                    std::to_string(static_cast<int>(gnutls_handshake_get_last_in(session_))) +
                    "/" +
                    std::to_string(static_cast<int>(gnutls_handshake_get_last_out(session_))) +
                    ")";
  // Nothing is appended, not even the reason for a certificate verification failure:
  // programs show this message as it is, and it must read exactly as libnbd's.  The
  // reason is kept for verification_failure() instead.
  if (err == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
    const unsigned status = gnutls_session_get_verify_cert_status(session_);
    gnutls_datum_t text = {nullptr, 0};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0 &&
        text.data != nullptr) {
      verification_failure_.assign(reinterpret_cast<const char *>(text.data), text.size);
      gnutls_free(text.data);
      while (!verification_failure_.empty() && verification_failure_.back() == ' ')
        verification_failure_.pop_back();
    }
  }
  return make_error(0, std::move(msg));
}

HandshakeProgress GnutlsSession::finish_handshake() {
  max_record_ = std::min(kMaxRecord, gnutls_record_get_max_size(session_));
  if (max_record_ == 0)
    max_record_ = kMaxRecord;
  pending_read_.store(gnutls_record_check_pending(session_) > 0, std::memory_order_release);
  handshake_done_.store(true, std::memory_order_release);
  return HandshakeProgress::Done;
}

Result<HandshakeProgress> GnutlsSession::handshake_step() {
  if (closed_.load())
    return make_error(EBADF, "TLS handshake on a closed connection");
  if (handshake_done())
    return HandshakeProgress::Done;
  std::lock_guard lock(session_mutex_);
  return handshake_step_locked();
}

Result<HandshakeProgress> GnutlsSession::handshake_step_locked() {
  // Our last flight may still be waiting for the socket.
  int f = flush_out(false);
  if (f < 0)
    return errno_error("send");
  if (f == 0)
    return HandshakeProgress::WantWrite;
  // GnuTLS finished earlier and only its last flight was left: never call
  // gnutls_handshake again then, as that would start a renegotiation.
  if (gnutls_finished_)
    return finish_handshake();

  // Non-fatal results other than E_AGAIN (an interrupted call, a warning alert)
  // leave nothing to wait for, so go round again; the bound keeps a misbehaving
  // peer from pinning the thread.
  for (int tries = 0; tries < 64; ++tries) {
    int err = gnutls_handshake(session_);
    if (err != 0 && err != GNUTLS_E_AGAIN && gnutls_error_is_fatal(err))
      return handshake_failure(err);
    if (err != 0 && err != GNUTLS_E_AGAIN)
      continue;
    if (err == 0)
      gnutls_finished_ = true;

    // push() never blocks, so GnuTLS itself only ever waits for reading; writing
    // is pending exactly when ciphertext is parked in out_.
    f = flush_out(false);
    if (f < 0)
      return errno_error("send");
    if (f == 0)
      return HandshakeProgress::WantWrite;
    if (err == 0)
      return finish_handshake();
    return HandshakeProgress::WantRead;
  }
  return HandshakeProgress::WantRead;
}

std::string GnutlsSession::description() const {
  if (!handshake_done() || session_ == nullptr)
    return {};
  std::lock_guard lock(session_mutex_);
  gnutls_cipher_algorithm_t cipher = gnutls_cipher_get(session_);
  gnutls_kx_algorithm_t kx = gnutls_kx_get(session_);
  gnutls_mac_algorithm_t mac = gnutls_mac_get(session_);
  auto name = [](const char *s) { return std::string(s ? s : "?"); };
  return name(gnutls_protocol_get_name(gnutls_protocol_get_version(session_))) + " cipher " +
         name(gnutls_cipher_get_name(cipher)) + " (" +
         std::to_string(8 * gnutls_cipher_get_key_size(cipher)) + " bits) key exchange " +
         name(gnutls_kx_get_name(kx)) + " mac " + name(gnutls_mac_get_name(mac)) + " (" +
         std::to_string(8 * gnutls_mac_get_key_size(mac)) + " bits)";
}

int GnutlsSession::fd() const {
  if (closed_.load() || !plain_)
    return -1;
  return plain_->fd();
}

// ---- Sending side -------------------------------------------------------------------

ssize_t GnutlsSession::fail_send_errno(int err) {
  send_error_ = make_error(err, "send");
  send_failed_errno_ = err;
  send_failed_ = true;
  errno = err;
  return -1;
}

ssize_t GnutlsSession::fail_send(int err, int push_errno) {
  // A socket failure keeps its errno (EPIPE/ECONNRESET tell the engine the server
  // went away); anything else is a TLS failure, reported as EIO.
  if (err == GNUTLS_E_PUSH_ERROR && push_errno != 0)
    return fail_send_errno(push_errno);
  send_error_ = gnutls_error("gnutls_record_send", err);
  send_failed_errno_ = EIO;
  send_failed_ = true;
  errno = EIO;
  return -1;
}

ssize_t GnutlsSession::send(const struct iovec *iov, int iovcnt, bool more) {
  if (closed_.load()) {
    errno = EBADF;
    return -1;
  }
  if (!handshake_done()) {
    errno = ENOTCONN;
    return -1;
  }
  if (send_failed_) {
    errno = send_failed_errno_;
    return -1;
  }
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i)
    total += iov[i].iov_len;
  if (total == 0)
    return 0;
  return send_records(iov, iovcnt, total, more);
}

ssize_t GnutlsSession::send_records(const struct iovec *iov, int iovcnt, size_t total, bool more) {
  if (!stage_)
    stage_ = std::make_unique<uint8_t[]>(kMaxRecord);

  // First deliver what is parked.  Its held byte is the first one offered now; what
  // it holds at this moment does not matter (libnbd, too, sends whatever a caller's
  // buffer holds when the socket takes it, and programs such as libnbd's own load
  // tests share one buffer between reads and writes in flight).
  const size_t held = held_byte_ ? 1 : 0;
  {
    std::lock_guard lock(session_mutex_);
    int f = flush_out(more || total > held);
    if (f < 0)
      return fail_send_errno(errno);
    if (f == 0) {
      errno = EAGAIN;
      return -1;
    }
  }
  size_t sent = held;
  held_byte_ = false;

  // Then one record at a time, taking the lock per record so the receiving side
  // gets its turns.  A record lying inside one buffer is encrypted in place; one
  // spanning buffers (a request header and the start of its payload) is gathered
  // into stage_, so small pieces do not become small records.
  int idx = 0;
  size_t off = sent;
  while (idx < iovcnt && off >= iov[idx].iov_len && sent < total) {
    off -= iov[idx].iov_len;
    ++idx;
  }
  while (sent < total) {
    size_t want = std::min(max_record_, total - sent);
    const uint8_t *data;
    if (iov[idx].iov_len - off >= want) {
      data = static_cast<const uint8_t *>(iov[idx].iov_base) + off;
    } else {
      size_t got = 0;
      int i = idx;
      size_t o = off;
      while (got < want) {
        size_t n = std::min(want - got, iov[i].iov_len - o);
        std::memcpy(stage_.get() + got, static_cast<const uint8_t *>(iov[i].iov_base) + o, n);
        got += n;
        o += n;
        if (o == iov[i].iov_len) {
          ++i;
          o = 0;
        }
      }
      data = stage_.get();
    }

    ssize_t r;
    bool parked;
    int push_errno;
    {
      std::lock_guard lock(session_mutex_);
      push_more_ = more || sent + want < total;
      push_errno_ = 0;
      r = gnutls_record_send(session_, data, want);
      parked = !out_empty();
      push_errno = push_errno_;
    }
    if (r < 0) {
      // push() never reports EAGAIN, so every failure here is final.
      if (sent > 0) {
        // Report the progress now; the error surfaces on the next call.
        fail_send(static_cast<int>(r), push_errno);
        return static_cast<ssize_t>(sent);
      }
      return fail_send(static_cast<int>(r), push_errno);
    }
    size_t done = static_cast<size_t>(r);
    if (parked) {
      // The socket is full: the record is encrypted but not all delivered.  All of
      // it but one byte counts as sent.
      sent += done - 1;
      held_byte_ = true;
      break;
    }
    sent += done;
    off += done;
    while (idx < iovcnt && off >= iov[idx].iov_len && sent < total) {
      off -= iov[idx].iov_len;
      ++idx;
    }
  }

  if (sent == 0) {
    errno = EAGAIN;
    return -1;
  }
  return static_cast<ssize_t>(sent);
}

void GnutlsSession::shutdown_write() {
  if (closed_.load() || !plain_)
    return;
  if (handshake_done() && !send_failed_) {
    {
      std::lock_guard lock(session_mutex_);
      push_more_ = false;
      // push() never blocks, so the alert is queued at once; a failure only means
      // the session is already broken, and the socket is shut down below anyway.
      (void)gnutls_bye(session_, GNUTLS_SHUT_WR);
    }
    for (int waited = 0;; waited += kByePollStepMs) {
      int f;
      {
        std::lock_guard lock(session_mutex_);
        f = flush_out(false);
      }
      if (f != 0 || waited >= kByeTimeoutMs)
        break;
      struct pollfd pfd = {plain_->fd(), POLLOUT, 0};
      if (::poll(&pfd, 1, kByePollStepMs) == -1 && errno != EINTR)
        break;
    }
  }
  writes_shut_.store(true, std::memory_order_release);
  plain_->shutdown_write();
}

// ---- Receiving side -----------------------------------------------------------------

ssize_t GnutlsSession::fail_recv(int err, int pull_errno) {
  if (err == GNUTLS_E_PULL_ERROR && pull_errno != 0) {
    recv_failed_errno_ = pull_errno;
    recv_error_ = make_error(pull_errno, "recv");
  } else {
    recv_failed_errno_ = EIO;
    recv_error_ = gnutls_error("gnutls_record_recv", err);
  }
  recv_failed_ = true;
  pending_read_.store(false, std::memory_order_release);
  errno = recv_failed_errno_;
  return -1;
}

ssize_t GnutlsSession::recv(void *buf, size_t len) {
  if (closed_.load()) {
    errno = EBADF;
    return -1;
  }
  if (!handshake_done()) {
    errno = ENOTCONN;
    return -1;
  }
  if (recv_failed_) {
    errno = recv_failed_errno_;
    return -1;
  }
  if (len == 0)
    return 0;

  for (;;) {
    ssize_t r;
    bool pending;
    int pull_errno;
    {
      std::lock_guard lock(session_mutex_);
      pull_errno_ = 0;
      r = gnutls_record_recv(session_, buf, len);
      pending = gnutls_record_check_pending(session_) > 0;
      pull_errno = pull_errno_;
    }
    pending_read_.store(pending, std::memory_order_release);
    if (r >= 0)
      return r;
    switch (r) {
      case GNUTLS_E_AGAIN:
      case GNUTLS_E_INTERRUPTED:
        errno = EAGAIN;
        return -1;
      case GNUTLS_E_WARNING_ALERT_RECEIVED:
        // A TLS 1.2 warning (close_notify returns 0 instead) does not end the session.
        continue;
      case GNUTLS_E_PREMATURE_TERMINATION:
      case GNUTLS_E_PULL_ERROR:
        // After our goodbye, a server that simply closes the socket is done too;
        // before it, a vanishing server is an error.
        if (writes_shut_.load(std::memory_order_acquire)) {
          pending_read_.store(false, std::memory_order_release);
          return 0;
        }
        return fail_recv(static_cast<int>(r), pull_errno);
      default:
        // Including GNUTLS_E_REHANDSHAKE: renegotiation is refused.
        return fail_recv(static_cast<int>(r), pull_errno);
    }
  }
}

void GnutlsSession::close() {
  if (closed_.exchange(true))
    return;
  pending_read_.store(false, std::memory_order_release);
  if (plain_)
    plain_->close();
}

}  // namespace

Result<std::unique_ptr<TlsSession>> start_tls_client(std::unique_ptr<transport::Transport> &plain,
                                                     const TlsConfig &config) {
  if (!plain)
    return make_error(EINVAL, "TLS requested without a connection");
  auto s = std::make_unique<GnutlsSession>(std::move(plain));
  Status st = s->init(config);
  if (!st) {
    // Nothing was sent: hand the plain transport back.
    plain = s->take_plain();
    return st.take_error();
  }
  return std::unique_ptr<TlsSession>(std::move(s));
}

Result<std::unique_ptr<TlsSession>> start_tls_client(transport::FileDescriptor fd,
                                                     const TlsConfig &config) {
  std::unique_ptr<transport::Transport> plain =
      std::make_unique<transport::SocketTransport>(std::move(fd));
  return start_tls_client(plain, config);
}

}  // namespace duplexnbd::tls
