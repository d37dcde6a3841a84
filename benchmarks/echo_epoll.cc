// benchmarks/echo_epoll.cc — the per-core reference for examples/echo_server:
// one thread, one epoll instance, non-blocking sockets, level-triggered.
//
//   echo_epoll --port 7000
//
// Prints "listening on port P (epoll loop, 1 thread, level-triggered)" once
// ready, then echoes every byte back until the peer closes. Per readiness
// event it does one recv and one send (what a hand-written event loop does
// for small request/response traffic: a second recv would only return
// EAGAIN). If the peer does not take all the bytes, the rest is kept and
// the connection waits for EPOLLOUT before it reads again.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void usage(const char* argv0, int status) {
  FILE* out = status == 0 ? stdout : stderr;
  fprintf(out,
          "usage: %s [--port P]\n"
          "  Echoes every connection's bytes back from a single-threaded, level-triggered\n"
          "  epoll loop (non-blocking sockets): the per-core reference of echo_bench.\n"
          "  --port P     TCP port to listen on (default 7000; 0 picks a free one)\n",
          argv0);
  exit(status);
}

struct Conn {
  std::string pending;  // bytes the peer has not taken yet
  size_t off = 0;
};

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

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_ANY);
  if (lfd < 0 || bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(lfd, 1024) != 0) {
    fprintf(stderr, "echo_epoll: cannot listen on port %d: %s\n", port, strerror(errno));
    return 1;
  }
  socklen_t len = sizeof sa;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    perror("echo_epoll: epoll_create1");
    return 1;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

  std::vector<Conn> conns;
  auto drop = [&](int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    if (static_cast<size_t>(fd) < conns.size()) conns[static_cast<size_t>(fd)] = Conn{};
  };

  printf("listening on port %d (epoll loop, 1 thread, level-triggered)\n", ntohs(sa.sin_port));
  fflush(stdout);

  constexpr int kEvents = 256;
  epoll_event evs[kEvents];
  char buf[4096];
  for (;;) {
    int n = epoll_wait(ep, evs, kEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("echo_epoll: epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == lfd) {
        for (;;) {  // accept everything queued
          int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (c < 0) break;  // EAGAIN, or EMFILE & co: try again at the next event
          if (static_cast<size_t>(c) >= conns.size()) conns.resize(static_cast<size_t>(c) + 1024);
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLRDHUP;
          cev.data.fd = c;
          if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) != 0) close(c);
        }
        continue;
      }
      Conn& cn = conns[static_cast<size_t>(fd)];
      if (!cn.pending.empty()) {  // waiting for EPOLLOUT
        if ((evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) continue;
        ssize_t w = send(fd, cn.pending.data() + cn.off, cn.pending.size() - cn.off, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) continue;
        if (w <= 0) {
          drop(fd);
          continue;
        }
        cn.off += static_cast<size_t>(w);
        if (cn.off == cn.pending.size()) {
          cn.pending.clear();
          cn.off = 0;
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLRDHUP;
          cev.data.fd = fd;
          epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
        }
        continue;
      }
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0) {
        drop(fd);
        continue;
      }
      ssize_t w = send(fd, buf, static_cast<size_t>(r), MSG_NOSIGNAL);
      if (w < 0 && errno == EAGAIN) w = 0;
      if (w < 0) {
        drop(fd);
        continue;
      }
      if (w < r) {  // keep the rest, stop reading until it is sent
        cn.pending.assign(buf + w, static_cast<size_t>(r - w));
        cn.off = 0;
        epoll_event cev{};
        cev.events = EPOLLOUT;
        cev.data.fd = fd;
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
      }
    }
  }
}
