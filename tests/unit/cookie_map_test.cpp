// SPDX-License-Identifier: LGPL-2.1-or-later
// Tests for lib/engine/cookie_map.h: the in-flight table against std::unordered_map.
#include <algorithm>
#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

#include <gtest/gtest.h>

#include "engine/cookie_map.h"

namespace duplexnbd {
namespace {

Command *fake(uint64_t n) { return reinterpret_cast<Command *>(uintptr_t(n) * 16); }

// Same contents as the reference, every key found, nothing else found.
void expect_same(const CookieMap &m, const std::unordered_map<uint64_t, Command *> &ref,
                 uint64_t key_limit) {
  ASSERT_EQ(m.size(), ref.size());
  for (uint64_t k = 0; k <= key_limit; k++) {
    auto it = ref.find(k);
    ASSERT_EQ(m.find(k), it == ref.end() ? nullptr : it->second) << "cookie " << k;
  }
  size_t seen = 0;
  m.for_each([&](uint64_t k, Command *c) {
    seen++;
    auto it = ref.find(k);
    ASSERT_NE(it, ref.end()) << "for_each gave cookie " << k;
    EXPECT_EQ(c, it->second);
  });
  EXPECT_EQ(seen, ref.size());
}

TEST(CookieMap, EmptyFindsNothingNotEvenCookieZero) {
  CookieMap m;
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m.find(0), nullptr);
  EXPECT_EQ(m.find(1), nullptr);
  EXPECT_FALSE(m.erase(1));
}

// A table just below the load at which it grows: probe chains are long and wrap past
// its end, and erasing any member (the backward shift) must leave the rest reachable.
TEST(CookieMap, FullTableEraseInAnyOrder) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 200; round++) {
    CookieMap m;
    std::unordered_map<uint64_t, Command *> ref;
    std::vector<uint64_t> keys;
    uint64_t k = 1 + rng() % 1000;
    for (int i = 0; i < 31; i++) {  // the first table holds 64 slots, at most half used
      k += 1 + rng() % 3;
      keys.push_back(k);
      m.insert(k, fake(k));
      ref[k] = fake(k);
    }
    expect_same(m, ref, k + 10);
    std::shuffle(keys.begin(), keys.end(), rng);
    for (uint64_t key : keys) {
      ASSERT_TRUE(m.erase(key));
      ref.erase(key);
      expect_same(m, ref, k + 10);
    }
    EXPECT_TRUE(m.empty());
  }
}

TEST(CookieMap, GrowsPastItsFirstCapacity) {
  CookieMap m;
  std::unordered_map<uint64_t, Command *> ref;
  for (uint64_t k = 1; k <= 1000; k++) {
    m.insert(k, fake(k));
    ref[k] = fake(k);
  }
  expect_same(m, ref, 1100);
  m.clear();
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m.find(5), nullptr);
}

// What the table sees in use: a sliding window of sequential cookies completing out of
// order, with a few that stay in flight for a long time; compared step by step.
TEST(CookieMap, RandomWindowMatchesUnorderedMap) {
  std::mt19937_64 rng(12345);
  CookieMap m;
  std::unordered_map<uint64_t, Command *> ref;
  std::vector<uint64_t> live;
  // One in 20 stays in flight while 3000 newer cookies pass, so cookies a table's
  // capacity apart are present together and share home slots.
  std::vector<uint64_t> lingering;
  uint64_t next = 1;
  for (int step = 0; step < 200000; step++) {
    if (!lingering.empty() && lingering.front() + 3000 < next) {
      ASSERT_TRUE(m.erase(lingering.front()));
      ref.erase(lingering.front());
      lingering.erase(lingering.begin());
    }
    const bool add = live.size() < 8 || (live.size() < 300 && rng() % 2 == 0);
    if (add) {
      m.insert(next, fake(next));
      ref[next] = fake(next);
      if (rng() % 20 == 0)
        lingering.push_back(next++);
      else
        live.push_back(next++);
    } else {
      // Mostly one of the oldest, sometimes any.
      size_t i = rng() % 4 == 0 ? rng() % live.size() : rng() % std::min<size_t>(live.size(), 8);
      uint64_t k = live[i];
      live.erase(live.begin() + long(i));
      ASSERT_TRUE(m.erase(k));
      ref.erase(k);
      ASSERT_FALSE(m.erase(k));
    }
    ASSERT_EQ(m.size(), ref.size());
    if (step % 997 == 0) expect_same(m, ref, next + 10);
    // A reply's cookie: present or not, always the right answer.
    uint64_t probe = rng() % (next + 5);
    auto it = ref.find(probe);
    ASSERT_EQ(m.find(probe), it == ref.end() ? nullptr : it->second) << "cookie " << probe;
  }
  expect_same(m, ref, next + 10);
}

}  // namespace
}  // namespace duplexnbd
