// SPDX-License-Identifier: LGPL-2.1-or-later
// TLS through the public API: nbdkit and qemu-nbd with certificates and PSK, and every refusal.
#include <libnbd.h>
#include <poll.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <string>
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

// Over a Unix socket there is no host name to verify against, and libnbd then accepts
// any certificate; naming the host (nbd_set_tls_hostname) or connecting over TCP turns
// verification on, and a certificate from another CA is refused.
TEST_F(TlsTest, WrongCaIsRefusedOnceTheHostIsNamed) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-certificates=" + path("good"), "memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_certificates(h_.get(), path("wrongca").c_str()));
  NBD_ASSERT_OK(nbd_set_tls_hostname(h_.get(), "localhost"));
  expect_refused(nbd_connect_unix(h_.get(), srv.socket_path().c_str()), "certificate");
}

TEST_F(TlsTest, WrongCaIsRefusedOverTcp) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start_tcp({"--tls=require", "--tls-certificates=" + path("good"), "memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_certificates(h_.get(), path("wrongca").c_str()));
  expect_refused(nbd_connect_tcp(h_.get(), "127.0.0.1", std::to_string(srv.port()).c_str()),
                 "certificate");
}

TEST_F(TlsTest, RightCaOverTcpIsVerified) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start_tcp({"--tls=require", "--tls-certificates=" + path("good"), "memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_certificates(h_.get(), path("good").c_str()));
  NBD_ASSERT_OK(nbd_connect_tcp(h_.get(), "127.0.0.1", std::to_string(srv.port()).c_str()));
  expect_data_round_trip();
}

TEST_F(TlsTest, WrongHostnameIsRefused) {
  NbdkitServer srv;
  START_OR_SKIP(srv.start({"--tls=require", "--tls-certificates=" + path("good"), "memory", "1M"}));
  NBD_ASSERT_OK(nbd_set_tls(h_.get(), LIBNBD_TLS_REQUIRE));
  NBD_ASSERT_OK(nbd_set_tls_certificates(h_.get(), path("good").c_str()));
  NBD_ASSERT_OK(nbd_set_tls_hostname(h_.get(), "not-the-server.example"));
  expect_refused(nbd_connect_unix(h_.get(), srv.socket_path().c_str()), "certificate");
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

}  // namespace
}  // namespace dnbd_test
