// SPDX-License-Identifier: LGPL-2.1-or-later
// Tests for lib/handshake: a scripted fake server on a socketpair drives the Handshake directly.
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "engine/negotiated.h"
#include "handle/handle.h"
#include "handshake/config.h"
#include "handshake/errors.h"
#include "handshake/handshake.h"
#include "transport/file_descriptor.h"
#include "transport/transport.h"
#include "wire/option.h"
#include "wire/protocol.h"

namespace duplexnbd::handshake {
namespace {

using Bytes = std::vector<uint8_t>;
constexpr int kTimeoutMs = 10000;

Bytes bytes_of(std::string_view s) { return Bytes(s.begin(), s.end()); }

// ---------------------------------------------------------------------------------------
// The fake server: blocking I/O on its end of the socketpair, run by a thread.

struct Option {
  uint32_t option = 0;
  Bytes payload;
};

class FakeServer {
public:
  explicit FakeServer(int fd) : fd_(fd) {}

  void write(const Bytes &b) {
    size_t off = 0;
    while (off < b.size()) {
      ssize_t n = ::send(fd_.get(), b.data() + off, b.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        ADD_FAILURE() << "server send: " << strerror(errno);
        return;
      }
      off += size_t(n);
    }
  }

  // False at end of stream.
  bool read(Bytes &b, size_t n) {
    b.resize(n);
    size_t off = 0;
    while (off < n) {
      ssize_t r = ::recv(fd_.get(), b.data() + off, n - off, 0);
      if (r <= 0) return false;
      off += size_t(r);
    }
    return true;
  }

  void greet(uint16_t gflags) {
    Bytes g(wire::kNewstyleGreetingSize);
    ASSERT_EQ(wire::encode_newstyle_greeting(g, gflags), g.size());
    write(g);
  }

  uint32_t client_flags() {
    Bytes b;
    if (!read(b, 4)) {
      ADD_FAILURE() << "no client flags";
      return ~0u;
    }
    return *wire::decode_client_flags(b);
  }

  Option option() {
    Option o;
    Bytes h;
    if (!read(h, wire::kOptionRequestHeaderSize)) {
      ADD_FAILURE() << "no option request";
      return o;
    }
    auto hdr = wire::decode_option_request_header(h);
    if (!hdr) {
      ADD_FAILURE() << "bad option request header";
      return o;
    }
    o.option = hdr->option;
    if (!read(o.payload, hdr->length)) ADD_FAILURE() << "truncated option payload";
    return o;
  }

  // Reads the next option and checks which one it is.
  Option expect(uint32_t option) {
    Option o = this->option();
    EXPECT_EQ(o.option, option);
    return o;
  }

  void reply(uint32_t option, uint32_t type, const Bytes &payload = {}) {
    Bytes h(wire::kOptionReplyHeaderSize);
    wire::OptionReplyHeader rh{option, type, uint32_t(payload.size())};
    ASSERT_EQ(wire::encode_option_reply_header(h, rh), h.size());
    h.insert(h.end(), payload.begin(), payload.end());
    write(h);
  }

  void info_export(uint32_t option, uint64_t size, uint16_t flags) {
    Bytes p(wire::kInfoExportReplySize);
    ASSERT_EQ(wire::encode_info_export(p, {size, flags}), p.size());
    reply(option, wire::kRepInfo, p);
  }

  void info_text(uint32_t option, uint16_t type, std::string_view text) {
    Bytes p(2 + text.size());
    ASSERT_EQ(wire::encode_info_text(p, type, text), p.size());
    reply(option, wire::kRepInfo, p);
  }

  void info_block_size(uint32_t option, uint32_t min, uint32_t pref, uint32_t max) {
    Bytes p(wire::kInfoBlockSizeReplySize);
    ASSERT_EQ(wire::encode_info_block_size(p, {min, pref, max}), p.size());
    reply(option, wire::kRepInfo, p);
  }

  void server_entry(std::string_view name, std::string_view desc) {
    Bytes p(wire::rep_server_size(name.size(), desc.size()));
    ASSERT_EQ(wire::encode_rep_server(p, {name, desc}), p.size());
    reply(wire::kOptList, wire::kRepServer, p);
  }

  void context(uint32_t option, uint32_t id, std::string_view name) {
    Bytes p(4 + name.size());
    ASSERT_EQ(wire::encode_rep_meta_context(p, {id, name}), p.size());
    reply(option, wire::kRepMetaContext, p);
  }

  // The usual end of a successful GO.
  void go_ok(uint64_t size = 1 << 20, uint16_t flags = wire::kFlagHasFlags | wire::kFlagSendFlush) {
    info_export(wire::kOptGo, size, flags);
    reply(wire::kOptGo, wire::kRepAck);
  }

  // Waits for the client to hang up (so its last bytes are all read).
  Bytes drain() {
    Bytes all, b(4096);
    for (;;) {
      ssize_t r = ::recv(fd_.get(), b.data(), b.size(), 0);
      if (r <= 0) return all;
      all.insert(all.end(), b.begin(), b.begin() + r);
    }
  }

  void close() { fd_.reset(); }

private:
  transport::FileDescriptor fd_;
};

// ---------------------------------------------------------------------------------------
// The client side: a Handshake on a SocketTransport, driven by poll.

class HandshakeTest : public ::testing::Test {
protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    transport_ = std::make_unique<transport::SocketTransport>(transport::FileDescriptor(sv[0]));
    server_ = std::make_unique<FakeServer>(sv[1]);
    cfg_.request_extended_headers = false;  // most scripts start with structured replies
  }

  void TearDown() override {
    // Unblocks the server thread if the client stopped early.
    hs_.reset();
    transport_->close();
    if (thread_.joinable()) thread_.join();
  }

  void serve(std::function<void(FakeServer &)> script) {
    thread_ = std::thread([this, script = std::move(script)] { script(*server_); });
  }

  Handshake &start() {
    hs_ = std::make_unique<Handshake>(cfg_, neg_, h_);
    return *hs_;
  }

  void run_deferred() {
    std::vector<std::function<void()>> d;
    hs_->take_deferred(d);
    for (auto &f : d) f();
  }

  // Drives while the handshake is Running; returns the first error.
  Status drive() {
    while (hs_->phase() == Phase::Running) {
      Want w = hs_->wants();
      if (w == Want::None) return Error{EINVAL, "test: handshake running but wants nothing"};
      struct pollfd p = {transport_->fd(), short(w == Want::Read ? POLLIN : POLLOUT), 0};
      int r = ::poll(&p, 1, kTimeoutMs);
      if (r == 0) return Error{ETIMEDOUT, "test: timed out"};
      if (r < 0) return Error{errno, "test: poll"};
      Status s = w == Want::Read ? hs_->on_readable(*transport_) : hs_->on_writable(*transport_);
      run_deferred();
      if (!s) return s;
    }
    return {};
  }

  // Drives to the end, then hangs up and joins the server (whose script may be waiting
  // for the client to go away).
  Status finish() {
    Status s = drive();
    transport_->close();
    if (thread_.joinable()) thread_.join();
    return s;
  }

  Config cfg_;
  Negotiated neg_;
  nbd_handle h_;
  std::unique_ptr<transport::SocketTransport> transport_;
  std::unique_ptr<FakeServer> server_;
  std::unique_ptr<Handshake> hs_;
  std::thread thread_;
};

// Records what the option callbacks saw, and that each closure is freed exactly once.
struct Calls {
  std::vector<std::pair<std::string, std::string>> exports;
  std::vector<std::string> contexts;
  std::vector<int> completions;
  int frees = 0;
};

ListCallback list_cb(Calls &c) {
  nbd_list_callback cb = {[](void *ud, const char *name, const char *desc) {
                            static_cast<Calls *>(ud)->exports.emplace_back(name, desc);
                            return 0;
                          },
                          &c, [](void *ud) { static_cast<Calls *>(ud)->frees++; }};
  return ListCallback(cb);
}

ContextCallback context_cb(Calls &c) {
  nbd_context_callback cb = {[](void *ud, const char *name) {
                               static_cast<Calls *>(ud)->contexts.emplace_back(name);
                               return 0;
                             },
                             &c, [](void *ud) { static_cast<Calls *>(ud)->frees++; }};
  return ContextCallback(cb);
}

CompletionCallback completion_cb(Calls &c) {
  nbd_completion_callback cb = {[](void *ud, int *error) {
                                  static_cast<Calls *>(ud)->completions.push_back(*error);
                                  return 1;
                                },
                                &c, [](void *ud) { static_cast<Calls *>(ud)->frees++; }};
  return CompletionCallback(cb);
}

// The INFO/GO payload as the server sees it.
struct InfoRequest {
  std::string name;
  std::vector<uint16_t> infos;
};
InfoRequest parse_info(const Option &o) {
  InfoRequest r;
  auto p = wire::decode_info_payload(o.payload);
  if (!p) {
    ADD_FAILURE() << "bad INFO/GO payload";
    return r;
  }
  r.name = std::string(p->export_name);
  for (size_t i = 0; i < p->count(); i++) r.infos.push_back(p->request(i));
  return r;
}

struct MetaRequest {
  std::string name;
  std::vector<std::string> queries;
};
MetaRequest parse_meta(const Option &o) {
  MetaRequest r;
  auto p = wire::decode_meta_context_payload(o.payload);
  if (!p) {
    ADD_FAILURE() << "bad meta context payload";
    return r;
  }
  r.name = std::string(p->export_name);
  p->for_each_query([&](std::string_view q) { r.queries.emplace_back(q); });
  return r;
}

// ---------------------------------------------------------------------------------------
// Greetings.

TEST_F(HandshakeTest, Oldstyle) {
  serve([](FakeServer &s) {
    Bytes g(wire::kOldstyleGreetingSize);
    ASSERT_EQ(
        wire::encode_oldstyle_greeting(g, {123456, 0, wire::kFlagHasFlags | wire::kFlagReadOnly}),
        g.size());
    s.write(g);
  });
  cfg_.opt_mode = true;  // nothing to negotiate with oldstyle: straight to Done
  start();
  ASSERT_TRUE(finish());
  EXPECT_EQ(neg_.protocol, "oldstyle");
  EXPECT_TRUE(neg_.info.valid);
  EXPECT_EQ(neg_.info.size, 123456u);
  EXPECT_EQ(neg_.info.eflags, wire::kFlagHasFlags | wire::kFlagReadOnly);
  EXPECT_FALSE(neg_.structured_replies);
}

TEST_F(HandshakeTest, NewstyleNotFixedUsesExportName) {
  serve([](FakeServer &s) {
    s.greet(0);
    EXPECT_EQ(s.client_flags(), 0u);
    Option o = s.expect(wire::kOptExportName);
    EXPECT_EQ(std::string(o.payload.begin(), o.payload.end()), "disk");
    Bytes r(wire::export_name_reply_size(false));
    ASSERT_EQ(wire::encode_export_name_reply(r, {4096, wire::kFlagHasFlags}, false), r.size());
    s.write(r);
  });
  cfg_.export_name = "disk";
  Handshake &hs = start();
  ASSERT_TRUE(finish());
  (void)hs;
  EXPECT_EQ(neg_.protocol, "newstyle");
  EXPECT_EQ(neg_.info.size, 4096u);
  EXPECT_FALSE(neg_.structured_replies);
}

TEST_F(HandshakeTest, NoZeroesShortensExportNameReply) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagNoZeroes);
    EXPECT_EQ(s.client_flags(), wire::kFlagCNoZeroes);
    s.expect(wire::kOptExportName);
    Bytes r(wire::export_name_reply_size(true));
    ASSERT_EQ(wire::encode_export_name_reply(r, {77, wire::kFlagHasFlags}, true), r.size());
    s.write(r);
  });
  start();
  ASSERT_TRUE(finish());
  EXPECT_EQ(neg_.info.size, 77u);
}

TEST_F(HandshakeTest, ClientFlagsRespectHandshakeFlags) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    EXPECT_EQ(s.client_flags(), wire::kFlagCNoZeroes);  // FIXED disabled by the caller
    s.expect(wire::kOptExportName);
    Bytes r(wire::export_name_reply_size(true));
    ASSERT_EQ(wire::encode_export_name_reply(r, {1, wire::kFlagHasFlags}, true), r.size());
    s.write(r);
  });
  cfg_.handshake_flags = LIBNBD_HANDSHAKE_FLAG_NO_ZEROES;
  start();
  ASSERT_TRUE(finish());
  EXPECT_EQ(neg_.protocol, "newstyle");
  EXPECT_EQ(neg_.gflags, wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
}

// ---------------------------------------------------------------------------------------
// Fixed newstyle, automatic negotiation.

TEST_F(HandshakeTest, FixedNewstyleGo) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    EXPECT_EQ(s.client_flags(), wire::kFlagCFixedNewstyle | wire::kFlagCNoZeroes);
    s.expect(wire::kOptExtendedHeaders);
    s.reply(wire::kOptExtendedHeaders, wire::kRepErrUnsup, bytes_of("no"));
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepAck);
    InfoRequest go = parse_info(s.expect(wire::kOptGo));
    EXPECT_EQ(go.name, "exp");
    EXPECT_EQ(go.infos, std::vector<uint16_t>{wire::kInfoBlockSize});
    s.info_export(wire::kOptGo, 1 << 20, wire::kFlagHasFlags | wire::kFlagSendDf);
    s.info_block_size(wire::kOptGo, 512, 4096, 1 << 25);
    s.reply(wire::kOptGo, wire::kRepAck);
  });
  cfg_.export_name = "exp";
  cfg_.request_extended_headers = true;
  Handshake &hs = start();
  ASSERT_TRUE(finish()) << "";
  (void)hs;
  EXPECT_EQ(neg_.protocol, "newstyle-fixed");
  EXPECT_TRUE(neg_.structured_replies);
  EXPECT_FALSE(neg_.extended_headers);
  EXPECT_EQ(neg_.info.size, 1u << 20);
  EXPECT_EQ(neg_.info.block_minimum, 512u);
  EXPECT_EQ(neg_.info.block_preferred, 4096u);
  EXPECT_EQ(neg_.info.block_maximum, 1u << 25);
  EXPECT_FALSE(neg_.info.canonical_name.has_value());
  // No contexts were requested, so the (empty) set is final.
  EXPECT_TRUE(neg_.meta_valid);
}

TEST_F(HandshakeTest, PhaseIsDoneAndCountersAdvance) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepAck);
    s.expect(wire::kOptGo);
    s.go_ok();
  });
  Handshake &hs = start();
  EXPECT_EQ(hs.phase(), Phase::Running);
  EXPECT_EQ(hs.wants(), Want::Read);
  ASSERT_TRUE(drive());
  EXPECT_EQ(hs.phase(), Phase::Done);
  EXPECT_EQ(hs.wants(), Want::None);
  EXPECT_EQ(hs.chunks_sent(), 2u);
  EXPECT_EQ(hs.chunks_received(), 4u);  // greeting, SR ack, INFO, GO ack
  EXPECT_EQ(hs.bytes_sent(), 4u + 16 + 16 + 4 + 0 + 2 + 2);
  EXPECT_EQ(hs.bytes_received(), 18u + 20 + 20 + 12 + 20);
}

TEST_F(HandshakeTest, GoUnsupportedFallsBackToExportName) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle);
    EXPECT_EQ(s.client_flags(), wire::kFlagCFixedNewstyle);
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepErrUnsup);
    s.expect(wire::kOptGo);
    s.reply(wire::kOptGo, wire::kRepErrUnsup);
    Option o = s.expect(wire::kOptExportName);
    EXPECT_EQ(std::string(o.payload.begin(), o.payload.end()), "e");
    Bytes r(wire::export_name_reply_size(false));
    ASSERT_EQ(wire::encode_export_name_reply(r, {999, wire::kFlagHasFlags}, false), r.size());
    s.write(r);
  });
  cfg_.export_name = "e";
  start();
  ASSERT_TRUE(finish());
  EXPECT_FALSE(neg_.structured_replies);
  EXPECT_EQ(neg_.info.size, 999u);
}

TEST_F(HandshakeTest, GoUnknownExportFailsAndAborts) {
  Bytes tail;
  serve([&tail](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepAck);
    s.expect(wire::kOptGo);
    s.reply(wire::kOptGo, wire::kRepErrUnknown, bytes_of("no such export"));
    s.expect(wire::kOptAbort);
    tail = s.drain();
  });
  cfg_.export_name = "nope";
  start();
  Status st = finish();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().errnum, ENOENT);
  // libnbd 1.22's wording, with what the server said.
  EXPECT_EQ(st.error().message, "the server has no export named 'nope': no such export");
  EXPECT_TRUE(tail.empty());
}

TEST_F(HandshakeTest, GoErrorsMapLikeLibnbd) {
  struct Case {
    uint32_t rep;
    int errnum;
    const char *msg;
  } cases[] = {
      {wire::kRepErrUnsup, ENOTSUP, "the operation is not supported by the server"},
      {wire::kRepErrPolicy, 0, "server policy prevents the operation"},
      {wire::kRepErrPlatform, 0, "the operation is not supported by the server platform"},
      {wire::kRepErrInvalid, EINVAL, "the server rejected this operation as invalid"},
      {wire::kRepErrTooBig, EINVAL, "the operation is too large to process"},
      {wire::kRepErrTlsReqd, ENOTSUP, "the server requires TLS encryption first"},
      {wire::kRepErrUnknown, ENOENT, "the server has no export named 'x'"},
      {wire::kRepErrShutdown, ESHUTDOWN, "the server is shutting down"},
      {wire::kRepErrBlockSizeReqd, EINVAL, "the server requires specific block sizes"},
      {wire::kRepErrBit + 99, 0, "handshake: unknown reply from the server: 0x80000063"},
  };
  for (const Case &c : cases) {
    Error e = go_failure(c.rep, "x");
    EXPECT_EQ(e.errnum, c.errnum) << c.msg;
    EXPECT_EQ(e.message, c.msg);
  }
  // What the server said follows, unprintable bytes escaped.
  EXPECT_EQ(go_failure(wire::kRepErrPolicy, "x", std::string_view("no\n\x01way", 7)).message,
            "server policy prevents the operation: no\\x0a\\x01way");
  EXPECT_EQ(option_errno(wire::kRepErrUnknown), ENOENT);
  EXPECT_EQ(option_errno(wire::kRepErrUnsup), ENOTSUP);
  EXPECT_EQ(option_errno(wire::kRepErrPolicy), ENOTSUP);
  EXPECT_EQ(option_errno(wire::kRepErrTooBig), EINVAL);
}

TEST_F(HandshakeTest, FullInfoRepliesFillExportInfo) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepAck);
    InfoRequest go = parse_info(s.expect(wire::kOptGo));
    EXPECT_EQ(go.infos, (std::vector<uint16_t>{wire::kInfoName, wire::kInfoDescription}));
    s.reply(wire::kOptGo, wire::kRepInfo, Bytes{0x00, 0x63, 1, 2, 3});  // unknown: ignored
    s.info_text(wire::kOptGo, wire::kInfoName, "canonical");
    s.info_text(wire::kOptGo, wire::kInfoDescription, "a disk");
    s.info_block_size(wire::kOptGo, 1, 4096, 0xffffffff);
    s.go_ok(5000);
  });
  cfg_.full_info = true;
  cfg_.request_block_size = false;
  start();
  ASSERT_TRUE(finish());
  EXPECT_EQ(neg_.info.canonical_name.value_or("?"), "canonical");
  EXPECT_EQ(neg_.info.description.value_or("?"), "a disk");
  EXPECT_EQ(neg_.info.block_minimum, 1u);  // sent without being asked: still recorded
  EXPECT_EQ(neg_.info.size, 5000u);
}

TEST_F(HandshakeTest, ExtendedHeadersImplyStructuredReplies) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptExtendedHeaders);
    s.reply(wire::kOptExtendedHeaders, wire::kRepAck);
    // No STRUCTURED_REPLY after extended headers.
    s.expect(wire::kOptGo);
    s.go_ok();
  });
  cfg_.request_extended_headers = true;
  start();
  ASSERT_TRUE(finish());
  EXPECT_TRUE(neg_.extended_headers);
  EXPECT_TRUE(neg_.structured_replies);
}

TEST_F(HandshakeTest, StructuredRepliesNotRequested) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptGo);
    s.go_ok();
  });
  cfg_.request_structured_replies = false;
  cfg_.meta_contexts = {"base:allocation"};
  start();
  ASSERT_TRUE(finish());
  EXPECT_FALSE(neg_.structured_replies);
  // Without structured replies no context can exist, and that is final.
  EXPECT_TRUE(neg_.meta_valid);
  EXPECT_TRUE(neg_.meta_contexts.empty());
}

TEST_F(HandshakeTest, MetaContextsAreSetBeforeGo) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepAck);
    MetaRequest m = parse_meta(s.expect(wire::kOptSetMetaContext));
    EXPECT_EQ(m.name, "exp");
    EXPECT_EQ(m.queries, (std::vector<std::string>{"base:allocation", "qemu:dirty-bitmap:x"}));
    s.context(wire::kOptSetMetaContext, 7, "base:allocation");
    s.reply(wire::kOptSetMetaContext, wire::kRepAck);
    s.expect(wire::kOptGo);
    s.go_ok();
  });
  cfg_.export_name = "exp";
  cfg_.meta_contexts = {"base:allocation", "qemu:dirty-bitmap:x"};
  start();
  ASSERT_TRUE(finish());
  EXPECT_TRUE(neg_.meta_valid);
  ASSERT_EQ(neg_.meta_contexts.size(), 1u);
  EXPECT_EQ(neg_.meta_contexts[0].name, "base:allocation");
  EXPECT_EQ(neg_.meta_contexts[0].id, 7u);
}

TEST_F(HandshakeTest, MetaContextRefusalIsNotFatal) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepAck);
    s.expect(wire::kOptSetMetaContext);
    s.reply(wire::kOptSetMetaContext, wire::kRepErrUnsup);
    s.expect(wire::kOptGo);
    s.go_ok();
  });
  cfg_.meta_contexts = {"base:allocation"};
  start();
  ASSERT_TRUE(finish());
  // Refused before naming any context: the export has none for us, and that is known
  // (can_meta_context answers false instead of failing), as with libnbd.
  EXPECT_TRUE(neg_.meta_valid);
  EXPECT_TRUE(neg_.meta_contexts.empty());
}

// A refusal after some contexts were named leaves nothing known: the partial list is
// not an agreement.
TEST_F(HandshakeTest, MetaContextRefusalAfterPartialAnswerLeavesContextsUnknown) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepAck);
    s.expect(wire::kOptSetMetaContext);
    s.context(wire::kOptSetMetaContext, 5, "base:allocation");
    s.reply(wire::kOptSetMetaContext, wire::kRepErrUnsup);
    s.expect(wire::kOptGo);
    s.go_ok();
  });
  cfg_.meta_contexts = {"base:allocation"};
  start();
  ASSERT_TRUE(finish());
  EXPECT_FALSE(neg_.meta_valid);
  EXPECT_TRUE(neg_.meta_contexts.empty());
}

// ---------------------------------------------------------------------------------------
// TLS policy without TLS support.

TEST_F(HandshakeTest, TlsRequiredWithoutSupportFails) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.drain();
  });
  cfg_.tls = LIBNBD_TLS_REQUIRE;
  start();
  Status st = finish();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().errnum, ENOTSUP);
  EXPECT_NE(st.error().message.find("TLS"), std::string::npos);
}

TEST_F(HandshakeTest, TlsAllowedWithoutSupportStaysPlain) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepAck);
    s.expect(wire::kOptGo);
    s.go_ok();
  });
  cfg_.tls = LIBNBD_TLS_ALLOW;
  start();
  ASSERT_TRUE(finish());
  EXPECT_FALSE(neg_.tls);
}

TEST_F(HandshakeTest, StartTlsCallsUpgradeHookAndResetsState) {
  int upgrades = 0;
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStartTls);
    s.reply(wire::kOptStartTls, wire::kRepAck);
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepAck);
    s.expect(wire::kOptGo);
    s.go_ok();
  });
  cfg_.tls = LIBNBD_TLS_REQUIRE;
  cfg_.upgrade_to_tls = [&upgrades] {
    ++upgrades;
    return Status{};
  };
  start();
  ASSERT_TRUE(finish());
  EXPECT_EQ(upgrades, 1);
  EXPECT_TRUE(neg_.tls);
  EXPECT_TRUE(neg_.structured_replies);
}

// The TLS handshake runs in steps between socket notifications, the wanted direction
// being published through wants() meanwhile.
TEST_F(HandshakeTest, StartTlsHandshakeIsDrivenInSteps) {
  std::vector<Want> script = {Want::Write, Want::Write, Want::None};
  size_t steps = 0;
  std::vector<Want> seen;
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStartTls);
    s.reply(wire::kOptStartTls, wire::kRepAck);
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepAck);
    s.expect(wire::kOptGo);
    s.go_ok();
  });
  cfg_.tls = LIBNBD_TLS_ALLOW;
  cfg_.upgrade_to_tls = [] { return Status{}; };
  cfg_.tls_handshake_step = [&]() -> Result<Want> {
    if (steps > 0) seen.push_back(hs_->wants());
    return script.at(steps++);
  };
  start();
  ASSERT_TRUE(finish());
  EXPECT_EQ(steps, 3u);
  EXPECT_EQ(seen, (std::vector<Want>{Want::None, Want::None}));  // cleared while stepping
  EXPECT_TRUE(neg_.tls);
}

TEST_F(HandshakeTest, StartTlsHandshakeFailureIsFatal) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStartTls);
    s.reply(wire::kOptStartTls, wire::kRepAck);
    s.drain();
  });
  cfg_.tls = LIBNBD_TLS_REQUIRE;
  cfg_.upgrade_to_tls = [] { return Status{}; };
  cfg_.tls_handshake_step = []() -> Result<Want> { return Error{0, "gnutls_handshake: bad"}; };
  start();
  Status st = finish();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message, "gnutls_handshake: bad");
}

TEST_F(HandshakeTest, StartTlsRefusedWhenRequiredFails) {
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStartTls);
    s.reply(wire::kOptStartTls, wire::kRepErrPolicy);
    s.drain();
  });
  cfg_.tls = LIBNBD_TLS_REQUIRE;
  cfg_.upgrade_to_tls = [] { return Status{}; };
  start();
  Status st = finish();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().errnum, ENOTSUP);
}

// ---------------------------------------------------------------------------------------
// Opt mode.

// Greeting and structured replies, leaving the handshake negotiating.
void negotiate_prefix(FakeServer &s) {
  s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
  s.client_flags();
  s.expect(wire::kOptStructuredReply);
  s.reply(wire::kOptStructuredReply, wire::kRepAck);
}

TEST_F(HandshakeTest, OptModeListInfoGo) {
  Calls list_calls, info_calls, go_calls;
  serve([](FakeServer &s) {
    negotiate_prefix(s);
    s.expect(wire::kOptList);
    s.server_entry("a", "first");
    s.server_entry("", "");
    s.reply(wire::kOptList, wire::kRepAck);
    InfoRequest info = parse_info(s.expect(wire::kOptInfo));
    EXPECT_EQ(info.name, "b");
    s.reply(wire::kOptInfo, wire::kRepErrUnknown, bytes_of("unknown export"));
    info = parse_info(s.expect(wire::kOptInfo));
    EXPECT_EQ(info.name, "a");
    s.info_export(wire::kOptInfo, 4096, wire::kFlagHasFlags | wire::kFlagReadOnly);
    s.reply(wire::kOptInfo, wire::kRepAck);
    s.expect(wire::kOptGo);
    s.go_ok(8192);
  });
  cfg_.opt_mode = true;
  Handshake &hs = start();
  ASSERT_TRUE(drive());
  ASSERT_EQ(hs.phase(), Phase::Negotiating);
  EXPECT_EQ(hs.wants(), Want::None);

  ASSERT_TRUE(hs.start_list(list_cb(list_calls), completion_cb(list_calls)));
  EXPECT_EQ(hs.phase(), Phase::Running);
  EXPECT_EQ(hs.wants(), Want::Write);
  ASSERT_TRUE(drive());
  ASSERT_EQ(hs.phase(), Phase::Negotiating);
  EXPECT_EQ(hs.last_result().count, 2u);
  EXPECT_EQ(hs.last_result().errnum, 0);
  ASSERT_EQ(list_calls.exports.size(), 2u);
  EXPECT_EQ(list_calls.exports[0], (std::pair<std::string, std::string>{"a", "first"}));
  EXPECT_EQ(list_calls.exports[1], (std::pair<std::string, std::string>{"", ""}));
  EXPECT_EQ(list_calls.completions, std::vector<int>{0});
  EXPECT_EQ(list_calls.frees, 2);

  Config c = cfg_;
  c.export_name = "b";
  hs.refresh_config(c);
  ASSERT_TRUE(hs.start_info(completion_cb(info_calls)));
  ASSERT_TRUE(drive());
  EXPECT_TRUE(hs.last_result().refused);
  EXPECT_EQ(hs.last_result().errnum, ENOENT);
  EXPECT_EQ(hs.last_result().error.message, "the server has no export named 'b': unknown export");
  EXPECT_FALSE(neg_.info.valid);

  c.export_name = "a";
  hs.refresh_config(c);
  ASSERT_TRUE(hs.start_info(completion_cb(info_calls)));
  ASSERT_TRUE(drive());
  EXPECT_EQ(hs.last_result().errnum, 0);
  EXPECT_EQ(neg_.info.size, 4096u);
  EXPECT_EQ(info_calls.completions, (std::vector<int>{ENOENT, 0}));
  EXPECT_EQ(info_calls.frees, 2);

  ASSERT_TRUE(hs.start_go(completion_cb(go_calls)));
  ASSERT_TRUE(finish());
  EXPECT_EQ(hs.phase(), Phase::Done);
  EXPECT_EQ(neg_.info.size, 8192u);
  EXPECT_EQ(go_calls.completions, std::vector<int>{0});
  EXPECT_EQ(go_calls.frees, 1);
}

TEST_F(HandshakeTest, OptModeMetaContexts) {
  Calls list_calls, set_calls;
  serve([](FakeServer &s) {
    negotiate_prefix(s);
    MetaRequest m = parse_meta(s.expect(wire::kOptListMetaContext));
    EXPECT_EQ(m.queries, std::vector<std::string>{"base:"});
    s.context(wire::kOptListMetaContext, 0, "base:allocation");
    s.reply(wire::kOptListMetaContext, wire::kRepAck);
    m = parse_meta(s.expect(wire::kOptSetMetaContext));
    EXPECT_EQ(m.queries, std::vector<std::string>{"base:allocation"});
    s.context(wire::kOptSetMetaContext, 3, "base:allocation");
    s.reply(wire::kOptSetMetaContext, wire::kRepAck);
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepErrInvalid);
    s.expect(wire::kOptAbort);
  });
  cfg_.opt_mode = true;
  cfg_.meta_contexts = {"base:allocation"};
  Handshake &hs = start();
  ASSERT_TRUE(drive());

  ASSERT_TRUE(hs.start_list_meta_context(std::vector<std::string>{"base:"}, context_cb(list_calls),
                                         completion_cb(list_calls)));
  ASSERT_TRUE(drive());
  EXPECT_EQ(hs.last_result().count, 1u);
  EXPECT_EQ(list_calls.contexts, std::vector<std::string>{"base:allocation"});
  EXPECT_FALSE(neg_.meta_valid);  // listing selects nothing

  ASSERT_TRUE(
      hs.start_set_meta_context(std::nullopt, context_cb(set_calls), completion_cb(set_calls)));
  ASSERT_TRUE(drive());
  EXPECT_EQ(hs.last_result().count, 1u);
  EXPECT_TRUE(neg_.meta_valid);
  ASSERT_EQ(neg_.meta_contexts.size(), 1u);
  EXPECT_EQ(neg_.meta_contexts[0].id, 3u);
  EXPECT_EQ(set_calls.frees, 2);

  ASSERT_TRUE(hs.start_structured_reply(CompletionCallback{}));
  ASSERT_TRUE(drive());
  EXPECT_TRUE(hs.last_result().refused);
  EXPECT_EQ(hs.last_result().errnum, EINVAL);
  EXPECT_TRUE(neg_.structured_replies);  // sticky once accepted

  ASSERT_TRUE(hs.start_abort());
  ASSERT_TRUE(drive());
  EXPECT_EQ(hs.phase(), Phase::Closed);
}

TEST_F(HandshakeTest, OptModeRejectsWhatCannotBeSent) {
  serve([](FakeServer &s) {
    s.greet(0);  // not fixed newstyle
    s.client_flags();
    Option o = s.expect(wire::kOptExportName);
    Bytes r(wire::export_name_reply_size(false));
    ASSERT_EQ(wire::encode_export_name_reply(r, {10, wire::kFlagHasFlags}, false), r.size());
    s.write(r);
  });
  cfg_.opt_mode = true;
  Handshake &hs = start();
  ASSERT_TRUE(drive());
  ASSERT_EQ(hs.phase(), Phase::Negotiating);
  EXPECT_EQ(neg_.protocol, "newstyle");
  Calls calls;
  Status s = hs.start_list(list_cb(calls), completion_cb(calls));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().errnum, ENOTSUP);
  EXPECT_EQ(calls.frees, 2);  // refused calls still free their closures
  EXPECT_EQ(hs.phase(), Phase::Negotiating);
  s = hs.start_starttls(CompletionCallback{});
  EXPECT_FALSE(s);
  // GO on a plain newstyle server is EXPORT_NAME.
  ASSERT_TRUE(hs.start_go(CompletionCallback{}));
  ASSERT_TRUE(finish());
  EXPECT_EQ(neg_.info.size, 10u);
}

// Without structured replies the meta context options are still sent (they exist to
// probe servers): the server's answer decides, and a refusal is reported as such.
TEST_F(HandshakeTest, OptModeMetaContextsWithoutStructuredReplies) {
  Calls list_calls, set_calls;
  serve([](FakeServer &s) {
    s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
    s.client_flags();
    s.expect(wire::kOptStructuredReply);
    s.reply(wire::kOptStructuredReply, wire::kRepErrUnsup);
    MetaRequest m = parse_meta(s.expect(wire::kOptListMetaContext));
    EXPECT_EQ(m.queries, std::vector<std::string>{"base:allocation"});
    s.context(wire::kOptListMetaContext, 0, "base:allocation");
    s.reply(wire::kOptListMetaContext, wire::kRepAck);
    s.expect(wire::kOptSetMetaContext);
    s.reply(wire::kOptSetMetaContext, wire::kRepErrInvalid);
    s.drain();
  });
  cfg_.opt_mode = true;
  cfg_.meta_contexts = {"base:allocation"};
  Handshake &hs = start();
  ASSERT_TRUE(drive());
  ASSERT_FALSE(neg_.structured_replies);

  ASSERT_TRUE(hs.start_list_meta_context(std::nullopt, context_cb(list_calls),
                                         completion_cb(list_calls)));
  ASSERT_TRUE(drive());
  EXPECT_FALSE(hs.last_result().refused);
  EXPECT_EQ(hs.last_result().count, 1u);
  EXPECT_EQ(list_calls.contexts, std::vector<std::string>{"base:allocation"});
  EXPECT_EQ(list_calls.completions, std::vector<int>{0});

  ASSERT_TRUE(hs.start_set_meta_context(std::nullopt, context_cb(set_calls),
                                        completion_cb(set_calls)));
  ASSERT_TRUE(drive());
  EXPECT_TRUE(hs.last_result().refused);
  EXPECT_EQ(set_calls.completions, std::vector<int>{ENOTSUP});
  EXPECT_FALSE(neg_.meta_valid);
  EXPECT_EQ(hs.phase(), Phase::Negotiating);
}

TEST_F(HandshakeTest, OptionInFlightCompletesWhenConnectionDies) {
  Calls calls;
  serve([](FakeServer &s) {
    negotiate_prefix(s);
    s.expect(wire::kOptInfo);
    s.close();
  });
  cfg_.opt_mode = true;
  Handshake &hs = start();
  ASSERT_TRUE(drive());
  ASSERT_TRUE(hs.start_info(completion_cb(calls)));
  Status st = drive();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message, "recv: server disconnected unexpectedly");
  EXPECT_TRUE(hs.failed());
  EXPECT_EQ(calls.completions, std::vector<int>{ENOTCONN});
  EXPECT_EQ(calls.frees, 1);
  EXPECT_TRUE(hs.last_result().finished);
  EXPECT_FALSE(hs.last_result().refused);
  // Later calls keep reporting the same failure.
  EXPECT_FALSE(hs.on_readable(*transport_));
}

TEST_F(HandshakeTest, AbandonCompletesTheOptionInFlight) {
  Calls calls;
  serve([](FakeServer &s) {
    negotiate_prefix(s);
    s.drain();
  });
  cfg_.opt_mode = true;
  Handshake &hs = start();
  ASSERT_TRUE(drive());
  ASSERT_TRUE(hs.start_list(list_cb(calls), completion_cb(calls)));
  hs.abandon(Error{ESHUTDOWN, "shut down"});
  run_deferred();
  EXPECT_EQ(calls.completions, std::vector<int>{ESHUTDOWN});
  EXPECT_EQ(calls.frees, 2);
  EXPECT_EQ(hs.wants(), Want::None);
}

TEST_F(HandshakeTest, DestroyingMidOptionFreesClosures) {
  Calls calls;
  serve([](FakeServer &s) {
    negotiate_prefix(s);
    s.drain();
  });
  cfg_.opt_mode = true;
  Handshake &hs = start();
  ASSERT_TRUE(drive());
  ASSERT_TRUE(hs.start_list(list_cb(calls), completion_cb(calls)));
  hs_.reset();
  EXPECT_TRUE(calls.completions.empty());
  EXPECT_EQ(calls.frees, 2);
}

// ---------------------------------------------------------------------------------------
// Hostile servers: every one must end in a clean Error.

struct HostileCase {
  const char *name;
  std::function<void(FakeServer &)> script;
  int errnum;
};

class HostileTest : public HandshakeTest, public ::testing::WithParamInterface<HostileCase> {};

TEST_P(HostileTest, FailsCleanly) {
  serve(GetParam().script);
  cfg_.meta_contexts = {"base:allocation"};
  start();
  Status st = finish();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().errnum, GetParam().errnum) << st.error().message;
  EXPECT_FALSE(st.error().message.empty());
}

void prefix(FakeServer &s) { negotiate_prefix(s); }

INSTANTIATE_TEST_SUITE_P(
    Handshake, HostileTest,
    ::testing::Values(
        HostileCase{"WrongMagic",
                    [](FakeServer &s) { s.write(bytes_of("NBDMAGICxxxxxxxx\x00\x03")); }, 0},
        HostileCase{"NotNbdAtAll",
                    [](FakeServer &s) { s.write(bytes_of("HTTP/1.1 200 OK\r\n\r\n")); }, 0},
        HostileCase{"TruncatedGreeting",
                    [](FakeServer &s) {
                      s.write(bytes_of("NBDMAGIC"));
                      s.close();
                    },
                    0},
        HostileCase{"TruncatedOldstyle",
                    [](FakeServer &s) {
                      Bytes g(wire::kOldstyleGreetingSize);
                      (void)wire::encode_oldstyle_greeting(g, {1, 0, 1});
                      g.resize(100);
                      s.write(g);
                      s.close();
                    },
                    0},
        HostileCase{"ReplyForWrongOption",
                    [](FakeServer &s) {
                      s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
                      s.client_flags();
                      s.expect(wire::kOptStructuredReply);
                      s.reply(wire::kOptGo, wire::kRepAck);
                    },
                    0},
        HostileCase{"WrongReplyMagic",
                    [](FakeServer &s) {
                      s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
                      s.client_flags();
                      s.expect(wire::kOptStructuredReply);
                      Bytes r(20, 0xee);
                      s.write(r);
                    },
                    0},
        HostileCase{"HugeReplyLength",
                    [](FakeServer &s) {
                      prefix(s);
                      s.expect(wire::kOptSetMetaContext);
                      Bytes h(wire::kOptionReplyHeaderSize);
                      (void)wire::encode_option_reply_header(
                          h, {wire::kOptSetMetaContext, wire::kRepMetaContext, 0xfffffff0u});
                      s.write(h);
                    },
                    0},
        HostileCase{"AckWithPayload",
                    [](FakeServer &s) {
                      s.greet(wire::kFlagFixedNewstyle | wire::kFlagNoZeroes);
                      s.client_flags();
                      s.expect(wire::kOptStructuredReply);
                      s.reply(wire::kOptStructuredReply, wire::kRepAck, Bytes{1});
                    },
                    0},
        HostileCase{"OversizedContextName",
                    [](FakeServer &s) {
                      prefix(s);
                      s.expect(wire::kOptSetMetaContext);
                      s.context(wire::kOptSetMetaContext, 1, std::string(5000, 'x'));
                    },
                    0},
        HostileCase{"ShortContextReply",
                    [](FakeServer &s) {
                      prefix(s);
                      s.expect(wire::kOptSetMetaContext);
                      s.reply(wire::kOptSetMetaContext, wire::kRepMetaContext, Bytes{0, 0});
                    },
                    0},
        HostileCase{"ServerReplyToGo",
                    [](FakeServer &s) {
                      prefix(s);
                      s.expect(wire::kOptSetMetaContext);
                      s.reply(wire::kOptSetMetaContext, wire::kRepAck);
                      s.expect(wire::kOptGo);
                      s.reply(wire::kOptGo, wire::kRepServer, Bytes{0, 0, 0, 0});
                    },
                    0},
        HostileCase{"ShortInfoExport",
                    [](FakeServer &s) {
                      prefix(s);
                      s.expect(wire::kOptSetMetaContext);
                      s.reply(wire::kOptSetMetaContext, wire::kRepAck);
                      s.expect(wire::kOptGo);
                      s.reply(wire::kOptGo, wire::kRepInfo, Bytes{0, 0, 1, 2});
                    },
                    0},
        HostileCase{"OversizedInfoName",
                    [](FakeServer &s) {
                      prefix(s);
                      s.expect(wire::kOptSetMetaContext);
                      s.reply(wire::kOptSetMetaContext, wire::kRepAck);
                      s.expect(wire::kOptGo);
                      s.info_text(wire::kOptGo, wire::kInfoName, std::string(4097, 'n'));
                    },
                    0},
        HostileCase{"ZeroEflags",
                    [](FakeServer &s) {
                      prefix(s);
                      s.expect(wire::kOptSetMetaContext);
                      s.reply(wire::kOptSetMetaContext, wire::kRepAck);
                      s.expect(wire::kOptGo);
                      s.info_export(wire::kOptGo, 1, 0);
                    },
                    EINVAL},
        HostileCase{"InfoReplyTooShort",
                    [](FakeServer &s) {
                      prefix(s);
                      s.expect(wire::kOptSetMetaContext);
                      s.reply(wire::kOptSetMetaContext, wire::kRepAck);
                      s.expect(wire::kOptGo);
                      s.reply(wire::kOptGo, wire::kRepInfo, Bytes{0});
                    },
                    0},
        HostileCase{"HangUpMidReply",
                    [](FakeServer &s) {
                      prefix(s);
                      s.expect(wire::kOptSetMetaContext);
                      Bytes h(wire::kOptionReplyHeaderSize);
                      (void)wire::encode_option_reply_header(
                          h, {wire::kOptSetMetaContext, wire::kRepMetaContext, 100});
                      s.write(h);
                      s.write(Bytes(10, 'x'));
                      s.close();
                    },
                    0}),
    [](const ::testing::TestParamInfo<HostileCase> &i) { return std::string(i.param.name); });

TEST_F(HandshakeTest, OversizedExportNameInListFails) {
  Calls calls;
  serve([](FakeServer &s) {
    negotiate_prefix(s);
    s.expect(wire::kOptList);
    s.server_entry(std::string(4097, 'e'), "");
  });
  cfg_.opt_mode = true;
  Handshake &hs = start();
  ASSERT_TRUE(drive());
  ASSERT_TRUE(hs.start_list(list_cb(calls), completion_cb(calls)));
  Status st = drive();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().errnum, 0) << "a broken stream is errno 0, as in libnbd";
  EXPECT_TRUE(calls.exports.empty());
  EXPECT_EQ(calls.completions, std::vector<int>{ENOTCONN});  // the option died with the connection
}

TEST_F(HandshakeTest, BadExportLengthInListFails) {
  Calls calls;
  serve([](FakeServer &s) {
    negotiate_prefix(s);
    s.expect(wire::kOptList);
    s.reply(wire::kOptList, wire::kRepServer, Bytes{0, 0, 0, 9, 'a', 'b'});
  });
  cfg_.opt_mode = true;
  Handshake &hs = start();
  ASSERT_TRUE(drive());
  ASSERT_TRUE(hs.start_list(list_cb(calls), CompletionCallback{}));
  Status st = drive();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().errnum, 0);
  EXPECT_FALSE(st.error().message.empty());
}

// A long export list is delivered in bounded batches rather than all at once.
TEST_F(HandshakeTest, LongListIsDeliveredInBatches) {
  Calls calls;
  constexpr int kEntries = 2000;
  serve([](FakeServer &s) {
    negotiate_prefix(s);
    s.expect(wire::kOptList);
    for (int i = 0; i < kEntries; i++) s.server_entry(std::to_string(i), "");
    s.reply(wire::kOptList, wire::kRepAck);
  });
  cfg_.opt_mode = true;
  Handshake &hs = start();
  ASSERT_TRUE(drive());
  ASSERT_TRUE(hs.start_list(list_cb(calls), CompletionCallback{}));
  size_t max_batch = 0;
  while (hs.phase() == Phase::Running) {
    Want w = hs.wants();
    ASSERT_NE(w, Want::None);
    struct pollfd p = {transport_->fd(), short(w == Want::Read ? POLLIN : POLLOUT), 0};
    ASSERT_EQ(::poll(&p, 1, kTimeoutMs), 1);
    ASSERT_TRUE(w == Want::Read ? hs.on_readable(*transport_) : hs.on_writable(*transport_));
    std::vector<std::function<void()>> d;
    hs.take_deferred(d);
    max_batch = std::max(max_batch, d.size());
    for (auto &f : d) f();
  }
  EXPECT_EQ(calls.exports.size(), size_t(kEntries));
  EXPECT_EQ(hs.last_result().count, uint64_t(kEntries));
  EXPECT_LE(max_batch, 300u);
}

// ---------------------------------------------------------------------------------------
// A real server, when one is installed.

bool have_nbdkit() { return ::system("nbdkit --version >/dev/null 2>&1") == 0; }

class NbdkitTest : public ::testing::Test {
protected:
  void SetUp() override {
    if (!have_nbdkit()) GTEST_SKIP() << "nbdkit is not installed";
    char tmpl[] = "/tmp/handshake_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    sock_ = dir_ + "/sock";
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      ::execlp("nbdkit", "nbdkit", "-f", "-U", sock_.c_str(), "--filter=exportname", "memory", "1M",
               "exportname=a", "exportname=b", "exportname-list=explicit", "exportname-strict=true",
               "default-export=a", "exportdesc=fixed:hello", static_cast<char *>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 500; i++) {
      struct stat st;
      if (::stat(sock_.c_str(), &st) == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "nbdkit did not start";
  }

  void TearDown() override {
    hs_.reset();
    transport_.reset();
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    if (!sock_.empty()) ::unlink(sock_.c_str());
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }

  // The socket file appears at bind(), a moment before nbdkit listens: retry until then.
  void connect(Config cfg) {
    for (int attempt = 0;; attempt++) {
      int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      ASSERT_GE(fd, 0);
      struct sockaddr_un sa = {};
      sa.sun_family = AF_UNIX;
      strncpy(sa.sun_path, sock_.c_str(), sizeof sa.sun_path - 1);
      if (::connect(fd, reinterpret_cast<struct sockaddr *>(&sa), sizeof sa) == 0) {
        transport_ = std::make_unique<transport::SocketTransport>(transport::FileDescriptor(fd));
        break;
      }
      int err = errno;
      ::close(fd);
      ASSERT_LT(attempt, 500) << "connect: " << strerror(err);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    hs_ = std::make_unique<Handshake>(std::move(cfg), neg_, h_);
  }

  Status drive() {
    while (hs_->phase() == Phase::Running) {
      Want w = hs_->wants();
      if (w == Want::None) return Error{EINVAL, "test: wants nothing"};
      struct pollfd p = {transport_->fd(), short(w == Want::Read ? POLLIN : POLLOUT), 0};
      if (::poll(&p, 1, kTimeoutMs) != 1) return Error{ETIMEDOUT, "test: timed out"};
      Status s = w == Want::Read ? hs_->on_readable(*transport_) : hs_->on_writable(*transport_);
      std::vector<std::function<void()>> d;
      hs_->take_deferred(d);
      for (auto &f : d) f();
      if (!s) return s;
    }
    return {};
  }

  std::string dir_, sock_;
  pid_t pid_ = -1;
  nbd_handle h_;
  Negotiated neg_;
  std::unique_ptr<transport::SocketTransport> transport_;
  std::unique_ptr<Handshake> hs_;
};

TEST_F(NbdkitTest, ConnectsWithGo) {
  Config cfg;
  cfg.export_name = "a";
  cfg.meta_contexts = {"base:allocation"};
  cfg.full_info = true;
  ASSERT_NO_FATAL_FAILURE(connect(cfg));
  ASSERT_TRUE(drive());
  EXPECT_EQ(hs_->phase(), Phase::Done);
  EXPECT_EQ(neg_.protocol, "newstyle-fixed");
  EXPECT_TRUE(neg_.structured_replies);
  EXPECT_EQ(neg_.info.size, 1u << 20);
  EXPECT_TRUE(neg_.meta_valid);
  ASSERT_EQ(neg_.meta_contexts.size(), 1u);
  EXPECT_EQ(neg_.meta_contexts[0].name, "base:allocation");
  EXPECT_EQ(neg_.info.description.value_or(""), "hello");
}

TEST_F(NbdkitTest, UnknownExportFails) {
  Config cfg;
  cfg.export_name = "nope";
  ASSERT_NO_FATAL_FAILURE(connect(cfg));
  Status st = drive();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().errnum, ENOENT);
  // libnbd 1.22's wording (nbdkit gives no message of its own).
  EXPECT_EQ(st.error().message, "the server has no export named 'nope'");
}

TEST_F(NbdkitTest, OptModeListThenGo) {
  Config cfg;
  cfg.opt_mode = true;
  ASSERT_NO_FATAL_FAILURE(connect(cfg));
  ASSERT_TRUE(drive());
  ASSERT_EQ(hs_->phase(), Phase::Negotiating);
  Calls calls;
  ASSERT_TRUE(hs_->start_list(list_cb(calls), CompletionCallback{}));
  ASSERT_TRUE(drive());
  ASSERT_EQ(calls.exports.size(), 2u);
  EXPECT_EQ(calls.exports[0].first, "a");
  EXPECT_EQ(calls.exports[0].second, "hello");

  Config c = cfg;
  c.export_name = "zzz";
  hs_->refresh_config(c);
  ASSERT_TRUE(hs_->start_go(CompletionCallback{}));
  ASSERT_TRUE(drive());
  EXPECT_EQ(hs_->phase(), Phase::Negotiating);
  EXPECT_EQ(hs_->last_result().errnum, ENOENT);

  c.export_name = "b";
  hs_->refresh_config(c);
  ASSERT_TRUE(hs_->start_go(CompletionCallback{}));
  ASSERT_TRUE(drive());
  EXPECT_EQ(hs_->phase(), Phase::Done);
  EXPECT_EQ(neg_.info.size, 1u << 20);
}

}  // namespace
}  // namespace duplexnbd::handshake
