// SPDX-License-Identifier: LGPL-2.1-or-later
// What the handshake learnt: export size, flags, block sizes, names, protocol and meta contexts.
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>

#include "api/command_checks.h"
#include "api_impl.h"
#include "engine/connection.h"
#include "handle/error.h"
#include "wire/protocol.h"

namespace duplexnbd::api {
namespace {

// The handshake writes Negotiated only under the handshake mutex, and only before
// transmission starts.  While negotiating, another thread may start an option at any
// moment, so the mutex is taken; once Ready (or Closed) nothing writes it any more and
// no lock is needed, which also keeps these calls usable from a reply callback (where
// taking the outermost lock would invert the engine's lock order).
template <typename F>
auto with_negotiated(Handle &h, F &&f) {
  Connection &conn = *h.connection;
  if (h.state() == State::Negotiating) {
    std::lock_guard lock(conn.handshake_mutex());
    return f(conn.negotiated());
  }
  return f(conn.negotiated());
}

constexpr const char *kNoFlags =
    "server has not returned export flags, you need to connect to the server first";

// is_read_only, can_flush, ...: one transmission flag, as far as it can be used.
int flag(Handle &h, uint16_t bit) {
  int r = with_negotiated(h, [&](const Negotiated &n) {
    if (!n.info.valid) return -1;
    return (effective_eflags(n) & bit) != 0 ? 1 : 0;
  });
  if (r < 0) set_error(EINVAL, "%s", kNoFlags);
  return r;
}

char *malloc_copy(const std::string &s) {
  char *p = static_cast<char *>(malloc(s.size() + 1));
  if (p == nullptr) {
    set_error(ENOMEM, "malloc");
    return nullptr;
  }
  memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

// get_canonical_export_name / get_export_description: an optional NBD_INFO text.
char *info_text(Handle &h, std::optional<std::string> ExportInfo::*field, const char *what) {
  bool valid = false;
  std::optional<std::string> text = with_negotiated(h, [&](const Negotiated &n) {
    valid = n.info.valid;
    return n.info.*field;
  });
  if (!valid) {
    set_error(EINVAL, "%s", kNoFlags);
    return nullptr;
  }
  if (!text) {
    set_error(ENOTSUP, "server did not advertise %s", what);
    return nullptr;
  }
  return malloc_copy(*text);
}

}  // namespace

int is_read_only(Handle &h) { return flag(h, wire::kFlagReadOnly); }
int can_flush(Handle &h) { return flag(h, wire::kFlagSendFlush); }
int can_fua(Handle &h) { return flag(h, wire::kFlagSendFua); }
int is_rotational(Handle &h) { return flag(h, wire::kFlagRotational); }
int can_trim(Handle &h) { return flag(h, wire::kFlagSendTrim); }
int can_zero(Handle &h) { return flag(h, wire::kFlagSendWriteZeroes); }
int can_fast_zero(Handle &h) { return flag(h, wire::kFlagSendFastZero); }
int can_block_status_payload(Handle &h) { return flag(h, wire::kFlagBlockStatPayload); }
int can_df(Handle &h) { return flag(h, wire::kFlagSendDf); }
int can_multi_conn(Handle &h) { return flag(h, wire::kFlagCanMultiConn); }
int can_cache(Handle &h) { return flag(h, wire::kFlagSendCache); }

int can_meta_context(Handle &h, const char *metacontext) {
  bool requested;
  {
    std::lock_guard lock(h.settings_mutex);
    requested = !h.settings.meta_contexts.empty();
  }
  int r = with_negotiated(h, [&](const Negotiated &n) {
    // Contexts were asked for but no SET_META_CONTEXT has settled them: the answer
    // is not known yet (as opposed to "the server has none").
    if (requested && !n.meta_valid) return -1;
    for (const MetaContext &m : n.meta_contexts)
      if (m.name == metacontext) return 1;
    return 0;
  });
  if (r < 0) set_error(EINVAL, "need a successful server meta context request first");
  return r;
}

const char *get_protocol(Handle &h) {
  // Static strings, as the caller must not free them.
  std::string p = with_negotiated(h, [](const Negotiated &n) { return n.protocol; });
  if (p == "oldstyle") return "oldstyle";
  if (p == "newstyle") return "newstyle";
  if (p == "newstyle-fixed") return "newstyle-fixed";
  set_error(EINVAL, "the protocol is not known yet");
  return nullptr;
}

int64_t get_size(Handle &h) {
  std::optional<uint64_t> size = with_negotiated(h, [](const Negotiated &n) {
    return n.info.valid ? std::optional<uint64_t>(n.info.size) : std::nullopt;
  });
  if (!size) {
    set_error(EINVAL,
              "server has not returned export size, you need to connect to the server first");
    return -1;
  }
  // Reported as an error rather than clamped, as libnbd documents: a clamped size would
  // look like a real one.
  if (*size > uint64_t(INT64_MAX)) {
    set_error(EOVERFLOW, "server claims size %llu which does not fit in signed result",
              static_cast<unsigned long long>(*size));
    return -1;
  }
  return int64_t(*size);
}

int64_t get_block_size(Handle &h, int size_type) {
  int64_t r = with_negotiated(h, [&](const Negotiated &n) -> int64_t {
    if (!n.info.valid) return -1;
    // A set of constraints that breaks the spec's rules is ignored as a whole.
    const bool usable = usable_block_minimum(n.info) != 0;
    switch (size_type) {
      case LIBNBD_SIZE_MINIMUM: return usable ? n.info.block_minimum : 0;
      case LIBNBD_SIZE_PREFERRED: return usable ? n.info.block_preferred : 0;
      case LIBNBD_SIZE_MAXIMUM: return usable ? n.info.block_maximum : 0;
      case LIBNBD_SIZE_PAYLOAD: return payload_maximum(n.info);
      default: return 0;
    }
  });
  if (r < 0) set_error(EINVAL, "%s", kNoFlags);
  return r;
}

char *get_canonical_export_name(Handle &h) {
  return info_text(h, &ExportInfo::canonical_name, "a canonical name");
}

char *get_export_description(Handle &h) {
  return info_text(h, &ExportInfo::description, "a description");
}

int get_structured_replies_negotiated(Handle &h) {
  return with_negotiated(h, [](const Negotiated &n) { return n.structured_replies ? 1 : 0; });
}

int get_extended_headers_negotiated(Handle &h) {
  return with_negotiated(h, [](const Negotiated &n) { return n.extended_headers ? 1 : 0; });
}

}  // namespace duplexnbd::api
