// SPDX-License-Identifier: LGPL-2.1-or-later
// Spawning and reaping server subprocesses; the nbd_connect_command socketpair.
#include "transport/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

extern char **environ;

namespace duplexnbd::transport {

namespace {

// --- Async-signal-safe helpers for the child. ---

void write_all(int fd, const char *s) {
  size_t len = std::strlen(s);
  while (len > 0) {
    ssize_t r = ::write(fd, s, len);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return;
    s += r;
    len -= static_cast<size_t>(r);
  }
}

// strerror() may consult the locale and allocate; strerrordesc_np returns a
// static string and so is safe here.
const char *error_text(int e) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char *s = strerrordesc_np(e);
  if (s != nullptr)
    return s;
#endif
  (void)e;
  return "unknown error";
}

// "<program>: <what>: <error>" on stderr, as perror would, without malloc.
void report(const char *program, const char *what, int e) {
  write_all(2, program);
  write_all(2, ": ");
  if (what != nullptr && *what != '\0') {
    write_all(2, what);
    write_all(2, ": ");
  }
  write_all(2, error_text(e));
  write_all(2, "\n");
}

void reset_signals() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP)
      continue;
    ::sigaction(sig, &sa, nullptr);  // fails harmlessly for libc-reserved signals
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

// Errors after which execvp keeps searching PATH.
bool try_next_candidate(int e) {
  switch (e) {
  case ENOENT:
  case ENOTDIR:
  case ESTALE:
  case ENODEV:
  case ETIMEDOUT:
    return true;
  default:
    return false;
  }
}

}  // namespace

// --- ExecPlan ---

Status ExecPlan::prepare(const std::vector<std::string> &argv, std::vector<std::string> env) {
  if (argv.empty())
    return make_error(EINVAL, "missing command name in argv list");

  argv_storage_ = argv;
  argv_.clear();
  for (std::string &s : argv_storage_)
    argv_.push_back(s.data());
  argv_.push_back(nullptr);

  candidates_.clear();
  const std::string &file = argv_storage_[0];
  if (file.empty()) {
    // Leave no candidate: the child reports ENOENT, as execvp("") does.
  } else if (file.find('/') != std::string::npos) {
    candidates_.push_back(file);
  } else {
    // Like execvp, search the PATH of this process, not of the new environment.
    std::string path;
    if (const char *p = std::getenv("PATH"); p != nullptr) {
      path = p;
    } else {
      size_t n = ::confstr(_CS_PATH, nullptr, 0);
      if (n > 0) {
        path.resize(n);
        ::confstr(_CS_PATH, path.data(), n);
        path.resize(n - 1);
      } else {
        path = "/bin:/usr/bin";
      }
    }
    size_t start = 0;
    for (;;) {
      size_t colon = path.find(':', start);
      std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      // An empty PATH element means the current directory.
      candidates_.push_back((dir.empty() ? std::string(".") : dir) + "/" + file);
      if (colon == std::string::npos)
        break;
      start = colon + 1;
    }
  }

  sh_argv_.clear();
  sh_argv_.push_back(const_cast<char *>("/bin/sh"));
  sh_argv_.push_back(nullptr);  // the script's path, filled in by the child
  for (size_t i = 1; i < argv_storage_.size(); ++i)
    sh_argv_.push_back(argv_storage_[i].data());
  sh_argv_.push_back(nullptr);

  env_storage_ = std::move(env);
  env_.clear();
  if (!env_storage_.empty()) {
    for (std::string &s : env_storage_)
      env_.push_back(s.data());
    env_.push_back(nullptr);
  }
  return {};
}

void ExecPlan::exec_in_child() const noexcept {
  char *const *envp = env_.empty() ? environ : env_.data();
  bool saw_eacces = false;
  int e = ENOENT;
  for (const std::string &candidate : candidates_) {
    ::execve(candidate.c_str(), argv_.data(), envp);
    e = errno;
    if (e == ENOEXEC) {
      sh_argv_[1] = const_cast<char *>(candidate.c_str());
      ::execve("/bin/sh", sh_argv_.data(), envp);
      e = errno;
      break;
    }
    if (e == EACCES) {
      saw_eacces = true;
      continue;
    }
    if (!try_next_candidate(e))
      break;
  }
  if (try_next_candidate(e) && saw_eacces)
    e = EACCES;
  report(argv_[0], nullptr, e);
  // The shell's conventions: 127 for "command not found", 126 otherwise.
  ::_exit(e == ENOENT ? 127 : 126);
}

// --- Subprocess ---

Subprocess::Subprocess(Subprocess &&other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      reaped_(std::exchange(other.reaped_, false)),
      status_(other.status_),
      terminate_on_destroy_(std::exchange(other.terminate_on_destroy_, false)) {}

Subprocess &Subprocess::operator=(Subprocess &&other) noexcept {
  if (this != &other) {
    Subprocess old(std::move(*this));  // reaps our current child, if any
    pid_ = std::exchange(other.pid_, -1);
    reaped_ = std::exchange(other.reaped_, false);
    status_ = other.status_;
    terminate_on_destroy_ = std::exchange(other.terminate_on_destroy_, false);
  }
  return *this;
}

Subprocess::~Subprocess() {
  if (pid_ <= 0 || reaped_)
    return;
  if (terminate_on_destroy_)
    ::kill(pid_, SIGTERM);
  (void)wait();
}

Result<Subprocess> Subprocess::spawn(const ExecPlan &plan, ChildSetup setup, void *context) {
  pid_t pid = ::fork();
  if (pid == -1)
    return errno_error("fork");
  if (pid == 0) {
    reset_signals();
    if (setup != nullptr) {
      const char *what = "";
      if (int e = setup(context, &what); e != 0) {
        report(plan.program(), what, e);
        ::_exit(126);
      }
    }
    plan.exec_in_child();
  }
  return Subprocess(pid);
}

Status Subprocess::kill(int signum) {
  if (pid_ <= 0 || reaped_)
    return make_error(ESRCH, "no subprocess exists");
  if (signum < 0 || signum >= NSIG)
    return make_error(EINVAL, "invalid signal number");
  if (::kill(pid_, signum == 0 ? SIGTERM : signum) == -1)
    return errno_error("kill");
  return {};
}

Result<int> Subprocess::wait() {
  if (pid_ <= 0)
    return make_error(ECHILD, "no subprocess exists");
  while (!reaped_) {
    int status;
    pid_t r = ::waitpid(pid_, &status, 0);
    if (r == pid_) {
      reaped_ = true;
      status_ = status;
    } else if (r == -1 && errno != EINTR) {
      // ECHILD: someone else reaped it (e.g. SIGCHLD is SIG_IGN); the pid is
      // no longer ours to signal either way.
      Error e = errno_error("waitpid");
      reaped_ = true;
      return e;
    }
  }
  return status_;
}

Result<std::optional<int>> Subprocess::try_wait() {
  if (pid_ <= 0)
    return make_error(ECHILD, "no subprocess exists");
  if (reaped_)
    return std::optional<int>(status_);
  for (;;) {
    int status;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == 0)
      return std::optional<int>();
    if (r == pid_) {
      reaped_ = true;
      status_ = status;
      return std::optional<int>(status_);
    }
    if (errno != EINTR) {
      Error e = errno_error("waitpid");
      reaped_ = true;
      return e;
    }
  }
}

// --- nbd_connect_command ---

namespace {

int command_child_setup(void *context, const char **what) {
  int fd = *static_cast<const int *>(context);
  // Move the socket out of the way first: if it happened to be fd 0 or 1,
  // dup2 onto itself would be a no-op that leaves close-on-exec set.
  int s = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (s == -1) {
    *what = "fcntl";
    return errno;
  }
  if (::dup2(s, STDIN_FILENO) == -1 || ::dup2(s, STDOUT_FILENO) == -1) {
    *what = "dup2";
    return errno;
  }
  return 0;
}

}  // namespace

Result<CommandConnection> connect_command(const std::vector<std::string> &argv) {
  ExecPlan plan;
  if (Status s = plan.prepare(argv); !s)
    return s.take_error();

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
    return errno_error("socketpair");
  FileDescriptor ours(sv[0]);
  FileDescriptor theirs(sv[1]);
  // Only our end: the server expects ordinary blocking stdin/stdout.
  int flags = ::fcntl(ours.get(), F_GETFL);
  if (flags == -1 || ::fcntl(ours.get(), F_SETFL, flags | O_NONBLOCK) == -1)
    return errno_error("fcntl");

  int child_fd = theirs.get();
  Result<Subprocess> child = Subprocess::spawn(plan, command_child_setup, &child_fd);
  if (!child)
    return child.take_error();
  theirs.reset();

  CommandConnection c;
  c.process = std::move(child.value());
  c.socket = std::move(ours);
  return c;
}

}  // namespace duplexnbd::transport
