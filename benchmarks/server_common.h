// benchmarks/server_common.h — what the comparison servers (echo_nptl,
// echo_epoll, http_nptl) share: their one flag, their listening socket, and
// the thread-per-connection accept loop of the NPTL ones.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace bench {

// Parses [--port P] [--help]; prints `description` (the lines after the
// usage line) on --help (exit 0) or a bad argument (exit 2).
inline int parse_port(int argc, char** argv, const char* description, int port = 7000) {
  auto usage = [&](int status) {
    FILE* out = status == 0 ? stdout : stderr;
    fprintf(out, "usage: %s [--port P]\n%s  --port P     TCP port to listen on (default %d; 0 picks a free one)\n",
            argv[0], description, port);
    exit(status);
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") usage(0);
    if (a == "--port" && i + 1 < argc) {
      char* end = nullptr;
      long p = strtol(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || p < 0 || p > 65535) usage(2);
      port = static_cast<int>(p);
    } else {
      fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], argv[i]);
      usage(2);
    }
  }
  return port;
}

// A TCP socket listening on 0.0.0.0:port (SO_REUSEADDR, backlog 1024) with
// the extra socket() `flags`; exits with a message if that fails. Stores
// the port actually bound (port 0 picks one) in *bound.
inline int listen_or_exit(const char* prog, int port, int flags, int* bound) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
  int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_ANY);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(fd, 1024) != 0) {
    fprintf(stderr, "%s: cannot listen on port %d: %s\n", prog, port, strerror(errno));
    exit(1);
  }
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  *bound = ntohs(sa.sin_port);
  return fd;
}

// The NPTL way: listens on `port`, prints the banner echo_bench waits for,
// then runs conn_main(fd) for every connection on a detached pthread with a
// `stack`-byte stack, for ever. conn_main gets the fd cast to a pointer and
// closes it. While out of descriptors or memory, accept pauses 10 ms rather
// than spin.
[[noreturn]] inline void serve_thread_per_connection(const char* prog, int port, size_t stack,
                                                     void* (*conn_main)(void*)) {
  int bound = 0;
  int lfd = listen_or_exit(prog, port, 0, &bound);

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, stack);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

  printf("listening on port %d (NPTL, thread per connection, %zu KiB stacks)\n", bound,
         stack / 1024);
  fflush(stdout);
  for (;;) {
    int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) usleep(10000);
      continue;
    }
    pthread_t t;
    void* arg = reinterpret_cast<void*>(static_cast<intptr_t>(c));
    if (int r = pthread_create(&t, &attr, conn_main, arg); r != 0) {
      fprintf(stderr, "%s: pthread_create: %s (dropping a connection)\n", prog, strerror(r));
      close(c);
    }
  }
}

}  // namespace bench
