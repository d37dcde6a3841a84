// benchmarks/echo_bench.cc — weft's network servers against the NPTL way and
// against a hand-written epoll loop, over loopback, in one run, side by side,
// with ratios and with the targets of the io issue next to them.
//
// Echo (always): five servers, each started as a child process on a free port
// (the port is read from its "listening on port P" banner):
//   weft (uring)  ../examples/echo_server, WEFT_IO=uring, --workers = CPUs
//   weft 1 worker ../examples/echo_server, WEFT_IO=uring, --workers 1: one
//                 core's worth of weft against one core's worth of epoll loop
//   weft (epoll)  ../examples/echo_server, WEFT_IO=epoll, --workers = CPUs
//   NPTL          ./echo_nptl: a thread (64 KiB stack) per connection
//   epoll loop    ./echo_epoll: one thread, level-triggered epoll
// and the load generator built in here: C connections (C = 50 and 1000 by
// default), each sending a 64-byte message and waiting for its whole echo
// before sending the next (closed loop), checked byte for byte. After all C
// connections have had a first echo (the ramp-up) and a warm-up, it counts
// the echoes of a fixed window: req/s, latency p50/p99 (log histogram, 3%
// buckets), and reads the server's VmRSS (at the end of the window) and CPU
// time (over the window) from /proc. The generator is one epoll thread by
// default: on a 2-core machine it takes one core and the server has about
// the other one (that is the point: per-core efficiency).
//
// HTTP (--http): examples/http_server (uring) and ./http_nptl, each loaded by
// wrk -t2 -cC -dDs --latency http://127.0.0.1:P/hello, C = 50 and 500.
//
// Machines are shared and noisy: every measurement is repeated for several
// rounds with the servers interleaved (the order rotates every round, each
// measurement on a freshly started server), and the tables show the median
// and the minimum of the rounds. Ratios are ratios of medians; "met" compares
// medians with the target. The numbers also go to echo_bench.csv, with line
// charts of req/s and p99 latency against the connection count, in the
// output directory (benchmarks/report.h).
//
// Usage: echo_bench [--quick] [--rounds N] [--duration S] [--conns 50,1000]
//                   [--client-threads N] [--servers LIST] [--weft-workers N]
//                   [--http] [--out DIR] [--help]
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <weft/weft.h>

#include "benchmarks/bench_common.h"

namespace {

// Not `using namespace bench`: echo_bench has a fail() of its own, which stops
// the servers before it exits.
using bench::fmt;
using bench::now_ns;
using bench::Samples;
using bench::sleep_ns;

// ---------------------------------------------------------------------------
// Children, errors.

// Every child we started and have not reaped yet (servers and wrk); a fixed
// array of atomics so that the signal handler may read it.
constexpr int kMaxKids = 16;
std::atomic<pid_t> g_kids[kMaxKids];

void add_kid(pid_t p) {
  for (auto& k : g_kids) {
    pid_t z = 0;
    if (k.compare_exchange_strong(z, p)) return;
  }
  kill(p, SIGKILL);
  fprintf(stderr, "echo_bench: too many children\n");
  _exit(1);
}

void forget_kid(pid_t p) {
  for (auto& k : g_kids) {
    pid_t q = p;
    k.compare_exchange_strong(q, 0);
  }
}

// SIGTERM to every child, up to 2 s for them to exit, then SIGKILL.
void kill_kids() {
  bool any = false;
  for (auto& k : g_kids)
    if (pid_t p = k.load(); p > 0) {
      kill(p, SIGTERM);
      any = true;
    }
  if (!any) return;
  uint64_t give_up = now_ns() + 2000000000ull;
  for (;;) {
    bool left = false;
    for (auto& k : g_kids) {
      pid_t p = k.load();
      if (p <= 0) continue;
      if (waitpid(p, nullptr, WNOHANG) == p) k.store(0);
      else left = true;
    }
    if (!left) return;
    if (now_ns() > give_up) break;
    sleep_ns(10000000);
  }
  for (auto& k : g_kids)
    if (pid_t p = k.load(); p > 0) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
      k.store(0);
    }
}

[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void fail(const char* fmt, ...) {
  bench::erase_progress();
  fflush(stdout);
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "echo_bench: FAILED: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  kill_kids();
  exit(1);
}

void on_fatal_signal(int sig) {
  for (auto& k : g_kids)
    if (pid_t p = k.load(); p > 0) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
  signal(sig, SIG_DFL);
  raise(sig);
}

std::string exit_text(int status) {
  char b[96];
  if (WIFEXITED(status)) snprintf(b, sizeof b, "exit status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(b, sizeof b, "killed by signal %d (%s)%s", WTERMSIG(status), strsignal(WTERMSIG(status)),
             WCOREDUMP(status) ? ", core dumped" : "");
  else snprintf(b, sizeof b, "status 0x%x", status);
  return b;
}

// fork + exec with stdout to a pipe (returned in *out_fd), stderr inherited,
// env additions, and death of the child with us (PR_SET_PDEATHSIG).
pid_t spawn_child(const std::string& path, const std::vector<std::string>& args,
                  const std::vector<std::pair<std::string, std::string>>& env, int* out_fd, bool use_path = false) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) fail("pipe2: %s", strerror(errno));
  pid_t parent = getpid();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) fail("fork: %s", strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(p[1], 1);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    signal(SIGPIPE, SIG_DFL);
    if (use_path) execvp(path.c_str(), argv.data());
    else execv(path.c_str(), argv.data());
    fprintf(stderr, "echo_bench: cannot execute %s: %s\n", path.c_str(), strerror(errno));
    _exit(127);
  }
  add_kid(pid);
  close(p[1]);
  *out_fd = p[0];
  return pid;
}

// ---------------------------------------------------------------------------
// /proc.

// /proc/<pid>/<file> opened for reading, or nullptr (the process is gone).
FILE* open_proc(pid_t pid, const char* file) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
  return fopen(path, "r");
}

struct ProcStatus {
  long rss_kib = -1;
  long threads = -1;
  char state = '?';
};

ProcStatus proc_status(pid_t pid) {
  ProcStatus s;
  FILE* f = open_proc(pid, "status");
  if (f == nullptr) return s;
  char line[256];
  while (fgets(line, sizeof line, f) != nullptr) {
    if (strncmp(line, "VmRSS:", 6) == 0) s.rss_kib = strtol(line + 6, nullptr, 10);
    else if (strncmp(line, "Threads:", 8) == 0) s.threads = strtol(line + 8, nullptr, 10);
    else if (strncmp(line, "State:", 6) == 0) {
      const char* p = line + 6;
      while (*p == ' ' || *p == '\t') p++;
      s.state = *p;
    }
  }
  fclose(f);
  return s;
}

struct CpuTimes {
  double user_s = 0, sys_s = 0;
  double total() const { return user_s + sys_s; }
};

// utime and stime (fields 14 and 15) of /proc/<pid>/stat: all the
// process's threads.
CpuTimes proc_cpu(pid_t pid) {
  CpuTimes c;
  FILE* f = open_proc(pid, "stat");
  if (f == nullptr) return c;
  char buf[1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char* p = strrchr(buf, ')');  // the command name may contain spaces
  if (p == nullptr) return c;
  // After ") ": field 3 (state) onwards; utime is field 14.
  unsigned long long v[13] = {};
  char st;
  if (sscanf(p + 2, "%c %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &st, &v[0], &v[1], &v[2],
             &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11]) != 13)
    return c;
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  c.user_s = static_cast<double>(v[10]) / hz;  // field 14
  c.sys_s = static_cast<double>(v[11]) / hz;   // field 15
  return c;
}

// The machine's busy and steal time (all CPUs, seconds) from /proc/stat.
struct MachineCpu {
  double busy_s = 0, steal_s = 0;
};

MachineCpu machine_cpu() {
  MachineCpu m;
  FILE* f = fopen("/proc/stat", "r");
  if (f == nullptr) return m;
  unsigned long long v[8] = {};
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                 &v[7]);
  fclose(f);
  if (n != 8) return m;
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  // user nice system idle iowait irq softirq steal
  m.busy_s = static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
  m.steal_s = static_cast<double>(v[7]) / hz;
  return m;
}

double thread_cpu_s() {
  rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// What the server's threads are doing (for a stall report).
std::string task_states(pid_t pid) {
  std::string out;
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/task", pid);
  std::vector<std::string> tids;
  if (DIR* d = opendir(dir)) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.' && tids.size() < 8) tids.push_back(e->d_name);
    }
    closedir(d);
  }
  std::sort(tids.begin(), tids.end(), [](const std::string& a, const std::string& b) { return atoi(a.c_str()) < atoi(b.c_str()); });
  // The first line of base/name into buf; where there is none, buf holds
  // `fallback` (what it holds on entry).
  auto first_line = [](const std::string& base, const char* name, char* buf, size_t size,
                       const char* fallback) {
    if (FILE* f = fopen((base + "/" + name).c_str(), "r")) {
      if (fgets(buf, static_cast<int>(size), f) == nullptr) strcpy(buf, fallback);
      fclose(f);
    }
  };
  for (const auto& t : tids) {
    std::string base = std::string(dir) + "/" + t;
    char comm[64] = "?", wchan[128] = "?";
    first_line(base, "comm", comm, sizeof comm, "?");
    comm[strcspn(comm, "\n")] = '\0';
    first_line(base, "wchan", wchan, sizeof wchan, "?");
    char stat[512] = "";
    first_line(base, "stat", stat, sizeof stat, "");
    const char* p = strrchr(stat, ')');
    char st = p != nullptr && p[1] != '\0' ? p[2] : '?';
    out += "    task " + t + " (" + comm + "): state " + st + ", wchan " + wchan + "\n";
  }
  return out;
}

// ---------------------------------------------------------------------------
// Servers.

struct ServerKind {
  const char* name;    // table label
  const char* key;     // for --servers
  std::string path;    // binary
  const char* weft_io; // WEFT_IO value, or nullptr for a non-weft server
  int workers = 0;     // a weft server's --workers; 0: g_weft_workers
};

struct Server {
  pid_t pid = -1;
  int out_fd = -1;
  int port = 0;
  std::string banner;
  const ServerKind* kind = nullptr;
};

int g_ncpus = 1;
int g_weft_workers = 0;  // --workers of the weft servers (default: CPUs)

Server start_server(const ServerKind& k) {
  Server s;
  s.kind = &k;
  std::vector<std::string> args = {"--port", "0"};
  std::vector<std::pair<std::string, std::string>> env;
  if (k.weft_io != nullptr) {
    args.push_back("--workers");
    args.push_back(std::to_string(k.workers > 0 ? k.workers : g_weft_workers));
    env.emplace_back("WEFT_IO", k.weft_io);
  }
  s.pid = spawn_child(k.path, args, env, &s.out_fd);
  // The banner, within 15 s.
  std::string line;
  const uint64_t give_up = now_ns() + 15000000000ull;
  while (line.find('\n') == std::string::npos) {
    int64_t left_ms = (static_cast<int64_t>(give_up) - static_cast<int64_t>(now_ns())) / 1000000;
    if (left_ms <= 0) fail("%s (%s, pid %d) printed no banner within 15 s; got '%s'", k.name, k.path.c_str(), s.pid,
                           line.c_str());
    pollfd pf{s.out_fd, POLLIN, 0};
    int r = poll(&pf, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
    if (r <= 0) continue;
    char buf[256];
    ssize_t n = read(s.out_fd, buf, sizeof buf);
    if (n > 0) {
      line.append(buf, static_cast<size_t>(n));
      continue;
    }
    int status = 0;
    waitpid(s.pid, &status, 0);
    forget_kid(s.pid);
    fail("%s (%s) ended before its banner: %s", k.name, k.path.c_str(), exit_text(status).c_str());
  }
  s.banner = line.substr(0, line.find('\n'));
  int port = 0;
  if (sscanf(s.banner.c_str(), "listening on port %d", &port) != 1 || port <= 0 || port > 65535)
    fail("%s: cannot parse the port from its banner '%s'", k.name, s.banner.c_str());
  s.port = port;
  if (k.weft_io != nullptr) {
    const char* want = strcmp(k.weft_io, "uring") == 0 ? "io_uring" : "epoll";
    if (s.banner.find(want) == std::string::npos)
      fail("%s: asked for WEFT_IO=%s but its banner says '%s'", k.name, k.weft_io, s.banner.c_str());
  }
  return s;
}

// Fails if the server has exited (crashed) under us.
void check_alive(const Server& s, const char* when) {
  int status = 0;
  pid_t r = waitpid(s.pid, &status, WNOHANG);
  if (r == s.pid) {
    forget_kid(s.pid);
    fail("%s (pid %d) died %s: %s", s.kind->name, s.pid, when, exit_text(status).c_str());
  }
}

// SIGTERM, up to 2 s, then SIGKILL. Returns "" or a note on how it ended.
// The progress line is erased first: what the server says as it stops
// (on our stderr) starts a line of its own.
std::string stop_server(Server& s) {
  check_alive(s, "during the run");
  bench::erase_progress();
  kill(s.pid, SIGTERM);
  std::string note;
  int status = 0;
  const uint64_t give_up = now_ns() + 2000000000ull;
  for (;;) {
    pid_t r = waitpid(s.pid, &status, WNOHANG);
    if (r == s.pid) break;
    if (now_ns() > give_up) {
      kill(s.pid, SIGKILL);
      waitpid(s.pid, &status, 0);
      note = "ignored SIGTERM for 2 s, killed";
      break;
    }
    sleep_ns(2000000);
  }
  if (note.empty() && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM)) note = "on SIGTERM: " + exit_text(status);
  forget_kid(s.pid);
  close(s.out_fd);
  s.pid = -1;
  return note;
}

// ---------------------------------------------------------------------------
// Latency histogram: exact below 64 ns, then 32 buckets per power of two
// (about 3% wide).

struct Hist {
  static constexpr int kBuckets = 64 + 58 * 32;
  std::vector<uint64_t> b = std::vector<uint64_t>(kBuckets, 0);
  uint64_t count = 0, max = 0;
  static int index(uint64_t v) {
    if (v < 64) return static_cast<int>(v);
    int e = 63 - __builtin_clzll(v);
    return 64 + (e - 6) * 32 + static_cast<int>((v >> (e - 5)) & 31);
  }
  static double mid(int i) {
    if (i < 64) return i;
    int e = (i - 64) / 32 + 6, sub = (i - 64) % 32;
    double lo = static_cast<double>(static_cast<uint64_t>(32 + sub) << (e - 5));
    return lo + static_cast<double>(1ull << (e - 5)) / 2;
  }
  void add(uint64_t v) {
    b[static_cast<size_t>(index(v))]++;
    count++;
    if (v > max) max = v;
  }
  void merge(const Hist& o) {
    for (size_t i = 0; i < b.size(); i++) b[i] += o.b[i];
    count += o.count;
    max = std::max(max, o.max);
  }
  double percentile(double p) const {  // ns
    if (count == 0) return 0;
    uint64_t want = static_cast<uint64_t>(std::ceil(p * static_cast<double>(count)));
    if (want == 0) want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; i++) {
      seen += b[static_cast<size_t>(i)];
      if (seen >= want) return mid(i);
    }
    return static_cast<double>(max);
  }
};

// ---------------------------------------------------------------------------
// The closed-loop load generator.

constexpr size_t kMsg = 64;

struct Shared {
  std::atomic<uint64_t> t0{UINT64_MAX}, t1{UINT64_MAX};  // the measured window
  std::atomic<int> first_echoes{0};                       // connections that had one
  std::atomic<uint64_t> echoes{0};                        // all echoes, for progress checks
  std::atomic<bool> abort{false};
  std::mutex mu;
  std::string error;
  void set_error(const std::string& e) {
    std::lock_guard<std::mutex> g(mu);
    if (error.empty()) error = e;
    abort.store(true);
  }
};

struct GenResult {
  Hist hist;
  uint64_t done = 0;           // echoes inside the window
  uint64_t min_conn = UINT64_MAX, max_conn = 0;  // per connection, inside the window
  int starved = 0;             // connections with no echo inside the window
  uint64_t oldest_pending_ns = 0;  // at the end of the window
  double cpu_s = 0;            // this generator thread's CPU time over the window
  std::vector<int> fds;        // closed by the caller, after the server stats are read
};

struct Conn {
  int fd = -1;
  enum State : uint8_t { kConnecting, kSending, kWaiting } state = kConnecting;
  bool had_first = false;
  uint32_t sent = 0;  // bytes of `out` sent
  uint32_t got = 0;   // bytes of the echo received
  uint64_t seq = 0;
  uint64_t sent_ns = 0;
  uint64_t in_window = 0;
  char out[kMsg];
  char in[kMsg];
};

void fill_message(Conn& c, uint32_t id) {
  for (size_t i = 0; i < kMsg; i++) c.out[i] = static_cast<char>('a' + (i + c.seq) % 26);
  memcpy(c.out, &c.seq, sizeof c.seq);
  memcpy(c.out + 8, &id, sizeof id);
}

void generator(int port, int nconns, uint32_t first_id, Shared* sh, GenResult* res) {
  std::vector<Conn> conns(static_cast<size_t>(nconns));
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    sh->set_error(std::string("epoll_create1: ") + strerror(errno));
    return;
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < nconns; i++) {
    Conn& c = conns[static_cast<size_t>(i)];
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
      sh->set_error("socket (connection " + std::to_string(first_id + i) + "): " + strerror(errno));
      break;
    }
    res->fds.push_back(c.fd);
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 && errno != EINPROGRESS) {
      sh->set_error("connect (connection " + std::to_string(first_id + i) + "): " + strerror(errno));
      break;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u32 = static_cast<uint32_t>(i);
    epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
  }

  auto conn_error = [&](const Conn& c, int i, const char* what, int err) {
    char b[256];
    snprintf(b, sizeof b, "connection %u: %s%s%s (after %" PRIu64 " echoes, %u/%zu bytes of the current one)",
             first_id + static_cast<uint32_t>(i), what, err ? ": " : "", err ? strerror(err) : "", c.seq, c.got, kMsg);
    sh->set_error(b);
  };
  // Moves c to kSending (waiting for EPOLLOUT) or kWaiting (EPOLLIN),
  // unless it is there already.
  auto set_state = [&](Conn& c, int i, Conn::State state) {
    if (c.state == state) return;
    epoll_event ev{};
    ev.events = state == Conn::kSending ? EPOLLOUT : EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
    c.state = state;
  };
  // Sends what is left of c.out; false on a connection error.
  auto send_rest = [&](Conn& c, int i) -> bool {
    while (c.sent < kMsg) {
      ssize_t w = send(c.fd, c.out + c.sent, kMsg - c.sent, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EAGAIN) {
        set_state(c, i, Conn::kSending);
        return true;
      }
      if (w <= 0) {
        conn_error(c, i, "send", w < 0 ? errno : 0);
        return false;
      }
      c.sent += static_cast<uint32_t>(w);
    }
    set_state(c, i, Conn::kWaiting);
    return true;
  };
  auto start_request = [&](Conn& c, int i, uint64_t t) -> bool {
    fill_message(c, first_id + static_cast<uint32_t>(i));
    c.sent = 0;
    c.got = 0;
    c.sent_ns = t;
    return send_rest(c, i);
  };

  constexpr int kEvents = 512;
  epoll_event evs[kEvents];
  uint64_t t0 = UINT64_MAX, t1 = UINT64_MAX;
  bool in_window = false;
  double cpu0 = 0;
  uint64_t last_progress = now_ns();
  while (!sh->abort.load(std::memory_order_relaxed)) {
    uint64_t now = now_ns();
    if (t0 == UINT64_MAX) {  // main stores t1, then t0 (release)
      t0 = sh->t0.load(std::memory_order_acquire);
      if (t0 != UINT64_MAX) t1 = sh->t1.load(std::memory_order_acquire);
    }
    if (!in_window && now >= t0) {
      in_window = true;
      cpu0 = thread_cpu_s();
    }
    if (now >= t1) break;
    if (now - last_progress > 10000000000ull) {
      int waiting = 0, no_first = 0;
      uint64_t oldest = 0;
      for (const Conn& c : conns) {
        if (!c.had_first) no_first++;
        if (c.state != Conn::kConnecting) {
          waiting++;
          oldest = std::max(oldest, now - c.sent_ns);
        }
      }
      char b[256];
      snprintf(b, sizeof b,
               "stall: no echo on any of this generator's %d connections for 10 s (%d still without a first "
               "echo; oldest outstanding request %.1f s)",
               nconns, no_first, static_cast<double>(oldest) / 1e9);
      sh->set_error(b);
      break;
    }
    int timeout_ms = 100;
    if (t1 != UINT64_MAX) timeout_ms = static_cast<int>(std::min<uint64_t>(100, (t1 - now) / 1000000 + 1));
    int n = epoll_wait(ep, evs, kEvents, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      sh->set_error(std::string("epoll_wait: ") + strerror(errno));
      break;
    }
    bool ok = true;
    for (int k = 0; k < n && ok; k++) {
      int i = static_cast<int>(evs[k].data.u32);
      Conn& c = conns[static_cast<size_t>(i)];
      if (c.state == Conn::kConnecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (evs[k].events & (EPOLLERR | EPOLLHUP)) != 0) {
          conn_error(c, i, "connect", err);
          ok = false;
          break;
        }
        c.state = Conn::kSending;  // so that send_rest switches to EPOLLIN
        ok = start_request(c, i, now_ns());
        continue;
      }
      if (c.state == Conn::kSending) {
        ok = send_rest(c, i);
        continue;
      }
      // Waiting for the echo.
      ssize_t r = recv(c.fd, c.in + c.got, kMsg - c.got, 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) {
        conn_error(c, i, r == 0 ? "the server closed the connection" : "recv", r < 0 ? errno : 0);
        ok = false;
        break;
      }
      c.got += static_cast<uint32_t>(r);
      if (c.got < kMsg) continue;
      if (memcmp(c.in, c.out, kMsg) != 0) {
        conn_error(c, i, "the echo differs from the message sent", 0);
        ok = false;
        break;
      }
      uint64_t t = now_ns();
      last_progress = t;
      sh->echoes.fetch_add(1, std::memory_order_relaxed);
      if (!c.had_first) {
        c.had_first = true;
        sh->first_echoes.fetch_add(1, std::memory_order_relaxed);
      }
      if (t >= t0 && t < t1) {
        res->hist.add(t - c.sent_ns);
        res->done++;
        c.in_window++;
      }
      c.seq++;
      ok = start_request(c, i, t);
    }
    if (!ok) break;
  }
  res->cpu_s = in_window ? thread_cpu_s() - cpu0 : 0;
  uint64_t end = now_ns();
  for (const Conn& c : conns) {
    res->min_conn = std::min(res->min_conn, c.in_window);
    res->max_conn = std::max(res->max_conn, c.in_window);
    if (c.in_window == 0) res->starved++;
    if (c.state != Conn::kConnecting) res->oldest_pending_ns = std::max(res->oldest_pending_ns, end - c.sent_ns);
  }
  close(ep);
}

struct Measurement {
  double rps = 0, p50_us = 0, p90_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
  long rss_kib = 0, threads = 0;
  double srv_cpu_s = 0, srv_sys_s = 0, cli_cpu_s = 0, window_s = 0;
  double ramp_ms = 0;
  double others_pct = 0, steal_pct = 0;  // the rest of the machine during the window
  uint64_t min_conn = 0, max_conn = 0;
  int starved = 0;
  double oldest_pending_ms = 0;
  std::string note;
};

struct Config {
  bool quick = false;
  int rounds = 0;
  double duration = 0;
  double warmup = 1.0;
  std::vector<int> conns = {50, 1000};
  int client_threads = 1;
  bool http = false;
  std::vector<std::string> only;
  std::string out;  // --out: where the CSV and SVG files go; empty: bench::default_out_dir()
};

// Waits (in short sleeps, watching for errors and the server) until `t`.
void wait_until(uint64_t t, Shared& sh, const Server& s) {
  for (;;) {
    uint64_t now = now_ns();
    if (sh.abort.load()) return;
    if (now >= t) return;
    sleep_ns(std::min<uint64_t>(t - now, 20000000));
    check_alive(s, "during the run");
  }
}

Measurement run_echo(const ServerKind& kind, int conns, const Config& cfg) {
  Server s = start_server(kind);
  Shared sh;
  const int nt = std::min(cfg.client_threads, conns);
  std::vector<GenResult> res(static_cast<size_t>(nt));
  std::vector<std::thread> th;
  const uint64_t start = now_ns();
  for (int t = 0; t < nt; t++) {
    int per = conns / nt + (t < conns % nt ? 1 : 0);
    uint32_t first = static_cast<uint32_t>(t * (conns / nt) + std::min(t, conns % nt));
    th.emplace_back(generator, s.port, per, first, &sh, &res[static_cast<size_t>(t)]);
  }
  // Ramp-up: every connection has had one echo (20 s at most).
  Measurement m;
  const uint64_t ramp_limit = start + 20000000000ull;
  while (!sh.abort.load() && sh.first_echoes.load() < conns) {
    if (now_ns() > ramp_limit) {
      char b[200];
      snprintf(b, sizeof b, "ramp-up: only %d of %d connections had their first echo after 20 s", sh.first_echoes.load(),
               conns);
      sh.set_error(b);
      break;
    }
    check_alive(s, "during the ramp-up");
    sleep_ns(1000000);
  }
  m.ramp_ms = static_cast<double>(now_ns() - start) / 1e6;
  const uint64_t t0 = now_ns() + static_cast<uint64_t>(cfg.warmup * 1e9);
  const uint64_t t1 = t0 + static_cast<uint64_t>(cfg.duration * 1e9);
  sh.t1.store(t1, std::memory_order_release);
  sh.t0.store(t0, std::memory_order_release);
  wait_until(t0, sh, s);
  CpuTimes c0 = proc_cpu(s.pid);
  MachineCpu mc0 = machine_cpu();
  // Progress watch: the generators fail after 10 s without an echo; here we
  // only wait.
  wait_until(t1, sh, s);
  CpuTimes c1 = proc_cpu(s.pid);
  MachineCpu mc1 = machine_cpu();
  ProcStatus ps = proc_status(s.pid);
  for (auto& t : th) t.join();
  if (sh.abort.load()) {
    std::string states = task_states(s.pid);
    ProcStatus now = proc_status(s.pid);
    fail("%s, C=%d (port %d): %s\n  server pid %d, state %c, %ld threads, VmRSS %ld KiB; its first threads:\n%s",
         kind.name, conns, s.port, sh.error.c_str(), s.pid, now.state, now.threads, now.rss_kib, states.c_str());
  }
  Hist h;
  uint64_t done = 0;
  m.min_conn = UINT64_MAX;
  for (auto& r : res) {
    h.merge(r.hist);
    done += r.done;
    m.cli_cpu_s += r.cpu_s;
    m.min_conn = std::min(m.min_conn, r.min_conn);
    m.max_conn = std::max(m.max_conn, r.max_conn);
    m.starved += r.starved;
    m.oldest_pending_ms = std::max(m.oldest_pending_ms, static_cast<double>(r.oldest_pending_ns) / 1e6);
  }
  for (auto& r : res)
    for (int fd : r.fds) close(fd);
  m.window_s = static_cast<double>(t1 - t0) / 1e9;
  m.rps = static_cast<double>(done) / m.window_s;
  m.p50_us = h.percentile(0.50) / 1e3;
  m.p99_us = h.percentile(0.99) / 1e3;
  m.p90_us = h.percentile(0.90) / 1e3;
  m.p999_us = h.percentile(0.999) / 1e3;
  m.max_us = static_cast<double>(h.max) / 1e3;
  m.rss_kib = ps.rss_kib;
  m.threads = ps.threads;
  m.srv_cpu_s = c1.total() - c0.total();
  m.srv_sys_s = c1.sys_s - c0.sys_s;
  m.others_pct = std::max(0.0, 100 * (mc1.busy_s - mc0.busy_s - m.srv_cpu_s - m.cli_cpu_s) / m.window_s);
  m.steal_pct = 100 * (mc1.steal_s - mc0.steal_s) / m.window_s;
  m.note = stop_server(s);
  if (done == 0) fail("%s, C=%d: no echo inside the measured window", kind.name, conns);
  return m;
}

// ---------------------------------------------------------------------------
// HTTP with wrk.

const char kHelloResponse[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\r\nhello\n";

// One GET, then three pipelined GETs in one write: every response byte for
// byte what examples/http_server sends.
void http_sanity(const Server& s) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(s.port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    fail("%s: connect to port %d: %s", s.kind->name, s.port, strerror(errno));
  const std::string req = "GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  for (int n : {1, 3}) {
    std::string all;
    for (int i = 0; i < n; i++) all += req;
    if (send(fd, all.data(), all.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(all.size()))
      fail("%s: send: %s", s.kind->name, strerror(errno));
    std::string want;
    for (int i = 0; i < n; i++) want += kHelloResponse;
    std::string got;
    while (got.size() < want.size()) {
      char b[1024];
      ssize_t r = recv(fd, b, sizeof b, 0);
      if (r <= 0) break;
      got.append(b, static_cast<size_t>(r));
    }
    if (got != want)
      fail("%s: %d GET /hello (pipelined) answered with %zu bytes, not %zu identical responses: '%s'", s.kind->name,
           n, got.size(), static_cast<size_t>(n), got.substr(0, 200).c_str());
  }
  close(fd);
}

struct WrkResult {
  double rps = 0, p50_us = 0, p99_us = 0;
  uint64_t requests = 0, socket_errors = 0, non2xx = 0;
  std::string note;
};

double wrk_time_us(const char* s) {
  char* end = nullptr;
  double v = strtod(s, &end);
  if (end == s) return -1;
  while (*end == ' ') end++;
  if (strncmp(end, "us", 2) == 0) return v;
  if (strncmp(end, "ms", 2) == 0) return v * 1e3;
  if (strncmp(end, "m", 1) == 0) return v * 60e6;
  if (strncmp(end, "s", 1) == 0) return v * 1e6;
  return v;
}

WrkResult run_wrk(int port, int conns, int seconds, const char* name) {
  std::vector<std::string> args = {"-t2", "-c" + std::to_string(conns), "-d" + std::to_string(seconds) + "s",
                                   "--latency", "http://127.0.0.1:" + std::to_string(port) + "/hello"};
  int fd = -1;
  pid_t pid = spawn_child("wrk", args, {}, &fd, true);
  std::string out;
  const uint64_t give_up = now_ns() + static_cast<uint64_t>(seconds + 30) * 1000000000ull;
  for (;;) {
    if (now_ns() > give_up) fail("wrk against %s did not finish within %d s", name, seconds + 30);
    pollfd pf{fd, POLLIN, 0};
    if (poll(&pf, 1, 500) <= 0) continue;
    char b[4096];
    ssize_t n = read(fd, b, sizeof b);
    if (n <= 0) break;
    out.append(b, static_cast<size_t>(n));
  }
  close(fd);
  int status = 0;
  waitpid(pid, &status, 0);
  forget_kid(pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("wrk against %s: %s%s\n%s", name, exit_text(status).c_str(),
         WIFEXITED(status) && WEXITSTATUS(status) == 127 ? " (is wrk installed? apt-get install wrk)" : "",
         out.c_str());
  WrkResult r;
  bool have_rps = false;
  bool in_dist = false;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t nl = out.find('\n', pos);
    std::string line = out.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? out.size() : nl + 1;
    const char* l = line.c_str();
    while (*l == ' ' || *l == '\t') l++;
    if (strncmp(l, "Requests/sec:", 13) == 0) {
      r.rps = strtod(l + 13, nullptr);
      have_rps = true;
    } else if (strncmp(l, "Latency Distribution", 20) == 0) {
      in_dist = true;
    } else if (in_dist && strncmp(l, "50%", 3) == 0) {
      r.p50_us = wrk_time_us(l + 3);
    } else if (in_dist && strncmp(l, "99%", 3) == 0) {
      r.p99_us = wrk_time_us(l + 3);
      in_dist = false;
    } else if (strstr(l, "requests in") != nullptr) {
      r.requests = strtoull(l, nullptr, 10);
    } else if (strncmp(l, "Socket errors:", 14) == 0) {
      unsigned long long a = 0, b = 0, c = 0, d = 0;
      sscanf(l, "Socket errors: connect %llu, read %llu, write %llu, timeout %llu", &a, &b, &c, &d);
      r.socket_errors = a + b + c + d;
      r.note = l;
    } else if (strncmp(l, "Non-2xx or 3xx responses:", 25) == 0) {
      r.non2xx = strtoull(l + 25, nullptr, 10);
    }
  }
  if (!have_rps || r.requests == 0) fail("wrk against %s: no Requests/sec in its output:\n%s", name, out.c_str());
  return r;
}

// ---------------------------------------------------------------------------
// Statistics and output.

// A ratio of medians, or "-" where one side had nothing (a server not run).
std::string fmt_ratio(double r) { return std::isfinite(r) && r > 0 ? bench::fmt_ratio(r) : "-"; }

struct Cell {  // one server at one C, over the rounds
  Samples rps, p50, p90, p99, p999, maxlat, rss, threads, srv_cpu_us_per_req, srv_cpu_pct, srv_sys_pct, cli_cpu_pct, ramp,
      min_conn, max_conn, oldest, others, steal;
  int starved = 0;
  std::vector<std::string> notes;
};

void usage(FILE* f) {
  fprintf(f,
          "usage: echo_bench [--quick] [--rounds N] [--duration S] [--conns 50,1000]\n"
          "                  [--client-threads N] [--servers LIST] [--weft-workers N]\n"
          "                  [--http] [--out DIR] [--help]\n"
          "\n"
          "Benchmarks weft's echo server against the NPTL way (a thread per connection)\n"
          "and a hand-written single-threaded epoll loop, over loopback, and prints one\n"
          "table: req/s (median and min of rounds), latency p50/p99, server RSS and CPU,\n"
          "the ratios of medians, and the io issue's targets with whether they are met.\n"
          "\n"
          "Servers (child processes on --port 0, found next to this binary):\n"
          "  weft (uring)  ../examples/echo_server  WEFT_IO=uring  --workers <CPUs>\n"
          "  weft 1 worker ../examples/echo_server  WEFT_IO=uring  --workers 1\n"
          "  weft (epoll)  ../examples/echo_server  WEFT_IO=epoll  --workers <CPUs>\n"
          "  NPTL          ./echo_nptl   one thread (64 KiB stack) per connection\n"
          "  epoll loop    ./echo_epoll  one thread, level-triggered epoll\n"
          "Load: C connections, each sends 64 bytes and waits for the whole echo before\n"
          "the next (closed loop); after a ramp-up (every connection echoed once) and a\n"
          "1 s warm-up, a fixed window is measured. The generator is single-threaded\n"
          "epoll by default, so on a 2-core machine it takes one core and the server has\n"
          "about the other: this compares per-core efficiency. The per-core target is\n"
          "judged on 'weft 1 worker', one core's worth of weft against the one-thread\n"
          "loop; 'weft (uring)' with a worker per CPU shares its second core with the\n"
          "generator, and its ratio to the loop is shown for information.\n"
          "\n"
          "  --quick             2 rounds of 3 s (about 85 s in all): the README demo\n"
          "  --rounds N          rounds (default 3; 2 with --quick)\n"
          "  --duration S        measured seconds per run (default 5; 3 with --quick)\n"
          "  --conns LIST        concurrencies, comma-separated (default 50,1000)\n"
          "  --client-threads N  load generator threads (default 1)\n"
          "  --servers LIST      a subset of uring,uring1,epoll,nptl,loop (default all)\n"
          "  --weft-workers N    --workers of the weft servers but 'weft 1 worker'\n"
          "                      (default: the CPU count)\n"
          "  --http              also run wrk -t2 -c{50,500} against examples/http_server\n"
          "                      (uring) and ./http_nptl; needs wrk (apt-get install wrk,\n"
          "                      an extra install), adds about rounds x 4 x (S+1) s\n"
          "  --out DIR           where echo_bench.csv (every number of the tables) and the\n"
          "                      echo_bench-*.svg line charts (req/s and p99 against C,\n"
          "                      a line per server) go (default: results/ next to this\n"
          "                      program)\n"
          "  --help              this text\n"
          "\n"
          "A default run takes about 2.5 minutes on a 2-core VM (3.5 with --http).\n");
}

bool parse_int(const char* s, long lo, long hi, long* out) {
  char* end = nullptr;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

std::string self_dir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = '\0';
    std::string p = buf;
    return p.substr(0, p.rfind('/'));
  }
  return "";
}

std::string find_binary(const std::string& dir, const std::string& rel, const char* argv0) {
  std::vector<std::string> bases = {dir};
  std::string a0 = argv0;
  if (a0.find('/') != std::string::npos) bases.push_back(a0.substr(0, a0.rfind('/')));
  for (const auto& b : bases) {
    if (b.empty()) continue;
    std::string p = b + "/" + rel;
    if (access(p.c_str(), X_OK) == 0) {
      char real[PATH_MAX];
      return realpath(p.c_str(), real) != nullptr ? std::string(real) : p;
    }
  }
  fail("cannot find %s next to this binary (looked in %s): build the whole tree (ninja -C BUILDDIR)", rel.c_str(),
       dir.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  bench::g_prog = "echo_bench";
  Config cfg;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    std::string val;
    bool has_val = false;
    if (size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_val = true;
    }
    auto value = [&]() -> std::string {
      if (has_val) return val;
      if (i + 1 >= argc) {
        fprintf(stderr, "echo_bench: %s needs a value\n", a.c_str());
        exit(2);
      }
      return argv[++i];
    };
    auto bad = [&](const std::string& v) {
      fprintf(stderr, "echo_bench: bad value '%s' for %s\n", v.c_str(), a.c_str());
      usage(stderr);
      exit(2);
    };
    // The value as a whole number in [lo, hi], else a usage error.
    auto int_value = [&](long lo, long hi) {
      std::string v = value();
      long n;
      if (!parse_int(v.c_str(), lo, hi, &n)) bad(v);
      return static_cast<int>(n);
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--quick") {
      cfg.quick = true;
    } else if (a == "--http") {
      cfg.http = true;
    } else if (a == "--out") {
      cfg.out = value();
      if (cfg.out.empty()) bad(cfg.out);
    } else if (a == "--rounds") {
      cfg.rounds = int_value(1, 1000);
    } else if (a == "--weft-workers") {
      g_weft_workers = int_value(1, 1024);
    } else if (a == "--client-threads") {
      cfg.client_threads = int_value(1, 64);
    } else if (a == "--duration") {
      std::string v = value();
      char* end = nullptr;
      double d = strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(d >= 0.2 && d <= 3600)) bad(v);
      cfg.duration = d;
    } else if (a == "--conns") {
      std::string v = value();
      cfg.conns.clear();
      size_t p = 0;
      while (p <= v.size()) {
        size_t c = v.find(',', p);
        std::string item = v.substr(p, c == std::string::npos ? std::string::npos : c - p);
        long n;
        if (!parse_int(item.c_str(), 1, 100000, &n)) bad(v);
        cfg.conns.push_back(static_cast<int>(n));
        if (c == std::string::npos) break;
        p = c + 1;
      }
    } else if (a == "--servers") {
      std::string v = value();
      size_t p = 0;
      while (p <= v.size()) {
        size_t c = v.find(',', p);
        std::string item = v.substr(p, c == std::string::npos ? std::string::npos : c - p);
        if (item != "uring" && item != "uring1" && item != "epoll" && item != "nptl" && item != "loop") bad(v);
        cfg.only.push_back(item);
        if (c == std::string::npos) break;
        p = c + 1;
      }
    } else {
      fprintf(stderr, "echo_bench: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (cfg.rounds == 0) cfg.rounds = cfg.quick ? 2 : 3;
  if (cfg.duration == 0) cfg.duration = cfg.quick ? 3 : 5;

  signal(SIGPIPE, SIG_IGN);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGSEGV, SIGABRT, SIGBUS, SIGFPE})
    signal(sig, on_fatal_signal);
  atexit(kill_kids);

  cpu_set_t cpus;
  g_ncpus = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  if (g_ncpus < 1) g_ncpus = 1;
  if (g_weft_workers == 0) g_weft_workers = g_ncpus;

  // Descriptors: ours (C client sockets) and the servers' (C + a few; they
  // inherit our limit).
  const int max_c = std::max(*std::max_element(cfg.conns.begin(), cfg.conns.end()), cfg.http ? 500 : 0);
  rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  const rlim_t need = static_cast<rlim_t>(max_c) + 256;
  if (rl.rlim_cur < need) {
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
      fail("RLIMIT_NOFILE hard limit %llu < %llu needed for %d connections (ulimit -Hn)",
           static_cast<unsigned long long>(rl.rlim_max), static_cast<unsigned long long>(need), max_c);
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? std::max<rlim_t>(need, 65536) : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) fail("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
  }

  const std::string dir = self_dir();
  std::vector<ServerKind> all = {
      {"weft (uring)", "uring", find_binary(dir, "../examples/echo_server", argv[0]), "uring"},
      {"weft 1 worker", "uring1", find_binary(dir, "../examples/echo_server", argv[0]), "uring", 1},
      {"weft (epoll)", "epoll", find_binary(dir, "../examples/echo_server", argv[0]), "epoll"},
      {"NPTL", "nptl", find_binary(dir, "echo_nptl", argv[0]), nullptr},
      {"epoll loop", "loop", find_binary(dir, "echo_epoll", argv[0]), nullptr},
  };
  std::vector<ServerKind> servers;
  for (const auto& k : all)
    if (cfg.only.empty() || std::find(cfg.only.begin(), cfg.only.end(), k.key) != cfg.only.end()) servers.push_back(k);
  std::vector<ServerKind> http_servers;
  if (cfg.http) {
    http_servers = {
        {"weft (uring)", "uring", find_binary(dir, "../examples/http_server", argv[0]), "uring"},
        {"NPTL", "nptl", find_binary(dir, "http_nptl", argv[0]), nullptr},
    };
  }

  const size_t ns = servers.size(), nc = cfg.conns.size();
  std::vector<Cell> cells(ns * nc);
  auto cell = [&](size_t s, size_t c) -> Cell& { return cells[s * nc + c]; };
  bench::Progress progress("echo_bench");
  const int echo_runs = cfg.rounds * static_cast<int>(nc * ns);
  int run = 0;
  const uint64_t start = now_ns();
  for (int r = 0; r < cfg.rounds; r++) {
    for (size_t c = 0; c < nc; c++) {
      for (size_t j = 0; j < ns; j++) {
        size_t s = (j + static_cast<size_t>(r)) % ns;  // the order rotates every round
        progress.round(r + 1, cfg.rounds, "echo %s C=%d (run %d of %d)", servers[s].name, cfg.conns[c], ++run,
                       echo_runs);
        Measurement m = run_echo(servers[s], cfg.conns[c], cfg);
        Cell& x = cell(s, c);
        x.rps.add(m.rps);
        x.p50.add(m.p50_us);
        x.p99.add(m.p99_us);
        x.p90.add(m.p90_us);
        x.p999.add(m.p999_us);
        x.maxlat.add(m.max_us);
        x.rss.add(static_cast<double>(m.rss_kib));
        x.threads.add(static_cast<double>(m.threads));
        x.srv_cpu_us_per_req.add(m.srv_cpu_s * 1e6 / (m.rps * m.window_s));
        x.srv_cpu_pct.add(100 * m.srv_cpu_s / m.window_s);
        x.srv_sys_pct.add(m.srv_cpu_s > 0 ? 100 * m.srv_sys_s / m.srv_cpu_s : 0);
        x.cli_cpu_pct.add(100 * m.cli_cpu_s / m.window_s);
        x.ramp.add(m.ramp_ms);
        x.others.add(m.others_pct);
        x.steal.add(m.steal_pct);
        x.min_conn.add(static_cast<double>(m.min_conn));
        x.max_conn.add(static_cast<double>(m.max_conn));
        x.oldest.add(m.oldest_pending_ms);
        x.starved += m.starved;
        if (!m.note.empty()) x.notes.push_back(m.note);
      }
    }
  }

  // HTTP.
  const int http_secs = std::max(1, static_cast<int>(std::lround(cfg.duration)));
  const std::vector<int> http_conns = {50, 500};
  struct HttpCell {
    Samples rps, p50, p99, cpu_us;
    uint64_t errors = 0, non2xx = 0;
    std::vector<std::string> notes;
  };
  std::vector<HttpCell> hcells(http_servers.size() * http_conns.size());
  if (cfg.http) {
    const int http_runs = cfg.rounds * static_cast<int>(http_conns.size() * http_servers.size());
    run = 0;
    for (int r = 0; r < cfg.rounds; r++) {
      for (size_t c = 0; c < http_conns.size(); c++) {
        for (size_t j = 0; j < http_servers.size(); j++) {
          size_t s = (j + static_cast<size_t>(r)) % http_servers.size();
          progress.round(r + 1, cfg.rounds, "http %s C=%d (run %d of %d)", http_servers[s].name,
                         http_conns[c], ++run, http_runs);
          Server srv = start_server(http_servers[s]);
          http_sanity(srv);
          run_wrk(srv.port, http_conns[c], 1, http_servers[s].name);  // warm-up
          check_alive(srv, "during the wrk warm-up");
          CpuTimes c0 = proc_cpu(srv.pid);
          WrkResult w = run_wrk(srv.port, http_conns[c], http_secs, http_servers[s].name);
          CpuTimes c1 = proc_cpu(srv.pid);
          HttpCell& x = hcells[s * http_conns.size() + c];
          x.rps.add(w.rps);
          x.p50.add(w.p50_us);
          x.p99.add(w.p99_us);
          x.cpu_us.add((c1.total() - c0.total()) * 1e6 / static_cast<double>(w.requests));
          x.errors += w.socket_errors;
          x.non2xx += w.non2xx;
          if (w.socket_errors > 0) x.notes.push_back(w.note);
          std::string note = stop_server(srv);
          if (!note.empty()) x.notes.push_back(note);
        }
      }
    }
  }
  progress.clear();
  const double secs = static_cast<double>(now_ns() - start) / 1e9;

  // ---- output
  utsname un;
  uname(&un);
  printf("weft echo_bench: %d rounds%s of %.1f s (after ramp-up and %.1f s warm-up), servers interleaved\n"
         "(order rotating, a fresh server process per run); median and min of rounds\n",
         cfg.rounds, cfg.quick ? " (--quick)" : "", cfg.duration, cfg.warmup);
  printf("weft %s   CPUs: %d   kernel %s   weft servers: --workers %d\n", weft::version(), g_ncpus, un.release,
         g_weft_workers);
  printf("load: closed loop, 64-byte messages, %d epoll client thread%s in this process. On %d CPUs the\n"
         "generator can take about one core, so a server effectively has about %s\n"
         "(cli CPU%%, srv CPU%% and others%% below show who really got the CPUs).\n\n",
         cfg.client_threads, cfg.client_threads == 1 ? "" : "s", g_ncpus,
         g_ncpus <= 2 ? "one: this compares per-core efficiency" : "the rest");

  auto idx = [&](const char* key) -> int {
    for (size_t s = 0; s < ns; s++)
      if (strcmp(servers[s].key, key) == 0) return static_cast<int>(s);
    return -1;
  };
  const int iu = idx("uring"), iu1 = idx("uring1"), ie = idx("epoll"), in = idx("nptl"), il = idx("loop");

  printf("%-13s %5s %10s %10s %9s %9s %9s %8s  %8s %8s\n", "server", "C", "req/s med", "req/s min", "p50 us",
         "p99 us", "RSS KiB", "CPU us/r", "/NPTL", "/loop");
  printf("%s\n", std::string(13 + 6 + 11 * 2 + 10 * 3 + 9 + 2 + 9 * 2, '-').c_str());
  for (size_t c = 0; c < nc; c++) {
    for (size_t s = 0; s < ns; s++) {
      Cell& x = cell(s, c);
      bool weft = servers[s].weft_io != nullptr;
      std::string rn = weft && in >= 0 ? fmt_ratio(x.rps.median() / cell(static_cast<size_t>(in), c).rps.median()) : "";
      std::string rl = weft && il >= 0 ? fmt_ratio(x.rps.median() / cell(static_cast<size_t>(il), c).rps.median()) : "";
      printf("%-13s %5d %10.0f %10.0f %9s %9s %9.0f %8s  %8s %8s\n", servers[s].name, cfg.conns[c], x.rps.median(),
             x.rps.min(), fmt(x.p50.median()).c_str(), fmt(x.p99.median()).c_str(), x.rss.median(),
             fmt(x.srv_cpu_us_per_req.median()).c_str(), rn.c_str(), rl.c_str());
    }
    if (c + 1 < nc) printf("\n");
  }
  printf("(/NPTL, /loop: weft's req/s median over theirs at the same C. CPU us/r: server CPU time\n"
         " (user+sys, all threads) per echo over the window. RSS: VmRSS at the end of the window.)\n\n");

  // Targets.
  printf("%-48s %10s  %-8s %s\n", "target (medians)", "value", "target", "met");
  printf("%s\n", std::string(48 + 1 + 10 + 2 + 8 + 1 + 3, '-').c_str());
  int missed = 0;
  auto target = [&](const std::string& what, bool have, double v, const std::string& vs, const char* tgt, bool met) {
    if (!have) {
      printf("%-48s %10s  %-8s %s\n", what.c_str(), "n/a", tgt, "-");
      return;
    }
    if (!met) missed++;
    printf("%-48s %10s  %-8s %s\n", what.c_str(), vs.empty() ? fmt(v).c_str() : vs.c_str(), tgt, met ? "yes" : "NO");
  };
  {
    auto ci = std::find(cfg.conns.begin(), cfg.conns.end(), 1000);
    bool have = iu >= 0 && in >= 0 && ci != cfg.conns.end();
    double v = 0;
    if (have) {
      size_t c = static_cast<size_t>(ci - cfg.conns.begin());
      v = cell(static_cast<size_t>(iu), c).rps.median() / cell(static_cast<size_t>(in), c).rps.median();
    }
    target("weft(uring) req/s / NPTL, C=1000", have, v, fmt_ratio(v), ">= 1.5x", v >= 1.5);
  }
  for (size_t c = 0; c < nc; c++) {  // per core: one worker against the one-thread loop
    bool have = iu1 >= 0 && il >= 0;
    double v = have ? cell(static_cast<size_t>(iu1), c).rps.median() / cell(static_cast<size_t>(il), c).rps.median() : 0;
    target("weft 1 worker req/s / epoll loop, C=" + std::to_string(cfg.conns[c]), have, v, fmt_ratio(v), ">= 0.9x",
           v >= 0.9);
  }
  for (size_t c = 0; c < nc; c++) {
    bool have = iu >= 0 && in >= 0;
    double w = have ? cell(static_cast<size_t>(iu), c).p99.median() : 0;
    double n = have ? cell(static_cast<size_t>(in), c).p99.median() : 0;
    std::string vs = fmt(w) + "/" + fmt(n);
    target("weft(uring) p99 / NPTL p99 (us), C=" + std::to_string(cfg.conns[c]), have, 0, vs, "<=", w <= n);
  }
  auto eff = [&](int a, int b, size_t c) {
    return cell(static_cast<size_t>(b), c).srv_cpu_us_per_req.median() /
           cell(static_cast<size_t>(a), c).srv_cpu_us_per_req.median();
  };
  for (size_t c = 0; c < nc; c++) {
    if (iu < 0 || il < 0) break;
    printf("%-48s %s\n", ("(info) weft(uring) req/s / epoll loop, C=" + std::to_string(cfg.conns[c])).c_str(),
           fmt_ratio(cell(static_cast<size_t>(iu), c).rps.median() / cell(static_cast<size_t>(il), c).rps.median())
               .c_str());
  }
  for (int w : {iu, iu1}) {
    for (size_t c = 0; c < nc && w >= 0; c++) {
      std::string v;
      if (in >= 0) v += "NPTL " + fmt_ratio(eff(w, in, c));
      if (il >= 0) v += std::string(v.empty() ? "" : ", ") + "loop " + fmt_ratio(eff(w, il, c));
      printf("%-48s %s\n",
             ("(info) echoes per server CPU-s, " + std::string(w == iu ? "weft(uring)" : "weft 1 worker") +
              "/, C=" + std::to_string(cfg.conns[c]))
                 .c_str(),
             v.c_str());
    }
  }
  printf("\n");

  // Details.
  printf("details (medians over rounds unless noted)\n");
  printf("%-13s %5s %8s %8s %8s %7s %7s %7s %8s %8s %8s %8s %10s %9s %s\n", "server", "C", "srv CPU%", "srv sys%",
         "cli CPU%", "others%", "steal%", "threads", "ramp ms", "p90 us", "p99.9 us", "max ms", "per-conn",
         "oldest ms", "starved/notes");
  for (size_t c = 0; c < nc; c++) {
    for (size_t s = 0; s < ns; s++) {
      Cell& x = cell(s, c);
      char fair[48];
      snprintf(fair, sizeof fair, "%.0f-%.0f", x.min_conn.min(), x.max_conn.max());
      std::string notes = x.starved > 0 ? std::to_string(x.starved) + " conn-runs with no echo in the window" : "";
      for (const auto& n : x.notes) notes += (notes.empty() ? "" : "; ") + n;
      printf("%-13s %5d %8.0f %8.0f %8.0f %7.0f %7.0f %7.0f %8s %8s %8s %8s %10s %9s %s\n", servers[s].name,
             cfg.conns[c], x.srv_cpu_pct.median(), x.srv_sys_pct.median(), x.cli_cpu_pct.median(), x.others.median(),
             x.steal.median(), x.threads.median(), fmt(x.ramp.max()).c_str(), fmt(x.p90.median()).c_str(),
             fmt(x.p999.median()).c_str(), fmt(x.maxlat.max() / 1e3).c_str(), fair, fmt(x.oldest.max()).c_str(),
             notes.c_str());
    }
  }
  printf("(srv CPU%%: server CPU time over the window, %% of one CPU; sys%%: its kernel share; cli CPU%%:\n"
         " the generator's; others%%: every other process on the machine (noise; %d CPUs = %d%%), steal%%:\n"
         " the hypervisor's; p90, p99.9: medians of rounds; ramp ms: connect until every connection had\n"
         " an echo, max of rounds; max ms: slowest echo, max of rounds; per-conn: fewest-most echoes of\n"
         " one connection in a window, over all rounds; oldest ms: the oldest request still outstanding\n"
         " when the window closed.)\n",
         g_ncpus, 100 * g_ncpus);
  if (ie >= 0 && iu >= 0) {
    printf("weft(epoll)/weft(uring) req/s:");
    for (size_t c = 0; c < nc; c++)
      printf("  C=%d %s", cfg.conns[c],
             fmt_ratio(cell(static_cast<size_t>(ie), c).rps.median() / cell(static_cast<size_t>(iu), c).rps.median())
                 .c_str());
    printf("\n");
  }

  if (cfg.http) {
    printf("\nhttp: wrk -t2 -c{50,500} -d%ds --latency http://127.0.0.1:P/hello (after a 1 s wrk warm-up;\n"
           "wrk's 2 threads share the %d CPUs with the server); examples/http_server WEFT_IO=uring --workers %d\n"
           "vs ./http_nptl (thread per connection, 64 KiB stacks)\n",
           http_secs, g_ncpus, g_weft_workers);
    printf("%5s  %-28s  %-28s  %8s  %s\n", "", "weft (uring)", "NPTL", "", "");
    printf("%5s  %9s %9s %8s  %9s %9s %8s  %8s  %s\n", "C", "req/s med", "req/s min", "p99 us", "req/s med",
           "req/s min", "p99 us", "weft/NPTL", "errors");
    for (size_t c = 0; c < http_conns.size(); c++) {
      HttpCell& w = hcells[0 * http_conns.size() + c];
      HttpCell& n = hcells[1 * http_conns.size() + c];
      std::string errs;
      if (w.errors + w.non2xx > 0)
        errs += "weft: " + std::to_string(w.errors) + " socket, " + std::to_string(w.non2xx) + " non-2xx ";
      if (n.errors + n.non2xx > 0)
        errs += "NPTL: " + std::to_string(n.errors) + " socket, " + std::to_string(n.non2xx) + " non-2xx";
      for (const auto& x : w.notes) errs += " [weft " + x + "]";
      for (const auto& x : n.notes) errs += " [NPTL " + x + "]";
      printf("%5d  %9.0f %9.0f %8s  %9.0f %9.0f %8s  %8s  %s\n", http_conns[c], w.rps.median(), w.rps.min(),
             fmt(w.p99.median()).c_str(), n.rps.median(), n.rps.min(), fmt(n.p99.median()).c_str(),
             fmt_ratio(w.rps.median() / n.rps.median()).c_str(), errs.empty() ? "0" : errs.c_str());
    }
    printf("p50 us (weft / NPTL):");
    for (size_t c = 0; c < http_conns.size(); c++)
      printf("  C=%d %s / %s", http_conns[c], fmt(hcells[c].p50.median()).c_str(),
             fmt(hcells[http_conns.size() + c].p50.median()).c_str());
    printf("\nserver CPU us per request (weft / NPTL):");
    for (size_t c = 0; c < http_conns.size(); c++)
      printf("  C=%d %s / %s", http_conns[c], fmt(hcells[c].cpu_us.median()).c_str(),
             fmt(hcells[http_conns.size() + c].cpu_us.median()).c_str());
    printf("\n");
  }
  printf("\ntargets missed: %d   total run time %.1f s\n", missed, secs);

  // The same numbers for the CSV file and the figures.
  bench::Report report("echo_bench", bench::system_summary());
  report.set_note(bench::rounds_note(cfg.rounds, cfg.quick) + " of " + fmt(cfg.duration, 1) +
                  " s; weft servers --workers " + std::to_string(g_weft_workers) + "; " +
                  std::to_string(cfg.client_threads) + " client thread" +
                  (cfg.client_threads == 1 ? "" : "s"));
  for (size_t c = 0; c < nc; c++) {
    for (size_t s = 0; s < ns; s++) {
      const Cell& x = cell(s, c);
      const std::string name = servers[s].name, conns = std::to_string(cfg.conns[c]);
      report.add("echo", name, conns, "req/s", x.rps);
      report.add("echo", name, conns, "p50 us", x.p50);
      report.add("echo", name, conns, "p99 us", x.p99);
      report.add("echo", name, conns, "RSS KiB", x.rss);
      report.add("echo", name, conns, "server CPU us/req", x.srv_cpu_us_per_req);
      const char* t = "echo details";
      report.add(t, name, conns, "server CPU %", x.srv_cpu_pct);
      report.add(t, name, conns, "server sys %", x.srv_sys_pct);
      report.add(t, name, conns, "client CPU %", x.cli_cpu_pct);
      report.add(t, name, conns, "others %", x.others);
      report.add(t, name, conns, "steal %", x.steal);
      report.add(t, name, conns, "threads", x.threads);
      report.add(t, name, conns, "ramp ms", x.ramp);
      report.add(t, name, conns, "p90 us", x.p90);
      report.add(t, name, conns, "p99.9 us", x.p999);
      report.add(t, name, conns, "max latency us", x.maxlat);
      report.add(t, name, conns, "echoes of the slowest connection", x.min_conn);
      report.add(t, name, conns, "echoes of the busiest connection", x.max_conn);
      report.add(t, name, conns, "oldest outstanding ms", x.oldest);
      report.add_value(t, name, conns, "conn-runs with no echo", x.starved, cfg.rounds);
    }
  }
  if (cfg.http) {
    for (size_t c = 0; c < http_conns.size(); c++) {
      for (size_t s = 0; s < http_servers.size(); s++) {
        const HttpCell& x = hcells[s * http_conns.size() + c];
        const std::string name = http_servers[s].name, conns = std::to_string(http_conns[c]);
        report.add("http", name, conns, "req/s", x.rps);
        report.add("http", name, conns, "p50 us", x.p50);
        report.add("http", name, conns, "p99 us", x.p99);
        report.add("http", name, conns, "server CPU us/req", x.cpu_us);
        report.add_value("http", name, conns, "socket errors", static_cast<double>(x.errors), cfg.rounds);
        report.add_value("http", name, conns, "non-2xx responses", static_cast<double>(x.non2xx), cfg.rounds);
      }
    }
  }
  using bench::Figure;
  report.add_figure({"rps", "echo throughput by connection count", Figure::kLines, {"echo"}, {"req/s"},
                     "echoes per second (req/s); higher is better", "concurrent connections (C)"});
  report.add_figure({"p99", "echo p99 latency by connection count", Figure::kLines, {"echo"}, {"p99 us"},
                     "p99 latency, us; lower is better", "concurrent connections (C)"});
  report.add_figure({"http-rps", "HTTP throughput (wrk) by connection count", Figure::kLines, {"http"},
                     {"req/s"}, "requests per second; higher is better", "concurrent connections (wrk -c)"});
  report.add_figure({"http-p99", "HTTP p99 latency (wrk) by connection count", Figure::kLines, {"http"},
                     {"p99 us"}, "p99 latency, us; lower is better", "concurrent connections (wrk -c)"});
  return report.finish(cfg.out);
}
