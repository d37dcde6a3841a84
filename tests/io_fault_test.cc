// Fault injection for weft::io (issue 9, "Gates"): the descriptor table
// full (EMFILE) during accept, at a worker's engine setup and at the
// process's io_uring probe; io_uring_setup refused by a seccomp filter and
// by kernel.io_uring_disabled; resolve()'s helper thread that cannot be
// started.
//
// Faults that must hit a fresh process (the backend is chosen once per
// process, at its first Runtime; resolve's helper threads live as long as
// the process) run in a child: the parent forks, sets the fault up (a
// seccomp filter, a sysctl) and re-executes this binary with
// --gtest_filter naming one IoFaultChild test and kChildEnv naming the
// pipe the child reports on. The child tests skip when run directly.
//
// Every test runs under a watchdog, so a hang fails instead of blocking CI.
#include <dirent.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <liburing.h>

#include "tests/sanitizers.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "weft/io.h"
#include "weft/runtime.h"
#include "weft/sync.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
namespace io = weft::io;

constexpr const char* kChildEnv = "WEFT_TEST_FAULT_CHILD_FD";

std::string ExpectedBackend() {
  const char* e = getenv("WEFT_IO");
  if (e == nullptr || *e == '\0') return io::default_backend();
  return std::string(e) == "uring" ? "io_uring" : std::string(e);
}

// --- helpers -----------------------------------------------------------------------

// The highest open descriptor of this process.
int HighestFd() {
  int hi = 2;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return 1024;
  while (dirent* e = readdir(d)) hi = std::max(hi, atoi(e->d_name));
  closedir(d);
  return hi;
}

// Fills the descriptor table: lowers RLIMIT_NOFILE to a little above the
// highest open fd and takes every free number below it, so the next
// descriptor anyone asks for is refused with EMFILE. Release() (or the
// destructor) gives them back and restores the limit.
class FdFiller {
 public:
  FdFiller() {
    getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit lower = saved_;
    lower.rlim_cur = static_cast<rlim_t>(std::max(256, HighestFd() + 64));
    EXPECT_EQ(setrlimit(RLIMIT_NOFILE, &lower), 0);
    for (;;) {
      int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);
      if (fd < 0) {
        EXPECT_EQ(errno, EMFILE);
        break;
      }
      fds_.push_back(fd);
    }
  }
  ~FdFiller() { Release(); }
  void Release() {
    for (int fd : fds_) close(fd);
    fds_.clear();
    setrlimit(RLIMIT_NOFILE, &saved_);
  }

 private:
  rlimit saved_{};
  std::vector<int> fds_;
};

// Captures what is written to stderr (fd 2) until Stop().
class StderrCapture {
 public:
  StderrCapture() {
    EXPECT_EQ(pipe2(p_, O_CLOEXEC), 0);
    fflush(stderr);
    saved_ = dup(2);
    dup2(p_[1], 2);
  }
  ~StderrCapture() { Stop(); }
  std::string Stop() {
    if (saved_ >= 0) {
      fflush(stderr);
      dup2(saved_, 2);
      close(saved_);
      saved_ = -1;
      close(p_[1]);
      char buf[4096];
      ssize_t n;
      while ((n = read(p_[0], buf, sizeof buf)) > 0) text_.append(buf, static_cast<size_t>(n));
      close(p_[0]);
      fprintf(stderr, "%s", text_.c_str());  // keep it visible in the test log
    }
    return text_;
  }

 private:
  int p_[2] = {-1, -1};
  int saved_ = -1;
  std::string text_;
};

// Re-executes this binary in a child running only `child_test`, without
// WEFT_IO, with kChildEnv set to the write end of a report pipe. `setup`
// runs in the child between fork and exec (async-signal-safe calls only;
// it returns false to make the child exit with 120). `on_report` sees the
// report as it grows. Returns the whole report; fails on a crash, a
// non-zero exit or a hang (90 s).
std::string RunChild(const std::string& child_test, bool (*setup)(void*), void* setup_arg,
                     const std::function<void(const std::string&)>& on_report = {}) {
  int pfd[2];
  EXPECT_EQ(pipe(pfd), 0);  // the write end is inherited across exec
  std::vector<std::string> env_store;
  for (char** e = environ; *e != nullptr; ++e)
    if (strncmp(*e, "WEFT_IO=", 8) != 0 && strncmp(*e, kChildEnv, strlen(kChildEnv)) != 0) env_store.push_back(*e);
  env_store.push_back(std::string(kChildEnv) + "=" + std::to_string(pfd[1]));
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string filter_arg = "--gtest_filter=" + child_test;
  std::string self = "/proc/self/exe";
  char* argv[] = {self.data(), filter_arg.data(), nullptr};
  pid_t pid = fork();
  EXPECT_GE(pid, 0);
  if (pid == 0) {
    close(pfd[0]);
    if (setup != nullptr && !setup(setup_arg)) _exit(120);
    execve(argv[0], argv, envp.data());
    _exit(122);
  }
  close(pfd[1]);
  std::string report;
  Clock::time_point t0 = Clock::now();
  for (;;) {
    pollfd pf{pfd[0], POLLIN, 0};
    int left = 60000 - static_cast<int>(MsSince(t0));
    if (left <= 0 || poll(&pf, 1, left) <= 0) break;
    char buf[512];
    ssize_t n = read(pfd[0], buf, sizeof buf);
    if (n <= 0) break;
    report.append(buf, static_cast<size_t>(n));
    if (on_report) on_report(report);
  }
  close(pfd[0]);
  int status = 0;
  pid_t w = 0;
  while ((w = waitpid(pid, &status, WNOHANG)) == 0 && MsSince(t0) < 90000) std::this_thread::sleep_for(milliseconds(10));
  if (w == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ADD_FAILURE() << "the child " << child_test << " hung";
    return report;
  }
  EXPECT_TRUE(WIFEXITED(status)) << child_test << " killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0) << "the child's test failed (its output is above)";
  printf("[   INFO   ] child %s: %s", child_test.c_str(), report.c_str());
  return report;
}

// The report pipe in a child test, or -1 when run directly (then skip).
int ChildReportFd() {
  const char* fdenv = getenv(kChildEnv);
  return fdenv != nullptr ? atoi(fdenv) : -1;
}
void Report(int fd, const std::string& msg) { (void)!write(fd, msg.data(), msg.size()); }

// A small io workout on the epoll fallback: a socketpair echo between two
// ULTs, a file read, a deadline.
void IoWorks() {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  weft::Ult echo = weft::spawn([&] {
    char b[16];
    int64_t n = io::recv(sv[1], b, sizeof b);
    if (n > 0) io::send_all(sv[1], b, static_cast<size_t>(n));
  });
  EXPECT_EQ(io::send(sv[0], "echo", 4), 4);
  char b[16] = {};
  EXPECT_EQ(io::recv(sv[0], b, sizeof b), 4);
  EXPECT_EQ(std::string(b, 4), "echo");
  EXPECT_TRUE(echo.join().ok());
  io::close(sv[0]);
  io::close(sv[1]);
  char tmpl[] = "/tmp/weft_io_fault_XXXXXX";
  int tfd = mkstemp(tmpl);
  ASSERT_GE(tfd, 0);
  ASSERT_EQ(write(tfd, "file-data", 9), 9);
  close(tfd);
  int fd = io::openat(AT_FDCWD, tmpl, O_RDONLY);
  unlink(tmpl);
  ASSERT_GE(fd, 0);
  char f[16] = {};
  EXPECT_EQ(io::read(fd, f, sizeof f), 9);
  EXPECT_EQ(std::string(f, 9), "file-data");
  io::close(fd);
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  EXPECT_EQ(io::read(p[0], f, 1, io::Deadline::in(milliseconds(20))), -ETIMEDOUT);
  io::close(p[0]);
  io::close(p[1]);
}

// =====================================================================================
// EMFILE during accept: accept returns -EMFILE, the listener and the runtime
// stay usable, and accept works again once descriptors are free.
TEST(IoFault, AcceptUnderEmfile) {
  Watchdog wd(TestName(), 60);
  // One worker, whose engine is set up (checked below) before the table is
  // filled: a second worker could set its own up meanwhile and free a
  // number again when half of that fails.
  weft::Runtime rt(weft::Options{.workers = 1});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  absl::Status s = rt.block_on([] {
    ASSERT_EQ(std::string(io::backend()), ExpectedBackend());
    int l = io::listen_tcp("127.0.0.1", 0);
    ASSERT_GE(l, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(io::local_port(l)));
    int c = io::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(c, 0);
    ASSERT_EQ(io::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);  // queued in the backlog
    {
      FdFiller fill;
      EXPECT_EQ(io::accept(l), -EMFILE);
      EXPECT_EQ(io::accept(l, nullptr, nullptr, io::Deadline::in(milliseconds(100))), -EMFILE);
      // The runtime is fine: spawn, join, park, io without new fds.
      std::atomic<int> ran{0};
      weft::Ult u = weft::spawn([&] {
        weft::this_ult::sleep_for(milliseconds(1));
        ran = 1;
      });
      EXPECT_TRUE(u.join().ok());
      EXPECT_EQ(ran.load(), 1);
      EXPECT_EQ(io::send(c, "hi", 2), 2);
    }
    int s2 = io::accept(l, nullptr, nullptr, io::Deadline::in(std::chrono::seconds(10)));
    ASSERT_GE(s2, 0) << strerror(-s2);
    char b[4] = {};
    EXPECT_EQ(io::recv(s2, b, sizeof b), 2);
    EXPECT_EQ(std::string(b, 2), "hi");
    for (int fd : {l, c, s2}) io::close(fd);
  });
  ASSERT_TRUE(s.ok()) << s;
}

// EMFILE at a worker's engine setup (its first idle wait or io): the
// failure is reported on stderr and io runs as blocking calls
// (backend() says "blocking"); once descriptors are free again the worker
// sets its engine up and io uses it (and that is reported too).
//
// Regression (issue 9 #8): on 15df0bc the worker stayed on blocking calls
// for good (io_uring: backend() still "blocking" after 5 s with free
// descriptors; epoll: a read with a deadline returned -ENOSYS).
TEST(IoFault, EngineSetupUnderEmfileRecovers) {
  Watchdog wd(TestName(), 60);
  (void)io::default_backend();  // the process's probe, before the shortage
  int pp[2];
  ASSERT_EQ(pipe2(pp, O_CLOEXEC), 0);
  std::string during, after;
  std::string log;
  {
    StderrCapture cap;
    auto fill = std::make_unique<FdFiller>();
    weft::Runtime rt(weft::Options{.workers = 1});
    ASSERT_TRUE(rt.status().ok()) << rt.status();
    absl::Status s = rt.block_on([&] {
      during = io::backend();
      // io works meanwhile, as blocking calls.
      char b[4];
      EXPECT_EQ(io::write(pp[1], "x", 1), 1);
      EXPECT_EQ(io::read(pp[0], b, 1), 1);
      fill->Release();
      WaitUntil([&] { return std::string(io::backend()) == ExpectedBackend(); }, milliseconds(5000));
      after = io::backend();
      // The engine serves: a read that waits, with a deadline.
      EXPECT_EQ(io::read(pp[0], b, 1, io::Deadline::in(milliseconds(10))), -ETIMEDOUT);
      weft::Ult w = weft::spawn([&] {
        weft::this_ult::sleep_for(milliseconds(5));
        EXPECT_EQ(io::write(pp[1], "y", 1), 1);
      });
      EXPECT_EQ(io::read(pp[0], b, 1), 1);
      EXPECT_TRUE(w.join().ok());
    });
    ASSERT_TRUE(s.ok()) << s;
    log = cap.Stop();
  }
  EXPECT_EQ(during, "blocking");
  EXPECT_EQ(after, ExpectedBackend()) << "the worker never set its engine up after descriptors were freed";
  EXPECT_NE(log.find("setup failed on a worker (Too many open files)"), std::string::npos) << log;
  EXPECT_NE(log.find("setup succeeded on a worker after"), std::string::npos) << log;
  close(pp[0]);
  close(pp[1]);
}

// EMFILE at the process's io_uring probe (the first Runtime) does not make
// the process choose epoll for good: the kernel has io_uring.
// Regression (issue 9 #8): on 15df0bc the child chose epoll ("io_uring_setup:
// Too many open files: using epoll").
TEST(IoFaultChild, ProbeUnderEmfile) {
  int report = ChildReportFd();
  if (report < 0) GTEST_SKIP() << "runs only in the child of IoFault.ProbeUnderEmfileStillChoosesUring";
  Watchdog wd(TestName(), 60);
  io_uring probe;
  if (io_uring_queue_init(4, &probe, 0) != 0) {
    Report(report, "SKIP no io_uring here\n");
    return;
  }
  io_uring_queue_exit(&probe);
  std::string def, reason;
  {
    FdFiller fill;
    def = io::default_backend();
    reason = io::default_backend_reason();
  }
  EXPECT_EQ(def, "io_uring") << reason;
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  std::string in_ult;
  absl::Status s = rt.block_on([&] {
    WaitUntil([&] { return std::string(io::backend()) == "io_uring"; }, milliseconds(5000));
    in_ult = io::backend();
    IoWorks();
  });
  ASSERT_TRUE(s.ok());
  if (!HasFailure()) Report(report, "OK default=" + def + " ult=" + in_ult + " reason=" + reason + "\n");
}

TEST(IoFault, ProbeUnderEmfileStillChoosesUring) {
  if (ChildReportFd() >= 0) GTEST_SKIP() << "in the child";
  Watchdog wd(TestName(), 100);
  std::string report = RunChild("IoFaultChild.ProbeUnderEmfile", nullptr, nullptr);
  if (report.rfind("SKIP", 0) == 0) GTEST_SKIP() << report;
  EXPECT_EQ(report.rfind("OK default=io_uring ult=io_uring", 0), 0u) << "child report: '" << report << "'";
}

// =====================================================================================
// io_uring forbidden: by a seccomp filter, and by kernel.io_uring_disabled.
// The child reports "probed" as soon as the backend is chosen (so that the
// parent can restore a sysctl at once), then checks the epoll fallback.
TEST(IoFaultChild, UringForbidden) {
  int report = ChildReportFd();
  if (report < 0) GTEST_SKIP() << "runs only in the child of the IoFault.*Forbids* tests";
  Watchdog wd(TestName(), 60);
  ASSERT_EQ(getenv("WEFT_IO"), nullptr);
  // io_uring_setup is refused.
  EXPECT_EQ(syscall(SYS_io_uring_setup, 4, nullptr) == -1 ? errno : 0, EPERM);
  std::string def = io::default_backend(), reason = io::default_backend_reason();
  Report(report, "probed\n");
  EXPECT_EQ(def, "epoll");
  EXPECT_TRUE(reason.find("EPERM") != std::string::npos || reason.find(strerror(EPERM)) != std::string::npos)
      << reason;
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  std::string in_ult;
  absl::Status s = rt.block_on([&] {
    in_ult = io::backend();
    IoWorks();
  });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(in_ult, "epoll");
  if (!HasFailure()) Report(report, "OK default=" + def + " ult=" + in_ult + " reason=" + reason + "\n");
}

// A seccomp-bpf filter that makes io_uring_setup fail with EPERM (as
// container runtimes' default profiles do).
bool InstallUringSeccompFilter(void*) {
  static sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  static sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

TEST(IoFault, SeccompForbidsUringFallsBackToEpoll) {
  if (ChildReportFd() >= 0) GTEST_SKIP() << "in the child";
  Watchdog wd(TestName(), 100);
  std::string report = RunChild("IoFaultChild.UringForbidden", &InstallUringSeccompFilter, nullptr);
  EXPECT_NE(report.find("OK default=epoll ult=epoll reason="), std::string::npos) << "child report: '" << report << "'";
}

// kernel.io_uring_disabled=2 (io_uring off for every process) for as long
// as the child takes to choose its backend; the previous value is restored
// as soon as the child reports "probed", and in any case before the test
// ends (the sysctl is system-wide: other processes on the machine see it
// meanwhile, so the window is kept short).
constexpr const char* kDisabledSysctl = "/proc/sys/kernel/io_uring_disabled";

bool WriteSysctl(const std::string& v) {
  int fd = open(kDisabledSysctl, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, v.data(), v.size()) == static_cast<ssize_t>(v.size());
  close(fd);
  return ok;
}

class SysctlRestorer {
 public:
  explicit SysctlRestorer(std::string old) : old_(std::move(old)) {}
  ~SysctlRestorer() { Restore(); }
  void Restore() {
    if (!done_.exchange(true)) {
      EXPECT_TRUE(WriteSysctl(old_)) << "could not restore " << kDisabledSysctl;
    }
  }

 private:
  std::string old_;
  std::atomic<bool> done_{false};
};

TEST(IoFault, IoUringDisabledSysctlFallsBackToEpoll) {
  if (ChildReportFd() >= 0) GTEST_SKIP() << "in the child";
  if (geteuid() != 0) GTEST_SKIP() << "needs root to set kernel.io_uring_disabled";
  FILE* f = fopen(kDisabledSysctl, "re");
  if (f == nullptr) GTEST_SKIP() << "this kernel has no kernel.io_uring_disabled";
  char old[16] = {};
  bool read_ok = fgets(old, sizeof old, f) != nullptr;
  fclose(f);
  ASSERT_TRUE(read_ok);
  std::string old_value(old);
  while (!old_value.empty() && (old_value.back() == '\n' || old_value.back() == ' ')) old_value.pop_back();
  if (!WriteSysctl(old_value)) GTEST_SKIP() << kDisabledSysctl << " is not writable here";
  Watchdog wd(TestName(), 100);
  SysctlRestorer restore(old_value);
  ASSERT_TRUE(WriteSysctl("2"));
  std::string report = RunChild("IoFaultChild.UringForbidden", nullptr, nullptr, [&](const std::string& r) {
    if (r.find("probed\n") != std::string::npos) restore.Restore();
  });
  restore.Restore();
  EXPECT_NE(report.find("OK default=epoll ult=epoll reason="), std::string::npos) << "child report: '" << report << "'";
  EXPECT_NE(report.find("io_uring_disabled=2"), std::string::npos) << "the reason should name the sysctl: " << report;
}

// =====================================================================================
// resolve()'s helper thread cannot be started (the address-space limit
// leaves no room for its stack): ResourceExhausted, not an exception
// through the ULT; once threads can be made again, resolve works.
//
// Regression (issue 9 #10): on 15df0bc std::thread's std::system_error went
// through the ULT (the child's test body caught "Resource temporarily
// unavailable" from resolve()).
long VmSizeBytes() {
  FILE* f = fopen("/proc/self/status", "re");
  if (f == nullptr) return -1;
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof line, f) != nullptr)
    if (sscanf(line, "VmSize: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb * 1024;
}

TEST(IoFaultChild, ResolveThreadStartFails) {
  int report = ChildReportFd();
  if (report < 0) GTEST_SKIP() << "runs only in the child of IoFault.ResolveHelperThreadStartFailureIsAStatus";
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  std::string first, second;
  absl::Status s = rt.block_on([&] {
    // Warm the allocator up on this worker, so the lookup's own small
    // allocations do not need new address space.
    for (int i = 0; i < 64; ++i) {
      auto p = std::make_shared<std::string>(200, 'x');
      std::vector<io::Address> v(4);
    }
    // glibc reuses the stack of a thread that exited (weft's start-up makes
    // and joins one): ask for a bigger default stack than any cached one,
    // so the helper thread needs new address space.
    pthread_attr_t old_attr, big_attr;
    ASSERT_EQ(pthread_getattr_default_np(&old_attr), 0);
    ASSERT_EQ(pthread_attr_init(&big_attr), 0);
    ASSERT_EQ(pthread_attr_setstacksize(&big_attr, size_t{64} << 20), 0);
    ASSERT_EQ(pthread_setattr_default_np(&big_attr), 0);
    rlimit saved{};
    ASSERT_EQ(getrlimit(RLIMIT_AS, &saved), 0);
    rlimit tight = saved;
    tight.rlim_cur = static_cast<rlim_t>(VmSizeBytes() + (1 << 20));  // no room for a thread stack
    ASSERT_EQ(setrlimit(RLIMIT_AS, &tight), 0);
    absl::StatusOr<std::vector<io::Address>> r = io::resolve("localhost", 80);
    ASSERT_EQ(setrlimit(RLIMIT_AS, &saved), 0);
    ASSERT_EQ(pthread_setattr_default_np(&old_attr), 0);
    pthread_attr_destroy(&big_attr);
    pthread_attr_destroy(&old_attr);
    first = r.status().ToString();
    EXPECT_TRUE(absl::IsResourceExhausted(r.status())) << r.status();
    absl::StatusOr<std::vector<io::Address>> r2 = io::resolve("localhost", 80);
    second = r2.status().ToString();
    EXPECT_TRUE(r2.ok()) << r2.status();
  });
  ASSERT_TRUE(s.ok());
  if (!HasFailure()) Report(report, "OK first=" + first + " second=" + second + "\n");
}

TEST(IoFault, ResolveHelperThreadStartFailureIsAStatus) {
  if (ChildReportFd() >= 0) GTEST_SKIP() << "in the child";
  // Seen once in a full ASan run (issue 11): the child printed its OK
  // report, then ASan aborted it: "failed to allocate ... bytes of
  // FakeStack (error code: 12)" — a thread's first instrumented call fell
  // inside the window where RLIMIT_AS leaves no room.
  WEFT_SKIP_UNDER_ASAN("ASan maps a fake stack per thread lazily (detect_stack_use_after_return), and its "
                       "allocator maps as it goes: under the tight RLIMIT_AS this test sets, ASan itself can "
                       "abort the child at any instrumented call");
  Watchdog wd(TestName(), 100);
  std::string report = RunChild("IoFaultChild.ResolveThreadStartFails", nullptr, nullptr);
  EXPECT_EQ(report.rfind("OK first=RESOURCE_EXHAUSTED", 0), 0u) << "child report: '" << report << "'";
}

}  // namespace
