// SPDX-License-Identifier: LGPL-2.1-or-later
// Shared by the fuzz targets: a socketpair whose server end replays the fuzz bytes, a bounded pump, closure accounting.
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "libnbd.h"

namespace fuzz {

[[noreturn]] inline void die(const char *what) {
  fprintf(stderr, "fuzz target invariant broken: %s\n", what);
  abort();
}

// Byte-string builder for the canned parts of a server's side (big endian, as on the wire).
struct Wire {
  std::vector<uint8_t> b;
  void u8(uint8_t v) { b.push_back(v); }
  void u16(uint16_t v) { u8(uint8_t(v >> 8)); u8(uint8_t(v)); }
  void u32(uint32_t v) { u16(uint16_t(v >> 16)); u16(uint16_t(v)); }
  void u64(uint64_t v) { u32(uint32_t(v >> 32)); u32(uint32_t(v)); }
  void str(const std::string &s) { b.insert(b.end(), s.begin(), s.end()); }
  void option_reply(uint32_t option, uint32_t type, const std::vector<uint8_t> &payload = {}) {
    u64(0x0003e889045565a9ull);
    u32(option);
    u32(type);
    u32(uint32_t(payload.size()));
    b.insert(b.end(), payload.begin(), payload.end());
  }
};

// Every closure handed to the library carries one of these. The library owns the
// closure from the call on: `.free` must run exactly once, and never before the last
// callback; a completion callback runs at most once.
struct Tracker {
  int calls = 0;
  int frees = 0;
  int ret = 0;            // what the callback returns
  bool completion = false;
  uint64_t checksum = 0;  // touches every byte the library hands over (ASan checks them)
};

class Closures {
public:
  Tracker *make(bool completion = false, int ret = 0) {
    all_.push_back(std::make_unique<Tracker>());
    all_.back()->completion = completion;
    all_.back()->ret = ret;
    return all_.back().get();
  }
  // After nbd_close: every closure freed exactly once.
  void check() const {
    for (const auto &t : all_)
      if (t->frees != 1) die("a closure was not freed exactly once");
  }

  static void free_cb(void *ud) {
    auto *t = static_cast<Tracker *>(ud);
    if (++t->frees != 1) die("closure freed twice");
  }
  static void enter(Tracker *t) {
    if (t->frees != 0) die("callback after free");
    ++t->calls;
    if (t->completion && t->calls > 1) die("completion callback ran twice");
  }
  static void touch(Tracker *t, const void *p, size_t n) {
    const auto *c = static_cast<const uint8_t *>(p);
    for (size_t i = 0; i < n; ++i) t->checksum = t->checksum * 31 + c[i];
  }
  static void touch_str(Tracker *t, const char *s) {
    if (!s) die("NULL string given to a callback");
    touch(t, s, strlen(s));
  }

  nbd_completion_callback completion(int ret = 0) {
    Tracker *t = make(true, ret);
    return {[](void *ud, int *error) {
              auto *t = static_cast<Tracker *>(ud);
              enter(t);
              if (!error) die("NULL error pointer");
              return t->ret;
            },
            t, free_cb};
  }
  nbd_chunk_callback chunk(int ret = 0) {
    Tracker *t = make(false, ret);
    return {[](void *ud, const void *sub, size_t count, uint64_t, unsigned, int *error) {
              auto *t = static_cast<Tracker *>(ud);
              enter(t);
              if (!error) die("NULL error pointer");
              if (count) touch(t, sub, count);
              return t->ret;
            },
            t, free_cb};
  }
  nbd_extent_callback extent(int ret = 0) {
    Tracker *t = make(false, ret);
    return {[](void *ud, const char *ctx, uint64_t, uint32_t *e, size_t n, int *error) {
              auto *t = static_cast<Tracker *>(ud);
              enter(t);
              if (!error) die("NULL error pointer");
              touch_str(t, ctx);
              if (n) touch(t, e, n * sizeof *e);
              return t->ret;
            },
            t, free_cb};
  }
  nbd_extent64_callback extent64(int ret = 0) {
    Tracker *t = make(false, ret);
    return {[](void *ud, const char *ctx, uint64_t, nbd_extent *e, size_t n, int *error) {
              auto *t = static_cast<Tracker *>(ud);
              enter(t);
              if (!error) die("NULL error pointer");
              touch_str(t, ctx);
              if (n) touch(t, e, n * sizeof *e);
              return t->ret;
            },
            t, free_cb};
  }
  nbd_list_callback list() {
    Tracker *t = make();
    return {[](void *ud, const char *name, const char *desc) {
              auto *t = static_cast<Tracker *>(ud);
              enter(t);
              touch_str(t, name);
              touch_str(t, desc);
              return 0;
            },
            t, free_cb};
  }
  nbd_context_callback context() {
    Tracker *t = make();
    return {[](void *ud, const char *name) {
              auto *t = static_cast<Tracker *>(ud);
              enter(t);
              touch_str(t, name);
              return 0;
            },
            t, free_cb};
  }
  nbd_debug_callback debug() {
    Tracker *t = make();
    return {[](void *ud, const char *ctx, const char *msg) {
              auto *t = static_cast<Tracker *>(ud);
              enter(t);
              touch_str(t, ctx);
              touch_str(t, msg);
              return 0;
            },
            t, free_cb};
  }

private:
  std::vector<std::unique_ptr<Tracker>> all_;
};

// The server end of a socketpair: replays `script` in chunks of `chunk` bytes, then
// closes its sending side; whatever the client sends is read and dropped.
class Peer {
public:
  Peer(std::vector<uint8_t> script, size_t chunk) : script_(std::move(script)), chunk_(chunk ? chunk : 1) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
    client_ = sv[0];
    server_ = sv[1];
    fcntl(server_, F_SETFL, fcntl(server_, F_GETFL) | O_NONBLOCK);
  }
  ~Peer() {
    if (client_ >= 0) close(client_);
    close(server_);
  }
  Peer(const Peer &) = delete;
  Peer &operator=(const Peer &) = delete;

  // The client's end, handed to nbd_aio_connect_socket (which then owns it).
  int take_client() {
    int fd = client_;
    client_ = -1;
    return fd;
  }
  bool finished() const { return eof_; }

  // Sends the next chunk (what the socket takes of it) and drains the client's bytes.
  void step() {
    if (pos_ < script_.size()) {
      // Small chunks only for the first 8 KiB, so large inputs stay fast.
      size_t n = std::min(pos_ < 8192 ? chunk_ : std::max<size_t>(chunk_, 65536), script_.size() - pos_);
      ssize_t r = send(server_, script_.data() + pos_, n, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (r > 0) pos_ += size_t(r);
      else if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) pos_ = script_.size();  // client gone
    }
    if (pos_ >= script_.size() && !eof_) {
      shutdown(server_, SHUT_WR);
      eof_ = true;
    }
    uint8_t sink[16384];
    while (recv(server_, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
  }

private:
  std::vector<uint8_t> script_;
  size_t chunk_;
  size_t pos_ = 0;
  bool eof_ = false;
  int client_ = -1, server_ = -1;
};

// Runs both directions of the handle once, as an aio main loop would after poll.
inline void pump(nbd_handle *h) {
  unsigned dir = nbd_aio_get_direction(h);
  if (dir & LIBNBD_AIO_DIRECTION_WRITE) (void)nbd_aio_notify_write(h);
  if (dir & LIBNBD_AIO_DIRECTION_READ) (void)nbd_aio_notify_read(h);
}

inline bool over(nbd_handle *h) { return nbd_aio_is_dead(h) || nbd_aio_is_closed(h); }

// Chunk sizes the configuration bits choose from: byte by byte up to all at once.
inline size_t chunk_size(unsigned sel) {
  static const size_t sizes[] = {1, 3, 16, 100, 512, 4096, 65536, size_t(1) << 30};
  return sizes[sel & 7];
}

}  // namespace fuzz
