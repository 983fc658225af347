// SPDX-License-Identifier: LGPL-2.1-or-later
// libFuzzer target: an arbitrary server byte stream against the handshake, in automatic and opt mode.
//
// Input: 4 configuration bytes, then what the server sends.
//   byte 0: bit0 request structured replies, bit1 request extended headers, bit2 add two
//           meta contexts, bit3 opt mode, bit4 full info, bit5 request block size,
//           bit6 allow only FIXED_NEWSTYLE, bit7 debug output through a callback
//   byte 1: bits0-2 how many bytes the server sends at a time (fuzz::chunk_size),
//           bit3 a non-empty export name
//   bytes 2-3: opt mode only: five 3-bit option calls, low bits first
//           (0 go, 1 info, 2 list, 3 list meta, 4 set meta, 5 structured reply,
//            6 extended headers, 7 abort); then nbd_aio_opt_abort.
#include <vector>

#include "fuzz_common.h"

namespace {

void opt_call(nbd_handle *h, unsigned op, fuzz::Closures &cl) {
  switch (op & 7) {
    case 0: (void)nbd_aio_opt_go(h, cl.completion()); break;
    case 1: (void)nbd_aio_opt_info(h, cl.completion()); break;
    case 2: (void)nbd_aio_opt_list(h, cl.list(), cl.completion()); break;
    case 3: (void)nbd_aio_opt_list_meta_context(h, cl.context(), cl.completion()); break;
    case 4: (void)nbd_aio_opt_set_meta_context(h, cl.context(), cl.completion()); break;
    case 5: (void)nbd_aio_opt_structured_reply(h, cl.completion()); break;
    case 6: (void)nbd_aio_opt_extended_headers(h, cl.completion()); break;
    default: (void)nbd_aio_opt_abort(h); break;
  }
}

// What the info calls report must be readable whatever the server said.
void query(nbd_handle *h) {
  (void)nbd_get_size(h);
  (void)nbd_is_read_only(h);
  (void)nbd_can_flush(h);
  (void)nbd_can_fua(h);
  (void)nbd_can_trim(h);
  (void)nbd_can_zero(h);
  (void)nbd_can_df(h);
  (void)nbd_can_multi_conn(h);
  (void)nbd_can_cache(h);
  (void)nbd_can_block_status_payload(h);
  (void)nbd_can_meta_context(h, "base:allocation");
  (void)nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
  (void)nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
  (void)nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
  (void)nbd_get_block_size(h, LIBNBD_SIZE_PAYLOAD);
  (void)nbd_get_protocol(h);
  (void)nbd_get_handshake_flags(h);
  (void)nbd_get_structured_replies_negotiated(h);
  (void)nbd_get_extended_headers_negotiated(h);
  free(nbd_get_canonical_export_name(h));
  free(nbd_get_export_description(h));
  free(nbd_get_meta_context(h, 0));
  (void)nbd_get_nr_meta_contexts(h);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 4) return 0;
  const uint8_t c0 = data[0], c1 = data[1];
  unsigned script = data[2] | unsigned(data[3]) << 8;
  std::vector<uint8_t> stream(data + 4, data + size);
  const size_t chunk = fuzz::chunk_size(c1);

  fuzz::Closures cl;
  nbd_handle *h = nbd_create();
  if (!h) fuzz::die("nbd_create");
  if (c0 & 0x80) {
    (void)nbd_set_debug_callback(h, cl.debug());
    (void)nbd_set_debug(h, true);
  } else {
    (void)nbd_set_debug(h, false);
  }
  (void)nbd_set_request_structured_replies(h, c0 & 1);
  (void)nbd_set_request_extended_headers(h, (c0 >> 1) & 1);
  if (c0 & 4) {
    (void)nbd_add_meta_context(h, "base:allocation");
    (void)nbd_add_meta_context(h, "qemu:dirty-bitmap:fuzz");
  }
  (void)nbd_set_opt_mode(h, (c0 >> 3) & 1);
  (void)nbd_set_full_info(h, (c0 >> 4) & 1);
  (void)nbd_set_request_block_size(h, (c0 >> 5) & 1);
  if (c0 & 0x40) (void)nbd_set_handshake_flags(h, LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE);
  if (c1 & 8) (void)nbd_set_export_name(h, "fuzz-export");

  const size_t steps_for_input = stream.size() / (chunk < 8192 ? chunk : 8192) + 64;
  {
    fuzz::Peer peer(std::move(stream), chunk);
    if (nbd_aio_connect_socket(h, peer.take_client()) == -1) fuzz::die("nbd_aio_connect_socket");
    int ops_left = 5;
    int after_eof = 0;
    size_t steps = 0;
    for (;;) {
      peer.step();
      if (fuzz::over(h) || nbd_aio_is_ready(h)) break;
      if (nbd_aio_is_negotiating(h)) {
        if (ops_left-- > 0) {
          opt_call(h, script & 7, cl);
          script >>= 3;
        } else if (nbd_aio_opt_abort(h) == -1) {
          break;
        }
        query(h);
      }
      fuzz::pump(h);
      // Everything sent and the server gone: the handshake must end promptly.
      if (peer.finished() && ++after_eof > 64) fuzz::die("handshake still running after the server hung up");
      // Each step moves at least a chunk unless the client stopped reading without finishing.
      if (++steps > steps_for_input * 4 + 256) fuzz::die("handshake made no progress");
    }
    query(h);
    nbd_close(h);
  }
  cl.check();
  return 0;
}
