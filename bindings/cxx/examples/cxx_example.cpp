// SPDX-License-Identifier: LGPL-2.1-or-later
// Example of the C++ API (nbd.hpp): write and read back a pattern on an in-memory
// nbdkit server, synchronously and with an asynchronous read and a lambda completion.

#include <nbd.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

int main() {
  try {
    nbd::Handle h;
    // nbdkit serves on stdin/stdout (-s); --exit-with-parent avoids a stray server
    // if this program dies.
    h.connect_command({"nbdkit", "-s", "--exit-with-parent", "memory", "size=1M"});
    const int64_t size = h.get_size();

    // A pattern that differs from the zeroes the memory plugin starts with.
    std::vector<std::byte> pattern(4096);
    for (std::size_t i = 0; i < pattern.size(); ++i)
      pattern[i] = static_cast<std::byte>((i * 7 + 1) & 0xff);
    const uint64_t offset = 64 * 1024;

    h.pwrite(pattern, offset);
    std::vector<std::byte> sync_back(pattern.size());
    h.pread(sync_back, offset);

    // The completion lambda runs inside poll(); returning 1 retires the command
    // automatically, so there is no need for aio_command_completed.
    std::vector<std::byte> aio_back(pattern.size());
    bool done = false;
    int aio_error = 0;
    const uint64_t cookie = h.aio_pread(aio_back, offset, [&](int *error) {
      aio_error = *error;
      done = true;
      return 1;
    });
    while (!done)
      h.poll(-1);

    const bool sync_ok = sync_back == pattern;
    const bool aio_ok = aio_error == 0 && aio_back == pattern;
    std::printf("export size: %lld bytes\n", static_cast<long long>(size));
    std::printf("synchronous read-back: %s\n", sync_ok ? "matches" : "DIFFERS");
    std::printf("aio read-back (cookie %llu): %s\n",
                static_cast<unsigned long long>(cookie), aio_ok ? "matches" : "DIFFERS");

    h.shutdown();
    return sync_ok && aio_ok ? 0 : 1;
  } catch (const nbd::Error &e) {
    std::fprintf(stderr, "cxx_example: %s (errno %d)\n", e.what(), e.errnum());
    return 1;
  }
}
