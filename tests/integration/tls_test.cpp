// SPDX-License-Identifier: LGPL-2.1-or-later
// TLS through the public API: nbdkit and qemu-nbd, certificates and PSK, certificate checks, refusals.
#include <libnbd.h>
#include <poll.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/servers.h"
#include "test_pki.h"

namespace dnbd_test {
namespace {

using duplexnbd::tls_testing::Pki;

class TlsTest : public IntegrationTest {
protected:
  static void SetUpTestSuite() {
    if (Pki::tools_available()) pki_ = new Pki();
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }
  void SetUp() override {
    if (!pki_) GTEST_SKIP() << "certtool/psktool not installed (gnutls-bin)";
    ASSERT_TRUE(pki_->ok()) << pki_->error();
    h_ = make_handle();
    ASSERT_TRUE(h_);
    if (!nbd_supports_tls(h_.get())) GTEST_SKIP() << "library built without GnuTLS";
  }

  std::string path(const std::string &name) const { return pki_->path(name); }

  // A round trip that proves the session carries NBD both ways.
  void expect_data_round_trip() {
    nbd_handle *h = h_.get();
    EXPECT_EQ(nbd_get_tls_negotiated(h), 1);
    auto data = make_pattern(256 * 1024, 7);
    NBD_ASSERT_OK(nbd_pwrite(h, data.data(), data.size(), 4096, 0));
    std::vector<uint8_t> back(data.size());
    NBD_ASSERT_OK(nbd_pread(h, back.data(), back.size(), 4096, 0));
    EXPECT_EQ(back, data);
    NBD_EXPECT_OK(nbd_shutdown(h, 0));
  }

  // A refused connection: an error naming the cause, and no way to move data.  (As in
  // libnbd, a GnuTLS failure carries no errno, so only the message is checked.)
  void expect_refused(int rc, const char *cause) {
    EXPECT_EQ(rc, -1);
    ASSERT_NE(nbd_get_error(), nullptr);
    EXPECT_NE(std::string(nbd_get_error()).find(cause), std::string::npos) << nbd_get_error();
    std::vector<uint8_t> buf(512);
    EXPECT_EQ(nbd_pread(h_.get(), buf.data(), buf.size(), 0, 0), -1);
    EXPECT_FALSE(nbd_aio_is_ready(h_.get()));
  }

  static Pki *pki_;
  Handle h_;
};

Pki *TlsTest::pki_ = nullptr;

TEST_F(TlsTest, NbdkitX509) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-certificates=" + path("good"), "memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_certificates(h_.get(), path("good").c_str()));
  NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv.socket_path().c_str()));
  expect_data_round_trip();
}

TEST_F(TlsTest, NbdkitX509ThroughUri) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-certificates=" + path("good"), "memory", "1M"}));
  std::string uri = "nbds+unix:///?socket=" + srv.socket_path() + "&tls-certificates=" + path("good");
  // A URI naming a local file is refused unless the caller allows it, as in libnbd.
  EXPECT_EQ(nbd_connect_uri(h_.get(), uri.c_str()), -1);
  EXPECT_EQ(nbd_get_errno(), EPERM);
  EXPECT_TRUE(nbd_aio_is_created(h_.get()));
  NBD_ASSERT_OK(nbd_set_uri_allow_local_file(h_.get(), true));
  NBD_ASSERT_OK(nbd_connect_uri(h_.get(), uri.c_str()));
  expect_data_round_trip();
}

TEST_F(TlsTest, NbdkitPsk) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-psk=" + path("keys.psk"), "memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_psk_file(h_.get(), path("keys.psk").c_str()));
  NBD_ASSERT_OK(nbd_set_tls_username(h_.get(), "alice"));
  NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv.socket_path().c_str()));
  expect_data_round_trip();
}

TEST_F(TlsTest, QemuNbdX509) {
  TempDir work;
  std::string image = work.path() + "/disk.raw";
  ASSERT_EQ(std::system(("truncate -s 1M " + image).c_str()), 0);
  QemuNbdServer srv;
  START_OR_SKIP(srv.start(image, "raw",
                          {"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + path("good"),
                           "--tls-creds", "tls0"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_certificates(h_.get(), path("good").c_str()));
  NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv.socket_path().c_str()));
  expect_data_round_trip();
}

TEST_F(TlsTest, WrongPskIsRefused) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-psk=" + path("keys.psk"), "memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_psk_file(h_.get(), path("wrong.psk").c_str()));
  NBD_ASSERT_OK(nbd_set_tls_username(h_.get(), "alice"));
  expect_refused(nbd_connect_unix(h_.get(), srv.socket_path().c_str()), "gnutls_handshake");
}

TEST_F(TlsTest, RequireAgainstPlaintextServerIsRefused) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_certificates(h_.get(), path("good").c_str()));
  expect_refused(nbd_connect_unix(h_.get(), srv.socket_path().c_str()), "TLS");
}

TEST_F(TlsTest, AllowFallsBackToPlaintext) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_ALLOW));
  NBD_ASSERT_OK(nbd_set_tls_certificates(h_.get(), path("good").c_str()));
  NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv.socket_path().c_str()));
  EXPECT_EQ(nbd_get_tls_negotiated(h_.get()), 0);
  std::vector<uint8_t> buf(512);
  NBD_EXPECT_OK(nbd_pread(h_.get(), buf.data(), buf.size(), 0, 0));
}

TEST_F(TlsTest, UriTlsRefusedWhenNotAllowed) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-certificates=" + path("good"), "memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_uri_allow_tls(h_.get(), LIBNBD_TLS_DISABLE));
  std::string uri = "nbds+unix:///?socket=" + srv.socket_path() + "&tls-certificates=" + path("good");
  EXPECT_EQ(nbd_connect_uri(h_.get(), uri.c_str()), -1);
  EXPECT_NE(nbd_get_error(), nullptr);
  EXPECT_TRUE(nbd_aio_is_created(h_.get()));
}

// ---- Verification of the server's certificate, as libnbd 1.22 does it (CVE-2024-7383).
//
// Each case starts nbdkit -v with one of the Pki's server directories and connects a
// fresh handle.  A refused case is also tried with nbd_set_tls_verify_peer(false),
// which must connect: that is the only way to skip the check, and it proves the
// refusal came from verification rather than from a broken setup.

// What the client trusts and how it reaches the server.
struct ClientSide {
  std::optional<std::string> certificates = {};  // Pki directory; none: defaults, system store
  std::optional<std::string> tls_hostname = {};  // nbd_set_tls_hostname
  std::optional<std::string> tcp_host = {};      // nbd_connect_tcp to it; none: nbd_connect_unix
};

struct DebugLines {
  std::mutex lock;
  std::vector<std::string> lines;
  std::string joined() {
    std::lock_guard g(lock);
    std::string all;
    for (const auto &l : lines) all += l + "\n";
    return all;
  }
};

class TlsVerifyTest : public TlsTest {
protected:
  // nbdkit -v serving the Pki directory `dir` on a Unix socket, or on 127.0.0.1 over TCP.
  StartStatus start_server(NbdkitServer &srv, const std::string &dir, bool tcp) {
    std::vector<std::string> args = {"-v", "--tls=require", "--tls-certificates=" + path(dir),
                                     "memory", "1M"};
    return tcp ? srv.start_tcp(args) : srv.start(args);
  }

  // One connection attempt on a new handle (left in `h`); `log_start` is where the
  // server's log stood before it.
  int attempt(NbdkitServer &srv, const ClientSide &c, bool verify_peer, Handle &h,
              DebugLines &debug, size_t &log_start) {
    log_start = duplexnbd::tls_testing::read_file(srv.process().log_path()).size();
    h = make_handle();
    if (!h) return -2;
    nbd_handle *p = h.get();
    nbd_set_debug_callback(p, {[](void *ud, const char *, const char *msg) {
                                 auto *d = static_cast<DebugLines *>(ud);
                                 std::lock_guard g(d->lock);
                                 d->lines.emplace_back(msg);
                                 return 0;
                               },
                               &debug, nullptr});
    nbd_set_debug(p, true);
    nbd_set_tls(p, LIBNBD_TLS_REQUIRE);
    if (c.certificates) nbd_set_tls_certificates(p, path(*c.certificates).c_str());
    if (c.tls_hostname) nbd_set_tls_hostname(p, c.tls_hostname->c_str());
    nbd_set_tls_verify_peer(p, verify_peer);
    const std::string port = std::to_string(srv.port());
    int rc = c.tcp_host ? nbd_connect_tcp(p, c.tcp_host->c_str(), port.c_str())
                        : nbd_connect_unix(p, srv.socket_path().c_str());
    if (rc != -1) {
      std::vector<uint8_t> buf(4096);
      EXPECT_NE(nbd_pread(p, buf.data(), buf.size(), 0, 0), -1) << last_error();
      EXPECT_NE(nbd_shutdown(p, 0), -1) << last_error();
    }
    return rc;
  }

  // The server's log from `log_start` on, once it shows `mark` (nbdkit writes it from
  // its own threads), or after 5 s without it.
  static std::string server_log_after(NbdkitServer &srv, size_t log_start, const char *mark) {
    std::string log;
    for (int i = 0; i < 500; ++i) {
      log = duplexnbd::tls_testing::read_file(srv.process().log_path()).substr(log_start);
      if (log.find(mark) != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return log;
  }

  // What the server saw after it accepted STARTTLS.
  static std::string after_starttls(const std::string &server_log) {
    size_t at = server_log.find("starting TLS handshake");
    return at == std::string::npos ? std::string() : server_log.substr(at);
  }

  // Refused with verification on, with GnuTLS's reason `why` in the debug log, and
  // nothing but the TLS handshake sent after STARTTLS; accepted with it off.
  void expect_refused_unless_unverified(NbdkitServer &srv, const ClientSide &c, const char *why) {
    // The handle goes first: nbd_close still reports to the debug callback.
    DebugLines debug, debug2;
    size_t log_start;
    Handle h;
    int rc = attempt(srv, c, true, h, debug, log_start);
    EXPECT_EQ(rc, -1) << "connected despite a certificate that must be refused";
    if (rc == -1) {
      // libnbd's wording and errno (0: a GnuTLS failure carries none).
      EXPECT_EQ(nbd_get_errno(), 0);
      ASSERT_NE(nbd_get_error(), nullptr);
      std::string err = nbd_get_error();
      EXPECT_NE(err.find("gnutls_handshake: Error in the certificate verification."),
                std::string::npos)
          << err;
      EXPECT_TRUE(nbd_aio_is_dead(h.get()));
      EXPECT_NE(nbd_get_tls_negotiated(h.get()), 1);  // -1: not allowed on a dead handle
      std::vector<uint8_t> buf(512);
      EXPECT_EQ(nbd_pread(h.get(), buf.data(), buf.size(), 0, 0), -1);
      EXPECT_NE(debug.joined().find(why), std::string::npos) << debug.joined();
      // The server got STARTTLS and then never saw the handshake complete, let alone
      // an option: the client gave up before sending its Finished message.  (nbdkit
      // reports the failure when the socket goes, which is at nbd_close here.)
      h.reset();
      std::string server_log = server_log_after(srv, log_start, "error: gnutls_handshake");
      std::string tls_part = after_starttls(server_log);
      EXPECT_FALSE(tls_part.empty()) << server_log;
      EXPECT_EQ(tls_part.find("TLS handshake completed"), std::string::npos) << tls_part;
      EXPECT_EQ(tls_part.find("NBD_OPT"), std::string::npos) << tls_part;
      EXPECT_EQ(tls_part.find("replying to"), std::string::npos) << tls_part;
      // nbdkit ends its handshake error with "(<last in>/<last out>)": 1 is the
      // ClientHello, the only handshake message that reached it.
      EXPECT_NE(tls_part.find("(1/"), std::string::npos) << tls_part;
    }

    rc = attempt(srv, c, false, h, debug2, log_start);
    EXPECT_NE(rc, -1) << "nbd_set_tls_verify_peer(false) must connect: " << last_error();
    if (rc != -1) {
      EXPECT_EQ(nbd_get_tls_negotiated(h.get()), 1);
      // The same log check sees options when they are sent.
      std::string server_log = server_log_after(srv, log_start, "NBD_OPT_GO");
      std::string tls_part = after_starttls(server_log);
      EXPECT_NE(tls_part.find("TLS handshake completed"), std::string::npos) << server_log;
      EXPECT_NE(tls_part.find("NBD_OPT_GO"), std::string::npos) << server_log;
    }
  }

  void expect_accepted(NbdkitServer &srv, const ClientSide &c) {
    DebugLines debug;
    size_t log_start;
    Handle h;
    int rc = attempt(srv, c, true, h, debug, log_start);
    EXPECT_NE(rc, -1) << last_error() << "\n" << debug.joined();
    if (rc != -1) {
      EXPECT_EQ(nbd_get_tls_negotiated(h.get()), 1);
    }
  }

  // True when a default certificate directory holds a CA: the "no directory" cases
  // then do not test what they claim.
  static bool default_ca_present() {
    auto has = [](const std::string &d) { return access((d + "/ca-cert.pem").c_str(), R_OK) == 0; };
    if (geteuid() == 0) return has("/etc/pki/libnbd");
    const char *home = getenv("HOME");
    return home && (has(std::string(home) + "/.pki/libnbd") ||
                    has(std::string(home) + "/.config/pki/libnbd"));
  }
};

TEST_F(TlsVerifyTest, GoodCaInTheDirectoryConnects) {
  NbdkitServer srv;
  START_OR_SKIP(start_server(srv, "good", false));
  expect_accepted(srv, {.certificates = "good"});
  expect_accepted(srv, {.certificates = "caonly"});
}

// libnbd 1.22's interop-nbdkit-tls-certs-bad-CA: no directory, so the system's CAs,
// which do not know the test CA; no host name either (a Unix socket).
TEST_F(TlsVerifyTest, NoDirectoryAndACaTheSystemDoesNotTrustIsRefused) {
  if (default_ca_present()) GTEST_SKIP() << "a default libnbd certificate directory exists here";
  NbdkitServer srv;
  START_OR_SKIP(start_server(srv, "good", false));
  expect_refused_unless_unverified(srv, {}, "The certificate issuer is unknown");
  // A directory without ca-cert.pem means the system store too.
  expect_refused_unless_unverified(srv, {.certificates = "no-such-directory"},
                                   "The certificate issuer is unknown");
}

// Over a Unix socket there is no host name, but the chain is still checked.
TEST_F(TlsVerifyTest, WrongCaOverAUnixSocketIsRefused) {
  NbdkitServer srv;
  START_OR_SKIP(start_server(srv, "good", false));
  expect_refused_unless_unverified(srv, {.certificates = "wrongca"},
                                   "The certificate issuer is unknown");
}

TEST_F(TlsVerifyTest, WrongCaOverTcpIsRefused) {
  NbdkitServer srv;
  START_OR_SKIP(start_server(srv, "good", true));
  expect_refused_unless_unverified(srv, {.certificates = "wrongca", .tcp_host = "localhost"},
                                   "The certificate issuer is unknown");
}

TEST_F(TlsVerifyTest, WrongTlsHostnameIsRefused) {
  NbdkitServer srv;
  START_OR_SKIP(start_server(srv, "good", false));
  expect_refused_unless_unverified(
      srv, {.certificates = "good", .tls_hostname = "not-the-server.example"},
      "The name in the certificate does not match");
  // Set to "": checked as it is, and no certificate names "".
  expect_refused_unless_unverified(srv, {.certificates = "good", .tls_hostname = ""},
                                   "The name in the certificate does not match");
}

// The certificate names nbd.example.invalid only; the client connects to "localhost".
TEST_F(TlsVerifyTest, TcpHostNotInTheCertificateIsRefused) {
  NbdkitServer srv;
  START_OR_SKIP(start_server(srv, "othername", true));
  expect_refused_unless_unverified(srv, {.certificates = "good", .tcp_host = "localhost"},
                                   "The name in the certificate does not match");
  expect_refused_unless_unverified(srv, {.certificates = "good", .tcp_host = "127.0.0.1"},
                                   "The name in the certificate does not match");
}

TEST_F(TlsVerifyTest, RightHostNameConnects) {
  NbdkitServer srv;
  START_OR_SKIP(start_server(srv, "good", true));
  expect_accepted(srv, {.certificates = "good", .tcp_host = "localhost"});
  expect_accepted(srv, {.certificates = "good", .tcp_host = "127.0.0.1"});  // IP address entry

  NbdkitServer unix_srv;
  START_OR_SKIP(start_server(unix_srv, "good", false));
  expect_accepted(unix_srv, {.certificates = "good", .tls_hostname = "localhost"});

  // nbd_set_tls_hostname names the certificate's owner in place of the host connected
  // to (a proxy's case).
  NbdkitServer other;
  START_OR_SKIP(start_server(other, "othername", true));
  expect_accepted(other, {.certificates = "good", .tls_hostname = Pki::kOtherName,
                          .tcp_host = "localhost"});
}

TEST_F(TlsVerifyTest, TlsHostnameInEffectIsTheTcpHostUnlessSet) {
  NbdkitServer srv;
  START_OR_SKIP(start_server(srv, "good", true));
  nbd_handle *h = h_.get();
  auto tls_hostname = [h] {
    char *s = nbd_get_tls_hostname(h);
    std::string r = s ? s : "(null)";
    free(s);
    return r;
  };
  EXPECT_EQ(tls_hostname(), "");
  NBD_ASSERT_OK(nbd_set_tls(h, LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_certificates(h, path("good").c_str()));
  NBD_ASSERT_OK(nbd_connect_tcp(h, "localhost", std::to_string(srv.port()).c_str()));
  EXPECT_EQ(tls_hostname(), "localhost");
  NBD_EXPECT_OK(nbd_shutdown(h, 0));

  Handle set = make_handle();
  NBD_ASSERT_OK(nbd_set_tls_hostname(set.get(), "set.example"));
  char *name = nbd_get_tls_hostname(set.get());
  EXPECT_STREQ(name, "set.example");
  free(name);
}

TEST_F(TlsVerifyTest, ExpiredCertificateIsRefused) {
  NbdkitServer srv;
  START_OR_SKIP(start_server(srv, "expired", false));
  expect_refused_unless_unverified(srv, {.certificates = "good"}, "expired");
  NbdkitServer tcp;
  START_OR_SKIP(start_server(tcp, "expired", true));
  expect_refused_unless_unverified(tcp, {.certificates = "good", .tcp_host = "localhost"},
                                   "expired");
}

TEST_F(TlsVerifyTest, SelfSignedServerCertificateIsRefused) {
  NbdkitServer srv;
  START_OR_SKIP(start_server(srv, "selfsigned", false));
  expect_refused_unless_unverified(srv, {.certificates = "good"},
                                   "The certificate issuer is unknown");
  if (!default_ca_present())
    expect_refused_unless_unverified(srv, {}, "The certificate issuer is unknown");
}

// Verification belongs to certificates: a PSK session has none to check, and
// verify_peer (true by default) leaves it alone.
TEST_F(TlsVerifyTest, PskIsUnaffectedByVerifyPeer) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-psk=" + path("keys.psk"), "memory", "1M"}));
  nbd_handle *h = h_.get();
  NBD_ASSERT_OK(nbd_set_tls(h, LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_psk_file(h, path("keys.psk").c_str()));
  NBD_ASSERT_OK(nbd_set_tls_username(h, "alice"));
  EXPECT_EQ(nbd_get_tls_verify_peer(h), 1);
  NBD_ASSERT_OK(nbd_connect_unix(h, srv.socket_path().c_str()));
  expect_data_round_trip();
}

// libnbd's aio-parallel-load-tls pattern: one buffer shared by the reads and writes
// in flight, the classic loop.  Reads land in the buffer while writes from it are
// still being sent, so a record interrupted by a full socket is offered again with
// other bytes; that must be sent, never turned into an error.
TEST_F(TlsTest, WritesFromABufferThatReadsOverwriteKeepFlowing) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-psk=" + path("keys.psk"), "memory", "64M"}));
  nbd_handle *h = h_.get();
  NBD_ASSERT_OK(nbd_set_tls(h, LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_psk_file(h, path("keys.psk").c_str()));
  NBD_ASSERT_OK(nbd_set_tls_username(h, "alice"));
  NBD_ASSERT_OK(nbd_connect_unix(h, srv.socket_path().c_str()));

  constexpr size_t kSize = 256 * 1024;
  constexpr int kInFlight = 64;
  constexpr int kCommands = 3000;
  std::vector<uint8_t> buf = make_pattern(kSize, 3);
  int issued = 0, retired = 0;
  std::vector<int64_t> cookies;
  while (retired < kCommands) {
    while (issued < kCommands && nbd_aio_in_flight(h) < kInFlight) {
      uint64_t offset = uint64_t(issued % 200) * kSize;
      int64_t c = (issued % 2 == 0)
                      ? nbd_aio_pwrite(h, buf.data(), kSize, offset, NBD_NULL_COMPLETION, 0)
                      : nbd_aio_pread(h, buf.data(), kSize, offset, NBD_NULL_COMPLETION, 0);
      ASSERT_NE(c, -1) << nbd_get_error();
      cookies.push_back(c);
      issued++;
    }
    unsigned dir = nbd_aio_get_direction(h);
    struct pollfd pfd = {nbd_aio_get_fd(h), 0, 0};
    if (dir & LIBNBD_AIO_DIRECTION_READ) pfd.events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE) pfd.events |= POLLOUT;
    ASSERT_EQ(poll(&pfd, 1, 10000), 1) << "stalled with " << nbd_aio_in_flight(h) << " in flight";
    if ((dir & LIBNBD_AIO_DIRECTION_READ) && (pfd.revents & POLLIN)) {
      NBD_ASSERT_OK(nbd_aio_notify_read(h));
    } else if ((dir & LIBNBD_AIO_DIRECTION_WRITE) && (pfd.revents & POLLOUT)) {
      NBD_ASSERT_OK(nbd_aio_notify_write(h));
    }
    for (auto it = cookies.begin(); it != cookies.end();) {
      int r = nbd_aio_command_completed(h, *it);
      ASSERT_NE(r, -1) << nbd_get_error();
      if (r == 1) {
        it = cookies.erase(it);
        retired++;
      } else {
        ++it;
      }
    }
  }
  NBD_EXPECT_OK(nbd_shutdown(h, 0));
}

// ---- libnbd 1.24: tls-username=, client-cert-N.pem pairs, the priority string ---------

// ?tls-username= overrides the URI's user: mallory has no key, alice has.
TEST_F(TlsTest, UriTlsUsernameOverridesTheUserinfo) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-psk=" + path("keys.psk"), "memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_uri_allow_local_file(h_.get(), true));
  std::string base = "nbds+unix://mallory@/?socket=" + srv.socket_path() + "&tls-psk-file=" + path("keys.psk");
  EXPECT_EQ(nbd_connect_uri(h_.get(), base.c_str()), -1) << "mallory is not in the PSK file";
  h_ = make_handle();
  NBD_ASSERT_OK(nbd_set_uri_allow_local_file(h_.get(), true));
  NBD_ASSERT_OK(nbd_connect_uri(h_.get(), (base + "&tls-username=alice").c_str()));
  char *back = nbd_get_uri(h_.get());
  ASSERT_NE(back, nullptr) << last_error();
  std::string got = back;
  free(back);
  EXPECT_EQ(got, "nbds+unix://alice@/?socket=" + srv.socket_path() + "&tls-psk-file=" + path("keys.psk"));
  expect_data_round_trip();
}


// Collects the library's debug messages (nbd_set_debug_callback).
void capture_debug(nbd_handle *h, DebugLines &debug) {
  nbd_set_debug_callback(h, {[](void *ud, const char *, const char *msg) {
                               auto *d = static_cast<DebugLines *>(ud);
                               std::lock_guard g(d->lock);
                               d->lines.emplace_back(msg);
                               return 0;
                             },
                             &debug, nullptr});
  nbd_set_debug(h, true);
}

// The protocol named by "connection is using TLS: <version> cipher ...", from GnuTLS's
// gnutls_protocol_get_version on our side of the session; "" when not logged.
std::string logged_tls_version(DebugLines &debug) {
  const std::string all = debug.joined();
  const std::string mark = "connection is using TLS: ";
  size_t at = all.find(mark);
  if (at == std::string::npos) return "";
  at += mark.size();
  return all.substr(at, all.find(' ', at) - at);
}

class TlsClientCertsTest : public TlsTest {
protected:
  // A client key and certificate (tls_www_client) issued by the CA of Pki directory `ca`.
  void make_client_pair(const std::string &ca, const std::string &cert, const std::string &key) {
    using duplexnbd::tls_testing::run;
    const std::string log = work_.path() + "/certtool.log", tmpl = work_.path() + "/client.info";
    duplexnbd::tls_testing::write_file(
        tmpl, "organization = duplexnbd tests\ncn = client of " + ca +
                  "\nexpiration_days = 30\nencryption_key\nsigning_key\ntls_www_client\n");
    ASSERT_TRUE(run({"certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", key}, log) &&
                run({"certtool", "--generate-certificate", "--load-ca-certificate",
                     path(ca + "/ca-cert.pem"), "--load-ca-privkey", path(ca + "/ca-key.pem"),
                     "--load-privkey", key, "--template", tmpl, "--outfile", cert},
                    log))
        << duplexnbd::tls_testing::read_file(log);
  }

  // A client directory trusting the good CA (so the server is verified), holding the
  // given pairs: file stem ("client", "client-0", ...) -> issuing Pki CA directory.
  std::string client_dir(const std::string &name,
                         const std::vector<std::pair<std::string, std::string>> &pairs) {
    std::string d = work_.path() + "/" + name;
    std::filesystem::create_directory(d);
    std::filesystem::copy_file(path("good/ca-cert.pem"), d + "/ca-cert.pem");
    for (const auto &[stem, ca] : pairs) {
      std::string suffix = stem.substr(std::string("client").size());  // "", "-0", ...
      make_client_pair(ca, d + "/client-cert" + suffix + ".pem", d + "/client-key" + suffix + ".pem");
    }
    return d;
  }

  int connect_with(const std::string &dir, NbdkitServer &srv) {
    h_ = make_handle();
    NBD_EXPECT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
    NBD_EXPECT_OK(nbd_set_tls_certificates(h_.get(), dir.c_str()));
    return nbd_connect_unix(h_.get(), srv.socket_path().c_str());
  }

  TempDir work_;
};

// The server trusts only the good CA and checks client certificates.  The first pair is
// issued by another CA; only the second can get in, and GnuTLS offers it because the
// server names the CA it trusts.
TEST_F(TlsClientCertsTest, SecondClientCertificateIsTheOneTheServerAccepts) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-certificates=" + path("good"), "--tls-verify-peer",
                           "memory", "1M"}));

  // Controls: the other CA's certificate alone is refused, the good one alone accepted.
  std::string only_other = client_dir("only-other", {{"client-0", "other"}});
  EXPECT_EQ(connect_with(only_other, srv), -1) << "the server does not check client certificates";
  std::string only_good = client_dir("only-good", {{"client-0", "good"}});
  NBD_ASSERT_OK(connect_with(only_good, srv));
  NBD_EXPECT_OK(nbd_shutdown(h_.get(), 0));

  std::string both = client_dir("both", {{"client-0", "other"}, {"client-1", "good"}});
  NBD_ASSERT_OK(connect_with(both, srv));
  expect_data_round_trip();

  // client-cert.pem and the numbered pairs are loaded together.
  std::string plain_then_0 = client_dir("plain-then-0", {{"client", "other"}, {"client-0", "good"}});
  NBD_ASSERT_OK(connect_with(plain_then_0, srv));
  expect_data_round_trip();

  // Numbering stops at the first missing number: a pair after a gap is not read.
  std::string gap = client_dir("gap", {{"client-0", "other"}, {"client-2", "good"}});
  EXPECT_EQ(connect_with(gap, srv), -1);
}

// Half a pair is an error at connect, naming the files.
TEST_F(TlsClientCertsTest, HalfAPairIsAnError) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-certificates=" + path("good"), "memory", "1M"}));
  std::string d = client_dir("half", {{"client-0", "good"}});
  std::filesystem::copy_file(d + "/client-cert-0.pem", d + "/client-cert-1.pem");
  EXPECT_EQ(connect_with(d, srv), -1);
  ASSERT_NE(nbd_get_error(), nullptr);
  EXPECT_NE(std::string(nbd_get_error()).find("client-key-1.pem"), std::string::npos) << nbd_get_error();
}

class TlsPriorityTest : public TlsTest {
protected:
  // qemu-nbd serving a raw image with x509 (Pki "good") and the given server priority.
  StartStatus start_qemu(QemuNbdServer &srv, const std::string &priority) {
    image_ = work_.path() + "/disk.raw";
    if (std::system(("truncate -s 1M " + image_).c_str()) != 0) return StartStatus::failed("truncate");
    return srv.start(image_, "raw",
                     {"--object",
                      "tls-creds-x509,id=tls0,endpoint=server,dir=" + path("good") + ",priority=" + priority,
                      "--tls-creds", "tls0"});
  }

  // Closes the handle while the debug log its callback writes to still exists.
  void TearDown() override { h_.reset(); }

  // Connects h_ (fresh) to srv with the client priority (none: the default).  The
  // debug lines live as long as the fixture: closing the handle still logs.
  int connect_with(QemuNbdServer &srv, const char *priority, DebugLines *&debug) {
    h_ = make_handle();
    logs_.push_back(std::make_unique<DebugLines>());
    debug = logs_.back().get();
    capture_debug(h_.get(), *debug);
    NBD_EXPECT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
    NBD_EXPECT_OK(nbd_set_tls_certificates(h_.get(), path("good").c_str()));
    if (priority) {
      NBD_EXPECT_OK(nbd_set_tls_priority(h_.get(), priority));
    }
    return nbd_connect_unix(h_.get(), srv.socket_path().c_str());
  }

  TempDir work_;
  std::string image_;
  std::vector<std::unique_ptr<DebugLines>> logs_;
};

// A server that speaks only TLS 1.3 refuses a client whose priority forbids 1.3, and
// takes the same client with the default priority: the string reaches GnuTLS.
TEST_F(TlsPriorityTest, ForbiddingTls13FailsAgainstATls13OnlyServer) {
  QemuNbdServer srv;
  START_OR_SKIP(start_qemu(srv, "NORMAL:-VERS-ALL:+VERS-TLS1.3"));
  DebugLines *with_default;
  NBD_ASSERT_OK(connect_with(srv, nullptr, with_default));
  EXPECT_EQ(logged_tls_version(*with_default), "TLS1.3") << with_default->joined();
  expect_data_round_trip();

  DebugLines *forbidding;
  EXPECT_EQ(connect_with(srv, "NORMAL:-VERS-TLS1.3", forbidding), -1);
  EXPECT_NE(nbd_get_error(), nullptr);
}

// Against a server that allows 1.2 and 1.3, forbidding 1.3 gives a TLS 1.2 session.
TEST_F(TlsPriorityTest, ForbiddingTls13NegotiatesTls12) {
  QemuNbdServer srv;
  START_OR_SKIP(start_qemu(srv, "NORMAL"));
  DebugLines *debug;
  NBD_ASSERT_OK(connect_with(srv, "NORMAL:-VERS-TLS1.3", debug));
  EXPECT_EQ(logged_tls_version(*debug), "TLS1.2") << debug->joined();
  char *p = nbd_get_tls_priority(h_.get());
  ASSERT_NE(p, nullptr);
  EXPECT_STREQ(p, "NORMAL:-VERS-TLS1.3");
  free(p);
  expect_data_round_trip();

  DebugLines *debug2;
  NBD_ASSERT_OK(connect_with(srv, nullptr, debug2));
  EXPECT_EQ(logged_tls_version(*debug2), "TLS1.3") << debug2->joined();
}

// A priority string GnuTLS cannot parse fails at connect, saying which string and where.
TEST_F(TlsTest, BadPriorityStringFailsAtConnect) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-certificates=" + path("good"), "memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_certificates(h_.get(), path("good").c_str()));
  NBD_ASSERT_OK(nbd_set_tls_priority(h_.get(), "NORMAL:+NO-SUCH-CIPHER-XYZ"));
  int rc = nbd_connect_unix(h_.get(), srv.socket_path().c_str());
  std::string err = nbd_get_error() ? nbd_get_error() : "";
  EXPECT_NE(err.find("\"NORMAL:+NO-SUCH-CIPHER-XYZ\" (at \"+NO-SUCH-CIPHER-XYZ\")"), std::string::npos)
      << err;
  expect_refused(rc, "invalid TLS priority string");

  // Same for PSK, whose exchanges are appended to the string.
  NbdkitServer psk;
  START_OR_SKIP(psk.start({"--tls=require", "--tls-psk=" + path("keys.psk"), "memory", "1M"}));
  h_ = make_handle();
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_psk_file(h_.get(), path("keys.psk").c_str()));
  NBD_ASSERT_OK(nbd_set_tls_username(h_.get(), "alice"));
  NBD_ASSERT_OK(nbd_set_tls_priority(h_.get(), "BOGUS"));
  expect_refused(nbd_connect_unix(h_.get(), psk.socket_path().c_str()), "invalid TLS priority string");
}

// ?tls-priority= is refused until nbd_set_uri_allow_tls_priority, then sets the priority
// (seen in the negotiated version), and comes back in nbd_get_uri.
TEST_F(TlsTest, UriTlsPriority) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-certificates=" + path("good"), "memory", "1M"}));
  std::string uri = "nbds+unix:///?socket=" + srv.socket_path() + "&tls-certificates=" + path("good") +
                    "&tls-priority=NORMAL:-VERS-TLS1.3";
  NBD_ASSERT_OK(nbd_set_uri_allow_local_file(h_.get(), true));
  EXPECT_EQ(nbd_connect_uri(h_.get(), uri.c_str()), -1);
  EXPECT_EQ(nbd_get_errno(), EPERM);
  EXPECT_NE(std::string(nbd_get_error()).find("nbd_set_uri_allow_tls_priority"), std::string::npos);
  EXPECT_TRUE(nbd_aio_is_created(h_.get()));

  DebugLines debug;
  capture_debug(h_.get(), debug);
  NBD_ASSERT_OK(nbd_set_uri_allow_tls_priority(h_.get(), true));
  NBD_ASSERT_OK(nbd_connect_uri(h_.get(), uri.c_str()));
  EXPECT_EQ(logged_tls_version(debug), "TLS1.2") << debug.joined();
  char *p = nbd_get_tls_priority(h_.get());
  ASSERT_NE(p, nullptr);
  EXPECT_STREQ(p, "NORMAL:-VERS-TLS1.3");
  free(p);
  char *back = nbd_get_uri(h_.get());
  ASSERT_NE(back, nullptr) << last_error();
  EXPECT_EQ(std::string(back), uri);
  free(back);
  expect_data_round_trip();

  // A bad string through the URI fails at connect, not at parse time.
  h_ = make_handle();
  NBD_ASSERT_OK(nbd_set_uri_allow_local_file(h_.get(), true));
  NBD_ASSERT_OK(nbd_set_uri_allow_tls_priority(h_.get(), true));
  std::string bad = "nbds+unix:///?socket=" + srv.socket_path() + "&tls-certificates=" + path("good") +
                    "&tls-priority=NOPE";
  expect_refused(nbd_connect_uri(h_.get(), bad.c_str()), "invalid TLS priority string");
}

}  // namespace
}  // namespace dnbd_test
