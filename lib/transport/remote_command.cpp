// SPDX-License-Identifier: LGPL-2.1-or-later
// Quoting for command lines that ssh hands to the remote user's shell (nbd+ssh URIs).
#include "transport/remote_command.h"

#include <cerrno>

namespace duplexnbd::transport {
namespace {

bool plain(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '/' || c == '-';
}

bool control(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

}  // namespace

Result<std::string> shell_quote(std::string_view word) {
  bool all_plain = !word.empty();
  for (char c : word) {
    if (c == '\0') return Error{EINVAL, "a NUL byte cannot be passed to a remote command"};
    if (control(c))
      return Error{EINVAL, "control characters cannot be passed safely to a remote shell"};
    all_plain = all_plain && plain(c);
  }
  if (all_plain) return std::string(word);

  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else if (c == '\\') {
      out += "'\\\\'";
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

Result<std::string> shell_command_line(const std::vector<std::string> &words) {
  std::string line;
  for (const std::string &w : words) {
    Result<std::string> q = shell_quote(w);
    if (!q) return q.take_error();
    if (!line.empty()) line += ' ';
    line += *q;
  }
  return line;
}

}  // namespace duplexnbd::transport
