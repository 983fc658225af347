// SPDX-License-Identifier: LGPL-2.1-or-later
// Hostile servers during the handshake: bad magic, wrong option, oversized names, hang-ups.
#include "hostile_support.h"

namespace hostile {
namespace {

class HandshakeHostile : public HostileTest {
protected:
  // nbd_connect_socket failed with a clear error and left the handle dead.
  void expect_connect_failed(int r, const std::set<int> &errnos) {
    EXPECT_EQ(r, -1);
    EXPECT_FALSE(connect_error_.empty());
    RecordProperty("errno", connect_errno_ ? strerrorname_np(connect_errno_) : "0");
    RecordProperty("error", connect_error_);
    EXPECT_TRUE(errnos.count(connect_errno_))
        << "errno " << connect_errno_ << " (" << (connect_errno_ ? strerrorname_np(connect_errno_) : "0") << "): " << connect_error_;
    EXPECT_TRUE(nbd_aio_is_dead(h_) || nbd_aio_is_closed(h_));
    EXPECT_EQ(nbd_aio_is_ready(h_), 0);
  }
};

// The greeting's second magic is neither IHAVEOPT nor the oldstyle magic.
TEST_F(HandshakeHostile, WrongGreetingMagic) {
  make();
  int r = connect([](FakeServer &s) {
    Bytes b;
    put64(b, nbd::kInitPasswd);
    put64(b, 0x0123456789abcdefull);
    put16(b, 3);
    s.send(b);
    s.drain();
  });
  expect_connect_failed(r, kViolationErrnos);
}

// Not even NBDMAGIC.
TEST_F(HandshakeHostile, WrongInitialMagic) {
  make();
  int r = connect([](FakeServer &s) {
    Bytes b;
    put_string(b, "HTTP/1.1 400 Bad Request\r\n\r\n");
    s.send(b);
    s.drain();
  });
  expect_connect_failed(r, kViolationErrnos);
}

// An option reply whose magic is wrong.
TEST_F(HandshakeHostile, WrongOptionReplyMagic) {
  make();
  int r = connect([](FakeServer &s) {
    Option o;
    if (!s.handshake_until(nbd::kOptStructuredReply, o)) return;
    Bytes b;
    put64(b, 0x1122334455667788ull);
    put32(b, o.option);
    put32(b, nbd::kRepAck);
    put32(b, 0);
    s.send(b);
    s.drain();
  });
  expect_connect_failed(r, kViolationErrnos);
}

// The reply names another option than the one asked.
TEST_F(HandshakeHostile, OptionReplyForWrongOption) {
  make();
  int r = connect([](FakeServer &s) {
    Option o;
    if (!s.handshake_until(nbd::kOptStructuredReply, o)) return;
    s.option_reply(nbd::kOptGo, nbd::kRepAck);
    s.drain();
  });
  expect_connect_failed(r, kViolationErrnos);
}

// The reply to NBD_OPT_GO is for NBD_OPT_INFO.
TEST_F(HandshakeHostile, GoReplyForWrongOption) {
  make();
  int r = connect([](FakeServer &s) {
    Option o;
    if (!s.handshake_until(nbd::kOptGo, o)) return;
    s.info_export(nbd::kOptInfo);
    s.option_reply(nbd::kOptInfo, nbd::kRepAck);
    s.drain();
  });
  expect_connect_failed(r, kViolationErrnos);
}

// An ACK that carries a payload.
TEST_F(HandshakeHostile, AckWithPayload) {
  make();
  int r = connect([](FakeServer &s) {
    Option o;
    if (!s.handshake_until(nbd::kOptStructuredReply, o)) return;
    s.option_reply(o.option, nbd::kRepAck, Bytes(16, 'x'));
    s.drain();
  });
  expect_connect_failed(r, kViolationErrnos);
}

// An option reply claiming a 3 GiB payload: refused before anything is allocated.
TEST_F(HandshakeHostile, OptionReplyHugeLength) {
  make();
  int r = connect([](FakeServer &s) {
    Option o;
    if (!s.handshake_until(nbd::kOptGo, o)) return;
    Bytes b;
    put64(b, nbd::kOptReplyMagic);
    put32(b, o.option);
    put32(b, nbd::kRepInfo);
    put32(b, 0xc0000000u);
    s.send(b);
    s.drain();
  });
  expect_connect_failed(r, kViolationErrnos);
}

// NBD_INFO_NAME with a 5000-byte name (the spec's limit is 4096).
TEST_F(HandshakeHostile, OversizedExportNameInInfo) {
  make();
  ASSERT_NE(nbd_set_full_info(h_, true), -1) << last_error();
  int r = connect([](FakeServer &s) {
    Option o;
    if (!s.handshake_until(nbd::kOptGo, o)) return;
    Bytes p;
    put16(p, nbd::kInfoName);
    put_string(p, std::string(5000, 'n'));
    s.option_reply(o.option, nbd::kRepInfo, p);
    s.info_export(o.option);
    s.option_reply(o.option, nbd::kRepAck);
    s.drain();
  });
  expect_connect_failed(r, kViolationErrnos);
}

// An export size beyond INT64_MAX: the connection is fine, but nbd_get_size cannot
// return it and says so (EOVERFLOW) rather than reporting a clamped size.
TEST_F(HandshakeHostile, ExportSizeBeyondInt64) {
  ServerConfig cfg;
  cfg.size = (uint64_t(1) << 63) + 4096;
  make(cfg);
  connect_ok([](FakeServer &s) {
    if (!s.handshake()) return;
    s.drain();
  });
  EXPECT_EQ(nbd_get_size(h_), -1);
  EXPECT_ERRNO_IN(std::set<int>{EOVERFLOW}, nbd_get_errno());
  EXPECT_EQ(nbd_aio_is_ready(h_), 1);
}

// NBD_REP_META_CONTEXT with a 5000-byte context name.
TEST_F(HandshakeHostile, OversizedMetaContextName) {
  make();
  int r = connect([](FakeServer &s) {
    Option o;
    if (!s.handshake_until(nbd::kOptSetMetaContext, o)) return;
    Bytes p;
    put32(p, 1);
    put_string(p, std::string(5000, 'm'));
    s.option_reply(o.option, nbd::kRepMetaContext, p);
    s.option_reply(o.option, nbd::kRepAck);
    Option go;
    if (s.read_option(go)) {
      s.info_export(go.option);
      s.option_reply(go.option, nbd::kRepAck);
    }
    s.drain();
  });
  expect_connect_failed(r, kViolationErrnos);
}

// NBD_REP_SERVER (nbd_opt_list) whose name length points past the reply.
TEST_F(HandshakeHostile, ListEntryNameOverrunsReply) {
  make();
  ASSERT_NE(nbd_set_opt_mode(h_, true), -1) << last_error();
  connect_ok([](FakeServer &s) {
    Option o;
    if (!s.handshake_until(nbd::kOptList, o)) return;
    Bytes p;
    put32(p, 5000);  // name length, but only 10 bytes follow
    put_string(p, "0123456789");
    s.option_reply(o.option, nbd::kRepServer, p);
    s.option_reply(o.option, nbd::kRepAck);
    s.drain();
  });
  Counted list, done;
  nbd_list_callback cb{[](void *ud, const char *, const char *) {
                         static_cast<Counted *>(ud)->calls++;
                         return 0;
                       },
                       &list, [](void *ud) { static_cast<Counted *>(ud)->frees++; }};
  EXPECT_EQ(nbd_opt_list(h_, cb), -1);
  EXPECT_ERRNO_IN(kViolationErrnos, nbd_get_errno());
  EXPECT_EQ(list.calls.load(), 0);
  EXPECT_TRUE(nbd_aio_is_dead(h_));
  nbd_close(h_);
  h_ = nullptr;
  EXPECT_EQ(list.frees.load(), 1);
  (void)done;
}

// The server hangs up right after its greeting.
TEST_F(HandshakeHostile, CloseAfterGreeting) {
  make();
  int r = connect([](FakeServer &s) {
    s.greet();
    s.read_client_flags();
    s.close();
  });
  // libnbd reports a server hanging up in the handshake without an errno
  // ("recv: server disconnected unexpectedly"); any errno we give must make sense.
  expect_connect_failed(r, {0, ENOTCONN, ECONNRESET, EPIPE, EPROTO});
}

// The server hangs up in the middle of an option reply header.
TEST_F(HandshakeHostile, CloseMidOptionReply) {
  make();
  int r = connect([](FakeServer &s) {
    Option o;
    if (!s.handshake_until(nbd::kOptGo, o)) return;
    Bytes b;
    put64(b, nbd::kOptReplyMagic);
    put32(b, o.option);
    s.send(b);
    s.close();
  });
  expect_connect_failed(r, {0, ENOTCONN, ECONNRESET, EPIPE, EPROTO});
}

// The server hangs up before sending anything at all.
TEST_F(HandshakeHostile, CloseImmediately) {
  make();
  int r = connect([](FakeServer &s) { s.close(); });
  expect_connect_failed(r, {0, ENOTCONN, ECONNRESET, EPIPE, EPROTO});
}

// In opt mode: an option in flight when the server hangs up completes with an error,
// and its completion closure is called once and freed once.
TEST_F(HandshakeHostile, CloseWithOptionInFlight) {
  make();
  ASSERT_NE(nbd_set_opt_mode(h_, true), -1) << last_error();
  connect_ok([](FakeServer &s) {
    Option o;
    if (!s.handshake_until(nbd::kOptList, o)) return;
    s.close();
  });
  Counted list, done;
  nbd_list_callback cb{[](void *ud, const char *, const char *) {
                         static_cast<Counted *>(ud)->calls++;
                         return 0;
                       },
                       &list, [](void *ud) { static_cast<Counted *>(ud)->frees++; }};
  ASSERT_NE(nbd_aio_opt_list(h_, cb, completion_of(done)), -1) << last_error();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (done.calls.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    if (nbd_poll(h_, 100) == -1) break;
  }
  // The failure may be noticed by the poll that returned -1; either way it is final.
  EXPECT_EQ(done.calls.load(), 1);
  EXPECT_NE(done.error.load(), 0);
  EXPECT_TRUE(nbd_aio_is_dead(h_) || nbd_aio_is_closed(h_));
  nbd_close(h_);
  h_ = nullptr;
  EXPECT_EQ(list.frees.load(), 1);
  EXPECT_EQ(done.frees.load(), 1);
}

}  // namespace
}  // namespace hostile
