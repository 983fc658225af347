// SPDX-License-Identifier: LGPL-2.1-or-later
// TLS through the public API: nbdkit and qemu-nbd with certificates and PSK, and every refusal.
#include <libnbd.h>

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

}  // namespace
}  // namespace dnbd_test
