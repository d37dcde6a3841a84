// tests/runtime_dump_test.cc — weft::dump_ults (weft/debug.h): every ULT
// with its state, what it waits for and its backtrace; the Mutex deadlock
// report; the dump on WEFT_DUMP_SIGNAL and on a hang (Options::hang_dump).
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/sanitizers.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"
#include <weft/weft.h>

using namespace std::chrono_literals;

// The functions the ULTs park in: extern, never inlined, and followed by
// an empty asm so that the wait is not a tail call (the frame stays).
__attribute__((noinline)) void DumpTestWaitsOnTheMutexHere(weft::Mutex* m) {
  if (m->lock(weft::this_ult::stop_token()).ok()) m->unlock();
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void DumpTestSleepsHere() {
  weft::this_ult::sleep_for(1h);
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void DumpTestReceivesHere(weft::Channel<int>* ch) {
  (void)ch->recv(weft::this_ult::stop_token());
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void DumpTestReadsHere(int fd) {
  char c;
  (void)weft::io::read(fd, &c, 1);
  asm volatile("" ::: "memory");
}

namespace {

// Everything written to the file at fd so far.
std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  for (off_t off = 0;;) {
    ssize_t n = pread(fd, buf, sizeof buf, off);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  return out;
}

// The dump as text (through a memfd).
std::string Dump() {
  int fd = memfd_create("dump", 0);
  EXPECT_GE(fd, 0);
  absl::Status s = weft::dump_ults(fd);
  EXPECT_TRUE(s.ok()) << s;
  std::string out = ReadAll(fd);
  close(fd);
  return out;
}

// The dump's line for the ULT named `name` and the backtrace lines under
// it (up to the next ULT line), or "" if it is not listed.
std::string Entry(const std::string& dump, const std::string& name) {
  size_t at = dump.find("\"" + name + "\" ");
  if (at == std::string::npos) return "";
  size_t begin = dump.rfind('\n', at);
  begin = begin == std::string::npos ? 0 : begin + 1;
  size_t end = dump.find("\nULT ", at);
  size_t end2 = dump.find("\ncalled from", at);
  if (end2 < end) end = end2;
  size_t end3 = dump.find("\nDEADLOCK", at);
  if (end3 < end) end = end3;
  return dump.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

// Dumps until every named ULT's line contains its `want` text (they park
// asynchronously), at most 10 s; returns the last dump.
std::string DumpWhen(const std::vector<std::pair<std::string, std::string>>& want) {
  std::string d;
  for (auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
    d = Dump();
    bool all = true;
    for (const auto& [name, text] : want) {
      std::string e = Entry(d, name);
      all &= e.substr(0, e.find('\n')).find(text) != std::string::npos;
    }
    if (all) break;
    std::this_thread::sleep_for(10ms);
  }
  if (getenv("WEFT_TEST_SHOW_DUMP") != nullptr) fputs(d.c_str(), stdout);  // to read one by eye
  return d;
}

// stderr captured in a memfd while it lives.
class CaptureStderr {
 public:
  CaptureStderr() : fd_(memfd_create("stderr", 0)), saved_(dup(2)) { dup2(fd_, 2); }
  ~CaptureStderr() {
    dup2(saved_, 2);
    close(saved_);
    close(fd_);
  }
  std::string text() const { return ReadAll(fd_); }
  // Waits (10 s at most) until the captured text contains `what`.
  bool WaitFor(const std::string& what) const {
    for (auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
      if (text().find(what) != std::string::npos) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

 private:
  int fd_, saved_;
};

TEST(Dump, EveryUltWithWhatItWaitsForAndWhere) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex m;
  m.lock();  // held by this thread
  weft::Channel<int> ch(0);
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::atomic<bool> stop_spin{false};
  auto waiter = rt.spawn([&] { DumpTestWaitsOnTheMutexHere(&m); }, {.name = "dump-mutex"});
  auto sleeper = rt.spawn([] { DumpTestSleepsHere(); }, {.name = "dump-sleep"});
  auto receiver = rt.spawn([&] { DumpTestReceivesHere(&ch); }, {.name = "dump-recv"});
  auto reader = rt.spawn([&] { DumpTestReadsHere(p[0]); }, {.name = "dump-read"});
  auto spinner = rt.spawn([&] {
    while (!stop_spin.load()) {
    }
  }, {.name = "dump-spin"});

  std::string d = DumpWhen({{"dump-mutex", "parked: Mutex"},
                            {"dump-sleep", "parked: sleep"},
                            {"dump-recv", "parked: Channel receive"},
                            {"dump-read", "parked: "},
                            {"dump-spin", "running on worker"}});
  SCOPED_TRACE(d);
  EXPECT_NE(d.find("weft: "), std::string::npos);
  std::string e = Entry(d, "dump-mutex");
  EXPECT_NE(e.find("held by thread"), std::string::npos);
  EXPECT_NE(Entry(d, "dump-read").find(" fd " + std::to_string(p[0])), std::string::npos);
  EXPECT_NE(Entry(d, "dump-spin").find("running on worker"), std::string::npos);
  EXPECT_NE(d.find("called from thread"), std::string::npos);
  // The backtraces name the functions each parked ULT waits in.
  if (!kUnderAsan && !kUnderTsan) {
    EXPECT_NE(Entry(d, "dump-mutex").find("DumpTestWaitsOnTheMutexHere"), std::string::npos);
    EXPECT_NE(Entry(d, "dump-sleep").find("DumpTestSleepsHere"), std::string::npos);
    EXPECT_NE(Entry(d, "dump-recv").find("DumpTestReceivesHere"), std::string::npos);
    EXPECT_NE(Entry(d, "dump-read").find("DumpTestReadsHere"), std::string::npos);
    // ... and each trace ends in that ULT's own stack, not in the dumper's.
    EXPECT_EQ(Entry(d, "dump-sleep").find("DumpTestReadsHere"), std::string::npos);
  } else {
    EXPECT_NE(Entry(d, "dump-sleep").find("no backtrace under a sanitizer"), std::string::npos);
  }

  m.unlock();
  ASSERT_TRUE(waiter.join().ok());
  sleeper.request_stop();
  (void)sleeper.join_ignoring_stop();
  receiver.request_stop();
  (void)receiver.join_ignoring_stop();
  // The spinner first: the reader's read may be on the spinner's worker's
  // ring, reaped there only when that worker switches (under TSan no
  // preemption switches the spinner out).
  stop_spin = true;
  ASSERT_TRUE(spinner.join().ok());
  ASSERT_EQ(write(p[1], "x", 1), 1);
  ASSERT_TRUE(reader.join().ok());
  close(p[0]);
  close(p[1]);
  // Gone from the dump once joined.
  EXPECT_EQ(Entry(Dump(), "dump-sleep"), "");
}

TEST(Dump, CallingUltShowsItsOwnStack) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 1});
  auto h = rt.spawn([] { return Dump(); }, {.name = "dump-self"});
  absl::StatusOr<std::string> r = h.join();
  ASSERT_TRUE(r.ok()) << r.status();
  std::string d = *r;
  SCOPED_TRACE(d);
  std::string e = Entry(d, "dump-self");
  EXPECT_NE(e.find("running (this dump)"), std::string::npos);
  EXPECT_NE(e.find("dump_ults"), std::string::npos);
  EXPECT_EQ(d.find("called from thread"), std::string::npos);
}

TEST(Dump, MutexDeadlockCycleIsReported) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex a, b;
  std::atomic<int> holding{0};
  auto one = rt.spawn([&] {
    a.lock();
    holding.fetch_add(1);
    while (holding.load() < 2) weft::this_ult::yield();
    absl::Status s = b.lock(weft::this_ult::stop_token());  // never: two holds b and waits for a
    if (s.ok()) b.unlock();
    a.unlock();
  }, {.name = "dl-one"});
  auto two = rt.spawn([&] {
    b.lock();
    holding.fetch_add(1);
    while (holding.load() < 2) weft::this_ult::yield();
    absl::Status s = a.lock(weft::this_ult::stop_token());
    if (s.ok()) a.unlock();
    b.unlock();
  }, {.name = "dl-two"});
  std::string d = DumpWhen({{"dl-one", "parked: Mutex"}, {"dl-two", "parked: Mutex"}});
  SCOPED_TRACE(d);
  size_t at = d.find("DEADLOCK: a cycle of Mutex waits:");
  ASSERT_NE(at, std::string::npos);
  std::string cycle = d.substr(at);
  EXPECT_NE(cycle.find("\"dl-one\" waits for Mutex"), std::string::npos);
  EXPECT_NE(cycle.find("\"dl-two\" waits for Mutex"), std::string::npos);
  EXPECT_NE(cycle.find("held by ULT"), std::string::npos);
  EXPECT_EQ(cycle.find("DEADLOCK", 1), std::string::npos) << "one cycle, reported once";
  one.request_stop();
  (void)one.join_ignoring_stop();
  ASSERT_TRUE(two.join().ok());
  // No cycle once it is broken.
  EXPECT_EQ(Dump().find("DEADLOCK"), std::string::npos);
}

TEST(Dump, HangDumpWhenNoUltSwitchesWhileOthersWait) {
  Watchdog wd(60s, TestName());
  CaptureStderr err;
  std::atomic<bool> release{false};
  {
    // One worker, no preemption: a spinning ULT keeps the one behind it
    // from running, so no switch happens while it waits.
    weft::Runtime rt(weft::Options{.workers = 1, .max_workers = 1, .time_slice = 0us, .hang_dump = 300ms});
    ASSERT_TRUE(rt.status().ok()) << rt.status();
    std::atomic<bool> spinning{false};
    auto spinner = rt.spawn([&] {
      spinning = true;
      while (!release.load()) {
      }
    }, {.name = "hang-spinner"});
    while (!spinning.load()) std::this_thread::sleep_for(1ms);
    auto behind = rt.spawn([] {}, {.name = "hang-behind"});
    bool dumped = err.WaitFor("hang-behind");
    release = true;
    ASSERT_TRUE(spinner.join().ok());
    ASSERT_TRUE(behind.join().ok());
    std::string t = err.text();
    SCOPED_TRACE(t);
    EXPECT_TRUE(dumped);
    EXPECT_NE(t.find("no ULT has switched for"), std::string::npos);
    EXPECT_NE(Entry(t, "hang-spinner").find("running on worker"), std::string::npos);
    EXPECT_NE(Entry(t, "hang-behind").find("runnable"), std::string::npos);
  }
}

TEST(Dump, NoHangDumpWhileUltsSwitch) {
  Watchdog wd(60s, TestName());
  CaptureStderr err;
  weft::Runtime rt(weft::Options{.workers = 1, .hang_dump = 200ms});
  // Yielding ULTs switch all the time: 1 s of that, five hang windows.
  std::atomic<bool> stop{false};
  auto a = rt.spawn([&] { while (!stop.load()) weft::this_ult::yield(); });
  auto b = rt.spawn([&] { while (!stop.load()) weft::this_ult::yield(); });
  std::this_thread::sleep_for(1s);
  stop = true;
  ASSERT_TRUE(a.join().ok());
  ASSERT_TRUE(b.join().ok());
  EXPECT_EQ(err.text().find("no ULT has switched"), std::string::npos) << err.text();
}

TEST(Dump, OnTheSignalNamedInTheEnvironment) {
  Watchdog wd(60s, TestName());
  CaptureStderr err;
  setenv("WEFT_DUMP_SIGNAL", "SIGUSR2", 1);
  {
    weft::Runtime rt(weft::Options{.workers = 1});
    unsetenv("WEFT_DUMP_SIGNAL");
    auto sleeper = rt.spawn([] { DumpTestSleepsHere(); }, {.name = "sig-sleeper"});
    // Sent until a dump shows the sleeper parked (it may not have parked
    // by the first one).
    bool seen = false;
    for (int i = 0; i < 20 && !seen; ++i) {
      ASSERT_EQ(kill(getpid(), SIGUSR2), 0);
      seen = err.WaitFor("\"sig-sleeper\" parked: sleep");
    }
    EXPECT_TRUE(seen) << err.text();
    sleeper.request_stop();
    (void)sleeper.join_ignoring_stop();
  }
  unsetenv("WEFT_DUMP_SIGNAL");
}

TEST(Dump, BadInput) {
  EXPECT_EQ(weft::dump_ults(-1).code(), absl::StatusCode::kInvalidArgument);
  weft::Runtime rt(weft::Options{.workers = 1, .hang_dump = -1ms});
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(rt.status().message()).find("hang_dump"), std::string::npos);
}

}  // namespace

namespace {

// A runtime with its dump thread (no signal: the thread waits on its 100 ms
// tick), forked from a thread: the child that destroys the runtime exits.
// Fails without the fix (~DumpWatch skips the join and its wait word in a
// forked child): under ASan the child hung in pthread_cond_destroy of the
// copied condvar the parent's dump thread was waiting on (reproduced 2/2).
TEST(Dump, ForkedChildDestroysARuntimeWithADumpThread) {
  WEFT_SKIP_UNDER_TSAN("TSan keeps the parent's dump thread alive in the child's books and aborts "
                       "(\"dup thread with used id\") when the child's runtime starts a thread with its id");
  Watchdog wd(60s, TestName());
  auto rt = std::make_unique<weft::Runtime>(weft::Options{.workers = 1, .hang_dump = 1s});
  ASSERT_TRUE(rt->status().ok()) << rt->status();
  std::this_thread::sleep_for(20ms);  // let the dump thread reach its wait (not needed to pass)
  pid_t pid = fork();
  if (pid == 0) {
    rt.reset();
    _exit(0);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  pid_t r = 0;
  for (auto until = std::chrono::steady_clock::now() + 20s; r == 0 && std::chrono::steady_clock::now() < until;) {
    r = waitpid(pid, &status, WNOHANG);
    if (r == 0) std::this_thread::sleep_for(10ms);
  }
  if (r == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  EXPECT_EQ(r, pid) << "the child did not exit within 20 s";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
