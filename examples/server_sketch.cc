// examples/server_sketch.cc — the server of README.md's "Writing a server
// with weft", as a program (built with the examples so that the README's
// code compiles; echo_server.cc is the tested, fuller version).
//
//   server_sketch        echoes on port 7000 until SIGINT/SIGTERM
#include <weft/signal.h>
#include <weft/weft.h>

#include <csignal>
#include <cstdio>

using namespace std::chrono_literals;

int main() {
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::SignalSet stop_signals{SIGINT, SIGTERM};  // after the runtime: they become messages
  absl::Status served = rt.block_on([&]() -> absl::Status {
    int lfd = weft::io::listen_tcp("0.0.0.0", 7000);
    if (lfd < 0) return absl::ErrnoToStatus(-lfd, "listen_tcp");
    // Every connection's ULT belongs to the group: none outlives this scope.
    weft::TaskGroup conns(weft::TaskGroupOptions{.cancel_on_failure = false});
    auto acceptor = weft::spawn([&] {
      for (;;) {
        int c = weft::io::accept(lfd);  // -ECANCELED once this ULT is asked to stop
        if (c == -ECANCELED) return;
        if (c < 0) continue;            // (echo_server.cc: waits out EMFILE)
        (void)conns.spawn([c] {         // one ULT per connection
          char buf[4096];
          for (;;) {
            // Idle for 30 s, peer gone, or asked to stop: done.
            int64_t n = weft::io::recv(c, buf, sizeof buf, 0, weft::io::Deadline::in(30s));
            if (n <= 0 || weft::io::send_all(c, buf, static_cast<size_t>(n)) < 0) break;
          }
          weft::io::close(c);
        });
      }
    });
    int sig = stop_signals.wait();  // parks this ULT until SIGINT or SIGTERM
    fprintf(stderr, "signal %d: stopping\n", sig);
    (void)acceptor.request_stop();  // no new connections
    (void)acceptor.join();
    // The open connections get 5 s to finish, then are asked to stop (their
    // recv and send return -ECANCELED).
    auto grace = weft::spawn([&] {
      weft::this_ult::sleep_for(5s);
      conns.request_stop();
    });
    absl::Status s = conns.wait();  // every connection has ended
    (void)grace.request_stop();     // ends its sleep (its destructor would too)
    weft::io::close(lfd);
    return s;
  });
  if (!served.ok()) fprintf(stderr, "server_sketch: %s\n", served.ToString().c_str());
  return served.ok() ? 0 : 1;
}
