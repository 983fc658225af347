// SPDX-License-Identifier: LGPL-2.1-or-later
// Quoting for command lines that ssh hands to the remote user's shell (nbd+ssh URIs).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace duplexnbd::transport {

// ssh does not pass its remote command as an argv: it joins its words with spaces and
// the remote sshd runs the result with the user's login shell (`$SHELL -c LINE`).  So
// every word that came from outside (a URI) must reach that shell as one literal word.
//
// One word, quoted for a POSIX shell (sh, dash, bash, ksh, zsh): returned bare when it
// is made only of characters no shell treats specially ([A-Za-z0-9_./-], not empty),
// else inside single quotes, where nothing is special, with each ' written as '\''.
// A backslash is also written outside the quotes, as \\ : POSIX shells read '\\' and
// \\ alike, but fish reads \' inside single quotes as an escaped quote, which would let
// the rest of the word escape its quotes there.
//
// Refused with EINVAL (nothing can be quoted to survive them):
//   - NUL: an argv word ends at the first NUL, so the remote side would see a
//     different (shorter) word than the caller gave;
//   - other control characters (0x01-0x1f, 0x7f), newline among them: csh and tcsh
//     end a command at a newline even inside quotes, so the rest of the word would
//     run as a command of its own there; no file name the caller means is worth it.
Result<std::string> shell_quote(std::string_view word);

// The words, each through shell_quote, joined by single spaces: one line for ssh to
// pass on.  Fails as shell_quote does for the first word it refuses.
Result<std::string> shell_command_line(const std::vector<std::string> &words);

}  // namespace duplexnbd::transport
