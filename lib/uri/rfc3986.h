// SPDX-License-Identifier: LGPL-2.1-or-later
// Generic RFC 3986 URI splitting and percent-encoding, used by the NBD URI layer.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace duplexnbd::uri {

// The components of a URI reference, exactly as they appear in the text
// (still percent-encoded).  The syntax of every component has been checked
// against RFC 3986, including that every '%' starts a valid "%XX" escape, so
// percent_decode() on any of them cannot fail.
struct UriParts {
  // Empty when the text is a relative reference (no "scheme:" prefix).
  std::string scheme;

  // True when "//" followed the scheme (or began a relative reference).
  bool has_authority = false;
  // Text before '@' in the authority; nullopt when there was no '@'.
  std::optional<std::string> userinfo;
  // reg-name or IPv4 address, or for an IP-literal the text between the
  // brackets (brackets removed, see host_is_ip_literal).
  std::string host;
  bool host_is_ip_literal = false;
  // The digits after ':' in the authority; nullopt when there was no ':'.
  // Always non-empty and at most INT_MAX: libxml2 (which libnbd uses)
  // rejects "host:" and ports that overflow an int, so we do too.
  std::optional<std::string> port;

  std::string path;
  std::optional<std::string> query;
  std::optional<std::string> fragment;
};

// Split `text` as an RFC 3986 URI, or failing that as a relative reference.
// Fails with EINVAL when it is neither.  Characters outside the RFC's
// alphabet (spaces, non-ASCII bytes, "|", "^", a second '#', ...) are errors,
// as they are for libxml2's parser.
Result<UriParts> split_uri(std::string_view text);

// Decode "%XX" escapes.  Returns nullopt on a malformed escape.  A decoded
// NUL byte is kept; callers decide what it means.
std::optional<std::string> percent_decode(std::string_view text);

// Character classes for percent_encode: a byte is written literally when it
// is ASCII alphanumeric or appears in `literal`, and as "%XX" otherwise.
std::string percent_encode(std::string_view text, std::string_view literal);

}  // namespace duplexnbd::uri
