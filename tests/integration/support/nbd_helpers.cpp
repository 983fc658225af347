// SPDX-License-Identifier: LGPL-2.1-or-later
// Public-API helpers for the integration tests: handles, errors, data patterns, two-thread driver.
#include "support/nbd_helpers.h"

#include <poll.h>

#include <cerrno>
#include <cstring>
#include <ostream>

namespace dnbd_test {

Handle make_handle() {
  nbd_handle *h = nbd_create();
  if (!h) ADD_FAILURE() << "nbd_create: " << last_error();
  return Handle(h);
}

std::string last_error() {
  const char *msg = nbd_get_error();
  int e = nbd_get_errno();
  std::string s = msg ? msg : "(no error message)";
  s += " (errno " + std::to_string(e);
  if (e) s += std::string(": ") + std::strerror(e);
  return s + ")";
}

namespace {

// splitmix64: cheap, and every output bit depends on every input bit.
inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Pattern bytes [start, start + n) into out; start must be a multiple of 8.  Byte i of
// the pattern is byte (i % 8) of mix(seed, i / 8), little-endian.
void fill_from(uint8_t *out, size_t n, uint64_t seed, size_t start) {
  const uint64_t base = seed * 0x100000001b3ull;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = mix(base + (start + i) / 8);
    for (int k = 0; k < 8; ++k) out[i + k] = uint8_t(v >> (8 * k));
  }
  if (i < n) {
    uint64_t v = mix(base + (start + i) / 8);
    for (int k = 0; i < n; ++i, ++k) out[i] = uint8_t(v >> (8 * k));
  }
}

}  // namespace

void fill_pattern(uint8_t *buf, size_t len, uint64_t seed) { fill_from(buf, len, seed, 0); }

std::vector<uint8_t> make_pattern(size_t len, uint64_t seed) {
  std::vector<uint8_t> v(len);
  fill_pattern(v.data(), len, seed);
  return v;
}

int64_t pattern_mismatch(const uint8_t *buf, size_t len, uint64_t seed) {
  // Compare a window at a time against a regenerated copy: memcmp is fast, and only a
  // mismatching window is searched byte by byte.
  constexpr size_t kWindow = 64 * 1024;
  std::vector<uint8_t> expect(kWindow);
  for (size_t base = 0; base < len; base += kWindow) {
    size_t n = std::min(kWindow, len - base);
    fill_from(expect.data(), n, seed, base);
    if (std::memcmp(buf + base, expect.data(), n) != 0)
      for (size_t j = 0; j < n; ++j)
        if (buf[base + j] != expect[j]) return int64_t(base + j);
  }
  return -1;
}

bool all_zero(const uint8_t *buf, size_t len) {
  for (size_t i = 0; i < len; ++i)
    if (buf[i]) return false;
  return true;
}

void PrintTo(const Extent &e, std::ostream *os) {
  *os << "{offset " << e.offset << ", length " << e.length << ", flags " << e.flags << "}";
}

void ExtentCollector::add(const char *context, uint64_t offset,
                          const std::vector<std::pair<uint64_t, uint64_t>> &entries) {
  ++calls;
  raw.push_back({context ? context : "", offset, entries});
  auto &v = merged[context ? context : ""];
  uint64_t pos = offset;
  for (const auto &[length, flags] : entries) {
    if (!v.empty() && v.back().offset + v.back().length == pos && v.back().flags == flags)
      v.back().length += length;
    else
      v.push_back({pos, length, flags});
    pos += length;
  }
}

namespace {

int extent32_trampoline(void *user_data, const char *context, uint64_t offset, uint32_t *entries,
                        size_t nr_entries, int *error) {
  (void)error;
  std::vector<std::pair<uint64_t, uint64_t>> v;
  for (size_t i = 0; i + 1 < nr_entries; i += 2) v.emplace_back(entries[i], entries[i + 1]);
  static_cast<ExtentCollector *>(user_data)->add(context, offset, v);
  return 0;
}

#ifdef LIBNBD_HAVE_NBD_BLOCK_STATUS_64
int extent64_trampoline(void *user_data, const char *context, uint64_t offset, nbd_extent *entries,
                        size_t nr_entries, int *error) {
  (void)error;
  std::vector<std::pair<uint64_t, uint64_t>> v;
  for (size_t i = 0; i < nr_entries; ++i) v.emplace_back(entries[i].length, entries[i].flags);
  static_cast<ExtentCollector *>(user_data)->add(context, offset, v);
  return 0;
}
#endif

}  // namespace

nbd_extent_callback ExtentCollector::callback32() {
  nbd_extent_callback cb{};
  cb.callback = extent32_trampoline;
  cb.user_data = this;
  return cb;
}

#ifdef LIBNBD_HAVE_NBD_BLOCK_STATUS_64
nbd_extent64_callback ExtentCollector::callback64() {
  nbd_extent64_callback cb{};
  cb.callback = extent64_trampoline;
  cb.user_data = this;
  return cb;
}
#endif

std::vector<Extent> ExtentCollector::extents(const std::string &context, uint64_t offset,
                                             uint64_t length) const {
  std::vector<Extent> out;
  auto it = merged.find(context);
  if (it == merged.end()) return out;
  const uint64_t end = offset + length;
  for (Extent e : it->second) {
    uint64_t s = std::max(e.offset, offset), t = std::min(e.offset + e.length, end);
    if (s >= t) continue;
    if (!out.empty() && out.back().offset + out.back().length == s && out.back().flags == e.flags)
      out.back().length += t - s;
    else
      out.push_back({s, t - s, e.flags});
  }
  return out;
}

std::vector<Extent> block_status_all(nbd_handle *h, const std::string &context, uint64_t offset,
                                     uint64_t length) {
  ExtentCollector c;
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  for (int round = 0; pos < end && round < 10000; ++round) {
    size_t before = c.raw.size();
    if (nbd_block_status(h, end - pos, pos, c.callback32(), 0) == -1) {
      ADD_FAILURE() << "nbd_block_status(" << end - pos << ", " << pos << "): " << last_error();
      break;
    }
    uint64_t next = pos;
    for (size_t i = before; i < c.raw.size(); ++i) {
      if (c.raw[i].context != context) continue;
      uint64_t covered = c.raw[i].offset;
      for (const auto &entry : c.raw[i].entries) covered += entry.first;
      next = std::max(next, covered);
    }
    if (next == pos) {
      ADD_FAILURE() << "block status for " << context << " made no progress at " << pos;
      break;
    }
    pos = next;
  }
  return c.extents(context, offset, length);
}

int wait_for_command(nbd_handle *h, int64_t cookie, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int r = nbd_aio_command_completed(h, uint64_t(cookie));
    if (r != 0) return r;
    if (std::chrono::steady_clock::now() >= deadline) return 0;
    if (nbd_poll(h, 100) == -1) return nbd_aio_command_completed(h, uint64_t(cookie)) == 1 ? 1 : -1;
  }
}

// ---- DuplexDriver ---------------------------------------------------------------------------

DuplexDriver::DuplexDriver(nbd_handle *h, int writer_poll_ms)
    : h_(h), fd_(nbd_aio_get_fd(h)), writer_poll_ms_(writer_poll_ms) {
  if (fd_ < 0) {
    record_error("nbd_aio_get_fd");
    return;
  }
  reader_ = std::thread([this] { reader(); });
  writer_ = std::thread([this] { writer(); });
}

void DuplexDriver::stop() {
  stop_ = true;
  if (reader_.joinable()) reader_.join();
  if (writer_.joinable()) writer_.join();
}

std::string DuplexDriver::error() const {
  std::lock_guard lock(error_mutex_);
  return error_;
}

void DuplexDriver::record_error(const char *who) {
  std::string e = std::string(who) + ": " + last_error();  // libnbd errors are per thread
  std::lock_guard lock(error_mutex_);
  if (error_.empty()) error_ = e;
}

void DuplexDriver::reader() {
  while (!stop_) {
    if (nbd_aio_is_dead(h_) == 1 || nbd_aio_is_closed(h_) == 1) return;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, 50);
    if (r < 0 && errno != EINTR) return record_error("poll (reader)");
    if (r <= 0 || stop_) continue;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ++read_notifies_;
      if (nbd_aio_notify_read(h_) == -1) return record_error("nbd_aio_notify_read");
    }
  }
}

void DuplexDriver::writer() {
  while (!stop_) {
    if (nbd_aio_is_dead(h_) == 1 || nbd_aio_is_closed(h_) == 1) return;
    unsigned dir = nbd_aio_get_direction(h_);
    pollfd p{fd_, short((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0), 0};
    int r = ::poll(&p, 1, writer_poll_ms_);
    if (r < 0 && errno != EINTR) return record_error("poll (writer)");
    if (r <= 0 || stop_) continue;
    if (p.revents & POLLOUT) {
      ++write_notifies_;
      if (nbd_aio_notify_write(h_) == -1) return record_error("nbd_aio_notify_write");
    } else {
      // HUP/ERR without POLLOUT: the reader thread deals with it; do not spin.
      std::this_thread::sleep_for(std::chrono::milliseconds(writer_poll_ms_));
    }
  }
}

}  // namespace dnbd_test
