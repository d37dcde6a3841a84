// benchmarks/echo_nptl.cc — the NPTL comparison point for examples/echo_server:
// one kernel thread per connection, plain blocking accept/recv/send.
//
//   echo_nptl --port 7000
//
// Prints "listening on port P (NPTL, thread per connection, 64 KiB stacks)"
// once ready, then echoes every byte back until the peer closes. Each
// connection gets a detached pthread with a 64 KiB stack (glibc's default
// of 8 MiB would only cost address space, but 64 KiB is what a server with
// thousands of threads would choose, and what weft's ULTs get by default).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "benchmarks/server_common.h"

namespace {

constexpr size_t kStack = 64 * 1024;

constexpr char kDescription[] =
    "  Echoes every connection's bytes back, one NPTL thread (64 KiB stack) per\n"
    "  connection, blocking accept/recv/send. The comparison point of echo_bench.\n";

void* conn_main(void* arg) {
  int fd = static_cast<int>(reinterpret_cast<intptr_t>(arg));
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    ssize_t off = 0;
    while (off < n) {
      ssize_t w = send(fd, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) goto done;
      off += w;
    }
  }
done:
  close(fd);
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  int port = bench::parse_port(argc, argv, kDescription);
  signal(SIGPIPE, SIG_IGN);
  bench::serve_thread_per_connection("echo_nptl", port, kStack, conn_main);
}
