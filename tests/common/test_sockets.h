// SPDX-License-Identifier: LGPL-2.1-or-later
// Sockets for tests that connect: a Unix listener, a TCP socket bound (listening or not) on an ephemeral port.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "transport/file_descriptor.h"

namespace duplexnbd::transport {

// A Unix socket bound to `path`, listening unless `do_listen` is false (then a connect to
// it is refused).
inline FileDescriptor unix_listener(const std::string &path, bool do_listen = true) {
  FileDescriptor s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(s.valid());
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  EXPECT_EQ(::bind(s.get(), reinterpret_cast<struct sockaddr *>(&addr), sizeof addr), 0);
  if (do_listen) {
    EXPECT_EQ(::listen(s.get(), 16), 0);
  }
  return s;
}

// A TCP socket bound to an ephemeral port on `address` (listening or not);
// invalid if the address family is unavailable.
inline FileDescriptor tcp_socket(int family, const char *address, bool do_listen, uint16_t *port) {
  FileDescriptor s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s)
    return s;
  struct sockaddr_storage ss = {};
  socklen_t len;
  if (family == AF_INET) {
    auto *sin = reinterpret_cast<struct sockaddr_in *>(&ss);
    sin->sin_family = AF_INET;
    ::inet_pton(AF_INET, address, &sin->sin_addr);
    len = sizeof *sin;
  } else {
    auto *sin6 = reinterpret_cast<struct sockaddr_in6 *>(&ss);
    sin6->sin6_family = AF_INET6;
    ::inet_pton(AF_INET6, address, &sin6->sin6_addr);
    len = sizeof *sin6;
  }
  if (::bind(s.get(), reinterpret_cast<struct sockaddr *>(&ss), len) == -1)
    return FileDescriptor();
  if (do_listen && ::listen(s.get(), 16) == -1)
    return FileDescriptor();
  len = sizeof ss;
  ::getsockname(s.get(), reinterpret_cast<struct sockaddr *>(&ss), &len);
  *port = ntohs(family == AF_INET ? reinterpret_cast<struct sockaddr_in *>(&ss)->sin_port
                                  : reinterpret_cast<struct sockaddr_in6 *>(&ss)->sin6_port);
  return s;
}

}  // namespace duplexnbd::transport
