// SPDX-License-Identifier: LGPL-2.1-or-later
// Tests for lib/transport: connectors, socket transport, subprocesses, socket activation, wakeup.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "transport/connector.h"
#include "transport/file_descriptor.h"
#include "transport/socket_activation.h"
#include "transport/subprocess.h"
#include "transport/transport.h"
#include "transport/wakeup.h"
#include "test_sockets.h"

namespace duplexnbd::transport {
namespace {

constexpr int kTimeoutMs = 20000;

bool wait_for(int fd, short events, int timeout_ms = kTimeoutMs) {
  struct pollfd pfd = {fd, events, 0};
  int r;
  do {
    r = ::poll(&pfd, 1, timeout_ms);
  } while (r == -1 && errno == EINTR);
  return r == 1;
}

// Sends everything, polling when the transport would block.
void send_all(Transport &t, const std::string &data) {
  size_t off = 0;
  while (off < data.size()) {
    struct iovec iov = {const_cast<char *>(data.data() + off), data.size() - off};
    ssize_t r = t.send(&iov, 1, false);
    if (r == -1) {
      ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
      ASSERT_TRUE(wait_for(t.fd(), POLLOUT));
      continue;
    }
    off += static_cast<size_t>(r);
  }
}

// Receives until `n` bytes or end of stream.
std::string recv_n(Transport &t, size_t n) {
  std::string out;
  char buf[4096];
  while (out.size() < n) {
    ssize_t r = t.recv(buf, std::min(sizeof buf, n - out.size()));
    if (r == 0)
      break;
    if (r == -1) {
      EXPECT_EQ(errno, EAGAIN) << std::strerror(errno);
      if (errno != EAGAIN || !wait_for(t.fd(), POLLIN))
        break;
      continue;
    }
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

std::string recv_to_eof(Transport &t) { return recv_n(t, SIZE_MAX); }

// A private directory removed at the end of the test.
class TempDir {
public:
  TempDir() {
    char tmpl[] = "/tmp/transport_testXXXXXX";
    EXPECT_NE(::mkdtemp(tmpl), nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path_ + "'";
    (void)::system(cmd.c_str());
  }
  const std::string &path() const { return path_; }

private:
  std::string path_;
};

FileDescriptor accept_one(int listener) {
  EXPECT_TRUE(wait_for(listener, POLLIN));
  return FileDescriptor(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

// Checks that `client` and the accepted end of `listener` are joined.
void expect_connected(FileDescriptor client, int listener) {
  ASSERT_TRUE(client.valid());
  EXPECT_TRUE(::fcntl(client.get(), F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(client.get(), F_GETFD) & FD_CLOEXEC);
  SocketTransport a(std::move(client));
  SocketTransport b(accept_one(listener));
  ASSERT_GE(b.fd(), 0);
  send_all(a, "ping");
  EXPECT_EQ(recv_n(b, 4), "ping");
  send_all(b, "pong");
  EXPECT_EQ(recv_n(a, 4), "pong");
}

// ---------------------------------------------------------------- FileDescriptor

TEST(FileDescriptorTest, ClosesAndMoves) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::close(p[1]);
  FileDescriptor a(p[0]);
  FileDescriptor b(std::move(a));
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(b.get(), p[0]);
  int raw = b.release();
  EXPECT_FALSE(b.valid());
  EXPECT_EQ(::fcntl(raw, F_GETFD), 0);  // still open
  {
    FileDescriptor c(raw);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF);
}

// ---------------------------------------------------------------- Connector

TEST(ConnectorTest, Unix) {
  TempDir dir;
  std::string path = dir.path() + "/sock";
  FileDescriptor listener = unix_listener(path);
  Connector c;
  ASSERT_TRUE(c.start_unix(path));
  ASSERT_TRUE(c.wait(kTimeoutMs));
  EXPECT_TRUE(c.done());
  expect_connected(c.take_fd(), listener.get());
  EXPECT_FALSE(c.done());
  EXPECT_EQ(c.fd(), -1);
}

TEST(ConnectorTest, UnixRefused) {
  TempDir dir;
  std::string path = dir.path() + "/sock";
  FileDescriptor bound = unix_listener(path, /*do_listen=*/false);
  Connector c;
  Status s = c.start_unix(path);
  if (s)
    s = c.wait(kTimeoutMs);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errnum, ECONNREFUSED);
  EXPECT_EQ(s.error().message, "connect");
  EXPECT_FALSE(c.done());
}

TEST(ConnectorTest, UnixMissing) {
  Connector c;
  Status s = c.start_unix("/nonexistent-duplexnbd-dir/sock");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errnum, ENOENT);
  EXPECT_EQ(s.error().message, "connect");
}

TEST(ConnectorTest, SockaddrTooShortForAFamily) {
  // As libnbd 1.22 (found by the call_states differential run): EAFNOSUPPORT, not EINVAL.
  struct sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  Connector c;
  Status s = c.start_sockaddr(reinterpret_cast<const sockaddr *>(&sa), 0);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errnum, EAFNOSUPPORT);
  s = c.start_sockaddr(reinterpret_cast<const sockaddr *>(&sa), sizeof(struct sockaddr_storage) + 1);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errnum, EINVAL);
}

TEST(ConnectorTest, UnixPathTooLong) {
  Connector c;
  Status s = c.start_unix(std::string(200, 'a'));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errnum, ENAMETOOLONG);
}

TEST(ConnectorTest, TcpIpv4) {
  uint16_t port;
  FileDescriptor listener = tcp_socket(AF_INET, "127.0.0.1", true, &port);
  ASSERT_TRUE(listener.valid());
  Connector c;
  ASSERT_TRUE(c.start_tcp("127.0.0.1", std::to_string(port)));
  ASSERT_TRUE(c.wait(kTimeoutMs));
  expect_connected(c.take_fd(), listener.get());
}

TEST(ConnectorTest, TcpIpv6) {
  uint16_t port;
  FileDescriptor listener = tcp_socket(AF_INET6, "::1", true, &port);
  if (!listener.valid())
    GTEST_SKIP() << "IPv6 loopback unavailable";
  Connector c;
  ASSERT_TRUE(c.start_tcp("::1", std::to_string(port)));
  ASSERT_TRUE(c.wait(kTimeoutMs));
  expect_connected(c.take_fd(), listener.get());
}

// "localhost" may resolve to ::1 and 127.0.0.1 in either order; with a
// listener on IPv4 only, any IPv6 attempt must fail over.
TEST(ConnectorTest, TcpLocalhostFallsThrough) {
  uint16_t port;
  FileDescriptor listener = tcp_socket(AF_INET, "127.0.0.1", true, &port);
  ASSERT_TRUE(listener.valid());
  Connector c;
  Status s = c.start_tcp("localhost", std::to_string(port));
  if (s)
    s = c.wait(kTimeoutMs);
  ASSERT_TRUE(s) << s.error().message;
  expect_connected(c.take_fd(), listener.get());
}

TEST(ConnectorTest, TcpRefused) {
  uint16_t port;
  FileDescriptor bound = tcp_socket(AF_INET, "127.0.0.1", false, &port);
  ASSERT_TRUE(bound.valid());
  Connector c;
  Status s = c.start_tcp("127.0.0.1", std::to_string(port));
  if (s)
    s = c.wait(kTimeoutMs);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errnum, ECONNREFUSED);
  EXPECT_EQ(s.error().message, "connect");
}

TEST(ConnectorTest, TcpBadHost) {
  Connector c;
  Status s = c.start_tcp("no-such-host.invalid", "10809");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message.rfind("getaddrinfo: no-such-host.invalid:10809", 0), 0u)
      << s.error().message;
}

SocketAddress make_inet(const char *address, uint16_t port) {
  SocketAddress a;
  auto *sin = reinterpret_cast<struct sockaddr_in *>(&a.storage);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(port);
  ::inet_pton(AF_INET, address, &sin->sin_addr);
  a.length = sizeof *sin;
  return a;
}

TEST(ConnectorTest, AddressListFallsThrough) {
  uint16_t refusing_port, good_port;
  FileDescriptor refusing = tcp_socket(AF_INET, "127.0.0.1", false, &refusing_port);
  FileDescriptor good = tcp_socket(AF_INET, "127.0.0.1", true, &good_port);
  ASSERT_TRUE(refusing.valid());
  ASSERT_TRUE(good.valid());

  // An address whose socket() fails outright, one that is refused, one that works.
  SocketAddress bogus;
  bogus.storage.ss_family = 12345;
  bogus.length = sizeof(struct sockaddr_in);
  std::vector<SocketAddress> list = {bogus, make_inet("127.0.0.1", refusing_port),
                                     make_inet("127.0.0.1", good_port)};
  Connector c;
  ASSERT_TRUE(c.start_addresses(list));
  ASSERT_TRUE(c.wait(kTimeoutMs));
  expect_connected(c.take_fd(), good.get());
}

TEST(ConnectorTest, AddressListAllFail) {
  uint16_t p1, p2;
  FileDescriptor a = tcp_socket(AF_INET, "127.0.0.1", false, &p1);
  FileDescriptor b = tcp_socket(AF_INET, "127.0.0.1", false, &p2);
  Connector c;
  Status s = c.start_addresses({make_inet("127.0.0.1", p1), make_inet("127.0.0.1", p2)});
  if (s)
    s = c.wait(kTimeoutMs);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errnum, ECONNREFUSED);
  EXPECT_EQ(s.error().message, "connect");
}

// Driven by hand, the way the engine's poll loop will.
TEST(ConnectorTest, ManualPolling) {
  uint16_t port;
  FileDescriptor listener = tcp_socket(AF_INET, "127.0.0.1", true, &port);
  SocketAddress a = make_inet("127.0.0.1", port);
  Connector c;
  ASSERT_TRUE(c.start_sockaddr(a.get(), a.length));
  while (c.connecting()) {
    ASSERT_TRUE(wait_for(c.fd(), POLLOUT));
    ASSERT_TRUE(c.on_writable());
  }
  ASSERT_TRUE(c.done());
  expect_connected(c.take_fd(), listener.get());
}

TEST(ConnectorTest, SockaddrInvalid) {
  Connector c;
  struct sockaddr_in sin = {};
  Status s = c.start_sockaddr(reinterpret_cast<struct sockaddr *>(&sin), 1);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errnum, EAFNOSUPPORT);  // as libnbd: no whole family, family 0
}

TEST(ConnectorTest, Vsock) {
  // Whether or not this kernel has vsock, nothing listens on this port.
  Connector c;
  Status s = c.start_vsock(1 /* VMADDR_CID_LOCAL */, 0x7fff1234);
  if (s)
    s = c.wait(kTimeoutMs);
  ASSERT_FALSE(s);
  if (s.error().errnum == EAFNOSUPPORT) {
    EXPECT_NE(s.error().message.find("AF_VSOCK"), std::string::npos);
  }
}

TEST(ConnectorTest, Adopt) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  FileDescriptor peer(sv[1]);
  Connector c;
  ASSERT_TRUE(c.adopt(sv[0]));
  EXPECT_TRUE(c.done());
  FileDescriptor fd = c.take_fd();
  EXPECT_EQ(fd.get(), sv[0]);
  EXPECT_TRUE(::fcntl(fd.get(), F_GETFL) & O_NONBLOCK);

  Status s = c.adopt(-1);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errnum, EBADF);
}

// ---------------------------------------------------------------- SocketTransport

TEST(SocketTransportTest, EofAgainAndEpipe) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  SocketTransport a{FileDescriptor(sv[0])};
  SocketTransport b{FileDescriptor(sv[1])};
  EXPECT_FALSE(a.pending_read());

  char buf[16];
  EXPECT_EQ(a.recv(buf, sizeof buf), -1);
  EXPECT_EQ(errno, EAGAIN);

  // Header and payload as two iovecs with MSG_MORE, as the engine sends them.
  char hdr[] = "head", payload[] = "body";
  struct iovec iov[2] = {{hdr, 4}, {payload, 4}};
  EXPECT_EQ(a.send(iov, 2, true), 8);
  EXPECT_EQ(recv_n(b, 8), "headbody");

  a.shutdown_write();
  EXPECT_EQ(recv_to_eof(b), "");
  send_all(b, "still open");
  EXPECT_EQ(recv_n(a, 10), "still open");

  b.close();
  EXPECT_EQ(b.fd(), -1);
  EXPECT_EQ(b.recv(buf, sizeof buf), -1);
  EXPECT_EQ(errno, EBADF);
  // Would kill the test with SIGPIPE without MSG_NOSIGNAL.
  ssize_t r = a.send(iov, 2, false);
  EXPECT_EQ(r, -1);
  EXPECT_TRUE(errno == EPIPE || errno == ECONNRESET) << std::strerror(errno);
}

TEST(SocketTransportTest, PipeFallback) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  SocketTransport reader{FileDescriptor(p[0])};
  SocketTransport writer{FileDescriptor(p[1])};
  char buf[16];
  EXPECT_EQ(reader.recv(buf, sizeof buf), -1);
  EXPECT_EQ(errno, EAGAIN);
  send_all(writer, "through a pipe");
  EXPECT_EQ(recv_n(reader, 14), "through a pipe");
  reader.close();

  // No SIGPIPE may be delivered (it would terminate the test), and none may
  // be left pending.
  char data[] = "x";
  struct iovec iov = {data, 1};
  EXPECT_EQ(writer.send(&iov, 1, false), -1);
  EXPECT_EQ(errno, EPIPE);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_EQ(sigismember(&pending, SIGPIPE), 0);
}

// Deterministic contents for the bulk transfer: 64-bit words derived from
// their index, so any loss, duplication or reordering shows up.
void fill_pattern(uint64_t seed, uint64_t first_word, std::vector<uint64_t> &words) {
  for (size_t i = 0; i < words.size(); ++i) {
    uint64_t x = (first_word + i) * 0x9E3779B97F4A7C15ULL ^ seed;
    words[i] = x ^ (x >> 29);
  }
}

constexpr size_t kBulkBytes = 256u << 20;
constexpr size_t kChunkWords = (1u << 20) / 8;

void bulk_send(Transport &t, uint64_t seed) {
  std::vector<uint64_t> chunk(kChunkWords);
  size_t chunk_bytes = chunk.size() * 8;
  for (size_t off = 0; off < kBulkBytes; off += chunk_bytes) {
    fill_pattern(seed, off / 8, chunk);
    const char *base = reinterpret_cast<const char *>(chunk.data());
    size_t pos = 0;
    while (pos < chunk_bytes) {
      // Two iovecs, to exercise gathering; MSG_MORE except for the tail.
      size_t left = chunk_bytes - pos;
      size_t first = std::min<size_t>(left, 3000);
      struct iovec iov[2] = {{const_cast<char *>(base + pos), first},
                             {const_cast<char *>(base + pos + first), left - first}};
      ssize_t r = t.send(iov, left > first ? 2 : 1, off + chunk_bytes < kBulkBytes);
      if (r == -1) {
        ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
        ASSERT_TRUE(wait_for(t.fd(), POLLOUT));
        continue;
      }
      ASSERT_GT(r, 0);
      pos += static_cast<size_t>(r);
    }
  }
}

void bulk_recv(Transport &t, uint64_t seed) {
  std::vector<uint64_t> got(kChunkWords), want(kChunkWords);
  size_t chunk_bytes = got.size() * 8;
  for (size_t off = 0; off < kBulkBytes; off += chunk_bytes) {
    char *base = reinterpret_cast<char *>(got.data());
    size_t pos = 0;
    while (pos < chunk_bytes) {
      ssize_t r = t.recv(base + pos, chunk_bytes - pos);
      if (r == -1) {
        ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
        ASSERT_TRUE(wait_for(t.fd(), POLLIN));
        continue;
      }
      ASSERT_GT(r, 0) << "unexpected EOF at " << off + pos;
      pos += static_cast<size_t>(r);
    }
    fill_pattern(seed, off / 8, want);
    ASSERT_EQ(std::memcmp(got.data(), want.data(), chunk_bytes), 0) << "mismatch in chunk at " << off;
  }
}

// The point of the whole design: one thread sends while another receives on
// the same transport, in both directions at once.
TEST(SocketTransportTest, ConcurrentFullDuplex) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  SocketTransport a{FileDescriptor(sv[0])};
  SocketTransport b{FileDescriptor(sv[1])};
  std::thread a_send([&] { bulk_send(a, 1); });
  std::thread a_recv([&] { bulk_recv(a, 2); });
  std::thread b_send([&] { bulk_send(b, 2); });
  std::thread b_recv([&] { bulk_recv(b, 1); });
  a_send.join();
  a_recv.join();
  b_send.join();
  b_recv.join();
  a.shutdown_write();
  char c;
  EXPECT_TRUE(wait_for(b.fd(), POLLIN));
  EXPECT_EQ(b.recv(&c, 1), 0);
}

// ---------------------------------------------------------------- Subprocess

TEST(SubprocessTest, CatEchoes) {
  Result<CommandConnection> r = connect_command({"cat"});
  ASSERT_TRUE(r) << r.error().message;
  CommandConnection &c = r.value();
  EXPECT_GT(c.process.pid(), 0);
  EXPECT_TRUE(::fcntl(c.socket.get(), F_GETFL) & O_NONBLOCK);
  SocketTransport t(std::move(c.socket));
  send_all(t, "hello, server");
  EXPECT_EQ(recv_n(t, 13), "hello, server");
  t.shutdown_write();  // cat sees EOF on stdin and exits
  EXPECT_EQ(recv_to_eof(t), "");
  Result<int> status = c.process.wait();
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
}

TEST(SubprocessTest, DestructorReapsAfterSocketCloses) {
  pid_t pid;
  {
    Result<CommandConnection> r = connect_command({"cat"});
    ASSERT_TRUE(r);
    pid = r->process.pid();
  }
  // Reaped: no longer our child.
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(SubprocessTest, Kill) {
  Result<CommandConnection> r = connect_command({"sleep", "100"});
  ASSERT_TRUE(r);
  Subprocess &p = r->process;
  Result<std::optional<int>> running = p.try_wait();
  ASSERT_TRUE(running);
  EXPECT_FALSE(running->has_value());

  Status bad = p.kill(-1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().errnum, EINVAL);

  ASSERT_TRUE(p.kill(0));  // 0 means SIGTERM
  Result<int> status = p.wait();
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFSIGNALED(*status));
  EXPECT_EQ(WTERMSIG(*status), SIGTERM);

  Status again = p.kill(SIGKILL);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().errnum, ESRCH);
}

TEST(SubprocessTest, KillWithSignal) {
  Result<CommandConnection> r = connect_command({"sleep", "100"});
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->process.kill(SIGKILL));
  Result<int> status = r->process.wait();
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFSIGNALED(*status));
  EXPECT_EQ(WTERMSIG(*status), SIGKILL);
}

int exit_status_of(const std::vector<std::string> &argv) {
  Result<CommandConnection> r = connect_command(argv);
  EXPECT_TRUE(r);
  if (!r)
    return -1;
  r->socket.reset();
  Result<int> status = r->process.wait();
  EXPECT_TRUE(status);
  EXPECT_TRUE(WIFEXITED(*status));
  return WEXITSTATUS(*status);
}

TEST(SubprocessTest, CommandNotFound) {
  EXPECT_EQ(exit_status_of({"duplexnbd-no-such-command"}), 127);
  EXPECT_EQ(exit_status_of({"/nonexistent/duplexnbd-no-such-command"}), 127);
  EXPECT_EQ(exit_status_of({"/dev/null"}), 126);  // not executable
}

TEST(SubprocessTest, EmptyArgv) {
  Result<CommandConnection> r = connect_command({});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errnum, EINVAL);
}

// Like execvp, a file without #! is run by /bin/sh.
TEST(SubprocessTest, ScriptWithoutShebang) {
  TempDir dir;
  std::string script = dir.path() + "/script";
  FILE *f = ::fopen(script.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("echo \"ran with $1\"\n", f);
  std::fclose(f);
  ASSERT_EQ(::chmod(script.c_str(), 0755), 0);

  Result<CommandConnection> r = connect_command({script, "arg"});
  ASSERT_TRUE(r);
  SocketTransport t(std::move(r->socket));
  EXPECT_EQ(recv_to_eof(t), "ran with arg\n");
}

// Ignored signals and the signal mask survive exec; the server must get neither.
TEST(SubprocessTest, SignalsReset) {
  struct sigaction ign = {}, old_pipe;
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGPIPE, &ign, &old_pipe), 0);
  sigset_t usr1, old_mask;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask), 0);

  Result<CommandConnection> r = connect_command({"grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"});

  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  ASSERT_TRUE(r);
  SocketTransport t(std::move(r->socket));
  EXPECT_EQ(recv_to_eof(t), "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

// ---------------------------------------------------------------- Socket activation

// Reports its LISTEN_* environment and pid, then echoes one message.
constexpr const char *kActivatedServer = R"(
import os, socket
s = socket.socket(fileno=3)
c, _ = s.accept()
e = os.environ
c.sendall(("%s %s %s %d\n" % (e.get("LISTEN_PID"), e.get("LISTEN_FDS"),
                              e.get("LISTEN_FDNAMES"), os.getpid())).encode())
c.sendall(c.recv(100))
c.close()
)";

void run_activated_echo(const std::string &name, const std::string &expected_name) {
  Result<SocketActivation> r = SocketActivation::start({"python3", "-c", kActivatedServer}, name);
  ASSERT_TRUE(r) << r.error().message;
  SocketActivation &sa = r.value();
  ASSERT_GT(sa.pid(), 0);
  std::string path = sa.socket_path();
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));

  Connector c;
  ASSERT_TRUE(c.start_unix(path));
  ASSERT_TRUE(c.wait(kTimeoutMs));
  SocketTransport t(c.take_fd());
  std::string pid = std::to_string(sa.pid());
  std::string expected = pid + " 1 " + expected_name + " " + pid + "\n";
  EXPECT_EQ(recv_n(t, expected.size()), expected);
  send_all(t, "echo me");
  EXPECT_EQ(recv_to_eof(t), "echo me");

  std::string dir = path.substr(0, path.rfind('/'));
  r = make_error(0, "destroyed");  // runs the destructor
  EXPECT_EQ(::stat(path.c_str(), &st), -1);
  EXPECT_EQ(::stat(dir.c_str(), &st), -1);
}

TEST(SocketActivationTest, NamedSocket) { run_activated_echo("nbd-export", "nbd-export"); }

TEST(SocketActivationTest, UnnamedSocketOverridesInheritedName) {
  ::setenv("LISTEN_FDNAMES", "stale", 1);
  ::setenv("LISTEN_PID", "1", 1);
  run_activated_echo("", "unknown");
  ::unsetenv("LISTEN_FDNAMES");
  ::unsetenv("LISTEN_PID");
}

// A socket-activated server need not exit when its client leaves, so
// destruction terminates it.
TEST(SocketActivationTest, DestructionTerminatesServer) {
  pid_t pid;
  auto start = std::chrono::steady_clock::now();
  {
    Result<SocketActivation> r = SocketActivation::start({"sleep", "100"});
    ASSERT_TRUE(r);
    pid = r->pid();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(SocketActivationTest, FdThreeIsTheListeningSocket) {
  Result<SocketActivation> r = SocketActivation::start(
      {"sh", "-c", "test -S /dev/fd/3 && test \"$LISTEN_FDS\" = 1 && test \"$LISTEN_PID\" = $$"});
  ASSERT_TRUE(r);
  Result<int> status = r->process().wait();
  ASSERT_TRUE(status);
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
}

// ---------------------------------------------------------------- Wakeup

TEST(WakeupTest, WakesPollFromAnotherThread) {
  Result<Wakeup> r = Wakeup::create();
  ASSERT_TRUE(r);
  Wakeup &w = r.value();
  EXPECT_FALSE(wait_for(w.fd(), POLLIN, 0));

  auto start = std::chrono::steady_clock::now();
  std::thread signaller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    w.signal();
  });
  EXPECT_TRUE(wait_for(w.fd(), POLLIN, kTimeoutMs));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  signaller.join();
  w.drain();
  EXPECT_FALSE(wait_for(w.fd(), POLLIN, 0));
}

TEST(WakeupTest, Coalesces) {
  Result<Wakeup> r = Wakeup::create();
  ASSERT_TRUE(r);
  Wakeup &w = r.value();
  for (int i = 0; i < 1000; ++i)
    w.signal();
  EXPECT_TRUE(wait_for(w.fd(), POLLIN, 0));
  w.drain();
  EXPECT_FALSE(wait_for(w.fd(), POLLIN, 0));
  w.signal();
  EXPECT_TRUE(wait_for(w.fd(), POLLIN, 0));
  w.drain();
  EXPECT_FALSE(wait_for(w.fd(), POLLIN, 0));
}

// Many producers, one consumer following the drain-then-check protocol: no
// wake-up may be lost.
TEST(WakeupTest, NoLostWakeups) {
  Result<Wakeup> r = Wakeup::create();
  ASSERT_TRUE(r);
  Wakeup &w = r.value();
  constexpr int kProducers = 4, kPerProducer = 20000;
  std::atomic<int> produced{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&] {
      for (int i = 0; i < kPerProducer; ++i) {
        produced.fetch_add(1);
        w.signal();
      }
    });
  }
  int seen = 0;
  while (seen < kProducers * kPerProducer) {
    ASSERT_TRUE(wait_for(w.fd(), POLLIN, kTimeoutMs)) << "lost wake-up at " << seen;
    w.drain();
    seen = produced.load();
  }
  for (auto &t : producers)
    t.join();
}

}  // namespace
}  // namespace duplexnbd::transport
