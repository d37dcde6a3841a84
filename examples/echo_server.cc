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
    for (;;) {
      int c = examples::accept_next(lfd);
      if (c < 0) return stop.stopping() ? 0 : c;
      weft::Ult u = weft::spawn([c, &stop] {
        {
          examples::Shutdown::Connection registered(stop, c);  // until before the close
          char buf[4096];
          for (;;) {
            int64_t n = weft::io::recv(c, buf, sizeof buf);
            if (n <= 0 || weft::io::send_all(c, buf, static_cast<size_t>(n)) < 0) break;
          }
        }
        weft::io::close(c);
      }, weft::SpawnOptions{.name = "echo-conn"});
      if (!u.status().ok()) {
        weft::io::close(c);  // out of memory: drop this connection, keep serving
      } else {
        (void)u.detach();  // runs on its own; stop.finish() waits for it
      }
    }
  });
  if (error.ok() && *error == 0) {
    stop.finish();
    fprintf(stderr, "echo_server: stopped by signal %d; every connection finished\n", stop.signal());
    return 0;
  }
  fprintf(stderr, "echo_server: accept: %s\n", error.ok() ? strerror(-*error) : error.status().ToString().c_str());
  _exit(1);  // connection ULTs may still run: do not wait for them in ~Runtime
}
