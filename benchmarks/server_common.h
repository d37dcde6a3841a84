// benchmarks/server_common.h — what the comparison servers (echo_nptl,
// echo_epoll, http_nptl) share: their one flag and their listening socket.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
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

}  // namespace bench
