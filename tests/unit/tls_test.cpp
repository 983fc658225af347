// SPDX-License-Identifier: LGPL-2.1-or-later
// Tests for lib/tls: configuration, credentials, handshakes against nbdkit, and full-duplex sessions.
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "handle/settings.h"
#include "tls/tls_config.h"
#include "tls/tls_session.h"
#include "tls_fixture.h"
#include "transport/file_descriptor.h"
#include "transport/transport.h"
#include "wire/option.h"
#include "wire/protocol.h"
#include "wire/reply.h"
#include "wire/request.h"

#if DUPLEXNBD_HAVE_TLS
#include <gnutls/gnutls.h>
#endif

namespace duplexnbd::tls {
namespace {

using tls_testing::recv_exact;
using tls_testing::send_all;
using tls_testing::wait_for;

// ---- Configuration (no GnuTLS needed) ------------------------------------------------

TEST(TlsConfigTest, HostnamePrecedence) {
  Settings s;
  s.tls_certificates = "/some/dir";
  s.tls_verify_peer = false;
  s.tls_username = "bob";
  s.tls_psk_file = "/keys.psk";

  TlsConfig c = TlsConfig::from_settings(s);
  EXPECT_EQ(c.certificates_dir, "/some/dir");
  EXPECT_FALSE(c.verify_peer);
  EXPECT_EQ(c.username, "bob");
  EXPECT_EQ(c.psk_file, "/keys.psk");
  EXPECT_FALSE(c.hostname) << "a Unix socket has no hostname: the chain alone is checked";
  EXPECT_FALSE(c.sni_hostname);

  s.tcp_hostname = "server.example";
  c = TlsConfig::from_settings(s);
  EXPECT_EQ(c.hostname, "server.example");
  EXPECT_EQ(c.sni_hostname, "server.example");

  s.tls_hostname = "final.example";
  s.tcp_hostname = "proxy.example";
  c = TlsConfig::from_settings(s);
  EXPECT_EQ(c.hostname, "final.example") << "nbd_set_tls_hostname wins for verification";
  EXPECT_EQ(c.sni_hostname, "proxy.example") << "SNI names the host connected to, as libnbd";
  s.tcp_hostname.reset();
  c = TlsConfig::from_settings(s);
  EXPECT_EQ(c.hostname, "final.example");
  EXPECT_FALSE(c.sni_hostname);

  // Set to "": checked as it is (no certificate matches it), no fallback.
  s.tls_hostname = "";
  s.tcp_hostname = "server.example";
  c = TlsConfig::from_settings(s);
  EXPECT_EQ(c.hostname, "");
}

TEST(TlsConfigTest, DefaultUsernamePrefersLogname) {
  const char *old = getenv("LOGNAME");
  std::string saved = old ? old : "";
  setenv("LOGNAME", "carol", 1);
  Result<std::string> u = default_tls_username();
  if (old) setenv("LOGNAME", saved.c_str(), 1);
  else unsetenv("LOGNAME");
  ASSERT_TRUE(u.ok()) << u.error().message;
  EXPECT_EQ(*u, "carol");
}

#if !DUPLEXNBD_HAVE_TLS

TEST(TlsUnavailableTest, StartFailsWithEnotsup) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  transport::FileDescriptor other(sv[1]);
  auto s = start_tls_client(transport::FileDescriptor(sv[0]), TlsConfig{});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().errnum, ENOTSUP);
  EXPECT_EQ(s.error().message, "TLS support was not compiled in");
}

#else  // DUPLEXNBD_HAVE_TLS

// Runs the handshake to completion the way the engine will: one step per readiness.
Status drive_handshake(TlsSession &s) {
  for (;;) {
    Result<HandshakeProgress> r = s.handshake_step();
    if (!r) return r.take_error();
    switch (*r) {
      case HandshakeProgress::Done:
        return {};
      case HandshakeProgress::WantRead:
        if (!wait_for(s.fd(), POLLIN)) return make_error(ETIMEDOUT, "handshake wait");
        break;
      case HandshakeProgress::WantWrite:
        if (!wait_for(s.fd(), POLLOUT)) return make_error(ETIMEDOUT, "handshake wait");
        break;
    }
  }
}

// ---- Against nbdkit ------------------------------------------------------------------

// The plaintext part of a newstyle handshake up to NBD_OPT_STARTTLS's ACK.
void negotiate_starttls(transport::Transport &t) {
  uint8_t greeting[wire::kNewstyleGreetingSize];
  ASSERT_TRUE(recv_exact(t, greeting, sizeof greeting)) << strerror(errno);
  ASSERT_EQ(wire::classify_greeting(greeting), wire::GreetingKind::Newstyle);
  std::optional<uint16_t> flags = wire::decode_newstyle_greeting(greeting);
  ASSERT_TRUE(flags);
  ASSERT_TRUE(*flags & wire::kFlagFixedNewstyle);

  uint8_t out[64];
  size_t n = wire::encode_client_flags(out, wire::kFlagCFixedNewstyle | wire::kFlagCNoZeroes);
  n += wire::encode_option_request(std::span(out).subspan(n), wire::kOptStartTls, {});
  ASSERT_TRUE(send_all(t, out, n)) << strerror(errno);

  uint8_t reply[wire::kOptionReplyHeaderSize];
  ASSERT_TRUE(recv_exact(t, reply, sizeof reply)) << strerror(errno);
  std::optional<wire::OptionReplyHeader> h = wire::decode_option_reply_header(reply);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->option, wire::kOptStartTls);
  ASSERT_EQ(h->reply_type, wire::kRepAck);
  ASSERT_EQ(h->length, 0u);
}

// One option reply: header plus payload.
struct OptionReply {
  wire::OptionReplyHeader header;
  std::vector<uint8_t> payload;
};

bool read_option_reply(transport::Transport &t, OptionReply &r) {
  uint8_t hdr[wire::kOptionReplyHeaderSize];
  if (!recv_exact(t, hdr, sizeof hdr)) return false;
  std::optional<wire::OptionReplyHeader> h = wire::decode_option_reply_header(hdr);
  if (!h || h->length > 65536) return false;
  r.header = *h;
  r.payload.resize(h->length);
  return h->length == 0 || recv_exact(t, r.payload.data(), h->length);
}

class TlsNbdkitTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    if (tls_testing::Nbdkit::available() && tls_testing::Pki::tools_available())
      pki_ = new tls_testing::Pki();
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  void SetUp() override {
    if (!pki_) GTEST_SKIP() << "needs nbdkit, certtool and psktool";
    ASSERT_TRUE(pki_->ok()) << pki_->error();
  }

  static std::unique_ptr<tls_testing::Nbdkit> start_certs(bool verify_clients = false) {
    std::vector<std::string> args = {"--tls=require", "--tls-certificates=" + pki_->path("good")};
    if (verify_clients) args.push_back("--tls-verify-peer");
    args.insert(args.end(), {"memory", "1M"});
    return std::make_unique<tls_testing::Nbdkit>(args);
  }
  static std::unique_ptr<tls_testing::Nbdkit> start_psk() {
    return std::make_unique<tls_testing::Nbdkit>(std::vector<std::string>{
        "--tls=require", "--tls-psk=" + pki_->path("keys.psk"), "memory", "1M"});
  }

  // Connects, negotiates STARTTLS in plaintext, then starts TLS with `config` on the
  // plain transport the way the handshake will, and runs the TLS handshake.
  static Result<std::unique_ptr<TlsSession>> connect(const tls_testing::Nbdkit &server,
                                                     const TlsConfig &config) {
    transport::FileDescriptor fd = server.connect();
    if (!fd) return errno_error("connect");
    std::unique_ptr<transport::Transport> plain =
        std::make_unique<transport::SocketTransport>(std::move(fd));
    negotiate_starttls(*plain);
    if (::testing::Test::HasFatalFailure()) return make_error(EPROTO, "STARTTLS failed");
    Result<std::unique_ptr<TlsSession>> s = start_tls_client(plain, config);
    if (!s) {
      EXPECT_TRUE(plain) << "a failed start must hand the plain transport back";
      return s;
    }
    EXPECT_FALSE(plain);
    Status hs = drive_handshake(**s);
    if (!hs) return hs.take_error();
    return s;
  }

  static TlsConfig cert_config(const std::string &dir, std::optional<std::string> host) {
    TlsConfig c;
    c.certificates_dir = pki_->path(dir);
    c.hostname = std::move(host);
    return c;
  }

  static tls_testing::Pki *pki_;
};

tls_testing::Pki *TlsNbdkitTest::pki_ = nullptr;

// NBD_OPT_LIST, NBD_OPT_GO, a write and a read, NBD_CMD_DISC, all over TLS.
void exercise_nbd_session(TlsSession &t) {
  EXPECT_FALSE(t.description().empty());

  uint8_t out[256];
  size_t n = wire::encode_option_request(out, wire::kOptList, {});
  ASSERT_TRUE(send_all(t, out, n)) << strerror(errno);
  int servers = 0;
  for (;;) {
    OptionReply r;
    ASSERT_TRUE(read_option_reply(t, r)) << strerror(errno);
    ASSERT_EQ(r.header.option, wire::kOptList);
    if (r.header.reply_type == wire::kRepAck) break;
    ASSERT_EQ(r.header.reply_type, wire::kRepServer);
    ASSERT_TRUE(wire::decode_rep_server(r.payload));
    servers++;
  }
  EXPECT_GE(servers, 1);

  uint8_t payload[64];
  size_t plen = wire::encode_info_payload(payload, "", {});
  n = wire::encode_option_request(out, wire::kOptGo, std::span<const uint8_t>(payload, plen));
  ASSERT_TRUE(send_all(t, out, n)) << strerror(errno);
  uint64_t size = 0;
  uint16_t tflags = 0;
  for (;;) {
    OptionReply r;
    ASSERT_TRUE(read_option_reply(t, r)) << strerror(errno);
    ASSERT_EQ(r.header.option, wire::kOptGo);
    if (r.header.reply_type == wire::kRepAck) break;
    ASSERT_EQ(r.header.reply_type, wire::kRepInfo);
    std::optional<wire::InfoReply> info = wire::decode_rep_info(r.payload);
    ASSERT_TRUE(info);
    if (info->info_type == wire::kInfoExport) {
      size = info->export_info.size;
      tflags = info->export_info.transmission_flags;
    }
  }
  EXPECT_EQ(size, 1024u * 1024u);
  EXPECT_FALSE(tflags & wire::kFlagReadOnly);

  // Transmission (simple replies: structured replies were not requested).  The
  // write goes as header + payload in one gathered send.
  std::vector<uint8_t> data(4096);
  for (size_t i = 0; i < data.size(); i++) data[i] = uint8_t(i * 7 + 3);
  uint8_t req[wire::kRequestHeaderSize];
  wire::RequestHeader wr;
  wr.type = wire::kCmdWrite;
  wr.cookie = 1;
  wr.offset = 8192;
  wr.length = data.size();
  ASSERT_EQ(wire::encode_request(req, wr), sizeof req);
  struct iovec iov[2] = {{req, sizeof req}, {data.data(), data.size()}};
  size_t total = sizeof req + data.size(), done = 0;
  while (done < total) {
    // Re-present whatever is unsent, as the engine's writer does.
    struct iovec v[2];
    int cnt = 0;
    size_t skip = done;
    for (auto &e : iov) {
      if (skip >= e.iov_len) {
        skip -= e.iov_len;
        continue;
      }
      v[cnt++] = {static_cast<uint8_t *>(e.iov_base) + skip, e.iov_len - skip};
      skip = 0;
    }
    ssize_t r = t.send(v, cnt, false);
    if (r < 0) {
      ASSERT_EQ(errno, EAGAIN) << strerror(errno);
      ASSERT_TRUE(wait_for(t.fd(), POLLOUT));
      continue;
    }
    done += size_t(r);
  }
  uint8_t rep[wire::kSimpleReplySize];
  ASSERT_TRUE(recv_exact(t, rep, sizeof rep)) << strerror(errno);
  std::optional<wire::SimpleReply> sr = wire::decode_simple_reply(rep);
  ASSERT_TRUE(sr);
  EXPECT_EQ(sr->cookie, 1u);
  EXPECT_EQ(sr->error, 0u);

  wire::RequestHeader rd;
  rd.type = wire::kCmdRead;
  rd.cookie = 2;
  rd.offset = 8192;
  rd.length = data.size();
  ASSERT_EQ(wire::encode_request(req, rd), sizeof req);
  ASSERT_TRUE(send_all(t, req, sizeof req));
  ASSERT_TRUE(recv_exact(t, rep, sizeof rep)) << strerror(errno);
  sr = wire::decode_simple_reply(rep);
  ASSERT_TRUE(sr);
  EXPECT_EQ(sr->cookie, 2u);
  EXPECT_EQ(sr->error, 0u);
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(recv_exact(t, back.data(), back.size())) << strerror(errno);
  EXPECT_EQ(back, data);

  wire::RequestHeader disc;
  disc.type = wire::kCmdDisc;
  disc.cookie = 3;
  ASSERT_EQ(wire::encode_request(req, disc), sizeof req);
  ASSERT_TRUE(send_all(t, req, sizeof req));
  t.shutdown_write();
  EXPECT_EQ(tls_testing::recv_until_eof(t), 0) << "the server closes after NBD_CMD_DISC";
}

TEST_F(TlsNbdkitTest, CertificatesVerifiedSessionCarriesNbd) {
  auto server = start_certs();
  ASSERT_TRUE(server->ok()) << server->error();
  auto s = connect(*server, cert_config("good", "localhost"));
  ASSERT_TRUE(s.ok()) << s.error().message << "\nnbdkit: " << server->log();
  exercise_nbd_session(**s);
}

TEST_F(TlsNbdkitTest, ClientCertificateIsPresented) {
  auto server = start_certs(/*verify_clients=*/true);
  ASSERT_TRUE(server->ok()) << server->error();
  auto s = connect(*server, cert_config("good", "localhost"));
  ASSERT_TRUE(s.ok()) << s.error().message << "\nnbdkit: " << server->log();
  exercise_nbd_session(**s);

  // Without client-cert.pem the server refuses us.  Under TLS 1.3 the client's
  // handshake is over before the server has judged its certificate, so the refusal
  // may only show on the first read.
  auto bad = connect(*server, cert_config("caonly", "localhost"));
  if (!bad.ok()) {
    EXPECT_EQ(bad.error().errnum, 0);
    EXPECT_EQ(bad.error().message.rfind("gnutls_handshake: ", 0), 0u) << bad.error().message;
    return;
  }
  uint8_t out[64];
  size_t n = wire::encode_option_request(out, wire::kOptList, {});
  (void)send_all(**bad, out, n);
  OptionReply r;
  EXPECT_FALSE(read_option_reply(**bad, r));
  // The server's alert (EIO, "gnutls_record_recv: ...") or its hang-up (ECONNRESET).
  EXPECT_TRUE(errno == EIO || errno == ECONNRESET) << strerror(errno);
  EXPECT_NE((*bad)->recv_error().message, "");
}

TEST_F(TlsNbdkitTest, WrongCaFailsVerification) {
  auto server = start_certs();
  ASSERT_TRUE(server->ok()) << server->error();
  auto s = connect(*server, cert_config("wrongca", "localhost"));
  ASSERT_FALSE(s.ok());
  // As libnbd: errno 0, "gnutls_handshake: <GnuTLS text> (<in>/<out>)", nothing more
  // (nbdinfo prints it; interop/programs compares it with stock libnbd's).
  EXPECT_EQ(s.error().errnum, 0);
  EXPECT_EQ(s.error().message.rfind("gnutls_handshake: Error in the certificate verification. (", 0),
            0u)
      << s.error().message;
  EXPECT_EQ(s.error().message.back(), ')') << s.error().message;
}

TEST_F(TlsNbdkitTest, WrongHostnameFailsVerification) {
  auto server = start_certs();
  ASSERT_TRUE(server->ok()) << server->error();
  auto s = connect(*server, cert_config("good", "not-localhost.example"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().errnum, 0);
  EXPECT_NE(s.error().message.find("certificate verification"), std::string::npos)
      << s.error().message;
  EXPECT_EQ(s.error().message.back(), ')') << s.error().message;
}

TEST_F(TlsNbdkitTest, IpAddressHostnameIsVerified) {
  auto server = start_certs();
  ASSERT_TRUE(server->ok()) << server->error();
  auto s = connect(*server, cert_config("good", "127.0.0.1"));
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto bad = connect(*server, cert_config("good", "127.0.0.2"));
  ASSERT_FALSE(bad.ok());
}

TEST_F(TlsNbdkitTest, ChainIsVerifiedWithoutHostnameAndSkippedOnlyWhenDisabled) {
  // libnbd >= 1.20: verify_peer applies with no hostname too (a Unix socket, a
  // command): the chain is checked, only the name is not (CVE-2024-7383).
  auto server = start_certs();
  ASSERT_TRUE(server->ok()) << server->error();
  auto bad = connect(*server, cert_config("wrongca", std::nullopt));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().errnum, 0);
  EXPECT_NE(bad.error().message.find("Error in the certificate verification"), std::string::npos)
      << bad.error().message;

  auto good = connect(*server, cert_config("good", std::nullopt));
  ASSERT_TRUE(good.ok()) << good.error().message;
  exercise_nbd_session(**good);

  TlsConfig off = cert_config("wrongca", std::nullopt);
  off.verify_peer = false;
  auto s = connect(*server, off);
  ASSERT_TRUE(s.ok()) << s.error().message;
  exercise_nbd_session(**s);
}

TEST_F(TlsNbdkitTest, SystemTrustIsVerifiedToo) {
  // A directory without ca-cert.pem means the system store, which does not know our
  // CA: with a hostname, that must fail rather than trust anything.
  auto server = start_certs();
  ASSERT_TRUE(server->ok()) << server->error();
  auto s = connect(*server, cert_config("other/nonexistent", "localhost"));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("certificate verification"), std::string::npos)
      << s.error().message;
}

TEST_F(TlsNbdkitTest, PskSessionCarriesNbd) {
  auto server = start_psk();
  ASSERT_TRUE(server->ok()) << server->error();
  TlsConfig c;
  c.psk_file = pki_->path("keys.psk");
  c.username = "alice";
  auto s = connect(*server, c);
  ASSERT_TRUE(s.ok()) << s.error().message << "\nnbdkit: " << server->log();
  exercise_nbd_session(**s);
}

TEST_F(TlsNbdkitTest, PskUsernameDefaultsToLogname) {
  auto server = start_psk();
  ASSERT_TRUE(server->ok()) << server->error();
  const char *old = getenv("LOGNAME");
  std::string saved = old ? old : "";
  setenv("LOGNAME", "alice", 1);
  TlsConfig c;
  c.psk_file = pki_->path("keys.psk");
  auto s = connect(*server, c);
  if (old) setenv("LOGNAME", saved.c_str(), 1);
  else unsetenv("LOGNAME");
  ASSERT_TRUE(s.ok()) << s.error().message;
}

TEST_F(TlsNbdkitTest, WrongPskFails) {
  auto server = start_psk();
  ASSERT_TRUE(server->ok()) << server->error();
  TlsConfig c;
  c.psk_file = pki_->path("wrong.psk");
  c.username = "alice";
  auto s = connect(*server, c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().errnum, 0);
  EXPECT_EQ(s.error().message.rfind("gnutls_handshake: ", 0), 0u) << s.error().message;
}

TEST_F(TlsNbdkitTest, PskFileErrorsAreReportedBeforeAnyTls) {
  auto server = start_psk();
  ASSERT_TRUE(server->ok()) << server->error();
  TlsConfig c;
  c.psk_file = pki_->path("keys.psk");
  c.username = "bob";
  auto s = connect(*server, c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().errnum, EINVAL);
  EXPECT_EQ(s.error().message,
            pki_->path("keys.psk") + ": username bob was not found in PSK file");

  c.psk_file = pki_->path("missing.psk");
  s = connect(*server, c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().errnum, ENOENT);
  EXPECT_EQ(s.error().message, "open: " + pki_->path("missing.psk"));
}

TEST_F(TlsNbdkitTest, CertificateClientAgainstPskServerFails) {
  auto server = start_psk();
  ASSERT_TRUE(server->ok()) << server->error();
  auto s = connect(*server, cert_config("good", "localhost"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message.rfind("gnutls_handshake: ", 0), 0u) << s.error().message;
}

// ---- Against an in-process GnuTLS peer on a socketpair --------------------------------

constexpr std::array<uint8_t, 32> kPskKey = {
    0x3c, 0x91, 0x07, 0xe2, 0x5a, 0x14, 0xbb, 0x60, 0x2f, 0xd8, 0x43, 0x7e, 0x09, 0xc5, 0x11, 0xa6,
    0x74, 0x38, 0xee, 0x02, 0x9d, 0x6b, 0xf1, 0x25, 0x80, 0x5c, 0x3a, 0xc9, 0x17, 0x64, 0xdd, 0x4f};

std::string psk_line() {
  static const char hex[] = "0123456789abcdef";
  std::string s = "alice:";
  for (uint8_t b : kPskKey) {
    s += hex[b >> 4];
    s += hex[b & 15];
  }
  return s + "\n";
}

// The server end: a blocking GnuTLS PSK server in its own thread.
class Peer {
public:
  enum class Mode {
    Echo,         // send back everything received, until close_notify
    Sink,         // wait for release(), then keep everything received
    Rehandshake,  // TLS 1.2: ask for a renegotiation once data arrives
    HangUp,       // after the handshake, wait for close_notify, then close without one
    DropNow,      // after the handshake, close the socket at once
  };

  Peer(int fd, Mode mode, bool tls12 = false, uint64_t key_update_after = 0)
      : fd_(fd), mode_(mode), tls12_(tls12), key_update_after_(key_update_after) {
    thread_ = std::thread([this] { run(); });
  }
  ~Peer() { join(); }

  void release() { released_.store(true); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  const std::string &error() const { return error_; }
  const std::vector<uint8_t> &received() const { return received_; }
  bool key_updated() const { return key_updated_; }

private:
  static int psk_callback(gnutls_session_t, const char *username, gnutls_datum_t *key) {
    if (std::strcmp(username, "alice") != 0) return -1;
    key->data = static_cast<unsigned char *>(gnutls_malloc(kPskKey.size()));
    if (!key->data) return -1;
    std::memcpy(key->data, kPskKey.data(), kPskKey.size());
    key->size = kPskKey.size();
    return 0;
  }

  bool send_all_tls(gnutls_session_t s, const uint8_t *p, size_t n) {
    while (n > 0) {
      ssize_t r = gnutls_record_send(s, p, n);
      if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) continue;
      if (r < 0) {
        error_ = std::string("server record_send: ") + gnutls_strerror(int(r));
        return false;
      }
      p += r;
      n -= size_t(r);
    }
    return true;
  }

  void run() {
    gnutls_psk_server_credentials_t cred = nullptr;
    gnutls_session_t s = nullptr;
    gnutls_psk_allocate_server_credentials(&cred);
    gnutls_psk_set_server_credentials_function(cred, psk_callback);
    gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL);
    gnutls_priority_set_direct(
        s, tls12_ ? "NORMAL:-VERS-ALL:+VERS-TLS1.2:+ECDHE-PSK:+PSK" : "NORMAL:+ECDHE-PSK:+PSK",
        nullptr);
    gnutls_credentials_set(s, GNUTLS_CRD_PSK, cred);
    gnutls_transport_set_int(s, fd_);
    int r;
    do {
      r = gnutls_handshake(s);
    } while (r < 0 && !gnutls_error_is_fatal(r));
    if (r < 0) {
      error_ = std::string("server handshake: ") + gnutls_strerror(r);
    } else {
      serve(s);
    }
    gnutls_deinit(s);
    gnutls_psk_free_server_credentials(cred);
    ::close(fd_);
  }

  void serve(gnutls_session_t s) {
    if (mode_ == Mode::DropNow) return;
    if (mode_ == Mode::Sink) {
      while (!released_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::vector<uint8_t> buf(1 << 16);
    uint64_t total = 0;
    for (;;) {
      ssize_t r = gnutls_record_recv(s, buf.data(), buf.size());
      if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) continue;
      if (r == 0) break;  // close_notify
      if (r < 0) {
        if (mode_ != Mode::Rehandshake)
          error_ = std::string("server record_recv: ") + gnutls_strerror(int(r));
        return;
      }
      total += uint64_t(r);
      switch (mode_) {
        case Mode::Echo:
          if (!send_all_tls(s, buf.data(), size_t(r))) return;
          if (key_update_after_ && !key_updated_ && total >= key_update_after_) {
            // Ask the client to update its keys too: its receiving side learns it,
            // its sending side must act on it.
            int k;
            do {
              k = gnutls_session_key_update(s, GNUTLS_KU_PEER);
            } while (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED);
            if (k < 0) {
              error_ = std::string("key update: ") + gnutls_strerror(k);
              return;
            }
            key_updated_ = true;
          }
          break;
        case Mode::Sink:
          received_.insert(received_.end(), buf.begin(), buf.begin() + r);
          break;
        case Mode::Rehandshake: {
          int k = gnutls_rehandshake(s);
          if (k < 0) error_ = std::string("rehandshake: ") + gnutls_strerror(k);
          // Keep reading: the client must refuse (fail) rather than wait for us.
          break;
        }
        default:
          break;
      }
    }
    if (mode_ == Mode::HangUp) return;  // no close_notify of ours
    gnutls_bye(s, GNUTLS_SHUT_WR);
  }

  int fd_;
  Mode mode_;
  bool tls12_;
  uint64_t key_update_after_;
  std::atomic<bool> released_{false};
  bool key_updated_ = false;
  std::string error_;
  std::vector<uint8_t> received_;
  std::thread thread_;
};

class TlsPeerTest : public ::testing::Test {
public:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    tls_testing::write_file(dir_ / "keys.psk", psk_line());
  }

  // A session over one end of a socketpair, the Peer on the other.
  std::unique_ptr<TlsSession> start(Peer::Mode mode, std::unique_ptr<Peer> &peer,
                                    bool tls12 = false, uint64_t key_update_after = 0,
                                    int sndbuf = 0) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return nullptr;
    if (sndbuf) {
      setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
      setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf);
    }
    peer = std::make_unique<Peer>(sv[1], mode, tls12, key_update_after);
    TlsConfig c;
    c.psk_file = dir_ / "keys.psk";
    c.username = "alice";
    auto s = start_tls_client(transport::FileDescriptor(sv[0]), c);
    EXPECT_TRUE(s.ok()) << s.error().message;
    if (!s) return nullptr;
    Status hs = drive_handshake(**s);
    EXPECT_TRUE(hs.ok()) << hs.error().message;
    if (!hs) return nullptr;
    return std::move(*s);
  }

  tls_testing::TempDir dir_;
};

uint8_t pattern(uint64_t i) { return uint8_t((i * 2654435761u) >> 13); }

// One thread sends `kTotal` bytes while another receives the echo, concurrently on
// one session.  With `key_update_after`, the server demands a key update then, which
// the receiving side learns of and the sending side must carry out.
void run_duplex(TlsPeerTest &fixture, uint64_t kTotal, uint64_t key_update_after) {
  std::unique_ptr<Peer> peer;
  auto t = fixture.start(Peer::Mode::Echo, peer, false, key_update_after);
  ASSERT_TRUE(t);

  std::atomic<bool> failed{false};
  std::string send_err, recv_err;
  uint64_t eagains = 0;

  std::thread sender([&] {
    // Variable-sized "header" + payload pairs, so records are both gathered and
    // encrypted in place; unsent bytes are always re-presented.
    std::vector<uint8_t> chunk(300000);
    uint64_t pos = 0;
    size_t round = 0;
    while (pos < kTotal && !failed.load()) {
      size_t hdr = 1 + round % 40, body = 1000 + (round * 7919) % (chunk.size() - 1100);
      size_t len = std::min<uint64_t>(hdr + body, kTotal - pos);
      for (size_t i = 0; i < len; i++) chunk[i] = pattern(pos + i);
      size_t done = 0;
      while (done < len) {
        struct iovec v[2];
        int cnt = 0;
        if (done < hdr && hdr <= len) {
          v[cnt++] = {chunk.data() + done, hdr - done};
          v[cnt++] = {chunk.data() + hdr, len - hdr};
        } else {
          v[cnt++] = {chunk.data() + done, len - done};
        }
        ssize_t r = t->send(v, cnt, false);
        if (r < 0) {
          if (errno != EAGAIN) {
            send_err = std::string("send: ") + strerror(errno) + " " + t->send_error().message;
            failed.store(true);
            return;
          }
          eagains++;
          if (!wait_for(t->fd(), POLLOUT)) {
            send_err = "send timeout";
            failed.store(true);
            return;
          }
          continue;
        }
        done += size_t(r);
      }
      pos += len;
      round++;
    }
  });

  std::thread receiver([&] {
    std::vector<uint8_t> buf(70000);
    uint64_t pos = 0;
    size_t round = 0;
    while (pos < kTotal && !failed.load()) {
      // Small and large reads, so decrypted data is often left inside GnuTLS.
      size_t want = (round++ % 3 == 0) ? 17 : buf.size();
      ssize_t r = t->recv(buf.data(), std::min<uint64_t>(want, kTotal - pos));
      if (r == 0) {
        recv_err = "unexpected end of stream at " + std::to_string(pos);
        failed.store(true);
        return;
      }
      if (r < 0) {
        if (errno != EAGAIN) {
          recv_err = std::string("recv: ") + strerror(errno) + " " + t->recv_error().message;
          failed.store(true);
          return;
        }
        if (!t->pending_read() && !wait_for(t->fd(), POLLIN)) {
          recv_err = "recv timeout at " + std::to_string(pos);
          failed.store(true);
          return;
        }
        continue;
      }
      for (ssize_t i = 0; i < r; i++) {
        if (buf[size_t(i)] != pattern(pos + uint64_t(i))) {
          recv_err = "corrupt byte at " + std::to_string(pos + uint64_t(i));
          failed.store(true);
          return;
        }
      }
      pos += uint64_t(r);
    }
  });

  sender.join();
  receiver.join();
  EXPECT_EQ(send_err, "");
  EXPECT_EQ(recv_err, "");
  t->shutdown_write();
  EXPECT_EQ(tls_testing::recv_until_eof(*t), 0);
  peer->join();
  EXPECT_EQ(peer->error(), "");
  EXPECT_EQ(peer->key_updated(), key_update_after != 0);
  ::testing::Test::RecordProperty("send_eagains", std::to_string(eagains));
}

TEST_F(TlsPeerTest, FullDuplexSixtyFourMebibytes) { run_duplex(*this, 64ull << 20, 0); }

TEST_F(TlsPeerTest, FullDuplexWithServerRequestedKeyUpdate) {
  run_duplex(*this, 64ull << 20, 32ull << 20);
}

// A record the socket takes only part of is delivered whole, and exactly once, even
// when the caller's buffer changes before it is offered again (libnbd's load tests
// share one buffer between reads and writes in flight): the peer gets what the buffer
// held when each byte was encrypted.
TEST_F(TlsPeerTest, InterruptedRecordIsDeliveredWholeWhateverTheBufferHoldsLater) {
  std::unique_ptr<Peer> peer;
  auto t = start(Peer::Mode::Sink, peer, false, 0, 4096);
  ASSERT_TRUE(t);

  std::vector<uint8_t> data(8 << 20);
  for (size_t i = 0; i < data.size(); i++) data[i] = pattern(i);
  std::vector<uint8_t> expected = data;
  size_t done = 0;
  bool changed = false;
  while (done < data.size()) {
    struct iovec v = {data.data() + done, data.size() - done};
    ssize_t r = t->send(&v, 1, false);
    if (r < 0) {
      ASSERT_EQ(errno, EAGAIN) << strerror(errno);
      if (!changed) {
        // The peer is not reading yet, so a record is parked in the session and its
        // last byte (at `done`) was reported unsent: it stays as encrypted, every
        // later byte goes out as the buffer holds it now.
        std::fill(data.begin() + long(done), data.end(), 0xEE);
        std::fill(expected.begin() + long(done) + 1, expected.end(), 0xEE);
        changed = true;
        peer->release();
      }
      ASSERT_TRUE(wait_for(t->fd(), POLLOUT));
      continue;
    }
    ASSERT_GT(r, 0);
    done += size_t(r);
  }
  EXPECT_TRUE(changed) << "the socket buffer never filled up";
  peer->release();
  t->shutdown_write();
  EXPECT_EQ(tls_testing::recv_until_eof(*t), 0);
  peer->join();
  EXPECT_EQ(peer->error(), "");
  ASSERT_EQ(peer->received().size(), expected.size());
  EXPECT_TRUE(peer->received() == expected);
}

TEST_F(TlsPeerTest, RenegotiationIsRefused) {
  std::unique_ptr<Peer> peer;
  auto t = start(Peer::Mode::Rehandshake, peer, /*tls12=*/true);
  ASSERT_TRUE(t);
  uint8_t b[4] = {1, 2, 3, 4};
  ASSERT_TRUE(send_all(*t, b, sizeof b));
  // The HelloRequest must turn into an error on the receiving side, not a hang.
  uint8_t in[16];
  ssize_t r;
  for (;;) {
    r = t->recv(in, sizeof in);
    if (r < 0 && errno == EAGAIN) {
      ASSERT_TRUE(t->pending_read() || wait_for(t->fd(), POLLIN));
      continue;
    }
    break;
  }
  EXPECT_EQ(r, -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_EQ(t->recv_error().errnum, 0);
  EXPECT_EQ(t->recv_error().message.rfind("gnutls_record_recv: ", 0), 0u)
      << t->recv_error().message;
  // And it stays failed.
  EXPECT_EQ(t->recv(in, sizeof in), -1);
  EXPECT_EQ(errno, EIO);
  t->shutdown_write();
  t->close();
  peer->join();
}

TEST_F(TlsPeerTest, ServerHangingUpAfterOurGoodbyeIsEndOfStream) {
  // qemu-nbd closes the socket without close_notify after NBD_CMD_DISC.
  std::unique_ptr<Peer> peer;
  auto t = start(Peer::Mode::HangUp, peer);
  ASSERT_TRUE(t);
  t->shutdown_write();
  EXPECT_EQ(tls_testing::recv_until_eof(*t), 0);
  peer->join();
}

TEST_F(TlsPeerTest, ServerVanishingMidSessionIsAnError) {
  std::unique_ptr<Peer> peer;
  auto t = start(Peer::Mode::DropNow, peer);
  ASSERT_TRUE(t);
  peer->join();
  uint8_t in[16];
  ssize_t r;
  for (;;) {
    r = t->recv(in, sizeof in);
    if (r < 0 && errno == EAGAIN) {
      ASSERT_TRUE(wait_for(t->fd(), POLLIN));
      continue;
    }
    break;
  }
  EXPECT_EQ(r, -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_NE(t->recv_error().message.find("gnutls_record_recv: "), std::string::npos);
}

TEST_F(TlsPeerTest, UseBeforeHandshakeAndAfterClose) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  transport::FileDescriptor other(sv[1]);
  TlsConfig c;
  c.psk_file = dir_ / "keys.psk";
  c.username = "alice";
  auto s = start_tls_client(transport::FileDescriptor(sv[0]), c);
  ASSERT_TRUE(s.ok()) << s.error().message;
  TlsSession &t = **s;
  EXPECT_FALSE(t.handshake_done());
  uint8_t b[1] = {0};
  struct iovec v = {b, 1};
  EXPECT_EQ(t.send(&v, 1, false), -1);
  EXPECT_EQ(errno, ENOTCONN);
  EXPECT_EQ(t.recv(b, 1), -1);
  EXPECT_EQ(errno, ENOTCONN);
  // The client speaks first: the ClientHello goes out, then it waits to read.
  Result<HandshakeProgress> p = t.handshake_step();
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(*p, HandshakeProgress::WantRead);
  EXPECT_GE(t.fd(), 0);
  t.close();
  EXPECT_EQ(t.fd(), -1);
  EXPECT_EQ(t.send(&v, 1, false), -1);
  EXPECT_EQ(errno, EBADF);
  EXPECT_EQ(t.recv(b, 1), -1);
  EXPECT_EQ(errno, EBADF);
  EXPECT_FALSE(t.handshake_step().ok());
}

TEST_F(TlsPeerTest, BadPskHexIsAGnutlsError) {
  tls_testing::write_file(dir_ / "bad.psk", "alice:zz\n");
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  transport::FileDescriptor other(sv[1]);
  std::unique_ptr<transport::Transport> plain =
      std::make_unique<transport::SocketTransport>(transport::FileDescriptor(sv[0]));
  TlsConfig c;
  c.psk_file = dir_ / "bad.psk";
  c.username = "alice";
  auto s = start_tls_client(plain, c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().errnum, 0);
  EXPECT_EQ(s.error().message.rfind("gnutls_psk_set_client_credentials: ", 0), 0u)
      << s.error().message;
  EXPECT_TRUE(plain) << "the plain transport is handed back";
}

#endif  // DUPLEXNBD_HAVE_TLS

}  // namespace
}  // namespace duplexnbd::tls
