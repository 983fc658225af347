// SPDX-License-Identifier: LGPL-2.1-or-later
// Sparse in-memory disk for the test server: reads, writes, zeroing and allocation runs.
#include "sparse_store.h"

#include <algorithm>
#include <cstring>
#include <mutex>

namespace duplexnbd::testserver {

void SparseStore::read(uint64_t offset, uint64_t length, uint8_t *out) const {
  std::shared_lock lock(mutex_);
  while (length > 0) {
    uint64_t page = offset / kPageSize, in_page = offset % kPageSize;
    uint64_t n = std::min(length, kPageSize - in_page);
    auto it = pages_.find(page);
    if (it == pages_.end()) std::memset(out, 0, n);
    else std::memcpy(out, it->second.get() + in_page, n);
    out += n;
    offset += n;
    length -= n;
  }
}

void SparseStore::write(uint64_t offset, const uint8_t *in, uint64_t length) {
  std::unique_lock lock(mutex_);
  while (length > 0) {
    uint64_t page = offset / kPageSize, in_page = offset % kPageSize;
    uint64_t n = std::min(length, kPageSize - in_page);
    auto &p = pages_[page];
    if (!p) p = std::make_unique<uint8_t[]>(kPageSize);  // value-initialised: zeroes
    std::memcpy(p.get() + in_page, in, n);
    in += n;
    offset += n;
    length -= n;
  }
}

void SparseStore::zero(uint64_t offset, uint64_t length, bool punch) {
  std::unique_lock lock(mutex_);
  while (length > 0) {
    uint64_t page = offset / kPageSize, in_page = offset % kPageSize;
    uint64_t n = std::min(length, kPageSize - in_page);
    auto it = pages_.find(page);
    if (it != pages_.end()) {
      if (punch && n == kPageSize) pages_.erase(it);
      else std::memset(it->second.get() + in_page, 0, n);
    }
    offset += n;
    length -= n;
  }
}

std::vector<SparseStore::Run> SparseStore::runs(uint64_t offset, uint64_t length,
                                                size_t max_runs) const {
  std::shared_lock lock(mutex_);
  std::vector<Run> out;
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  while (pos < end) {
    uint64_t page = pos / kPageSize;
    auto it = pages_.lower_bound(page);
    uint64_t run_end;
    bool allocated;
    if (it != pages_.end() && it->first == page) {
      // Walk consecutive allocated pages.
      uint64_t next = page + 1;
      for (++it; it != pages_.end() && it->first == next; ++it) ++next;
      run_end = std::min(end, next * kPageSize);
      allocated = true;
    } else {
      // Jump straight to the next allocated page: holes cost nothing however long.
      run_end = it == pages_.end() ? end : std::min(end, it->first * kPageSize);
      allocated = false;
    }
    if (!out.empty() && out.back().allocated == allocated) {
      out.back().length += run_end - pos;
    } else {
      if (out.size() == max_runs) break;
      out.push_back({pos, run_end - pos, allocated});
    }
    pos = run_end;
  }
  return out;
}

uint64_t SparseStore::allocated_pages() const {
  std::shared_lock lock(mutex_);
  return pages_.size();
}

}  // namespace duplexnbd::testserver
