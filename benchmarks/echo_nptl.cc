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
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr size_t kStack = 64 * 1024;

void usage(const char* argv0, int status) {
  FILE* out = status == 0 ? stdout : stderr;
  fprintf(out,
          "usage: %s [--port P]\n"
          "  Echoes every connection's bytes back, one NPTL thread (64 KiB stack) per\n"
          "  connection, blocking accept/recv/send. The comparison point of echo_bench.\n"
          "  --port P     TCP port to listen on (default 7000; 0 picks a free one)\n",
          argv0);
  exit(status);
}

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
  int port = 7000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") usage(argv[0], 0);
    if (a == "--port" && i + 1 < argc) {
      char* end = nullptr;
      long p = strtol(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || p < 0 || p > 65535) usage(argv[0], 2);
      port = static_cast<int>(p);
    } else {
      fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], argv[i]);
      usage(argv[0], 2);
    }
  }
  signal(SIGPIPE, SIG_IGN);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_ANY);
  if (lfd < 0 || bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(lfd, 1024) != 0) {
    fprintf(stderr, "echo_nptl: cannot listen on port %d: %s\n", port, strerror(errno));
    return 1;
  }
  socklen_t len = sizeof sa;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, kStack);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

  printf("listening on port %d (NPTL, thread per connection, %zu KiB stacks)\n", ntohs(sa.sin_port), kStack / 1024);
  fflush(stdout);
  for (;;) {
    int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) usleep(10000);
      continue;
    }
    pthread_t t;
    if (int r = pthread_create(&t, &attr, conn_main, reinterpret_cast<void*>(static_cast<intptr_t>(c))); r != 0) {
      fprintf(stderr, "echo_nptl: pthread_create: %s (dropping a connection)\n", strerror(r));
      close(c);
    }
  }
}
