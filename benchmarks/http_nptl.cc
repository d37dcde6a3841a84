// benchmarks/http_nptl.cc — the NPTL comparison point for examples/http_server:
// one kernel thread (64 KiB stack) per connection, blocking recv/send,
// HTTP/1.1 keep-alive and pipelining.
//
//   http_nptl --port 8080
//
// Prints "listening on port P (NPTL, thread per connection, 64 KiB stacks)"
// once ready.
//   GET or HEAD / and /hello -> 200 "hello\n", byte for byte the response of
//                               examples/http_server
//   other GET/HEAD targets   -> 404;  other methods -> 405
//   a malformed request      -> 400 and the connection is closed
// A request body (Content-Length) is skipped; Transfer-Encoding is answered
// with 501 and a close. "Connection: close" and HTTP/1.0 without
// "Connection: keep-alive" close after the response. Every complete request
// in the buffer is answered in order (pipelining); the responses to one
// recv's worth of requests go out in one send. Connections idle for 30 s are
// closed (SO_RCVTIMEO). Parsing is deliberately simple: this is the
// comparison point, not a product.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "benchmarks/server_common.h"
#include <string_view>

namespace {

constexpr size_t kStack = 64 * 1024;
constexpr size_t kMaxHeader = 8192;

constexpr char kDescription[] =
    "  HTTP/1.1 keep-alive server answering \"hello\\n\" at / and /hello, one NPTL\n"
    "  thread (64 KiB stack) per connection: the comparison point for\n"
    "  examples/http_server in echo_bench --http.\n";

std::string response(int status, const char* reason, std::string_view body, bool keep_alive, bool head) {
  std::string m = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\nContent-Type: text/plain\r\nConnection: " +
                  (keep_alive ? "keep-alive" : "close") + "\r\n\r\n";
  if (!head) m.append(body);
  return m;
}

const std::string kHello = response(200, "OK", "hello\n", true, false);

bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ieq(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

struct Parsed {
  int status = 0;  // 0: ok, else the error to answer (and close)
  bool keep_alive = true;
  bool head = false;
  bool get = false;
  std::string_view target;
  size_t content_length = 0;
};

// The head without its final CRLF CRLF.
Parsed parse(std::string_view head) {
  Parsed p;
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  size_t s1 = line.find(' ');
  size_t s2 = s1 == line.npos ? s1 : line.find(' ', s1 + 1);
  if (s2 == line.npos || s1 == 0) {
    p.status = 400;
    return p;
  }
  std::string_view method = line.substr(0, s1), version = line.substr(s2 + 1);
  p.target = line.substr(s1 + 1, s2 - s1 - 1);
  if (p.target.empty() || p.target[0] != '/') {
    p.status = 400;
    return p;
  }
  if (version == "HTTP/1.0") {
    p.keep_alive = false;
  } else if (version != "HTTP/1.1") {
    p.status = 400;
    return p;
  }
  p.get = method == "GET";
  p.head = method == "HEAD";
  while (eol != head.npos) {
    size_t start = eol + 2;
    eol = head.find("\r\n", start);
    std::string_view h = head.substr(start, eol == head.npos ? head.npos : eol - start);
    size_t colon = h.find(':');
    if (colon == h.npos || colon == 0) {
      p.status = 400;
      return p;
    }
    std::string_view name = h.substr(0, colon), value = trim(h.substr(colon + 1));
    if (ieq(name, "content-length")) {
      size_t n = 0;
      if (value.empty() || value.size() > 18) p.status = 400;
      for (char c : value) {
        if (c < '0' || c > '9') p.status = 400;
        n = n * 10 + static_cast<size_t>(c - '0');
      }
      p.content_length = n;
    } else if (ieq(name, "transfer-encoding")) {
      p.status = 501;
    } else if (ieq(name, "connection")) {
      if (ieq(value, "close")) p.keep_alive = false;
      if (ieq(value, "keep-alive")) p.keep_alive = true;
    }
    if (p.status != 0) return p;
  }
  return p;
}

void serve(int fd) {
  std::string in, out;
  in.reserve(kMaxHeader);
  size_t skip = 0;  // body bytes still to discard
  char tmp[4096];
  for (;;) {
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // closed, reset, or idle for 30 s
    in.append(tmp, static_cast<size_t>(n));
    size_t pos = 0;
    bool close_after = false;
    for (;;) {
      if (skip > 0) {
        size_t take = std::min(skip, in.size() - pos);
        pos += take;
        skip -= take;
        if (skip > 0) break;
      }
      size_t end = in.find("\r\n\r\n", pos);
      if (end == in.npos) {
        if (in.size() - pos >= kMaxHeader) {
          out += response(431, "Request Header Fields Too Large", "header too large\n", false, false);
          close_after = true;
        }
        break;
      }
      Parsed p = parse(std::string_view(in).substr(pos, end - pos));
      pos = end + 4;
      if (p.status != 0) {
        out += response(p.status, p.status == 400 ? "Bad Request" : "Not Implemented",
                        p.status == 400 ? "Bad Request\n" : "Not Implemented\n", false, false);
        close_after = true;
        break;
      }
      skip = p.content_length;
      if (!p.get && !p.head) {
        out += response(405, "Method Not Allowed", "method not allowed\n", p.keep_alive, false);
      } else if (p.target == "/" || p.target == "/hello") {
        if (p.get && p.keep_alive) out += kHello;
        else out += response(200, "OK", "hello\n", p.keep_alive, p.head);
      } else {
        out += response(404, "Not Found", "not found\n", p.keep_alive, p.head);
      }
      if (!p.keep_alive) {
        close_after = true;
        break;
      }
    }
    if (!out.empty() && !send_all(fd, out.data(), out.size())) return;
    out.clear();
    if (close_after) return;
    in.erase(0, pos);
  }
}

void* conn_main(void* arg) {
  int fd = static_cast<int>(reinterpret_cast<intptr_t>(arg));
  timeval idle{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
  serve(fd);
  close(fd);
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  int port = bench::parse_port(argc, argv, kDescription, 8080);
  signal(SIGPIPE, SIG_IGN);
  bench::serve_thread_per_connection("http_nptl", port, kStack, conn_main);
}
