// SPDX-License-Identifier: LGPL-2.1-or-later
// Tests for lib/transport/remote_command: shell quoting of ssh's remote command, checked against real shells.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "transport/remote_command.h"

namespace duplexnbd::transport {
namespace {

// Words a URI could carry that mean something to a shell.
const std::vector<std::string> kNastyWords = {
    "/tmp/s;touch /tmp/pwned",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "a'b",
    "'",
    "''",
    "'; touch /tmp/pwned; '",
    "\\",
    "a\\'b",
    "\\'; touch /tmp/pwned; #",
    "a b  c",
    " leading and trailing ",
    "*",
    "/tmp/*.sock",
    "~root",
    "=ls",
    "$HOME",
    "${HOME}",
    "a&b|c>d<e",
    "!!",
    "\"double\"",
    "#comment",
    "x=y",
    "{a,b}",
    "[ab]",
    "%1",
    "caf\xc3\xa9/\xe2\x9c\x93",  // UTF-8 passes through untouched
    "\x80\xff",                  // so do bytes that are not UTF-8
};

// Runs `shell -c "printf '%s\0' LINE"` and splits its output at the NULs: the words the
// shell itself made of LINE.
std::vector<std::string> words_as_parsed_by(const char *shell, const std::string &line) {
  const std::string script = "printf '%s\\0' " + line;
  int out[2];
  if (::pipe(out) != 0) {
    ADD_FAILURE() << "pipe";
    return {};
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    ::execl(shell, shell, "-c", script.c_str(), static_cast<char *>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) text.append(buf, size_t(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << shell << " -c " << script;
  std::vector<std::string> words;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\0') {
      words.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return words;
}

TEST(ShellQuote, PlainWordsStayBare) {
  for (const char *w : {"nc", "-U", "localhost", "10809", "/run/nbd.sock", "a_b-c.d"}) {
    Result<std::string> q = shell_quote(w);
    ASSERT_TRUE(q) << w;
    EXPECT_EQ(*q, w);
  }
}

TEST(ShellQuote, EverythingElseIsSingleQuoted) {
  EXPECT_EQ(*shell_quote(""), "''");
  EXPECT_EQ(*shell_quote("a b"), "'a b'");
  EXPECT_EQ(*shell_quote("$(x)"), "'$(x)'");
  EXPECT_EQ(*shell_quote("a'b"), "'a'\\''b'");
  // Backslash goes outside the quotes, so that fish cannot read \' as a quote.
  EXPECT_EQ(*shell_quote("a\\b"), "'a'\\\\'b'");
  EXPECT_EQ(*shell_quote("~"), "'~'");
  EXPECT_EQ(*shell_quote("=ls"), "'=ls'");
}

TEST(ShellQuote, RefusesNulAndControlCharacters) {
  for (std::string w : {std::string("a\0b", 3), std::string("\0", 1), std::string("a\nb"),
                        std::string("a\rb"), std::string("\t"), std::string("x\x1b[0m"),
                        std::string("\x7f"), std::string("/tmp/s\ntouch /tmp/pwned")}) {
    Result<std::string> q = shell_quote(w);
    ASSERT_FALSE(q) << "accepted a word with a control character";
    EXPECT_EQ(q.error().errnum, EINVAL);
  }
}

// The property that matters: whatever the word, a POSIX shell reads it back as exactly
// that one word, with nothing run or expanded.  Checked with dash (Debian's /bin/sh)
// and bash.
TEST(ShellQuote, ShellsReadEachWordBackUnchanged) {
  for (const char *shell : {"/bin/sh", "/bin/bash"}) {
    if (::access(shell, X_OK) != 0) continue;
    SCOPED_TRACE(shell);
    for (const std::string &w : kNastyWords) {
      Result<std::string> q = shell_quote(w);
      ASSERT_TRUE(q) << w;
      EXPECT_EQ(words_as_parsed_by(shell, *q), std::vector<std::string>{w}) << "quoted: " << *q;
    }
    std::vector<std::string> all = {"nc", "-U"};
    all.insert(all.end(), kNastyWords.begin(), kNastyWords.end());
    Result<std::string> line = shell_command_line(all);
    ASSERT_TRUE(line);
    EXPECT_EQ(words_as_parsed_by(shell, *line), all) << "line: " << *line;
  }
}

TEST(ShellCommandLine, JoinsQuotedWordsWithSpaces) {
  Result<std::string> line = shell_command_line({"nc", "-U", "/run/my nbd.sock"});
  ASSERT_TRUE(line);
  EXPECT_EQ(*line, "nc -U '/run/my nbd.sock'");
  EXPECT_EQ(*shell_command_line({}), "");
}

TEST(ShellCommandLine, FailsOnTheFirstRefusedWord) {
  Result<std::string> line = shell_command_line({"nc", "-U", "/tmp/a\nb"});
  ASSERT_FALSE(line);
  EXPECT_EQ(line.error().errnum, EINVAL);
}

}  // namespace
}  // namespace duplexnbd::transport
