// SPDX-License-Identifier: LGPL-2.1-or-later
// Big-endian (network order) loads and stores on unaligned byte pointers.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

namespace duplexnbd::wire {

// The byte views every wire function takes: input is read-only, output is caller-owned.
using ConstBytes = std::span<const uint8_t>;
using MutableBytes = std::span<uint8_t>;

// Names, queries and messages travel as raw bytes.
inline ConstBytes bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big,
              "mixed-endian hosts are not supported");

// Host <-> big-endian conversion of a value already in a register.
constexpr uint16_t host_to_be16(uint16_t v) {
  if constexpr (std::endian::native == std::endian::little) return __builtin_bswap16(v);
  else return v;
}
constexpr uint32_t host_to_be32(uint32_t v) {
  if constexpr (std::endian::native == std::endian::little) return __builtin_bswap32(v);
  else return v;
}
constexpr uint64_t host_to_be64(uint64_t v) {
  if constexpr (std::endian::native == std::endian::little) return __builtin_bswap64(v);
  else return v;
}
constexpr uint16_t be16_to_host(uint16_t v) { return host_to_be16(v); }
constexpr uint32_t be32_to_host(uint32_t v) { return host_to_be32(v); }
constexpr uint64_t be64_to_host(uint64_t v) { return host_to_be64(v); }

namespace detail {

// memcpy is not usable in constant evaluation, so compile-time callers take the shift
// path; at run time memcpy lets the compiler emit one unaligned load plus a bswap.
template <typename T>
constexpr T load_be(const uint8_t *p) {
  static_assert(std::is_unsigned_v<T>);
  if (std::is_constant_evaluated()) {
    T v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v = T((v << 8) | p[i]);
    return v;
  }
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (sizeof(T) == 2) return be16_to_host(v);
  else if constexpr (sizeof(T) == 4) return be32_to_host(v);
  else return be64_to_host(v);
}

template <typename T>
constexpr void store_be(uint8_t *p, T v) {
  static_assert(std::is_unsigned_v<T>);
  if (std::is_constant_evaluated()) {
    for (size_t i = sizeof(T); i-- > 0;) {
      p[i] = uint8_t(v & 0xff);
      v = T(v >> 8);
    }
    return;
  }
  if constexpr (sizeof(T) == 2) v = host_to_be16(v);
  else if constexpr (sizeof(T) == 4) v = host_to_be32(v);
  else v = host_to_be64(v);
  std::memcpy(p, &v, sizeof v);
}

}  // namespace detail

// The pointer must have at least 2/4/8 readable (or writable) bytes; no alignment needed.
constexpr uint16_t load_be16(const uint8_t *p) { return detail::load_be<uint16_t>(p); }
constexpr uint32_t load_be32(const uint8_t *p) { return detail::load_be<uint32_t>(p); }
constexpr uint64_t load_be64(const uint8_t *p) { return detail::load_be<uint64_t>(p); }
constexpr void store_be16(uint8_t *p, uint16_t v) { detail::store_be<uint16_t>(p, v); }
constexpr void store_be32(uint8_t *p, uint32_t v) { detail::store_be<uint32_t>(p, v); }
constexpr void store_be64(uint8_t *p, uint64_t v) { detail::store_be<uint64_t>(p, v); }

}  // namespace duplexnbd::wire
