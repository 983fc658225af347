// SPDX-License-Identifier: LGPL-2.1-or-later
// Server subprocesses: fork/exec without allocating in the child, and reaping.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "transport/file_descriptor.h"

namespace duplexnbd::transport {

// Everything execvp would compute (the PATH search, the argv and envp
// arrays), worked out before fork: in a multithreaded parent the child may
// only make async-signal-safe calls, so it must not allocate.
// Not movable, because the prepared arrays point into its own storage.
class ExecPlan {
public:
  ExecPlan() = default;
  ExecPlan(const ExecPlan &) = delete;
  ExecPlan &operator=(const ExecPlan &) = delete;

  // `env` empty means the child inherits the environment as it is at exec.
  Status prepare(const std::vector<std::string> &argv, std::vector<std::string> env = {});

  // For the parts of the environment that can only be known in the child
  // (LISTEN_PID): the writable storage of env entry `index`.
  char *env_entry(size_t index) { return env_storage_[index].data(); }

  // In the child: execs each PATH candidate in turn like execvp does, then
  // reports the failure on stderr and exits 127 (not found) or 126.
  // Async-signal-safe.
  [[noreturn]] void exec_in_child() const noexcept;

  const char *program() const { return argv_[0]; }

private:
  std::vector<std::string> argv_storage_;
  std::vector<char *> argv_;
  std::vector<std::string> candidates_;  // full paths to try, in order
  // argv for running a candidate that turns out to be a script without a #!
  // line (ENOEXEC) through /bin/sh, as execvp does; slot 1 is filled in the
  // child with the candidate's path.
  mutable std::vector<char *> sh_argv_;
  std::vector<std::string> env_storage_;
  std::vector<char *> env_;
};

// Runs in the child between fork and exec.  Must be async-signal-safe.
// Returns 0, or an errno value with *what naming the failed step.
using ChildSetup = int (*)(void *context, const char **what);

// A child process, reaped when this object is destroyed.
class Subprocess {
public:
  Subprocess() = default;
  Subprocess(const Subprocess &) = delete;
  Subprocess &operator=(const Subprocess &) = delete;
  Subprocess(Subprocess &&other) noexcept;
  Subprocess &operator=(Subprocess &&other) noexcept;
  // Sends SIGTERM first if terminate_on_destroy is set, then blocks in waitpid
  // (libnbd likewise waits for its server when the handle is closed).  So for a
  // server that exits on EOF, close its socket before destroying this.
  ~Subprocess();

  // fork + setup + exec.  In the child all signal dispositions are reset to
  // default and the signal mask is cleared, since ignored signals and the
  // mask survive exec and a server must not inherit, e.g., our SIG_IGN for
  // SIGPIPE.
  static Result<Subprocess> spawn(const ExecPlan &plan, ChildSetup setup = nullptr,
                                  void *context = nullptr);

  // -1 when there is no child.  Stays valid after the child has been reaped.
  pid_t pid() const { return pid_; }
  bool reaped() const { return reaped_; }

  // Signal 0 means SIGTERM (nbd_kill_subprocess).  Refused once reaped,
  // because the pid may have been reused by then.
  Status kill(int signum);

  // Blocks until the child exits; returns its waitpid status.
  Result<int> wait();
  // The waitpid status if the child has exited, std::nullopt if it is running.
  Result<std::optional<int>> try_wait();

  void set_terminate_on_destroy(bool terminate) { terminate_on_destroy_ = terminate; }

private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}

  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  bool terminate_on_destroy_ = false;
};

// nbd_connect_command: the server runs with one end of a socketpair as both
// stdin and stdout.  Members are destroyed in reverse order, so `socket`
// closes first and the server sees EOF before `process` waits for it.
struct CommandConnection {
  Subprocess process;
  FileDescriptor socket;  // non-blocking, close-on-exec
};

Result<CommandConnection> connect_command(const std::vector<std::string> &argv);

}  // namespace duplexnbd::transport
