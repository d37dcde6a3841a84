// examples/embed.cc — an ordinary threaded program that embeds weft.
//
// The program has its own pthreads (std::thread). It creates one
// weft::Runtime, runs a small echo service in it (a detached ULT per
// connection), and its threads hand the runtime work with block_on():
//  - each thread fans a computation out over 100 ULTs and joins them;
//  - each thread talks to the echo service through weft::io from a ULT.
// It checks every answer and prints a summary; exit status 0 means all
// answers were right.
//
//   embed --port 0 --workers 2
#include <weft/weft.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "examples/accept.h"
#include "examples/args.h"

namespace {

constexpr int kThreads = 4;
constexpr int kRounds = 50;

// Sum of i*i for i in [lo, hi), split over 100 ULTs.
uint64_t fan_out(uint64_t lo, uint64_t hi) {
  constexpr int kParts = 100;
  uint64_t parts[kParts] = {};
  std::vector<weft::Ult> ults;
  uint64_t step = (hi - lo + kParts - 1) / kParts;
  for (int p = 0; p < kParts; ++p) {
    ults.push_back(weft::spawn([&parts, p, lo, hi, step] {
      uint64_t s = 0;
      for (uint64_t i = lo + p * step; i < std::min(hi, lo + (p + 1) * step); ++i) s += i * i;
      parts[p] = s;
    }));
  }
  uint64_t total = 0;
  for (int p = 0; p < kParts; ++p) {
    if (!ults[p].join().ok()) return 0;
    total += parts[p];
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  examples::Args args = examples::parse(argc, argv, "A threaded program handing work to an embedded weft runtime.");
  weft::Runtime rt(weft::Options{.workers = args.workers});
  if (!rt.status().ok()) {
    fprintf(stderr, "embed: %s\n", rt.status().ToString().c_str());
    return 1;
  }

  // The echo service, started from the main thread.
  absl::StatusOr<int> listening = rt.block_on([&] { return weft::io::listen_tcp("127.0.0.1", args.port); });
  if (!listening.ok() || *listening < 0) {
    fprintf(stderr, "embed: cannot listen on port %d\n", args.port);
    return 1;
  }
  int lfd = *listening;
  int port = rt.block_on([&] { return weft::io::local_port(lfd); }).value_or(-1);
  weft::Ult server = rt.spawn([lfd] {
    weft::io::Acceptor acceptor(lfd);
    for (;;) {
      int c = examples::accept_next(acceptor);  // waits out EMFILE instead of spinning
      if (c < 0) return;                    // listener closed: shutting down
      // Detached: it runs on its own (a handle destroyed while joinable
      // would ask it to stop and wait for it).
      weft::Ult conn = weft::spawn([c] {
        char buf[512];
        int64_t n;
        while ((n = weft::io::recv(c, buf, sizeof buf)) > 0)
          if (weft::io::send_all(c, buf, static_cast<size_t>(n)) < 0) break;
        weft::io::close(c);
      });
      if (conn.status().ok()) {
        (void)conn.detach();
      } else {
        weft::io::close(c);
      }
    }
  });

  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        uint64_t lo = static_cast<uint64_t>(t) * 1000 + round, hi = lo + 10000;
        uint64_t expect = 0;
        for (uint64_t i = lo; i < hi; ++i) expect += i * i;
        absl::StatusOr<uint64_t> got = rt.block_on([&] { return fan_out(lo, hi); });
        if (!got.ok() || *got != expect) ++wrong;

        std::string msg = "thread " + std::to_string(t) + " round " + std::to_string(round);
        absl::StatusOr<std::string> echoed = rt.block_on([&]() -> std::string {
          int fd = weft::io::connect_tcp("127.0.0.1", static_cast<uint16_t>(port));
          if (fd < 0) return "connect: " + std::string(strerror(-fd));
          std::string back(msg.size(), '\0');
          size_t got_bytes = 0;
          if (weft::io::send_all(fd, msg.data(), msg.size()) == static_cast<int64_t>(msg.size())) {
            while (got_bytes < back.size()) {
              int64_t n = weft::io::recv(fd, back.data() + got_bytes, back.size() - got_bytes);
              if (n <= 0) break;
              got_bytes += static_cast<size_t>(n);
            }
          }
          weft::io::close(fd);
          return back.substr(0, got_bytes);
        });
        if (!echoed.ok() || *echoed != msg) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();

  (void)rt.block_on([&] { return weft::io::close(lfd); });  // the accept loop ends
  (void)server.join();
  weft::RuntimeStats st = rt.stats();
  printf("embed: %d threads x %d rounds, %s; %lu ULTs spawned on %zu workers, backend %s\n", kThreads, kRounds,
         wrong == 0 ? "every answer right" : "WRONG ANSWERS", static_cast<unsigned long>(st.spawned),
         st.workers.size(), weft::io::default_backend());
  return wrong == 0 ? 0 : 1;
}
