// SPDX-License-Identifier: LGPL-2.1-or-later
// Bounds-checked sequential reader and writer over byte spans, shared by the wire codecs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "wire/byte_order.h"

namespace duplexnbd::wire {

// Reads fields in order; a read past the end latches failure and yields zeroes, so a
// decoder can read a whole layout and check ok() once instead of after every field.
class ByteReader {
public:
  explicit constexpr ByteReader(ConstBytes in) : in_(in) {}

  constexpr bool ok() const { return ok_; }
  constexpr size_t remaining() const { return ok_ ? in_.size() - pos_ : 0; }
  constexpr bool at_end() const { return ok_ && pos_ == in_.size(); }

  constexpr uint16_t u16() { return take(2) ? load_be16(in_.data() + pos_ - 2) : 0; }
  constexpr uint32_t u32() { return take(4) ? load_be32(in_.data() + pos_ - 4) : 0; }
  constexpr uint64_t u64() { return take(8) ? load_be64(in_.data() + pos_ - 8) : 0; }

  // A sub-span of the input, valid as long as the input is.
  constexpr ConstBytes bytes(uint64_t n) {
    if (!take(n)) return {};
    return in_.subspan(pos_ - size_t(n), size_t(n));
  }
  std::string_view string(uint64_t n) {
    ConstBytes b = bytes(n);
    return {reinterpret_cast<const char *>(b.data()), b.size()};
  }
  constexpr ConstBytes rest() { return bytes(remaining()); }

private:
  constexpr bool take(uint64_t n) {
    if (!ok_ || n > in_.size() - pos_) {
      ok_ = false;
      return false;
    }
    pos_ += size_t(n);
    return true;
  }

  ConstBytes in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Writes fields in order; overflowing latches failure and writes nothing more.
class ByteWriter {
public:
  explicit constexpr ByteWriter(MutableBytes out) : out_(out) {}

  constexpr bool ok() const { return ok_; }
  constexpr size_t written() const { return pos_; }
  // What encoders return: the byte count, or 0 when the buffer was too small.
  constexpr size_t result() const { return ok_ ? pos_ : 0; }

  constexpr void u16(uint16_t v) {
    if (take(2)) store_be16(out_.data() + pos_ - 2, v);
  }
  constexpr void u32(uint32_t v) {
    if (take(4)) store_be32(out_.data() + pos_ - 4, v);
  }
  constexpr void u64(uint64_t v) {
    if (take(8)) store_be64(out_.data() + pos_ - 8, v);
  }
  void bytes(const void *p, size_t n) {
    if (take(n) && n != 0) std::memcpy(out_.data() + pos_ - n, p, n);
  }
  void bytes(ConstBytes b) { bytes(b.data(), b.size()); }
  void string(std::string_view s) { bytes(s.data(), s.size()); }
  void zeroes(size_t n) {
    if (take(n) && n != 0) std::memset(out_.data() + pos_ - n, 0, n);
  }

private:
  constexpr bool take(size_t n) {
    if (!ok_ || n > out_.size() - pos_) {
      ok_ = false;
      return false;
    }
    pos_ += n;
    return true;
  }

  MutableBytes out_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace duplexnbd::wire
