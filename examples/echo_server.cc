// examples/echo_server.cc — an echo server: one ULT per connection.
//
//   echo_server --port 7000 --workers 2
//
// Prints "listening on port P (backend B, N workers)" once ready, then
// echoes every byte back until the peer closes. WEFT_IO=epoll forces the
// epoll backend.
#include <weft/weft.h>

#include <cstdio>

#include "examples/args.h"

int main(int argc, char** argv) {
  examples::Args args = examples::parse(argc, argv, "Echoes every connection's bytes back, one ULT per connection.");
  weft::Runtime rt(weft::Options{.workers = args.workers});
  if (!rt.status().ok()) {
    fprintf(stderr, "echo_server: %s\n", rt.status().ToString().c_str());
    return 1;
  }
  absl::Status s = rt.block_on([&] {
    int lfd = weft::io::listen_tcp("0.0.0.0", static_cast<uint16_t>(args.port));
    if (lfd < 0) {
      fprintf(stderr, "echo_server: cannot listen on port %d: %s\n", args.port, strerror(-lfd));
      exit(1);
    }
    printf("listening on port %d (backend %s, %d workers)\n", weft::io::local_port(lfd), weft::io::backend(),
           rt.concurrency());
    fflush(stdout);
    for (;;) {
      int c = weft::io::accept(lfd);
      if (c < 0) {
        if (c == -EMFILE || c == -ENFILE || c == -ENOMEM) weft::this_ult::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      weft::Ult u = weft::spawn([c] {
        char buf[4096];
        for (;;) {
          int64_t n = weft::io::recv(c, buf, sizeof buf);
          if (n <= 0 || weft::io::send_all(c, buf, static_cast<size_t>(n)) < 0) break;
        }
        weft::io::close(c);
      }, weft::SpawnOptions{.name = "echo-conn"});
      if (!u.status().ok()) weft::io::close(c);  // out of memory: drop this connection, keep serving
    }
  });
  fprintf(stderr, "echo_server: %s\n", s.ToString().c_str());
  return 1;
}
