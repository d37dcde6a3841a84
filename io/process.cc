// io/process.cc — weft::Process, and the C library's process calls made in
// ULTs (weft/process.h).
//
// Waiting: a ULT that waits for a child has its worker's ring do the
// waitid (IORING_OP_WAITID, Linux 6.7) and parks until it completes. Where
// the ring lacks that opcode (older kernels, the epoll backend), it polls
// the child's pidfd through the io engine (readable once the child exits)
// and then reaps it with a WNOHANG wait. What neither can wait for (on the
// fallback: any child, pid -1, or a process group; stopped or continued
// children; wait4 with rusage) and every call that blocks for another
// process's sake (system, popen, pclose, posix_spawn's vfork window) runs
// on a helper thread (io/offload.h) while the ULT parks.
//
// The interposed C functions keep glibc's contract (return values, errno);
// outside a ULT (and inside weft::blocking(), which counts as outside)
// they are glibc's own. weft's own code calls glibc through the pointers
// below, never through these exports.
#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "io/engine.h"
#include "io/offload.h"
#include "runtime/libc_next.h"
#include "runtime/park.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"
#include "weft/process.h"

extern char** environ;

namespace weft {
namespace {

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

// glibc's own functions (the next definitions after ours).
template <class F>
F next(const char* name) {
  return rt::libc_next<F>(name);
}

struct Libc {
  int (*system)(const char*);
  FILE* (*popen)(const char*, const char*);
  int (*pclose)(FILE*);
  int (*posix_spawn)(pid_t*, const char*, const posix_spawn_file_actions_t*, const posix_spawnattr_t*,
                     char* const[], char* const[]);
  int (*posix_spawnp)(pid_t*, const char*, const posix_spawn_file_actions_t*, const posix_spawnattr_t*,
                      char* const[], char* const[]);
  pid_t (*wait4)(pid_t, int*, int, struct rusage*);
  int (*waitid)(idtype_t, id_t, siginfo_t*, int);
};

const Libc& libc() {
  static const Libc l = {
      next<int (*)(const char*)>("system"),
      next<FILE* (*)(const char*, const char*)>("popen"),
      next<int (*)(FILE*)>("pclose"),
      next<decltype(Libc::posix_spawn)>("posix_spawn"),
      next<decltype(Libc::posix_spawnp)>("posix_spawnp"),
      next<pid_t (*)(pid_t, int*, int, struct rusage*)>("wait4"),
      next<int (*)(idtype_t, id_t, siginfo_t*, int)>("waitid"),
  };
  return l;
}

bool in_ult() { return this_ult::in_ult(); }

// One of glibc's calls that block for another process's sake, made as a
// ULT may make it: plainly outside a ULT, else on an offload helper thread
// while the ULT parks (offload always runs it, and leaves errno as the call
// left it).
template <class F>
auto offloaded(F call) -> decltype(call()) {
  if (!in_ult()) return call();
  decltype(call()) r{};
  io_internal::offload([&] { r = call(); });
  return r;
}

int pidfd_open(pid_t pid) { return static_cast<int>(sys::raw_syscall(SYS_pidfd_open, pid, 0)); }

// Parks until the pidfd is readable (the child has exited) or the deadline.
// 0, -ETIMEDOUT or -errno.
int wait_exit(int pidfd, io::Deadline d) {
  for (;;) {
    int w = io::poll(pidfd, POLLIN, d);
    if (w >= 0) return 0;
    if (w != -EINTR) return w;
  }
}

// A wait status (waitpid's int) from waitid's siginfo.
int wait_status(const siginfo_t& si) {
  switch (si.si_code) {
    case CLD_EXITED: return (si.si_status & 0xff) << 8;
    case CLD_KILLED: return si.si_status & 0x7f;
    case CLD_DUMPED: return (si.si_status & 0x7f) | 0x80;
    case CLD_STOPPED: case CLD_TRAPPED: return ((si.si_status & 0xff) << 8) | 0x7f;
    case CLD_CONTINUED: return 0xffff;
  }
  return 0;
}

// waitpid/wait4 in a ULT, for a blocking call (no WNOHANG).
pid_t ult_wait4(pid_t pid, int* status, int options, struct rusage* ru) {
  const Libc& c = libc();
  // The ring waits (IORING_OP_WAITID) for any kind of wait but stop
  // events and rusage, which waitid cannot report the wait4 way.
  if (ru == nullptr && !(options & (WUNTRACED | WCONTINUED))) {
    idtype_t type = pid > 0 ? P_PID : pid == -1 ? P_ALL : P_PGID;
    id_t id = pid > 0 ? static_cast<id_t>(pid) : pid < -1 ? static_cast<id_t>(-pid) : 0;
    siginfo_t si;
    int r = io_internal::uring_waitid(type, static_cast<int>(id), &si,
                                      WEXITED | (options & (__WALL | __WCLONE | __WNOTHREAD)), {});
    if (r == 0) {
      if (status != nullptr) *status = wait_status(si);
      return si.si_pid;
    }
    if (r != -ENOSYS) {
      errno = -r;
      return -1;
    }
  }
  int fd = -1;
  if (pid > 0 && !(options & (WUNTRACED | WCONTINUED))) fd = pidfd_open(pid);
  if (fd < 0) {
    // No pidfd for this wait (any child, a group, stop events, or no such
    // process: glibc then answers ECHILD at once): a helper waits.
    pid_t r = -1;
    io_internal::offload([&] { r = c.wait4(pid, status, options, ru); });
    return r;
  }
  for (;;) {
    pid_t r = c.wait4(pid, status, options | WNOHANG, ru);
    if (r != 0) {
      int e = errno;
      io::close(fd);
      errno = e;
      return r;
    }
    if (int w = wait_exit(fd, {}); w < 0) {
      io::close(fd);
      errno = -w;
      return -1;
    }
  }
}

std::string errno_text(int e) { return absl::StrCat(strerror(e), " (errno ", e, ")"); }

absl::Status spawn_error(int e, const std::string& prog) {
  std::string msg = absl::StrCat("spawn ", prog, ": ", errno_text(e));
  switch (e) {
    case ENOENT: return absl::NotFoundError(msg);
    case EACCES: case EPERM: return absl::PermissionDeniedError(msg);
    case EAGAIN: case ENOMEM: return absl::ResourceExhaustedError(msg);
    case EINVAL: case E2BIG: return absl::InvalidArgumentError(msg);
    default: return absl::InternalError(msg);
  }
}

const char* signal_name(int sig) {
  const char* n = sigabbrev_np(sig);
  return n != nullptr ? n : "?";
}

}  // namespace

// --- ExitStatus ---------------------------------------------------------------

ExitStatus ExitStatus::FromWaitStatus(int status) {
  ExitStatus s;
  if (WIFEXITED(status)) {
    s.exited = true;
    s.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    s.signal = WTERMSIG(status);
    s.core_dumped = WCOREDUMP(status);
  }
  return s;
}

std::string ExitStatus::ToString() const {
  if (exited) return absl::StrCat("exited ", code);
  return absl::StrCat("killed by SIG", signal_name(signal), core_dumped ? " (core dumped)" : "");
}

// --- Process ------------------------------------------------------------------

Process::Process(Process&& o) noexcept : pid_(std::exchange(o.pid_, 0)), pidfd_(std::exchange(o.pidfd_, -1)) {}

Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    if (pidfd_ >= 0) sys::raw_syscall(SYS_close, pidfd_);
    pid_ = std::exchange(o.pid_, 0);
    pidfd_ = std::exchange(o.pidfd_, -1);
  }
  return *this;
}

Process::~Process() {
  if (pidfd_ >= 0) sys::raw_syscall(SYS_close, pidfd_);
}

absl::StatusOr<Process> Process::spawn(const ProcessOptions& o) {
  if (o.argv.empty() || o.argv[0].empty()) return absl::InvalidArgumentError("Process::spawn: argv is empty");
  auto has_nul = [](const std::string& s) { return s.find('\0') != std::string::npos; };
  std::vector<char*> argv, envp;
  for (const std::string& a : o.argv) {
    if (has_nul(a)) return absl::InvalidArgumentError("Process::spawn: an argument contains a NUL byte");
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);
  if (o.env) {
    for (const std::string& e : *o.env) {
      if (has_nul(e)) return absl::InvalidArgumentError("Process::spawn: an environment entry contains a NUL byte");
      envp.push_back(const_cast<char*>(e.c_str()));
    }
    envp.push_back(nullptr);
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  struct Cleanup {
    posix_spawn_file_actions_t* fa;
    ~Cleanup() { posix_spawn_file_actions_destroy(fa); }
  } cleanup{&fa};
  int r = 0;
  const int src[3] = {o.stdin_fd, o.stdout_fd, o.stderr_fd};
  for (int i = 0; i < 3 && r == 0; ++i)
    if (src[i] >= 0) r = posix_spawn_file_actions_adddup2(&fa, src[i], i);
  if (r == 0 && !o.cwd.empty()) r = posix_spawn_file_actions_addchdir_np(&fa, o.cwd.c_str());
  if (r != 0) return spawn_error(r, o.argv[0]);

  const Libc& c = libc();
  pid_t pid = 0;
  char* const* env = o.env ? envp.data() : environ;
  io_internal::offload([&] {
    r = o.search_path ? c.posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), env)
                      : c.posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), env);
  });
  if (r != 0) return spawn_error(r, o.argv[0]);
  // The child is ours and not yet reaped: its pid cannot be reused, so the
  // pidfd names it. Without pidfds (Linux < 5.3) waits go to a helper.
  int fd = pidfd_open(pid);
  return Process(pid, fd < 0 ? -1 : fd);
}

absl::StatusOr<ExitStatus> Process::wait(io::Deadline d) {
  if (pid_ == 0) return absl::FailedPreconditionError("Process::wait: no child (empty, or already waited for)");
  const Libc& c = libc();
  {
    // The ring waits and reaps (IORING_OP_WAITID, Linux 6.7), in a ULT.
    siginfo_t si;
    int r = io_internal::uring_waitid(P_PID, pid_, &si, WEXITED, d);
    if (r == -ETIMEDOUT) return absl::DeadlineExceededError(absl::StrCat("Process::wait(", pid_, "): deadline passed"));
    if (r == 0) {
      ExitStatus s = ExitStatus::FromWaitStatus(wait_status(si));
      pid_ = 0;
      if (pidfd_ >= 0) io::close(pidfd_);
      pidfd_ = -1;
      return s;
    }
    if (r != -ENOSYS) return absl::InternalError(absl::StrCat("waitid(", pid_, "): ", errno_text(-r)));
  }
  for (;;) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    long r = sys::raw_syscall(SYS_waitid, P_PID, pid_, reinterpret_cast<long>(&si), WEXITED | WNOHANG, 0);
    if (r < 0 && r != -EINTR) return absl::InternalError(absl::StrCat("waitid(", pid_, "): ", errno_text(static_cast<int>(-r))));
    if (r == 0 && si.si_pid == pid_) {
      ExitStatus s;
      if (si.si_code == CLD_EXITED) {
        s.exited = true;
        s.code = si.si_status;
      } else {
        s.signal = si.si_status;
        s.core_dumped = si.si_code == CLD_DUMPED;
      }
      pid_ = 0;
      if (pidfd_ >= 0) io::close(pidfd_);
      pidfd_ = -1;
      return s;
    }
    if (pidfd_ >= 0) {
      int w = wait_exit(pidfd_, d);
      if (w == -ETIMEDOUT) return absl::DeadlineExceededError(absl::StrCat("Process::wait(", pid_, "): deadline passed"));
      if (w < 0) return absl::InternalError(absl::StrCat("Process::wait(", pid_, "): poll: ", errno_text(-w)));
    } else if (!d.is_none()) {
      if (rt::monotonic_ns() >= d.ns()) return absl::DeadlineExceededError(absl::StrCat("Process::wait(", pid_, "): deadline passed"));
      this_ult::sleep_for(std::chrono::milliseconds(1));
    } else {
      int e = 0;
      io_internal::offload([&] {
        siginfo_t tmp;
        if (c.waitid(P_PID, static_cast<id_t>(pid_), &tmp, WEXITED | WNOWAIT) != 0) e = errno;
      });
      if (e != 0 && e != EINTR) return absl::InternalError(absl::StrCat("waitid(", pid_, "): ", errno_text(e)));
    }
  }
}

absl::Status Process::kill(int sig) {
  if (pid_ == 0) return absl::FailedPreconditionError("Process::kill: no child (empty, or already waited for)");
  if (sig < 0 || sig > SIGRTMAX) return absl::InvalidArgumentError(absl::StrCat("Process::kill: bad signal ", sig));
  long r = pidfd_ >= 0 ? sys::raw_syscall(SYS_pidfd_send_signal, pidfd_, sig, 0, 0)
                       : sys::raw_syscall(SYS_kill, pid_, sig);
  if (r < 0) return absl::InternalError(absl::StrCat("Process::kill(", pid_, ", ", sig, "): ", errno_text(static_cast<int>(-r))));
  return absl::OkStatus();
}

}  // namespace weft

// --- The C library's calls, made in ULTs ----------------------------------------

extern "C" {

int system(const char* command) {
  const weft::Libc& c = weft::libc();
  return weft::offloaded([&] { return c.system(command); });
}

FILE* popen(const char* command, const char* mode) {
  const weft::Libc& c = weft::libc();
  return weft::offloaded([&] { return c.popen(command, mode); });
}

int pclose(FILE* stream) {
  const weft::Libc& c = weft::libc();
  return weft::offloaded([&] { return c.pclose(stream); });
}

int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* fa, const posix_spawnattr_t* attr,
                char* const argv[], char* const envp[]) {
  const weft::Libc& c = weft::libc();
  return weft::offloaded([&] { return c.posix_spawn(pid, path, fa, attr, argv, envp); });
}

int posix_spawnp(pid_t* pid, const char* file, const posix_spawn_file_actions_t* fa, const posix_spawnattr_t* attr,
                 char* const argv[], char* const envp[]) {
  const weft::Libc& c = weft::libc();
  return weft::offloaded([&] { return c.posix_spawnp(pid, file, fa, attr, argv, envp); });
}

pid_t wait4(pid_t pid, int* status, int options, struct rusage* ru) {
  if (!weft::in_ult() || (options & WNOHANG)) return weft::libc().wait4(pid, status, options, ru);
  return weft::ult_wait4(pid, status, options, ru);
}

pid_t waitpid(pid_t pid, int* status, int options) { return wait4(pid, status, options, nullptr); }

pid_t wait(int* status) { return wait4(-1, status, 0, nullptr); }

int waitid(idtype_t idtype, id_t id, siginfo_t* info, int options) {
  const weft::Libc& c = weft::libc();
  if (!weft::in_ult() || (options & WNOHANG)) return c.waitid(idtype, id, info, options);
  if (int r = weft::io_internal::uring_waitid(idtype, static_cast<int>(id), info, options, {}); r != -ENOSYS) {
    if (r == 0) return 0;
    errno = -r;
    return -1;
  }
  int fd = -1;
  bool own_fd = false;
  if (!(options & (WSTOPPED | WCONTINUED))) {
    if (idtype == P_PID) {
      fd = weft::pidfd_open(static_cast<pid_t>(id));
      own_fd = fd >= 0;
    } else if (idtype == P_PIDFD) {
      fd = static_cast<int>(id);
    }
  }
  if (fd < 0) {
    int r = -1;
    weft::io_internal::offload([&] { r = c.waitid(idtype, id, info, options); });
    return r;
  }
  for (;;) {
    memset(info, 0, sizeof *info);
    int r = c.waitid(idtype, id, info, options | WNOHANG);
    if (r != 0 || info->si_pid != 0) {
      int e = errno;
      if (own_fd) weft::io::close(fd);
      errno = e;
      return r;
    }
    if (int w = weft::wait_exit(fd, {}); w < 0) {
      if (own_fd) weft::io::close(fd);
      errno = -w;
      return -1;
    }
  }
}

}  // extern "C"
