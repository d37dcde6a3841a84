// weft/process.h — child processes from ULTs: spawn, wait, signal.
//
//   weft::ProcessOptions o;
//   o.argv = {"gzip", "-9", "big.log"};
//   absl::StatusOr<weft::Process> p = weft::Process::spawn(o);
//   if (!p.ok()) return p.status();
//   absl::StatusOr<weft::ExitStatus> st = p->wait();   // parks the ULT
//   if (st.ok() && !st->success()) log(st->ToString()); // "exited 1"
//
// Waiting parks the calling ULT, not its worker: the wait is an io_uring
// poll (or an epoll wait) on the child's pidfd. Spawning runs posix_spawn on
// a helper thread while the ULT parks (its vfork window would otherwise
// block the worker). On a foreign thread the same calls block the thread.
//
// The C library calls keep working in ULTs too, and do not stall the other
// ULTs of the worker: weft exports system(), popen(), pclose(),
// posix_spawn(), posix_spawnp(), waitpid(), wait(), wait4() and waitid(),
// which in a ULT run the blocking part on a helper thread (or wait on a
// pidfd) and otherwise forward to glibc, with glibc's results and errno.
// vfork() is not covered: the calling worker waits until the child has
// called exec or _exit (prefer posix_spawn). fork() is covered by weft's
// fork handlers (see weft/runtime.h, "Fork").
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "weft/io.h"

namespace weft {

// How a child process ended, as a value.
struct ExitStatus {
  bool exited = false;       // it called exit (or returned from main)
  int code = 0;              // exit code, when exited
  int signal = 0;            // the signal that killed it, when !exited
  bool core_dumped = false;  // it was killed and dumped core

  // Exited with code 0.
  bool success() const { return exited && code == 0; }
  // "exited 0", "exited 3", "killed by SIGKILL", "killed by SIGSEGV (core dumped)".
  std::string ToString() const;
  // From a wait status (waitpid's int) or a siginfo_t's si_code/si_status.
  static ExitStatus FromWaitStatus(int status);
};

struct ProcessOptions {
  // The program and its arguments; argv[0] names the program. Required.
  std::vector<std::string> argv;
  // Look argv[0] up in PATH when it has no '/' (execvp's rule).
  bool search_path = true;
  // The child's environment; by default the caller's (environ).
  std::optional<std::vector<std::string>> env;
  // The child's working directory; empty: the caller's.
  std::string cwd;
  // Descriptors the child gets as its stdin, stdout, stderr; -1: the
  // caller's own 0, 1, 2. They are dup2'd, so O_CLOEXEC ones work.
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
};

// A child process this program spawned. Move-only. Destroying a Process
// that was not waited for leaves the child running (as with a thread that
// was detached); it is reaped when it exits only if somebody waits for it.
class Process {
 public:
  Process() = default;
  Process(Process&& o) noexcept;
  Process& operator=(Process&& o) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  // Starts the program. Errors: InvalidArgument (empty argv, a NUL inside
  // an argument), NotFound (no such program: ENOENT), PermissionDenied
  // (EACCES), ResourceExhausted (EAGAIN, ENOMEM: process or memory
  // limits), Internal (anything else; the message has the errno text).
  static absl::StatusOr<Process> spawn(const ProcessOptions& opts);

  // The child's process id (0 for an empty Process).
  pid_t pid() const { return pid_; }

  // Waits until the child has ended and reaps it. In a ULT it parks; on a
  // foreign thread it blocks. At the deadline: DeadlineExceeded (the child
  // still runs and may be waited for again). FailedPrecondition if the
  // Process is empty or was already waited for; Internal if the wait
  // failed (ECHILD: somebody else reaped it, e.g. a SIGCHLD handler or
  // waitpid(-1)).
  absl::StatusOr<ExitStatus> wait(io::Deadline d = {});

  // Sends `sig` to the child, through its pidfd (never to a recycled pid).
  // FailedPrecondition once it was waited for; InvalidArgument for a bad
  // signal number.
  absl::Status kill(int sig);

 private:
  Process(pid_t pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}
  pid_t pid_ = 0;
  int pidfd_ = -1;
};

}  // namespace weft
