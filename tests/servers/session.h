// SPDX-License-Identifier: LGPL-2.1-or-later
// One client connection of the test server: fixed-newstyle handshake, then transmission
// with a reader thread (requests) and a writer thread (replies, possibly out of order).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "sparse_store.h"
#include "wire/request.h"

namespace duplexnbd::testserver {

struct Options {
  std::string socket_path;
  std::string export_name;        // the one export; "" is also the default export
  std::string description;
  uint64_t size = 64ull << 20;
  bool extended = true;           // --no-extended refuses NBD_OPT_EXTENDED_HEADERS
  bool structured = true;         // --no-structured refuses NBD_OPT_STRUCTURED_REPLY too
  uint64_t slow_read_bytes_per_ms = 0;  // 0: read payloads go out at full speed
  uint64_t read_chunk = 1 << 20;        // largest OFFSET_DATA chunk in a structured read
  unsigned delay_ms = 0;                // every reply is held back this long
  unsigned jitter_ms = 0;               // ... plus a random 0..jitter_ms, reordering replies
  bool reverse_chunks = false;          // structured read chunks go out last first
  uint64_t fail_reads_at = UINT64_MAX;  // reads covering this offset fail there (EIO)
  uint32_t max_payload = 32 << 20;      // advertised NBD_INFO_BLOCK_SIZE maximum
  // After this many requests the server answers what it has, then ends the session
  // cleanly (end of stream) while it keeps reading and discarding whatever still comes.
  uint64_t end_after = UINT64_MAX;
  bool verbose = false;
};

class Session {
public:
  Session(int fd, const Options &options, SparseStore &store);
  ~Session();
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;

  // Runs the whole connection in the calling thread (plus the writer thread it starts).
  void run();

private:
  using Clock = std::chrono::steady_clock;

  // One indivisible piece of a reply (a chunk, or a whole simple reply).  Chunks of
  // different replies may interleave only between units.
  struct Unit {
    std::vector<uint8_t> bytes;
    bool paced = false;  // trickled out at --slow-read-reply speed
  };
  struct Reply {
    std::deque<Unit> units;
    Clock::time_point due;
  };

  // ---- Handshake (single-threaded, blocking).
  bool handshake();  // true: transmission follows
  bool handle_option(uint32_t option, const std::vector<uint8_t> &payload, bool &enter);
  bool send_option_reply(uint32_t option, uint32_t type, const std::vector<uint8_t> &payload);
  bool send_option_error(uint32_t option, uint32_t type, std::string_view message);
  bool handle_info_or_go(uint32_t option, const std::vector<uint8_t> &payload, bool &enter);
  bool handle_meta_context(uint32_t option, const std::vector<uint8_t> &payload);
  uint16_t transmission_flags() const;
  bool known_export(std::string_view name) const {
    return name.empty() || name == options_.export_name;
  }

  // ---- Transmission.
  void transmission();
  void writer_loop();
  void queue(Reply reply);
  void handle_request(const wire::RequestHeader &req, std::vector<uint8_t> &payload);
  Reply read_reply(const wire::RequestHeader &req);
  Reply block_status_reply(const wire::RequestHeader &req, uint64_t effect_length,
                           const std::vector<uint32_t> &ids);
  Reply success_reply(const wire::RequestHeader &req);
  Reply error_reply(const wire::RequestHeader &req, int errnum, std::string_view message);
  // A structured/extended chunk: header then payload.
  std::vector<uint8_t> chunk(const wire::RequestHeader &req, uint16_t flags, uint16_t type,
                             const std::vector<uint8_t> &payload) const;
  bool send_unit(const Unit &unit);

  // ---- Socket helpers.
  bool read_exact(void *buf, size_t n);
  bool write_all(const void *buf, size_t n);
  void log(const char *fmt, ...) const __attribute__((format(printf, 2, 3)));

  int fd_;
  const Options &options_;
  SparseStore &store_;

  bool no_zeroes_ = false;
  bool structured_ = false;
  bool extended_ = false;
  // Negotiated meta contexts (NBD_OPT_SET_META_CONTEXT): ids from the table in session.cpp.
  std::vector<uint32_t> contexts_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::list<Reply> pending_;
  bool reader_done_ = false;
  bool writer_failed_ = false;
};

}  // namespace duplexnbd::testserver
