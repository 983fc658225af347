// SPDX-License-Identifier: LGPL-2.1-or-later
// Races around NBD_CMD_DISC: no request may follow it onto the wire, whatever the threads do.
#include "hostile_support.h"

#include <atomic>
#include <thread>
#include <vector>

namespace hostile {
namespace {

// Three threads issue flushes while a fourth calls nbd_shutdown.  A flush either goes out
// before NBD_CMD_DISC (and is answered) or is refused with EINVAL; the server counts any
// request that arrives after the disconnect, which the protocol forbids.
TEST(DisconnectRace, NoRequestFollowsTheDisconnect) {
  constexpr int kIterations = 100;
  for (int it = 0; it < kIterations; ++it) {
    FakeServer server;
    std::atomic<int> after_disc{0};
    std::atomic<bool> saw_disc{false};
    server.start([&](FakeServer &s) {
      if (!s.handshake()) return;
      Request r;
      for (;;) {
        if (saw_disc) {
          // Whatever comes within a short while after the disconnect is a violation.
          if (!s.readable_within(50) || !s.read_request(r)) break;
          after_disc++;
          continue;
        }
        if (!s.read_request(r)) return;
        if (r.type == nbd::kCmdDisc)
          saw_disc = true;
        else
          s.ok_reply(r);
      }
      s.close();
    });
    nbd_handle *h = nbd_create();
    ASSERT_NE(h, nullptr);
    ASSERT_NE(nbd_connect_socket(h, server.client_fd()), -1) << last_error();
    std::atomic<bool> go{false};
    std::atomic<int> refused_other{0};
    std::vector<std::thread> issuers;
    for (int t = 0; t < 3; ++t) {
      issuers.emplace_back([&] {
        while (!go) std::this_thread::yield();
        nbd_completion_callback retire{[](void *, int *) { return 1; }, nullptr, nullptr};
        for (int i = 0; i < 2000; ++i) {
          if (nbd_aio_flush(h, retire, 0) == -1) {
            if (nbd_get_errno() != EINVAL) refused_other++;
            break;
          }
        }
      });
    }
    go = true;
    std::this_thread::sleep_for(std::chrono::microseconds(50 * (it % 20)));
    const int r = nbd_shutdown(h, 0);
    for (auto &t : issuers) t.join();
    EXPECT_NE(r, -1) << "iteration " << it << ": " << last_error();
    nbd_close(h);
    server.join();
    ASSERT_TRUE(saw_disc.load()) << "iteration " << it;
    ASSERT_EQ(after_disc.load(), 0) << "iteration " << it << ": requests after NBD_CMD_DISC";
    ASSERT_EQ(refused_other.load(), 0) << "iteration " << it;
  }
}

}  // namespace
}  // namespace hostile
