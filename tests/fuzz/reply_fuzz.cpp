// SPDX-License-Identifier: LGPL-2.1-or-later
// libFuzzer target: an arbitrary server byte stream against the reply reader, commands in flight.
//
// A canned handshake (chosen by the configuration) opens a 1 MiB export; the commands are
// issued; then the fuzz bytes are what the server sends. Input: 3 configuration bytes, then
// the reply stream.
//   byte 0: bits0-1 reply form: 0 oldstyle server (simple replies), 1 newstyle without
//           structured replies, 2 structured replies, 3 extended headers;
//           bit2 two meta contexts (ids 1 "base:allocation", 2 "qemu:dirty-bitmap:fuzz"),
//           bit3 chunk/extent callbacks return -1 and completions auto-retire (return 1),
//           bit4 debug output through a callback, bits5-7 server chunk size
//   byte 1: which commands, in this order, cookies 1, 2, ... as issued:
//           bit0 pread 512@0; bit1 pread_structured 4096@4096 (chunk callback);
//           bit2 block_status 65536@0; bit3 block_status_64 131072@0;
//           bit4 pwrite 512@1024; bit5 flush, trim 4096@8192, zero 4096@12288;
//           bit6 cache 4096@0; bit7 pread_structured 65536@65536 (large: direct receive)
//   byte 2: bit0 DF on the structured reads, bit1 strict mode off, bit2 retire completed
//           commands as they finish, bit3 issue the commands again once the whole stream
//           is sent (racing the end of stream), bit4 REQ_ONE on block status, bit5 FUA on the write,
//           bit6 nbd_aio_disconnect after issuing, bit7 commands also in one batch before
//           the handshake ends (queued while connecting is refused: exercises that path)
#include <vector>

#include "fuzz_common.h"

namespace {

constexpr uint64_t kExportSize = 1 << 20;
constexpr uint16_t kEflags = 0x1fff & ~0x0202;  // every transmission flag but READ_ONLY, RESIZE

std::vector<uint8_t> canned_handshake(unsigned mode, bool meta) {
  fuzz::Wire w;
  w.u64(0x4e42444d41474943ull);  // NBDMAGIC
  if (mode == 0) {
    w.u64(0x0000420281861253ull);
    w.u64(kExportSize);
    w.u16(0);
    w.u16(kEflags);
    w.b.resize(w.b.size() + 124);
    return std::move(w.b);
  }
  w.u64(0x49484156454f5054ull);  // IHAVEOPT
  w.u16(3);                      // FIXED_NEWSTYLE | NO_ZEROES
  if (mode == 3) w.option_reply(11, 1);
  if (mode == 2) w.option_reply(8, 1);
  if (mode >= 2 && meta) {
    const char *names[] = {"base:allocation", "qemu:dirty-bitmap:fuzz"};
    for (uint32_t id = 1; id <= 2; ++id) {
      fuzz::Wire p;
      p.u32(id);
      p.str(names[id - 1]);
      w.option_reply(10, 4, p.b);
    }
    w.option_reply(10, 1);
  }
  fuzz::Wire info;
  info.u16(0);
  info.u64(kExportSize);
  info.u16(kEflags);
  w.option_reply(7, 3, info.b);
  w.option_reply(7, 1);
  return std::move(w.b);
}

struct Run {
  nbd_handle *h;
  fuzz::Closures &cl;
  uint8_t c0, c1, c2;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> &buffers;
  std::vector<int64_t> cookies;

  uint8_t *buffer(size_t n, uint8_t fill) {
    buffers.push_back(std::make_unique<std::vector<uint8_t>>(n, fill));
    return buffers.back()->data();
  }
  void add(int64_t cookie) {
    if (cookie > 0) cookies.push_back(cookie);
  }
  void issue() {
    const int cb_ret = (c0 & 8) ? -1 : 0;
    auto done = [&] { return cl.completion((c0 & 8) ? 1 : 0); };
    const uint32_t df = (c2 & 1) ? LIBNBD_CMD_FLAG_DF : 0;
    const uint32_t req_one = (c2 & 0x10) ? LIBNBD_CMD_FLAG_REQ_ONE : 0;
    if (c1 & 1) add(nbd_aio_pread(h, buffer(512, 0xa1), 512, 0, done(), 0));
    if (c1 & 2) add(nbd_aio_pread_structured(h, buffer(4096, 0xa2), 4096, 4096, cl.chunk(cb_ret), done(), df));
    if (c1 & 4) add(nbd_aio_block_status(h, 65536, 0, cl.extent(cb_ret), done(), req_one));
    if (c1 & 8) add(nbd_aio_block_status_64(h, 131072, 0, cl.extent64(cb_ret), done(), req_one));
    if (c1 & 0x10)
      add(nbd_aio_pwrite(h, buffer(512, 0xa5), 512, 1024, done(), (c2 & 0x20) ? LIBNBD_CMD_FLAG_FUA : 0));
    if (c1 & 0x20) {
      add(nbd_aio_flush(h, done(), 0));
      add(nbd_aio_trim(h, 4096, 8192, done(), 0));
      add(nbd_aio_zero(h, 4096, 12288, done(), 0));
    }
    if (c1 & 0x40) add(nbd_aio_cache(h, 4096, 0, done(), 0));
    if (c1 & 0x80)
      add(nbd_aio_pread_structured(h, buffer(65536, 0xa8), 65536, 65536, cl.chunk(cb_ret), done(), df));
  }
  void retire() {
    for (int64_t c : cookies) (void)nbd_aio_command_completed(h, uint64_t(c));
    (void)nbd_aio_peek_command_completed(h);
    (void)nbd_aio_in_flight(h);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  const uint8_t c0 = data[0], c1 = data[1], c2 = data[2];
  const unsigned mode = c0 & 3;
  const bool meta = (c0 & 4) && mode >= 2;
  std::vector<uint8_t> stream = canned_handshake(mode, meta);
  const size_t handshake_size = stream.size();
  stream.insert(stream.end(), data + 3, data + size);
  const size_t chunk = fuzz::chunk_size(c0 >> 5);

  fuzz::Closures cl;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> buffers;  // outlive the handle
  nbd_handle *h = nbd_create();
  if (!h) fuzz::die("nbd_create");
  if (c0 & 0x10) {
    (void)nbd_set_debug_callback(h, cl.debug());
    (void)nbd_set_debug(h, true);
  } else {
    (void)nbd_set_debug(h, false);
  }
  (void)nbd_set_request_structured_replies(h, mode >= 2);
  (void)nbd_set_request_extended_headers(h, mode == 3);
  if (meta) {
    (void)nbd_add_meta_context(h, "base:allocation");
    (void)nbd_add_meta_context(h, "qemu:dirty-bitmap:fuzz");
  }
  if (c2 & 2) (void)nbd_set_strict_mode(h, 0);

  Run run{h, cl, c0, c1, c2, buffers, {}};
  const size_t total = stream.size();
  const size_t steps_for_input = total / (chunk < 8192 ? chunk : 8192) + 64;
  {
    fuzz::Peer peer(std::move(stream), chunk);
    if (nbd_aio_connect_socket(h, peer.take_client()) == -1) fuzz::die("nbd_aio_connect_socket");
    if (c2 & 0x80) run.issue();  // refused while connecting; their closures are freed
    // The canned handshake always succeeds; stop at once if it did not.
    size_t steps = 0;
    while (!nbd_aio_is_ready(h)) {
      if (fuzz::over(h) || ++steps > handshake_size + 64) fuzz::die("canned handshake failed");
      peer.step();
      fuzz::pump(h);
    }
    if (!nbd_get_structured_replies_negotiated(h) != (mode < 2)) fuzz::die("unexpected negotiation");
    run.issue();
    if (c2 & 0x40) (void)nbd_aio_disconnect(h, 0);
    bool second = (c2 & 8) != 0;
    int after_eof = 0;
    steps = 0;
    while (!fuzz::over(h)) {
      peer.step();
      fuzz::pump(h);
      if (c2 & 4) run.retire();
      if (second && peer.finished()) {
        second = false;
        run.issue();
      }
      if (peer.finished() && ++after_eof > 64) fuzz::die("handle still alive after the server hung up");
      if (++steps > steps_for_input * 4 + 256) fuzz::die("reply stream made no progress");
    }
    run.retire();
    nbd_close(h);
  }
  cl.check();
  return 0;
}
