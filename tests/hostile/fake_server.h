// SPDX-License-Identifier: LGPL-2.1-or-later
// A scriptable fake NBD server on a socketpair: correct handshake, then one scripted misbehaviour.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace hostile {

using Bytes = std::vector<uint8_t>;

// Protocol numbers, spelled out here on purpose: the fake server shares no code with the
// library, so a bug in the library's own encoders cannot hide a bug in its decoders.
namespace nbd {
inline constexpr uint64_t kInitPasswd = 0x4e42444d41474943ull;  // "NBDMAGIC"
inline constexpr uint64_t kIHaveOpt = 0x49484156454f5054ull;    // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ull;
inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kExtendedRequestMagic = 0x21e41c71;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
inline constexpr uint32_t kExtendedReplyMagic = 0x6e8a278c;

inline constexpr uint32_t kOptExportName = 1, kOptAbort = 2, kOptList = 3, kOptStartTls = 5,
                          kOptInfo = 6, kOptGo = 7, kOptStructuredReply = 8,
                          kOptListMetaContext = 9, kOptSetMetaContext = 10,
                          kOptExtendedHeaders = 11;
inline constexpr uint32_t kRepAck = 1, kRepServer = 2, kRepInfo = 3, kRepMetaContext = 4;
inline constexpr uint32_t kRepErrUnsup = 0x80000001u;
inline constexpr uint16_t kInfoExport = 0, kInfoName = 1, kInfoDescription = 2, kInfoBlockSize = 3;

inline constexpr uint16_t kFlagHasFlags = 1u << 0, kFlagSendFlush = 1u << 2,
                          kFlagSendFua = 1u << 3, kFlagSendTrim = 1u << 5,
                          kFlagSendWriteZeroes = 1u << 6, kFlagSendDf = 1u << 7;

inline constexpr uint16_t kCmdRead = 0, kCmdWrite = 1, kCmdDisc = 2, kCmdFlush = 3,
                          kCmdTrim = 4, kCmdWriteZeroes = 6, kCmdBlockStatus = 7;
inline constexpr uint16_t kReplyFlagDone = 1;
inline constexpr uint16_t kReplyNone = 0, kReplyOffsetData = 1, kReplyOffsetHole = 2,
                          kReplyBlockStatus = 5, kReplyBlockStatusExt = 6,
                          kReplyError = 0x8001, kReplyErrorOffset = 0x8002;
inline constexpr uint32_t kEio = 5;
}  // namespace nbd

// Big-endian appenders.
void put16(Bytes &b, uint16_t v);
void put32(Bytes &b, uint32_t v);
void put64(Bytes &b, uint64_t v);
void put_bytes(Bytes &b, const void *p, size_t n);
void put_string(Bytes &b, const std::string &s);
// The payload of an error chunk: the NBD error, then the message with its 16-bit length.
Bytes error_payload(uint32_t nbd_error, const std::string &message = "");

struct ServerConfig {
  bool structured = true;   // ACK NBD_OPT_STRUCTURED_REPLY (else ERR_UNSUP)
  bool extended = false;    // ACK NBD_OPT_EXTENDED_HEADERS (else ERR_UNSUP)
  // Contexts agreed to by NBD_OPT_SET_META_CONTEXT when the client asks for them;
  // ids are 1, 2, ... in this order.
  std::vector<std::string> contexts = {"base:allocation"};
  uint64_t size = 64ull << 20;
  uint16_t eflags = nbd::kFlagHasFlags | nbd::kFlagSendFlush | nbd::kFlagSendFua |
                    nbd::kFlagSendTrim | nbd::kFlagSendWriteZeroes | nbd::kFlagSendDf;
};

struct Option {
  uint32_t option = 0;
  Bytes payload;
};

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  Bytes payload;  // write data (the whole of it, unless read_request was told otherwise)
};

// The server end of a socketpair, driven by a script on its own thread. Every read is
// bounded by a poll timeout, so a script never waits for ever on a client that stopped.
class FakeServer {
public:
  explicit FakeServer(ServerConfig cfg = {});
  ~FakeServer();
  FakeServer(const FakeServer &) = delete;
  FakeServer &operator=(const FakeServer &) = delete;

  // The client's end, for nbd_connect_socket (which takes ownership on success).
  int client_fd() const { return client_fd_; }
  // After a failed nbd_connect_socket the descriptor is still ours to close.
  void close_client_fd();

  void start(std::function<void(FakeServer &)> script);
  // Waits for the script to end (the watchdog unblocks it if it does not).
  void join();
  bool finished() const { return finished_.load(); }
  // Makes every blocked read or write on both ends fail at once (the watchdog's lever).
  void abort_io();

  // ---- Handshake building blocks.
  void greet(uint16_t gflags = 3);  // FIXED_NEWSTYLE | NO_ZEROES
  bool read_client_flags();
  bool read_option(Option &o);
  void option_reply(uint32_t option, uint32_t type, const Bytes &payload = {});
  void info_export(uint32_t option);
  // Greeting, client flags, then options answered as configured until GO (or
  // EXPORT_NAME) ends the negotiation. False if the client went away.
  bool handshake();
  // As handshake(), but stops before answering the first option of type `stop_at`
  // (left in `o`) so a script can answer it wrongly.
  bool handshake_until(uint32_t stop_at, Option &o);
  // How most transmission cases open: the handshake, then the client's first request.
  bool handshake_then_request(Request &r) { return handshake() && read_request(r); }
  // The same with `n` requests read; the last one is left in `last`.
  bool handshake_then_requests(int n, Request &last);

  // ---- Transmission building blocks.
  bool structured() const { return structured_ok_; }
  bool extended() const { return extended_ok_; }
  uint32_t context_id(const std::string &name) const;  // 0: not agreed
  // Reads one request; the payload of a write is read whole unless `payload_limit`
  // says to stop after that many bytes.
  bool read_request(Request &r, size_t payload_limit = SIZE_MAX);
  void simple_reply(uint64_t cookie, uint32_t error, const Bytes &data = {});
  // A chunk in the negotiated form (structured, or extended when negotiated).
  void chunk(uint64_t cookie, uint16_t flags, uint16_t type, const Bytes &payload);
  // The header alone, with any length claimed, in the given form.
  Bytes structured_header(uint64_t cookie, uint16_t flags, uint16_t type, uint32_t length);
  Bytes extended_header(uint64_t cookie, uint16_t flags, uint16_t type, uint64_t offset,
                        uint64_t length);
  // A whole successful reply to a read/write/flush/... in the negotiated form.
  void ok_reply(const Request &r);

  // ---- Raw I/O.
  bool send(const Bytes &b);
  bool read_exact(Bytes &b, size_t n);
  // Whether the client has sent anything not yet read, waiting at most `ms`.
  bool readable_within(int ms);
  // How much the client has sent that the server has not read yet.
  size_t unread_bytes();
  // Reads and throws away until the client hangs up (or the timeout).
  void drain();
  // Closes the server end: the client sees end of stream.
  void close();

  static constexpr int kIoTimeoutMs = 5000;

  // Serve mode (tests/differential/run.py): with HOSTILE_SERVE_FD set, the server end is
  // that inherited descriptor and the client is another process (the differential driver
  // on libnbd or on ours); the case's script runs and the process exits.
  static int serve_fd();
  // What the client sent that the script read: count and FNV-1a hash, for the comparison.
  uint64_t client_bytes() const { return client_bytes_; }
  uint64_t client_hash() const { return client_hash_; }

private:
  ServerConfig cfg_;
  int server_fd_ = -1;
  int client_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> finished_{false};
  bool structured_ok_ = false;
  bool extended_ok_ = false;
  std::map<std::string, uint32_t> agreed_;
  uint64_t client_bytes_ = 0;
  uint64_t client_hash_ = 0xcbf29ce484222325ull;
};

}  // namespace hostile
