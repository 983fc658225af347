// SPDX-License-Identifier: LGPL-2.1-or-later
// Storage for commands, recycled: once warm, issuing a command costs no heap allocation.
#include <mutex>
#include <new>

#include "engine/command.h"

namespace duplexnbd {
namespace {

// A free block: the first bytes of a command's storage.
struct FreeBlock {
  FreeBlock *next;
};
static_assert(sizeof(Command) >= sizeof(FreeBlock));

// Shared by every handle and thread: commands are often freed by another thread than the
// one that issued them (the reader's), so per-thread caches would drain one way.
std::mutex pool_mutex;
FreeBlock *pool_head = nullptr;
size_t pool_blocks = 0;
// Enough for several handles' worth of commands in flight; beyond that back to the heap.
constexpr size_t kMaxPooled = 1024;

// Under AddressSanitizer every command gets fresh storage, so that a use after free
// is still caught.
#if defined(__SANITIZE_ADDRESS__)
#define DUPLEXNBD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DUPLEXNBD_ASAN 1
#endif
#endif
#ifdef DUPLEXNBD_ASAN
constexpr bool kPooling = false;
#else
constexpr bool kPooling = true;
#endif

}  // namespace

void *Command::operator new(size_t size) {
  if (kPooling && size == sizeof(Command)) {
    std::lock_guard lock(pool_mutex);
    if (FreeBlock *b = pool_head) {
      pool_head = b->next;
      pool_blocks--;
      return b;
    }
  }
  return ::operator new(size);
}

void Command::operator delete(void *p) noexcept {
  if (p == nullptr) return;
  if (kPooling) {
    std::lock_guard lock(pool_mutex);
    if (pool_blocks < kMaxPooled) {
      auto *b = static_cast<FreeBlock *>(p);
      b->next = pool_head;
      pool_head = b;
      pool_blocks++;
      return;
    }
  }
  ::operator delete(p);
}

}  // namespace duplexnbd
