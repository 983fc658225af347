// SPDX-License-Identifier: LGPL-2.1-or-later
// The scriptable fake NBD server of the hostile-server tests (see fake_server.h).
#include "fake_server.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

namespace hostile {

void put16(Bytes &b, uint16_t v) {
  b.push_back(uint8_t(v >> 8));
  b.push_back(uint8_t(v));
}
void put32(Bytes &b, uint32_t v) {
  put16(b, uint16_t(v >> 16));
  put16(b, uint16_t(v));
}
void put64(Bytes &b, uint64_t v) {
  put32(b, uint32_t(v >> 32));
  put32(b, uint32_t(v));
}
void put_bytes(Bytes &b, const void *p, size_t n) {
  const auto *c = static_cast<const uint8_t *>(p);
  b.insert(b.end(), c, c + n);
}
void put_string(Bytes &b, const std::string &s) { put_bytes(b, s.data(), s.size()); }

Bytes error_payload(uint32_t nbd_error, const std::string &message) {
  Bytes p;
  put32(p, nbd_error);
  put16(p, uint16_t(message.size()));
  put_string(p, message);
  return p;
}

namespace {
uint16_t get16(const uint8_t *p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t get32(const uint8_t *p) { return uint32_t(get16(p)) << 16 | get16(p + 2); }
uint64_t get64(const uint8_t *p) { return uint64_t(get32(p)) << 32 | get32(p + 4); }
}  // namespace

FakeServer::FakeServer(ServerConfig cfg) : cfg_(std::move(cfg)) {
  if (const int fd = serve_fd(); fd >= 0) {
    server_fd_ = fd;  // the differential runner's client is at the other end
    return;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    ADD_FAILURE() << "socketpair: " << strerror(errno);
    return;
  }
  client_fd_ = sv[0];
  server_fd_ = sv[1];
}

FakeServer::~FakeServer() {
  abort_io();
  join();
  if (server_fd_ >= 0) ::close(server_fd_);
}

void FakeServer::close_client_fd() {
  if (client_fd_ >= 0) ::close(client_fd_);
  client_fd_ = -1;
}

void FakeServer::start(std::function<void(FakeServer &)> script) {
  thread_ = std::thread([this, script = std::move(script)] {
    script(*this);
    finished_.store(true);
  });
}

void FakeServer::join() {
  if (thread_.joinable()) thread_.join();
}

void FakeServer::abort_io() {
  if (server_fd_ >= 0) ::shutdown(server_fd_, SHUT_RDWR);
}

void FakeServer::close() {
  // shutdown rather than close: the descriptor number stays ours until the destructor,
  // so a concurrent abort_io can never hit a recycled descriptor.
  if (server_fd_ >= 0) ::shutdown(server_fd_, SHUT_RDWR);
}

bool FakeServer::send(const Bytes &b) {
  size_t off = 0;
  while (off < b.size()) {
    ssize_t n = ::send(server_fd_, b.data() + off, b.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;  // the client went away: that is for the test to judge
    off += size_t(n);
  }
  return true;
}

bool FakeServer::read_exact(Bytes &b, size_t n) {
  b.resize(n);
  size_t off = 0;
  while (off < n) {
    struct pollfd p = {server_fd_, POLLIN, 0};
    int r = ::poll(&p, 1, kIoTimeoutMs);
    if (r == 0) return false;  // the client stopped talking; the test decides if that is wrong
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    ssize_t got = ::recv(server_fd_, b.data() + off, n - off, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    for (ssize_t i = 0; i < got; i++) {
      client_hash_ = (client_hash_ ^ b[off + size_t(i)]) * 0x100000001b3ull;
    }
    client_bytes_ += uint64_t(got);
    off += size_t(got);
  }
  return true;
}

int FakeServer::serve_fd() {
  const char *e = getenv("HOSTILE_SERVE_FD");
  return e && *e ? atoi(e) : -1;
}

bool FakeServer::handshake_then_requests(int n, Request &last) {
  if (!handshake()) return false;
  for (int i = 0; i < n; i++)
    if (!read_request(last)) return false;
  return true;
}

size_t FakeServer::unread_bytes() {
  int n = 0;
  if (::ioctl(server_fd_, FIONREAD, &n) == -1) return 0;
  return size_t(n);
}

bool FakeServer::readable_within(int ms) {
  struct pollfd p = {server_fd_, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  return r > 0 && (p.revents & POLLIN);
}

void FakeServer::drain() {
  Bytes b;
  while (read_exact(b, 1)) {
  }
}

// ---- Handshake -----------------------------------------------------------------------

void FakeServer::greet(uint16_t gflags) {
  Bytes b;
  put64(b, nbd::kInitPasswd);
  put64(b, nbd::kIHaveOpt);
  put16(b, gflags);
  send(b);
}

bool FakeServer::read_client_flags() {
  Bytes b;
  return read_exact(b, 4);
}

bool FakeServer::read_option(Option &o) {
  Bytes h;
  if (!read_exact(h, 16)) return false;
  if (get64(h.data()) != nbd::kIHaveOpt) {
    ADD_FAILURE() << "client sent an option without IHAVEOPT";
    return false;
  }
  o.option = get32(h.data() + 8);
  uint32_t len = get32(h.data() + 12);
  if (len > (1u << 20)) {
    ADD_FAILURE() << "client sent an absurd option length " << len;
    return false;
  }
  return read_exact(o.payload, len);
}

void FakeServer::option_reply(uint32_t option, uint32_t type, const Bytes &payload) {
  Bytes b;
  put64(b, nbd::kOptReplyMagic);
  put32(b, option);
  put32(b, type);
  put32(b, uint32_t(payload.size()));
  put_bytes(b, payload.data(), payload.size());
  send(b);
}

void FakeServer::info_export(uint32_t option) {
  Bytes p;
  put16(p, nbd::kInfoExport);
  put64(p, cfg_.size);
  put16(p, cfg_.eflags);
  option_reply(option, nbd::kRepInfo, p);
}

uint32_t FakeServer::context_id(const std::string &name) const {
  auto it = agreed_.find(name);
  return it == agreed_.end() ? 0 : it->second;
}

bool FakeServer::handshake() {
  Option o;
  return handshake_until(UINT32_MAX, o);
}

bool FakeServer::handshake_until(uint32_t stop_at, Option &o) {
  greet();
  if (!read_client_flags()) return false;
  for (;;) {
    if (!read_option(o)) return false;
    if (o.option == stop_at) return true;
    switch (o.option) {
      case nbd::kOptStructuredReply:
        structured_ok_ = cfg_.structured;
        option_reply(o.option, cfg_.structured ? nbd::kRepAck : nbd::kRepErrUnsup);
        break;
      case nbd::kOptExtendedHeaders:
        extended_ok_ = cfg_.extended;
        if (cfg_.extended) structured_ok_ = true;
        option_reply(o.option, cfg_.extended ? nbd::kRepAck : nbd::kRepErrUnsup);
        break;
      case nbd::kOptSetMetaContext:
      case nbd::kOptListMetaContext: {
        // export name (u32 + bytes), query count (u32), queries (u32 + bytes each).
        const Bytes &p = o.payload;
        size_t at = 0;
        auto u32 = [&](uint32_t &v) {
          if (at + 4 > p.size()) return false;
          v = get32(p.data() + at);
          at += 4;
          return true;
        };
        uint32_t len = 0, n = 0;
        if (!u32(len) || (at += len) > p.size() || !u32(n)) {
          ADD_FAILURE() << "malformed meta context option from the client";
          return false;
        }
        for (uint32_t i = 0; i < n; i++) {
          if (!u32(len) || at + len > p.size()) {
            ADD_FAILURE() << "malformed meta context query from the client";
            return false;
          }
          std::string q(p.begin() + long(at), p.begin() + long(at + len));
          at += len;
          for (size_t k = 0; k < cfg_.contexts.size(); k++) {
            if (cfg_.contexts[k] != q) continue;
            uint32_t id = uint32_t(k + 1);
            if (o.option == nbd::kOptSetMetaContext) agreed_[q] = id;
            Bytes r;
            put32(r, id);
            put_string(r, q);
            option_reply(o.option, nbd::kRepMetaContext, r);
          }
        }
        option_reply(o.option, nbd::kRepAck);
        break;
      }
      case nbd::kOptGo:
      case nbd::kOptInfo:
        info_export(o.option);
        option_reply(o.option, nbd::kRepAck);
        if (o.option == nbd::kOptGo) return true;
        break;
      case nbd::kOptExportName: {
        Bytes b;
        put64(b, cfg_.size);
        put16(b, cfg_.eflags);
        send(b);  // NO_ZEROES was offered and the library always takes it
        return true;
      }
      case nbd::kOptAbort:
        option_reply(o.option, nbd::kRepAck);
        return false;
      default:
        option_reply(o.option, nbd::kRepErrUnsup);
        break;
    }
  }
}

// ---- Transmission ----------------------------------------------------------------------

bool FakeServer::read_request(Request &r, size_t payload_limit) {
  Bytes h;
  const size_t size = extended_ok_ ? 32 : 28;
  if (!read_exact(h, size)) return false;
  uint32_t magic = get32(h.data());
  if (magic != (extended_ok_ ? nbd::kExtendedRequestMagic : nbd::kRequestMagic)) {
    ADD_FAILURE() << "client sent a request with magic " << std::hex << magic;
    return false;
  }
  r.flags = get16(h.data() + 4);
  r.type = get16(h.data() + 6);
  r.cookie = get64(h.data() + 8);
  r.offset = get64(h.data() + 16);
  r.length = extended_ok_ ? get64(h.data() + 24) : get32(h.data() + 24);
  r.payload.clear();
  if (r.type == nbd::kCmdWrite) {
    size_t want = size_t(std::min<uint64_t>(r.length, payload_limit));
    if (!read_exact(r.payload, want)) return false;
  }
  return true;
}

void FakeServer::simple_reply(uint64_t cookie, uint32_t error, const Bytes &data) {
  Bytes b;
  put32(b, nbd::kSimpleReplyMagic);
  put32(b, error);
  put64(b, cookie);
  put_bytes(b, data.data(), data.size());
  send(b);
}

Bytes FakeServer::structured_header(uint64_t cookie, uint16_t flags, uint16_t type,
                                    uint32_t length) {
  Bytes b;
  put32(b, nbd::kStructuredReplyMagic);
  put16(b, flags);
  put16(b, type);
  put64(b, cookie);
  put32(b, length);
  return b;
}

Bytes FakeServer::extended_header(uint64_t cookie, uint16_t flags, uint16_t type,
                                  uint64_t offset, uint64_t length) {
  Bytes b;
  put32(b, nbd::kExtendedReplyMagic);
  put16(b, flags);
  put16(b, type);
  put64(b, cookie);
  put64(b, offset);
  put64(b, length);
  return b;
}

void FakeServer::chunk(uint64_t cookie, uint16_t flags, uint16_t type, const Bytes &payload) {
  Bytes b = extended_ok_ ? extended_header(cookie, flags, type, 0, payload.size())
                         : structured_header(cookie, flags, type, uint32_t(payload.size()));
  put_bytes(b, payload.data(), payload.size());
  send(b);
}

void FakeServer::ok_reply(const Request &r) {
  if (r.type == nbd::kCmdRead) {
    Bytes data(size_t(r.length), 0);
    if (!structured_ok_) {
      simple_reply(r.cookie, 0, data);
      return;
    }
    Bytes p;
    put64(p, r.offset);
    put_bytes(p, data.data(), data.size());
    chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyOffsetData, p);
    return;
  }
  if (!structured_ok_) {
    simple_reply(r.cookie, 0);
    return;
  }
  chunk(r.cookie, nbd::kReplyFlagDone, nbd::kReplyNone, {});
}

}  // namespace hostile
