// SPDX-License-Identifier: LGPL-2.1-or-later
// Private socket directory, LISTEN_* environment and fd 3 hand-over for socket activation.
#include "transport/socket_activation.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "transport/file_descriptor.h"

extern char **environ;

namespace duplexnbd::transport {

namespace {

// Fixed by the systemd protocol: passed sockets start at fd 3.
constexpr int kFirstListenFd = 3;

constexpr char kListenPidPrefix[] = "LISTEN_PID=";
// Room for any pid_t in decimal.
constexpr size_t kPidDigits = 20;

// Index of the LISTEN_PID entry in the prepared environment.
constexpr size_t kListenPidIndex = 0;

struct ChildContext {
  int listen_fd;
  char *listen_pid_value;  // kPidDigits + 1 bytes inside the exec plan's env
};

// Async-signal-safe decimal formatting (snprintf is not).
void format_pid(char *out, pid_t pid) {
  char digits[kPidDigits];
  size_t n = 0;
  unsigned long long v = static_cast<unsigned long long>(pid);
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && n < kPidDigits);
  for (size_t i = 0; i < n; ++i)
    out[i] = digits[n - 1 - i];
  out[n] = '\0';
}

int activation_child_setup(void *context, const char **what) {
  auto *ctx = static_cast<ChildContext *>(context);
  if (ctx->listen_fd == kFirstListenFd) {
    // dup2 onto itself would not clear close-on-exec, so do it by hand.
    int flags = ::fcntl(kFirstListenFd, F_GETFD);
    if (flags == -1 || ::fcntl(kFirstListenFd, F_SETFD, flags & ~FD_CLOEXEC) == -1) {
      *what = "fcntl";
      return errno;
    }
  } else if (::dup2(ctx->listen_fd, kFirstListenFd) == -1) {
    *what = "dup2";
    return errno;
  }
  // The original descriptor still has close-on-exec set, so exec drops it.
  format_pid(ctx->listen_pid_value, ::getpid());
  return 0;
}

bool is_activation_variable(const char *entry) {
  for (const char *name : {"LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES="}) {
    if (std::strncmp(entry, name, std::strlen(name)) == 0)
      return true;
  }
  return false;
}

}  // namespace

SocketActivation::SocketActivation(SocketActivation &&other) noexcept
    : directory_(std::exchange(other.directory_, std::string())),
      socket_path_(std::exchange(other.socket_path_, std::string())),
      address_(other.address_),
      process_(std::move(other.process_)) {}

SocketActivation &SocketActivation::operator=(SocketActivation &&other) noexcept {
  if (this != &other) {
    SocketActivation old(std::move(*this));
    directory_ = std::exchange(other.directory_, std::string());
    socket_path_ = std::exchange(other.socket_path_, std::string());
    address_ = other.address_;
    process_ = std::move(other.process_);
  }
  return *this;
}

SocketActivation::~SocketActivation() {
  remove_files();
  // process_ is destroyed next: SIGTERM, then waitpid.
}

void SocketActivation::remove_files() {
  if (!socket_path_.empty())
    ::unlink(socket_path_.c_str());
  if (!directory_.empty())
    ::rmdir(directory_.c_str());
  socket_path_.clear();
  directory_.clear();
}

Result<SocketActivation> SocketActivation::start(const std::vector<std::string> &argv,
                                                 const std::string &socket_name) {
  // Build the environment first: the LISTEN_* variables at the front (so the
  // child can find LISTEN_PID by index), then ours minus any inherited
  // LISTEN_* that would confuse the server.  LISTEN_FDNAMES is always set so
  // that a stale inherited value cannot leak through; "unknown" is what
  // sd_listen_fds_with_names reports for an unnamed socket anyway.
  std::vector<std::string> env;
  env.push_back(std::string(kListenPidPrefix) + std::string(kPidDigits, 'x'));
  env.push_back("LISTEN_FDS=1");
  env.push_back("LISTEN_FDNAMES=" + (socket_name.empty() ? std::string("unknown") : socket_name));
  for (char **e = environ; e != nullptr && *e != nullptr; ++e) {
    if (!is_activation_variable(*e))
      env.emplace_back(*e);
  }

  ExecPlan plan;
  if (Status s = plan.prepare(argv, std::move(env)); !s)
    return s.take_error();

  SocketActivation sa;
  // /tmp rather than $TMPDIR: the socket path must fit in sun_path.
  char dir_template[] = "/tmp/duplexnbdXXXXXX";
  if (::mkdtemp(dir_template) == nullptr)
    return errno_error("mkdtemp");
  sa.directory_ = dir_template;
  std::string path = sa.directory_ + "/sock";

  FileDescriptor listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener)
    return errno_error("socket");
  sa.address_.sun_family = AF_UNIX;
  std::memcpy(sa.address_.sun_path, path.c_str(), path.size() + 1);
  if (::bind(listener.get(), reinterpret_cast<const struct sockaddr *>(&sa.address_),
             sizeof sa.address_) == -1)
    return errno_error("bind: " + path);
  sa.socket_path_ = path;
  if (::listen(listener.get(), SOMAXCONN) == -1)
    return errno_error("listen");

  ChildContext ctx{listener.get(), plan.env_entry(kListenPidIndex) + std::strlen(kListenPidPrefix)};
  Result<Subprocess> child = Subprocess::spawn(plan, activation_child_setup, &ctx);
  if (!child)
    return child.take_error();
  // The server holds the listening socket now; our copy is not needed.
  listener.reset();
  sa.process_ = std::move(child.value());
  sa.process_.set_terminate_on_destroy(true);
  return sa;
}

}  // namespace duplexnbd::transport
