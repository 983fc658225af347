// SPDX-License-Identifier: LGPL-2.1-or-later
// Cookie → in-flight command, without a heap allocation per command.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace duplexnbd {

struct Command;

// Open addressing with linear probing, at most half full. Cookies are handed out in
// sequence; Fibonacci hashing spreads such a window evenly over the table. (The cookie
// itself as the slot would put the commands in flight into one long run of occupied
// slots, and every erase would scan to its end: measured at 2 % of a 4 KiB read's CPU.)
// Erasing shifts the probe chain back instead of leaving tombstones, so lookups never
// slow down with use.
class CookieMap {
public:
  CookieMap() : slots_(kInitialCapacity) {}

  // `cookie` must be nonzero and not present.
  void insert(uint64_t cookie, Command *c) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    place(cookie, c);
    size_++;
  }

  Command *find(uint64_t cookie) const {
    const size_t i = index_of(cookie);
    return i == kAbsent ? nullptr : slots_[i].command;
  }

  // False if absent.
  bool erase(uint64_t cookie) {
    size_t i = index_of(cookie);
    if (i == kAbsent) return false;
    // Move later members of the chain into the hole when their home is not past it.
    for (size_t j = next(i); slots_[j].cookie != 0; j = next(j)) {
      const size_t h = home(slots_[j].cookie);
      if (((j - h) & mask()) >= ((j - i) & mask())) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = Slot{};
    size_--;
    return true;
  }

  size_t size() const { return size_; }
  size_t memory_bytes() const { return slots_.capacity() * sizeof(Slot); }
  bool empty() const { return size_ == 0; }

  template <typename F>
  void for_each(F f) const {
    for (const Slot &s : slots_)
      if (s.cookie != 0) f(s.cookie, s.command);
  }

  void clear() {
    slots_.assign(slots_.size(), Slot{});
    size_ = 0;
  }

private:
  struct Slot {
    uint64_t cookie = 0;  // 0: empty (cookies start at 1)
    Command *command = nullptr;
  };
  static constexpr unsigned kInitialBits = 6;
  static constexpr size_t kInitialCapacity = size_t(1) << kInitialBits;

  static constexpr size_t kAbsent = SIZE_MAX;

  // The slot holding `cookie`, or kAbsent.
  size_t index_of(uint64_t cookie) const {
    if (cookie == 0) return kAbsent;  // a server may send any cookie; 0 marks empty slots
    for (size_t i = home(cookie);; i = next(i)) {
      if (slots_[i].cookie == cookie) return i;
      if (slots_[i].cookie == 0) return kAbsent;
    }
  }

  size_t mask() const { return slots_.size() - 1; }
  size_t home(uint64_t cookie) const {
    return size_t((cookie * 0x9e3779b97f4a7c15ull) >> shift_);
  }
  size_t next(size_t i) const { return (i + 1) & mask(); }

  void place(uint64_t cookie, Command *c) {
    size_t i = home(cookie);
    while (slots_[i].cookie != 0) i = next(i);
    slots_[i] = Slot{cookie, c};
  }

  void grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    shift_--;
    for (const Slot &s : old)
      if (s.cookie != 0) place(s.cookie, s.command);
  }

  std::vector<Slot> slots_;
  unsigned shift_ = 64 - kInitialBits;  // 64 - log2(capacity): home() keeps the top bits
  size_t size_ = 0;
};

}  // namespace duplexnbd
