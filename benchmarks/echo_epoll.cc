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

#include "benchmarks/server_common.h"
#include <vector>

namespace {

constexpr char kDescription[] =
    "  Echoes every connection's bytes back from a single-threaded, level-triggered\n"
    "  epoll loop (non-blocking sockets): the per-core reference of echo_bench.\n";

struct Conn {
  std::string pending;  // bytes the peer has not taken yet
  size_t off = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int port = bench::parse_port(argc, argv, kDescription);
  signal(SIGPIPE, SIG_IGN);

  int bound = 0;
  int lfd = bench::listen_or_exit("echo_epoll", port, SOCK_NONBLOCK, &bound);

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

  printf("listening on port %d (epoll loop, 1 thread, level-triggered)\n", bound);
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
