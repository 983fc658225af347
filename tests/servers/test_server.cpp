// SPDX-License-Identifier: LGPL-2.1-or-later
// duplexnbd_test_server: an in-memory NBD server (with extended headers) for the integration tests.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>

#include "session.h"
#include "sparse_store.h"

namespace {

using duplexnbd::testserver::Options;

[[noreturn]] void usage(int status) {
  std::fprintf(status ? stderr : stdout,
               "usage: duplexnbd_test_server --socket PATH [options]\n"
               "  --size BYTES[K|M|G|T]      export size (default 64M)\n"
               "  --name NAME                export name (\"\" always works too)\n"
               "  --description TEXT         export description\n"
               "  --no-extended              refuse NBD_OPT_EXTENDED_HEADERS\n"
               "  --no-structured            refuse structured replies (and extended headers)\n"
               "  --slow-read-reply BYTES_PER_MS  trickle read replies out at this rate\n"
               "  --read-chunk BYTES         largest OFFSET_DATA chunk (default 1M)\n"
               "  --delay-ms N               hold every reply back N ms\n"
               "  --jitter-ms N              and a random 0..N ms more, so replies overtake each other\n"
               "  --reverse-chunks           send the chunks of a structured read last first\n"
               "  --fail-reads-at OFFSET     reads covering OFFSET fail there (NBD_EIO, ERROR_OFFSET)\n"
               "  --max-payload BYTES        advertised maximum block size (default 32M)\n"
               "  --end-after N              end the session cleanly after N requests\n"
               "  --verbose                  log options and requests to stderr\n");
  std::exit(status);
}

uint64_t parse_size(const char *s) {
  char *end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno || end == s) usage(2);
  unsigned shift = 0;
  switch (*end) {
    case '\0': break;
    case 'K': case 'k': shift = 10; break;
    case 'M': case 'm': shift = 20; break;
    case 'G': case 'g': shift = 30; break;
    case 'T': case 't': shift = 40; break;
    default: usage(2);
  }
  if (*end && end[1]) usage(2);
  return uint64_t(v) << shift;
}

}  // namespace

int main(int argc, char **argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char * {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    if (a == "--socket") opt.socket_path = value();
    else if (a == "--size") opt.size = parse_size(value());
    else if (a == "--name") opt.export_name = value();
    else if (a == "--description") opt.description = value();
    else if (a == "--no-extended") opt.extended = false;
    else if (a == "--no-structured") opt.structured = opt.extended = false;
    else if (a == "--slow-read-reply") opt.slow_read_bytes_per_ms = parse_size(value());
    else if (a == "--read-chunk") opt.read_chunk = parse_size(value());
    else if (a == "--delay-ms") opt.delay_ms = unsigned(parse_size(value()));
    else if (a == "--jitter-ms") opt.jitter_ms = unsigned(parse_size(value()));
    else if (a == "--reverse-chunks") opt.reverse_chunks = true;
    else if (a == "--fail-reads-at") opt.fail_reads_at = parse_size(value());
    else if (a == "--max-payload") opt.max_payload = uint32_t(parse_size(value()));
    else if (a == "--end-after") opt.end_after = parse_size(value());
    else if (a == "--verbose") opt.verbose = true;
    else if (a == "--help") usage(0);
    else usage(2);
  }
  if (opt.socket_path.empty()) usage(2);

  // Clients vanish mid-reply in the tests; that must be an error return, not a signal.
  ::signal(SIGPIPE, SIG_IGN);

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (opt.socket_path.size() >= sizeof addr.sun_path) {
    std::fprintf(stderr, "duplexnbd_test_server: socket path too long\n");
    return 1;
  }
  std::memcpy(addr.sun_path, opt.socket_path.c_str(), opt.socket_path.size() + 1);
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ::unlink(opt.socket_path.c_str());
  if (lfd < 0 || ::bind(lfd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) < 0 ||
      ::listen(lfd, 64) < 0) {
    std::perror("duplexnbd_test_server: listen");
    return 1;
  }

  // One store for all connections, as a real disk: a second connection sees the first's writes.
  static duplexnbd::testserver::SparseStore store(opt.size);
  for (;;) {
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::perror("duplexnbd_test_server: accept");
      return 1;
    }
    std::thread([fd, &opt] {
      duplexnbd::testserver::Session session(fd, opt, store);
      session.run();
    }).detach();
  }
}
