// SPDX-License-Identifier: LGPL-2.1-or-later
// Per-thread objects that outlive the C++ thread_local destructors run by exit().
#pragma once

#include <pthread.h>

#include <new>

namespace duplexnbd {

// exit() runs the calling thread's thread_local destructors before the atexit handlers, and
// programs call the library from those handlers (nbdinfo 1.22 shuts its handle down there):
// a thread_local std::string would be gone by then.  A POSIX thread-specific value, as
// libnbd keeps its errors, is destroyed when its thread ends and never by exit().
template <typename T>
class PerThread {
public:
  // The calling thread's object, created on first use; nullptr only when out of memory.
  static T *get() {
    Key &k = key();
    auto *p = static_cast<T *>(pthread_getspecific(k.key));
    if (p == nullptr && k.ok) {
      p = new (std::nothrow) T();
      if (p != nullptr && pthread_setspecific(k.key, p) != 0) {
        delete p;
        p = nullptr;
      }
    }
    return p;
  }
  // The calling thread's object if it exists.
  static T *peek() {
    Key &k = key();
    return k.ok ? static_cast<T *>(pthread_getspecific(k.key)) : nullptr;
  }

private:
  struct Key {
    Key() { ok = pthread_key_create(&key, [](void *p) { delete static_cast<T *>(p); }) == 0; }
    pthread_key_t key;
    bool ok;
  };
  // Never destroyed: it must still work inside atexit handlers.
  static Key &key() {
    static Key *k = new Key();
    return *k;
  }
};

}  // namespace duplexnbd
