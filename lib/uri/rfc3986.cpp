// SPDX-License-Identifier: LGPL-2.1-or-later
// Generic RFC 3986 URI splitting and percent-encoding, used by the NBD URI layer.
#include "uri/rfc3986.h"

#include <cerrno>
#include <climits>
#include <cstdint>

namespace duplexnbd::uri {
namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_unreserved(char c) {
  return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

bool is_sub_delim(char c) {
  switch (c) {
  case '!': case '$': case '&': case '\'': case '(': case ')':
  case '*': case '+': case ',': case ';': case '=':
    return true;
  default:
    return false;
  }
}

// True when every byte of `s` is unreserved, a sub-delim, one of `extra`, or
// part of a well-formed "%XX" escape.  All URI components are built from
// these pieces, differing only in `extra`.
bool valid_component(std::string_view s, std::string_view extra) {
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size() || hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0)
        return false;
      i += 2;
      continue;
    }
    if (is_unreserved(c) || is_sub_delim(c) || extra.find(c) != std::string_view::npos)
      continue;
    return false;
  }
  return true;
}

Error parse_error(std::string_view text) {
  return make_error(EINVAL, "unable to parse URI: " + std::string(text));
}

// authority = [ userinfo "@" ] host [ ":" port ]
bool split_authority(std::string_view auth, UriParts &out) {
  size_t at = auth.find('@');
  if (at != std::string_view::npos) {
    std::string_view user = auth.substr(0, at);
    if (!valid_component(user, ":")) return false;
    out.userinfo = std::string(user);
    auth.remove_prefix(at + 1);
  }

  std::string_view rest;
  if (!auth.empty() && auth[0] == '[') {
    size_t close = auth.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    std::string_view literal = auth.substr(1, close - 1);
    // IPv6 addresses, IPvFuture and RFC 6874 zone ids ("%25eth0") all fit
    // this alphabet; the resolver judges the address itself, as it does
    // behind libxml2.
    if (!valid_component(literal, ":")) return false;
    out.host = std::string(literal);
    out.host_is_ip_literal = true;
    rest = auth.substr(close + 1);
  } else {
    size_t colon = auth.find(':');
    std::string_view name = auth.substr(0, colon);
    if (!valid_component(name, "")) return false;
    out.host = std::string(name);
    rest = colon == std::string_view::npos ? std::string_view() : auth.substr(colon);
  }

  if (rest.empty()) return true;
  if (rest[0] != ':') return false;
  std::string_view digits = rest.substr(1);
  if (digits.empty()) return false;
  uint64_t value = 0;
  for (char c : digits) {
    if (!is_digit(c)) return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
    if (value > static_cast<uint64_t>(INT_MAX)) return false;
  }
  out.port = std::string(digits);
  return true;
}

}  // namespace

Result<UriParts> split_uri(std::string_view text) {
  UriParts out;
  std::string_view rest = text;

  // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ':'.
  if (!rest.empty() && is_alpha(rest[0])) {
    size_t i = 1;
    while (i < rest.size() &&
           (is_alpha(rest[i]) || is_digit(rest[i]) || rest[i] == '+' ||
            rest[i] == '-' || rest[i] == '.'))
      ++i;
    if (i < rest.size() && rest[i] == ':') {
      out.scheme = std::string(rest.substr(0, i));
      rest.remove_prefix(i + 1);
    }
  }

  if (rest.substr(0, 2) == "//") {
    rest.remove_prefix(2);
    size_t end = rest.find_first_of("/?#");
    if (!split_authority(rest.substr(0, end), out)) return parse_error(text);
    out.has_authority = true;
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  }

  size_t path_end = rest.find_first_of("?#");
  std::string_view path = rest.substr(0, path_end);
  if (!valid_component(path, ":@/")) return parse_error(text);
  // A relative reference's first segment may not contain ':' (it would be
  // read as a scheme), which is how "1nbd://x" ends up unparseable.
  if (out.scheme.empty() && !out.has_authority &&
      path.substr(0, path.find('/')).find(':') != std::string_view::npos)
    return parse_error(text);
  out.path = std::string(path);
  rest = path_end == std::string_view::npos ? std::string_view() : rest.substr(path_end);

  if (!rest.empty() && rest[0] == '?') {
    size_t q_end = rest.find('#');
    std::string_view query = rest.substr(1, q_end == std::string_view::npos ? q_end : q_end - 1);
    if (!valid_component(query, ":@/?")) return parse_error(text);
    out.query = std::string(query);
    rest = q_end == std::string_view::npos ? std::string_view() : rest.substr(q_end);
  }

  if (!rest.empty()) {
    // Only '#' can be left here; a second '#' inside the fragment is invalid.
    std::string_view fragment = rest.substr(1);
    if (!valid_component(fragment, ":@/?")) return parse_error(text);
    out.fragment = std::string(fragment);
  }
  return out;
}

std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    int hi = hex_value(text[i + 1]), lo = hex_value(text[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string percent_encode(std::string_view text, std::string_view literal) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (is_alpha(c) || is_digit(c) || literal.find(c) != std::string_view::npos) {
      out.push_back(c);
    } else {
      auto b = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(kHex[b >> 4]);
      out.push_back(kHex[b & 0xf]);
    }
  }
  return out;
}

}  // namespace duplexnbd::uri
