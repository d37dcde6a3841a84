// examples/echo_server.cc — an echo server: one ULT per connection.
//
//   echo_server --port 7000 --workers 2
//
// Prints "listening on port P (backend B, N workers)" once ready, then
// echoes every byte back until the peer closes. SIGINT or SIGTERM stops it
// gracefully: no new connections, each open one answers what it already
// read and closes, then the server exits 0. WEFT_IO=epoll forces the epoll
// backend.
#include <weft/weft.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "examples/accept.h"
#include "examples/args.h"
#include "examples/shutdown.h"

int main(int argc, char** argv) {
  examples::Args args = examples::parse(argc, argv, "Echoes every connection's bytes back, one ULT per connection.");
  weft::Runtime rt(weft::Options{.workers = args.workers});
  if (!rt.status().ok()) {
    fprintf(stderr, "echo_server: %s\n", rt.status().ToString().c_str());
    return 1;
  }
  // Errors found in a ULT come back to main as values: exit() in a ULT
  // would run static destructors while the workers still run.
  absl::StatusOr<int> listening =
      rt.block_on([&] { return weft::io::listen_tcp("0.0.0.0", static_cast<uint16_t>(args.port)); });
  if (!listening.ok() || *listening < 0) {
    fprintf(stderr, "echo_server: cannot listen on port %d: %s\n", args.port,
            listening.ok() ? strerror(-*listening) : listening.status().ToString().c_str());
    return 1;
  }
  int lfd = *listening;
  examples::Shutdown stop(rt, lfd);
  if (!stop.status().ok()) {
    fprintf(stderr, "echo_server: %s\n", stop.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<int> error = rt.block_on([&] {
    printf("listening on port %d (backend %s, %d workers)\n", weft::io::local_port(lfd), weft::io::backend(),
           rt.concurrency());
    fflush(stdout);
    // The connections' ULTs belong to this group: none outlives this scope.
    weft::TaskGroup conns(
        weft::TaskGroupOptions{.cancel_on_failure = false, .spawn = weft::SpawnOptions{.name = "echo-conn"}});
    weft::io::Acceptor acceptor(lfd);
    for (;;) {
      int c = examples::accept_next(acceptor);
      if (c < 0) {
        if (!stop.stopping()) {
          conns.request_stop();  // the listener failed: stop serving
          return c;
        }
        size_t forced = stop.finish(conns, std::chrono::seconds(5));
        if (forced != 0) fprintf(stderr, "echo_server: %zu connections stopped after the grace period\n", forced);
        return 0;
      }
      absl::Status spawned = conns.spawn([c, &stop] {
        {
          examples::Shutdown::Connection registered(stop, c);  // until before the close
          char buf[4096];
          for (;;) {
            int64_t n = weft::io::recv(c, buf, sizeof buf);
            if (n <= 0 || weft::io::send_all(c, buf, static_cast<size_t>(n)) < 0) break;
          }
        }
        weft::io::close(c);
      });
      if (!spawned.ok()) weft::io::close(c);  // out of memory: drop this connection, keep serving
    }
  });
  if (error.ok() && *error == 0) {
    fprintf(stderr, "echo_server: stopped by signal %d; every connection finished\n", stop.signal());
    return 0;
  }
  fprintf(stderr, "echo_server: accept: %s\n", error.ok() ? strerror(-*error) : error.status().ToString().c_str());
  _exit(1);  // the shutdown watcher still waits for a signal: do not wait for it in ~Runtime
}
