// tests/http_client.h — what the tests of examples/http_server share: the
// server as a child process, and a plain blocking-socket client (threads,
// no weft) with bounded waits.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace httptest {

// examples/http_server as a child process (killed with the test process:
// PR_SET_DEATHSIG). The io backend is the test's own WEFT_IO (inherited).
class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() { Stop(); }

  // Starts `http_server --port 0 --workers 2 ARGS...` and waits (at most
  // 10 s) for its "listening on port P" line. "" on success, else why not.
  std::string Start(const std::vector<std::string>& args) {
    const char* root = getenv("WEFT_TEST_BUILD_ROOT");
    if (root == nullptr) return "WEFT_TEST_BUILD_ROOT is not set (run through meson test)";
    std::string exe = std::string(root) + "/examples/http_server";
    if (access(exe.c_str(), X_OK) != 0) return exe + " is missing";
    std::vector<std::string> all = {exe, "--port", "0", "--workers", "2"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return "pipe2 failed";
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return "fork failed";
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
      if (getppid() != parent) _exit(126);
      dup2(p[1], 1);
      execv(exe.c_str(), argv.data());
      _exit(127);
    }
    close(p[1]);
    pid_ = pid;
    out_ = p[0];
    std::string text;
    auto t0 = std::chrono::steady_clock::now();
    while (text.find('\n') == std::string::npos && MsSince(t0) < 10000) {
      pollfd pf{out_, POLLIN, 0};
      if (poll(&pf, 1, 500) <= 0) continue;
      char buf[256];
      ssize_t n = read(out_, buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    banner_ = text.substr(0, text.find('\n'));
    if (sscanf(banner_.c_str(), "listening on port %d", &port_) != 1 || port_ <= 0)
      return "the server did not start; it said: '" + banner_ + "'";
    return "";
  }

  // True while the child runs (it has not exited or crashed).
  bool Alive() {
    int st = 0;
    return pid_ > 0 && waitpid(pid_, &st, WNOHANG) == 0;
  }

  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int st = 0;
      waitpid(pid_, &st, 0);
      pid_ = -1;
    }
    if (out_ >= 0) close(out_);
    out_ = -1;
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& banner() const { return banner_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;  // its stdout
  int port_ = 0;
  std::string banner_;
};

// A blocking TCP connection to 127.0.0.1:port with `timeout_s` send and
// receive timeouts (so a server that stops answering fails the test instead
// of hanging it), or -1.
inline int Connect(int port, int timeout_s = 5) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline bool SendAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// One parsed response.
struct Response {
  int status = 0;
  std::string head, body;
};

// Reads one response from fd (buffering surplus in *buf). False on EOF,
// error or timeout before a whole response.
inline bool ReadResponse(int fd, std::string* buf, Response* r) {
  for (;;) {
    size_t end = buf->find("\r\n\r\n");
    if (end != std::string::npos) {
      r->head = buf->substr(0, end);
      if (r->head.compare(0, 9, "HTTP/1.1 ") != 0 || r->head.size() < 12) return false;
      r->status = atoi(r->head.c_str() + 9);
      size_t cl = r->head.find("Content-Length: ");
      if (cl == std::string::npos) return false;
      size_t len = strtoul(r->head.c_str() + cl + 16, nullptr, 10);
      if (buf->size() >= end + 4 + len) {
        r->body = buf->substr(end + 4, len);
        buf->erase(0, end + 4 + len);
        return true;
      }
    }
    char tmp[4096];
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf->append(tmp, static_cast<size_t>(n));
  }
}

// Reads one HEAD response (no body, whatever Content-Length says).
inline bool ReadHeadResponse(int fd, std::string* buf, Response* r) {
  for (;;) {
    size_t end = buf->find("\r\n\r\n");
    if (end != std::string::npos) {
      r->head = buf->substr(0, end);
      r->status = r->head.compare(0, 9, "HTTP/1.1 ") == 0 ? atoi(r->head.c_str() + 9) : 0;
      buf->erase(0, end + 4);
      return r->status != 0;
    }
    char tmp[4096];
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf->append(tmp, static_cast<size_t>(n));
  }
}

// True if the peer closed the connection (EOF or reset) before the socket's
// receive timeout, after discarding up to 64 KiB of data.
inline bool ClosedByPeer(int fd) {
  char tmp[4096];
  for (int i = 0; i < 16; ++i) {
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
  return false;
}

// One request on a fresh connection: the response, or status 0 if there
// was none (closed, reset, timeout).
inline Response Get(int port, const std::string& request) {
  Response r;
  int fd = Connect(port);
  if (fd < 0) return r;
  std::string buf;
  if (!SendAll(fd, request) || !ReadResponse(fd, &buf, &r)) r.status = 0;
  close(fd);
  return r;
}

inline const char* kGet = "GET /hello HTTP/1.1\r\nHost: test\r\n\r\n";

}  // namespace httptest
