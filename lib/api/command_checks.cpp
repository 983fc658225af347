// SPDX-License-Identifier: LGPL-2.1-or-later
// Client-side request checks: what strict mode rejects before any byte reaches the server.
#include "api/command_checks.h"

#include <cerrno>
#include <cinttypes>

#include "handle/error.h"
#include "libnbd.h"
#include "wire/protocol.h"

namespace duplexnbd::api {
namespace {

constexpr bool power_of_two(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

// STRICT_ALIGN: offset and length are multiples of the minimum block size, except that
// a request may end exactly at the end of an image whose size is not a multiple of it
// (libnbd 1.24): the image's last block is a partial one, and reaching its end is the
// only way to touch those bytes. Ending anywhere else with a ragged length is refused.
bool aligned_for_server(uint64_t offset, uint64_t count, uint64_t size, uint32_t min) {
  const uint64_t mask = min - 1;
  if ((offset & mask) != 0) return false;
  if ((count & mask) == 0) return true;
  return (size & mask) != 0 && offset <= size && count == size - offset;
}

// The spec's rules for NBD_INFO_BLOCK_SIZE; export size aside, which may not be known yet.
bool block_sizes_consistent(const ExportInfo &info) {
  const uint32_t min = info.block_minimum, pref = info.block_preferred, max = info.block_maximum;
  if (min == 0 || min > 64 * 1024 || min > pref || pref < 512 || pref > max) return false;
  if (!power_of_two(min) || !power_of_two(pref)) return false;
  return max == UINT32_MAX || max % min == 0;
}

}  // namespace

uint32_t usable_block_minimum(const ExportInfo &info) {
  return block_sizes_consistent(info) ? info.block_minimum : 0;
}

uint32_t payload_maximum(const ExportInfo &info) {
  constexpr uint32_t kFloor = 1024 * 1024;
  // Without an advertisement the spec only promises 32MiB.
  if (!block_sizes_consistent(info)) return 32 * 1024 * 1024;
  uint64_t m = info.block_maximum;
  if (m < kFloor) m = kFloor;
  if (m > kMaxRequestSize) m = kMaxRequestSize;
  return uint32_t(m);
}

uint16_t effective_eflags(const Negotiated &n) {
  uint16_t f = n.info.eflags;
  if (!n.structured_replies) f &= uint16_t(~wire::kFlagSendDf);
  if (!(f & wire::kFlagSendWriteZeroes)) f &= uint16_t(~wire::kFlagSendFastZero);
  if (!n.extended_headers) f &= uint16_t(~wire::kFlagBlockStatPayload);
  return f;
}

bool check_range(uint32_t strict, const Negotiated &n, uint64_t offset, uint64_t count,
                 int bounds_errno) {
  if ((strict & LIBNBD_STRICT_ZERO_SIZE) && count == 0) {
    set_error(EINVAL, "count cannot be 0");
    return false;
  }
  const uint64_t size = n.info.size;
  if ((strict & LIBNBD_STRICT_BOUNDS) && (offset > size || count > size - offset)) {
    set_error(bounds_errno, "request out of bounds");
    return false;
  }
  const uint32_t min = usable_block_minimum(n.info);
  if ((strict & LIBNBD_STRICT_ALIGN) && min != 0 && !aligned_for_server(offset, count, size, min)) {
    set_error(EINVAL, "request is unaligned");
    return false;
  }
  return true;
}

bool check_length(uint32_t strict, const Negotiated &n, uint16_t type, uint64_t count) {
  switch (type) {
    case wire::kCmdWrite: {
      const uint32_t max = payload_maximum(n.info);
      if ((strict & LIBNBD_STRICT_PAYLOAD) && count > max) {
        set_error(ERANGE, "request too large: maximum payload size is %" PRIu32, max);
        return false;
      }
    }
      [[fallthrough]];
    case wire::kCmdRead:
      if (count > kMaxRequestSize) {
        set_error(ERANGE, "request too large: maximum request size is %" PRIu64, kMaxRequestSize);
        return false;
      }
      return true;
    default:
      // Only extended headers carry a 64-bit length.
      if (!n.extended_headers && count > UINT32_MAX) {
        set_error(ERANGE, "request too large: maximum request size is %" PRIu32, UINT32_MAX);
        return false;
      }
      return true;
  }
}

bool check_filter_length(uint32_t strict, const Negotiated &n, uint64_t payload_len) {
  if (payload_len > kMaxRequestSize ||
      ((strict & LIBNBD_STRICT_PAYLOAD) && payload_len > payload_maximum(n.info))) {
    set_error(ERANGE, "filter set too large");
    return false;
  }
  return true;
}

}  // namespace duplexnbd::api
