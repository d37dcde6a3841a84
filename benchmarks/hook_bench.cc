// benchmarks/hook_bench.cc — what libweft-hook costs and what it buys.
//
// (a) A read() that does not block (data ready) in a ULT through the hook,
//     against glibc's own read() on a thread (called through a pointer to
//     libc.so.6's definition, so nothing of the hook is in its path), in
//     the same run: a pipe and a socket, reads of exactly the bytes that
//     are there and reads into a larger buffer (a short count). Also: the
//     hooked read on a thread (forwarding: one check and an indirect call
//     more than glibc's). Median of interleaved rounds; the ratio
//     hooked/glibc is the one the issue bounds by 1.2x.
// (b) poll() of several descriptors that must wait (the helper-ULT path):
//     the cost of one wait-and-wake through the hook vs a thread's poll.
// (c) --redis: Redis GET throughput and p99 latency with N connections
//     (default 1,000): synchronous hiredis on weft ULTs through the hook
//     (2 workers) vs NPTL, one thread per connection, vs hiredis's
//     asynchronous API with every connection on one thread's epoll loop
//     (the event-loop way, without weft or threads); redis-server's CPU
//     time during each. Needs /usr/bin/redis-server.
//
// The numbers also go to hook_bench.csv, with bar charts, in the output
// directory (benchmarks/report.h).
//
// Usage: hook_bench [--quick] [--rounds=N] [--redis] [--conns=N] [--seconds=S] [--out=DIR]
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <functional>
#include <thread>
#include <vector>

#include "benchmarks/bench_common.h"
#include "weft/hook.h"

namespace {

using namespace std::chrono_literals;
using bench::fmt;
using bench::fmt_ratio;
using bench::Samples;

using ReadFn = ssize_t (*)(int, void*, size_t);

// glibc's read, whatever is interposed in front of it.
ReadFn glibc_read() {
  void* h = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  if (h == nullptr) bench::fail("dlopen(libc.so.6)");
  auto f = reinterpret_cast<ReadFn>(dlsym(h, "read"));
  if (f == nullptr) bench::fail("dlsym(libc read)");
  return f;
}

constexpr size_t kChunk = 64;  // bytes per read

// A descriptor pair with room for many chunks: a pipe enlarged to 1 MiB,
// or a socketpair with 4 MiB buffers.
struct Source {
  int rd = -1, wr = -1;
  size_t room = 0;
};
Source make_pipe() {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) bench::die("pipe", errno);
  long sz = fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
  return {p[0], p[1], static_cast<size_t>(sz > 0 ? sz : 65536)};
}
Source make_socket() {
  int s[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) != 0) bench::die("socketpair", errno);
  int big = 4 << 20;
  setsockopt(s[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  setsockopt(s[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  // How many bytes fit: fill non-blocking, then drain in the runs.
  return {s[0], s[1], 0};
}

// Fills src with up to `want` bytes (raw writes; returns how many went in).
size_t fill(const Source& src, size_t want) {
  static char junk[65536];
  size_t in = 0;
  while (in < want) {
    long n = syscall(SYS_sendto, src.wr, junk, std::min(sizeof junk, want - in), MSG_DONTWAIT, 0, 0);
    if (n == -1 && errno == ENOTSOCK) n = syscall(SYS_write, src.wr, junk, std::min(sizeof junk, want - in));
    if (n <= 0) break;
    in += static_cast<size_t>(n);
  }
  return in;
}

// ns per read(fd, buf, kChunk) with many chunks waiting (filled before,
// untimed): every call returns kChunk bytes at once.
template <class Read>
double ns_per_read(const Source& src, Read rd, int reads) {
  std::vector<char> buf(kChunk);
  size_t have = fill(src, static_cast<size_t>(reads) * kChunk);
  int n = static_cast<int>(have / kChunk);
  uint64_t t0 = bench::now_ns();
  for (int i = 0; i < n; ++i) {
    if (rd(src.rd, buf.data(), kChunk) != static_cast<ssize_t>(kChunk)) bench::fail("short read in the benchmark");
  }
  return static_cast<double>(bench::now_ns() - t0) / n;
}

// A raw write of one 64-byte message, then a read into a 4 KiB buffer (a
// short count): ns per pair. The write is the same raw system call on both
// sides, so the pair's ratio understates the read's own (subtracting a
// separately timed write was too noisy to trust).
template <class Read>
double ns_per_short_read(const Source& src, Read rd, int reads) {
  char msg[kChunk] = {};
  std::vector<char> buf(4096);
  uint64_t t0 = bench::now_ns();
  for (int i = 0; i < reads; ++i) {
    syscall(SYS_write, src.wr, msg, kChunk);
    if (rd(src.rd, buf.data(), buf.size()) != static_cast<ssize_t>(kChunk)) bench::fail("unexpected read size");
  }
  return static_cast<double>(bench::now_ns() - t0) / reads;
}

void bench_reads(weft::Runtime& rt, const bench::Options& opt, bench::Report& report,
                 bench::Progress& progress) {
  ReadFn libc_read = glibc_read();
  const int reads = opt.quick ? 2000 : 10000;
  struct Case {
    const char* name;
    bool socket;
    bool short_read;
  };
  const Case cases[] = {{"pipe, 64 B ready, read(64)", false, false},
                        {"socket, 64 B ready, read(64)", true, false},
                        {"pipe, write 64 B + read(4096)", false, true},
                        {"socket, write 64 B + read(4096)", true, true}};
  printf("\n(a) read() with data ready: ns per call, median of %d interleaved rounds (%d reads each)\n", opt.rounds,
         reads);
  printf("%-34s %12s %12s %12s %10s\n", "case", "hooked ULT", "glibc thread", "hooked thread", "ULT/glibc");
  printf("(ratio: of the medians)\n");
  for (const Case& c : cases) {
    Samples ult, glibc, fwd;
    for (int round = 0; round < opt.rounds; ++round) {
      progress.round(round + 1, opt.rounds, "read(), %s", c.name);
      Source src = c.socket ? make_socket() : make_pipe();
      auto measure = [&](auto rd) {
        return c.short_read ? ns_per_short_read(src, rd, reads) : ns_per_read(src, rd, reads);
      };
      double a = 0, b = 0, f = 0;
      auto run_ult = [&] {
        auto r = rt.block_on([&] { a = measure([](int fd, void* p, size_t n) { return read(fd, p, n); }); });
        if (!r.ok()) bench::fail("block_on", r);
      };
      auto run_glibc = [&] {
        std::thread t([&] {
          b = measure(libc_read);
          f = measure([](int fd, void* p, size_t n) { return read(fd, p, n); });
        });
        t.join();
      };
      bench::run_both(round % 2 == 0, run_ult, run_glibc);
      ult.add(a);
      glibc.add(b);
      fwd.add(f);
      close(src.rd);
      close(src.wr);
    }
    progress.clear();
    report.add("read", "hooked read, ULT", c.name, "ns/call", ult);
    report.add("read", "glibc read, thread", c.name, "ns/call", glibc);
    report.add("read", "hooked read, thread", c.name, "ns/call", fwd);
    printf("%-34s %12s %12s %12s %10s\n", c.name, fmt(ult.median()).c_str(), fmt(glibc.median()).c_str(),
           fmt(fwd.median()).c_str(), fmt_ratio(ult.median() / glibc.median()).c_str());
  }
}

// (b) poll() that waits: one wake-up per call through the hook. A ULT
// polls 2 (or 1) pipes, another ULT writes a byte to one of them and then
// reads it back: ns per round trip. The thread version uses 2 threads.
void bench_poll_wait(weft::Runtime& rt, const bench::Options& opt, bench::Report& report,
                     bench::Progress& progress) {
  const int iters = opt.quick ? 2000 : 10000;
  printf("\n(b) poll() that has to wait, woken by a write: ns per wake-up, median of %d rounds\n", opt.rounds);
  printf("%-34s %12s %12s %10s\n", "case", "hooked ULTs", "threads", "ULT/thread");
  for (int nfds : {1, 2, 4}) {
    Samples u, t, ratio;
    for (int round = 0; round < opt.rounds; ++round) {
      progress.round(round + 1, opt.rounds, "poll() of %d pipe%s", nfds, nfds == 1 ? "" : "s");
      std::vector<std::array<int, 2>> pipes(nfds);
      for (auto& p : pipes) pipe2(p.data(), O_CLOEXEC);
      auto body = [&](bool in_ults) {
        std::atomic<int> turn{0};
        auto poller = [&] {
          std::vector<pollfd> fds(nfds);
          for (int i = 0; i < nfds; ++i) fds[i] = {pipes[i][0], POLLIN, 0};
          char c;
          for (int k = 0; k < iters; ++k) {
            if (poll(fds.data(), fds.size(), -1) != 1) bench::fail("poll");
            if (read(pipes[nfds - 1][0], &c, 1) != 1) bench::fail("read");
          }
        };
        auto writer = [&] {
          for (int k = 0; k < iters; ++k) {
            if (write(pipes[nfds - 1][1], "x", 1) != 1) bench::fail("write");
            // Wait until the poller took it (so every poll has to wait).
            pollfd p{pipes[nfds - 1][0], POLLIN, 0};
            while (::poll(&p, 1, 0) == 1) {
              if (in_ults) {
                weft::this_ult::yield();
              } else {
                sched_yield();
              }
            }
          }
        };
        (void)turn;
        uint64_t t0 = bench::now_ns();
        if (in_ults) {
          auto r = rt.block_on([&] {
            auto a = weft::spawn(poller);
            auto b = weft::spawn(writer);
            (void)a.join();
            (void)b.join();
          });
          if (!r.ok()) bench::fail("block_on", r);
        } else {
          std::thread a(poller), b(writer);
          a.join();
          b.join();
        }
        return static_cast<double>(bench::now_ns() - t0) / iters;
      };
      double a = 0, b = 0;
      bench::run_both(round % 2 == 0, [&] { a = body(true); }, [&] { b = body(false); });
      u.add(a);
      t.add(b);
      ratio.add(a / b);
      for (auto& p : pipes) {
        close(p[0]);
        close(p[1]);
      }
    }
    std::string name = "poll of " + std::to_string(nfds) + (nfds == 1 ? " pipe" : " pipes");
    progress.clear();
    report.add("poll", "hooked poll, ULTs", name, "ns/wake-up", u);
    report.add("poll", "poll, threads", name, "ns/wake-up", t);
    printf("%-34s %12s %12s %10s\n", name.c_str(), fmt(u.median()).c_str(), fmt(t.median()).c_str(),
           fmt_ratio(ratio.median()).c_str());
  }
}

// ---------------------------------------------------------------------------
// (c) Redis.

struct Redis {
  pid_t pid = -1;
  int port = 0;
  bool start() {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    close(fd);
    std::string ps = std::to_string(port);
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int dn = open("/dev/null", O_WRONLY);
      dup2(dn, 1);
      execl("/usr/bin/redis-server", "redis-server", "--port", ps.c_str(), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--maxclients", "10000", "--tcp-backlog", "4096",
            "--loglevel", "warning", nullptr);
      _exit(127);
    }
    for (int i = 0; i < 500; ++i) {
      redisContext* c = redisConnect("127.0.0.1", port);
      bool ok = c != nullptr && !c->err;
      if (c) redisFree(c);
      if (ok) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }
  double cpu_s() const {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE* f = fopen(path, "r");
    if (!f) return 0;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char* p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    // Fields after ')': state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    if (p) sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return static_cast<double>(ut + st) / sysconf(_SC_CLK_TCK);
  }
  ~Redis() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

struct LoadResult {
  double rps = 0, p99_us = 0, p50_us = 0, server_cpu = 0;
  uint64_t errors = 0;
};

// One connection's loop: GET until `stop`, latencies (us) sampled into *lat.
void client_loop(int port, const std::atomic<bool>& stop, std::atomic<uint64_t>* ops, std::atomic<uint64_t>* errs,
                 std::vector<float>* lat) {
  redisContext* c = redisConnect("127.0.0.1", port);
  if (c == nullptr || c->err) {
    errs->fetch_add(1);
    if (c) redisFree(c);
    return;
  }
  redisReply* r = static_cast<redisReply*>(redisCommand(c, "SET bench:key hello"));
  if (r) freeReplyObject(r);
  uint64_t n = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    uint64_t t0 = bench::now_ns();
    r = static_cast<redisReply*>(redisCommand(c, "GET bench:key"));
    uint64_t t1 = bench::now_ns();
    if (r == nullptr || r->type != REDIS_REPLY_STRING) {
      errs->fetch_add(1);
      if (r) freeReplyObject(r);
      break;
    }
    freeReplyObject(r);
    ++n;
    if ((n & 15) == 0) lat->push_back(static_cast<float>(t1 - t0) / 1000.0f);
  }
  ops->fetch_add(n);
  redisFree(c);
}

LoadResult summarize(std::vector<std::vector<float>>& lats, uint64_t ops, uint64_t errs, double secs, double cpu) {
  std::vector<float> all;
  for (auto& l : lats) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  LoadResult r;
  r.rps = ops / secs;
  r.errors = errs;
  r.server_cpu = cpu;
  if (!all.empty()) {
    r.p50_us = all[all.size() / 2];
    r.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
  return r;
}

LoadResult redis_weft(const Redis& srv, int conns, double secs) {
  weft::Options o;
  o.workers = 2;
  o.stack_size = 128 * 1024;
  weft::Runtime rt(o);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0}, errs{0};
  std::vector<std::vector<float>> lats(conns);
  double cpu0 = srv.cpu_s(), cpu1 = 0;
  auto r = rt.block_on([&] {
    std::vector<weft::JoinHandle<void>> us;
    for (int i = 0; i < conns; ++i)
      us.push_back(weft::spawn([&, i] { client_loop(srv.port, stop, &ops, &errs, &lats[i]); }));
    weft::this_ult::sleep_for(std::chrono::duration<double>(secs));
    stop = true;
    for (auto& u : us) (void)u.join();
    cpu1 = srv.cpu_s();
  });
  if (!r.ok()) bench::fail("block_on", r);
  return summarize(lats, ops.load(), errs.load(), secs, cpu1 - cpu0);
}

LoadResult redis_nptl(const Redis& srv, int conns, double secs) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0}, errs{0};
  std::vector<std::vector<float>> lats(conns);
  double cpu0 = srv.cpu_s();
  std::vector<std::thread> ts;
  for (int i = 0; i < conns; ++i) ts.emplace_back([&, i] { client_loop(srv.port, stop, &ops, &errs, &lats[i]); });
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  stop = true;
  for (auto& t : ts) t.join();
  double cpu1 = srv.cpu_s();
  return summarize(lats, ops.load(), errs.load(), secs, cpu1 - cpu0);
}

// The third way: hiredis's asynchronous API, every connection on one
// thread's epoll loop (no libevent: hiredis's event hooks are five
// functions, given here). Each connection keeps one GET outstanding, as
// the synchronous clients do.
struct AsyncConn {
  redisAsyncContext* ac = nullptr;
  int ep = -1;
  uint32_t events = 0;
  bool registered = false;
  uint64_t t0 = 0, n = 0;
  std::vector<float>* lat = nullptr;
};

void async_update(AsyncConn* c) {
  epoll_event e{};
  e.events = c->events;
  e.data.ptr = c;
  int fd = c->ac->c.fd;
  if (c->events == 0) {
    if (c->registered) epoll_ctl(c->ep, EPOLL_CTL_DEL, fd, nullptr);
    c->registered = false;
    return;
  }
  if (epoll_ctl(c->ep, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &e) != 0) bench::fail("epoll_ctl");
  c->registered = true;
}

// hiredis's event hooks: which of EPOLLIN/EPOLLOUT the connection wants.
template <uint32_t kAdd, uint32_t kRemove>
void async_events(void* p) {
  auto* c = static_cast<AsyncConn*>(p);
  c->events = (c->events & ~kRemove) | kAdd;
  async_update(c);
}

void async_attach(AsyncConn* c) {
  redisAsyncContext* ac = c->ac;
  ac->ev.data = c;
  ac->ev.addRead = async_events<EPOLLIN, 0>;
  ac->ev.delRead = async_events<0, EPOLLIN>;
  ac->ev.addWrite = async_events<EPOLLOUT, 0>;
  ac->ev.delWrite = async_events<0, EPOLLOUT>;
  ac->ev.cleanup = async_events<0, EPOLLIN | EPOLLOUT>;
}

struct AsyncRun {
  bool stop = false;
  uint64_t errors = 0;
  int waiting = 0;  // connections with a GET outstanding
};
AsyncRun* g_async = nullptr;

void async_send(AsyncConn* c);

void async_reply(redisAsyncContext*, void* reply, void* priv) {
  auto* c = static_cast<AsyncConn*>(priv);
  auto* r = static_cast<redisReply*>(reply);
  uint64_t t1 = bench::now_ns();
  --g_async->waiting;
  if (r == nullptr || r->type != REDIS_REPLY_STRING) {
    ++g_async->errors;
    return;
  }
  ++c->n;
  if ((c->n & 15) == 0) c->lat->push_back(static_cast<float>(t1 - c->t0) / 1000.0f);
  if (!g_async->stop) async_send(c);
}

void async_send(AsyncConn* c) {
  c->t0 = bench::now_ns();
  if (redisAsyncCommand(c->ac, async_reply, c, "GET bench:key") != REDIS_OK) {
    ++g_async->errors;
    return;
  }
  ++g_async->waiting;
}

LoadResult redis_async(const Redis& srv, int conns, double secs) {
  AsyncRun run;
  g_async = &run;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) bench::fail("epoll_create1");
  std::vector<AsyncConn> cs(conns);
  std::vector<std::vector<float>> lats(conns);
  for (int i = 0; i < conns; ++i) {
    cs[i].ep = ep;
    cs[i].lat = &lats[i];
    cs[i].ac = redisAsyncConnect("127.0.0.1", srv.port);
    if (cs[i].ac == nullptr || cs[i].ac->err) bench::fail("redisAsyncConnect");
    async_attach(&cs[i]);
  }
  double cpu0 = srv.cpu_s();
  uint64_t start = bench::now_ns(), end = start + static_cast<uint64_t>(secs * 1e9);
  for (auto& c : cs) async_send(&c);
  epoll_event evs[256];
  for (;;) {
    uint64_t now = bench::now_ns();
    if (!run.stop && now >= end) run.stop = true;
    if (run.stop && run.waiting == 0) break;
    int n = epoll_wait(ep, evs, 256, 10);
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<AsyncConn*>(evs[i].data.ptr);
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) redisAsyncHandleRead(c->ac);
      if (evs[i].events & EPOLLOUT) redisAsyncHandleWrite(c->ac);
    }
  }
  double cpu1 = srv.cpu_s();
  uint64_t ops = 0;
  for (auto& c : cs) {
    ops += c.n;
    redisAsyncFree(c.ac);
  }
  close(ep);
  g_async = nullptr;
  return summarize(lats, ops, run.errors, secs, cpu1 - cpu0);
}

void bench_redis(int conns, double secs, int rounds, bench::Report& report, bench::Progress& progress) {
  Redis srv;
  if (access("/usr/bin/redis-server", X_OK) != 0 || !srv.start()) bench::fail("redis-server did not start");
  printf("\n(c) Redis GET, %d connections, synchronous hiredis, %.1f s per run, %d interleaved rounds (medians)\n",
         conns, secs, rounds);
  Samples wr, wp, nr, np, wc, nc, ar, ap, ac;
  for (int round = 0; round < rounds; ++round) {
    LoadResult w, n, a;
    progress.round(round + 1, rounds, "Redis GET, %d connections", conns);
    // Interleaved, the order rotating from round to round.
    std::function<void()> runs[3] = {[&] { w = redis_weft(srv, conns, secs); },
                                     [&] { n = redis_nptl(srv, conns, secs); },
                                     [&] { a = redis_async(srv, conns, secs); }};
    for (int k = 0; k < 3; ++k) runs[(round + k) % 3]();
    if (w.errors || n.errors || a.errors) {
      progress.clear();
      printf("  round %d: errors weft %llu nptl %llu async %llu\n", round, static_cast<unsigned long long>(w.errors),
             static_cast<unsigned long long>(n.errors), static_cast<unsigned long long>(a.errors));
    }
    wr.add(w.rps);
    wp.add(w.p99_us);
    wc.add(w.server_cpu / secs);
    nr.add(n.rps);
    np.add(n.p99_us);
    nc.add(n.server_cpu / secs);
    ar.add(a.rps);
    ap.add(a.p99_us);
    ac.add(a.server_cpu / secs);
  }
  progress.clear();
  const std::string x = std::to_string(conns) + " connections";
  report.add("redis", "weft ULTs + hook", x, "GET/s", wr);
  report.add("redis", "NPTL threads", x, "GET/s", nr);
  report.add("redis", "weft ULTs + hook", x, "p99 us", wp);
  report.add("redis", "NPTL threads", x, "p99 us", np);
  report.add("redis", "weft ULTs + hook", x, "redis-server CPU cores", wc);
  report.add("redis", "NPTL threads", x, "redis-server CPU cores", nc);
  report.add("redis", "hiredis async, 1 epoll loop", x, "GET/s", ar);
  report.add("redis", "hiredis async, 1 epoll loop", x, "p99 us", ap);
  report.add("redis", "hiredis async, 1 epoll loop", x, "redis-server CPU cores", ac);
  printf("%-26s %14s %14s %14s %10s %10s\n", "", "weft ULTs+hook", "NPTL threads", "async epoll", "weft/NPTL",
         "weft/async");
  printf("%-26s %14s %14s %14s %10s %10s\n", "GET/s", fmt(wr.median()).c_str(), fmt(nr.median()).c_str(),
         fmt(ar.median()).c_str(), fmt_ratio(wr.median() / nr.median()).c_str(),
         fmt_ratio(wr.median() / ar.median()).c_str());
  printf("%-26s %14s %14s %14s %10s %10s\n", "p99 latency (us)", fmt(wp.median()).c_str(), fmt(np.median()).c_str(),
         fmt(ap.median()).c_str(), fmt_ratio(wp.median() / np.median()).c_str(),
         fmt_ratio(wp.median() / ap.median()).c_str());
  printf("%-26s %14s %14s %14s\n", "redis-server CPU (cores)", fmt(wc.median()).c_str(), fmt(nc.median()).c_str(),
         fmt(ac.median()).c_str());
}

void usage(FILE* f) {
  fprintf(f,
          "usage: hook_bench [--quick] [--rounds=N] [--redis] [--conns=N] [--seconds=S] [--out=DIR]\n"
          "  (a) hooked read() with data ready vs glibc's read(); (b) poll() wake-ups;\n"
          "  (c) with --redis: Redis GET throughput/p99, hiredis on ULTs+hook vs a thread per connection\n"
          "  --out=DIR   where hook_bench.csv (every number of the tables) and the hook_bench-*.svg\n"
          "              bar charts go (default: results/ next to this program)\n");
}

}  // namespace

int main(int argc, char** argv) {
  bench::g_prog = "hook_bench";
  bool redis = false;
  int conns = 1000;
  double secs = 2.0;
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--redis") == 0) {
      redis = true;
    } else if (strncmp(argv[i], "--conns=", 8) == 0) {
      conns = atoi(argv[i] + 8);
    } else if (strncmp(argv[i], "--seconds=", 10) == 0) {
      secs = atof(argv[i] + 10);
    } else {
      rest.push_back(argv[i]);
    }
  }
  bench::Options opt = bench::parse_options(static_cast<int>(rest.size()), rest.data(), usage);
  bench::init_cpus();
  if (!weft::hook::active()) bench::fail("libweft-hook is not active (linked after libc, or WEFT_HOOK=off)");
  weft::Runtime rt(weft::Options{.workers = 1});
  if (!rt.status().ok()) bench::fail("runtime", rt.status());
  bench::print_system_line(1);
  printf("io backend: %s\n", weft::io::default_backend());
  bench::Report report("hook_bench", bench::system_summary());
  report.set_note(bench::rounds_note(opt.rounds, opt.quick));
  bench::Progress progress("hook_bench");
  bench_reads(rt, opt, report, progress);
  bench_poll_wait(rt, opt, report, progress);
  if (redis) {
    bench_redis(conns, opt.quick ? 1.0 : secs, opt.quick ? 1 : std::max(1, opt.rounds / 2), report, progress);
  }
  report.add_figure({"read", "read() with data ready: hooked in a ULT vs glibc", bench::Figure::kBars,
                     {"read"}, {"ns/call"}, "ns per call; lower is better", ""});
  report.add_figure({"poll", "poll() that waits, woken by a write", bench::Figure::kBars, {"poll"},
                     {"ns/wake-up"}, "ns per wake-up; lower is better", ""});
  report.add_figure({"redis", "Redis GET throughput, hiredis on ULTs + hook vs a thread each",
                     bench::Figure::kBars, {"redis"}, {"GET/s"}, "GET/s; higher is better", ""});
  report.add_figure({"redis-p99", "Redis GET p99 latency", bench::Figure::kBars, {"redis"}, {"p99 us"},
                     "p99 latency, us; lower is better", ""});
  return report.finish(opt.out);
}
