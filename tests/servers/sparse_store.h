// SPDX-License-Identifier: LGPL-2.1-or-later
// Sparse in-memory disk for the test server: 64 KiB pages allocated on first write.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <vector>

namespace duplexnbd::testserver {

class SparseStore {
public:
  // Pages are the allocation unit and so the granularity of block status: small enough
  // for tests to punch precise holes, large enough that a 16 GiB export with a few
  // writes stays a handful of map nodes.
  static constexpr uint64_t kPageSize = 64 * 1024;

  explicit SparseStore(uint64_t size) : size_(size) {}

  uint64_t size() const { return size_; }

  // Callers check bounds first; these assume [offset, offset + length) is inside.
  void read(uint64_t offset, uint64_t length, uint8_t *out) const;
  void write(uint64_t offset, const uint8_t *in, uint64_t length);
  // Zeroes the range; with `punch`, pages the range covers entirely are deallocated
  // (so they report as holes), otherwise they stay allocated and are cleared.
  void zero(uint64_t offset, uint64_t length, bool punch);

  // Maximal runs of allocated / unallocated bytes covering a prefix of the range (all
  // of it unless max_runs ran out first; at least one run for a non-empty range).
  struct Run {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool allocated = false;
  };
  std::vector<Run> runs(uint64_t offset, uint64_t length, size_t max_runs) const;

  uint64_t allocated_pages() const;

private:
  const uint64_t size_;
  mutable std::shared_mutex mutex_;
  std::map<uint64_t, std::unique_ptr<uint8_t[]>> pages_;  // page index -> kPageSize bytes
};

}  // namespace duplexnbd::testserver
