// SPDX-License-Identifier: LGPL-2.1-or-later
// nbd+ssh URIs, against an `ssh` stand-in on PATH that records its arguments and serves NBD itself.
#include <libnbd.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/process.h"

namespace dnbd_test {
namespace {

class SshUriTest : public IntegrationTest {
protected:
  void SetUp() override {
    if (::system("nbdkit --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "nbdkit is not installed";
    // No sshd here: the stand-in plays the remote end, an NBD server on its stdin/stdout.
    args_ = dir_.file("ssh-args");
    std::ofstream f(dir_.file("ssh"));
    f << "#!/bin/sh\nprintf '%s\\n' \"$@\" > '" << args_ << "'\n"
      << "exec nbdkit -s --exit-with-parent memory 1M\n";
    f.close();
    ASSERT_EQ(::chmod(dir_.file("ssh").c_str(), 0755), 0);
    const char *path = ::getenv("PATH");
    ::setenv("PATH", (dir_.path() + ":" + (path ? path : "/usr/bin:/bin")).c_str(), 1);
    h_ = make_handle();
    ASSERT_TRUE(h_);
  }

  std::vector<std::string> ssh_args() const {
    std::ifstream f(args_);
    std::vector<std::string> out;
    for (std::string line; std::getline(f, line);) out.push_back(line);
    return out;
  }

  TempDir dir_;
  std::string args_;
  Handle h_;
};

TEST_F(SshUriTest, RemoteUnixSocket) {
  NBD_ASSERT_OK(nbd_connect_uri(h_.get(), "nbd+ssh://example.test:2222/?socket=/run/nbd.sock"));
  EXPECT_EQ(ssh_args(), (std::vector<std::string>{"-p", "2222", "--", "example.test", "nc", "-U",
                                                  "/run/nbd.sock"}));
  std::vector<uint8_t> buf(4096, 0xff);
  NBD_EXPECT_OK(nbd_pread(h_.get(), buf.data(), buf.size(), 0, 0));
  EXPECT_TRUE(all_zero(buf.data(), buf.size()));
  char *uri = nbd_get_uri(h_.get());
  ASSERT_NE(uri, nullptr) << last_error();
  EXPECT_STREQ(uri, "nbd+ssh://example.test:2222/?socket=/run/nbd.sock");
  free(uri);
  EXPECT_GT(nbd_get_subprocess_pid(h_.get()), 0);
  NBD_EXPECT_OK(nbd_shutdown(h_.get(), 0));
}

TEST_F(SshUriTest, RemoteDefaultPort) {
  NBD_ASSERT_OK(nbd_connect_uri(h_.get(), "nbd+ssh://example.test/"));
  EXPECT_EQ(ssh_args(), (std::vector<std::string>{"-p", "22", "--", "example.test", "nc",
                                                  "localhost", "10809"}));
  EXPECT_EQ(nbd_get_size(h_.get()), 1024 * 1024);
}

// A host name ssh would parse as an option must never reach it (it could run commands).
TEST_F(SshUriTest, OptionLookingHostIsRefused) {
  EXPECT_EQ(nbd_connect_uri(h_.get(), "nbd+ssh://-oProxyCommand=touch%20pwned/"), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_TRUE(ssh_args().empty()) << "ssh was started";
}

TEST_F(SshUriTest, RefusedWhenTransportNotAllowed) {
  NBD_ASSERT_OK(nbd_set_uri_allow_transports(h_.get(), LIBNBD_ALLOW_TRANSPORT_UNIX));
  EXPECT_EQ(nbd_connect_uri(h_.get(), "nbd+ssh://example.test/"), -1);
  EXPECT_EQ(nbd_get_errno(), EPERM);
  EXPECT_TRUE(ssh_args().empty()) << "ssh was started";
}

}  // namespace
}  // namespace dnbd_test
