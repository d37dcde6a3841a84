// examples/http_server.cc — a small HTTP/1.1 server on weft: one ULT per
// connection, keep-alive and pipelining.
//
//   http_server --port 8080 --workers 2 --root ./public
//
//   GET /  or  /hello   -> 200 "hello\n"
//   GET /static/NAME    -> the regular file ROOT/NAME, streamed in 64 KiB
//                          pieces (NAME: letters, digits, . _ -, not starting
//                          with '.'). Symbolic links (even ones that stay in
//                          ROOT), FIFOs, devices and directories: 404.
//   HEAD of either      -> the same headers, no body
//   anything malformed  -> 400 and the connection is closed; other errors:
//                          404, 405, 413, 431, 501, 505
//
// Limits against slow or greedy clients:
//   --request-timeout S  a request's head must be complete S seconds after
//                        its first byte, and its body S seconds after that
//                        (default 10): a client that sends one byte at a
//                        time ("slowloris") cannot hold a connection longer.
//   --idle-timeout S     a keep-alive connection where no next request starts
//                        within S seconds is closed (default 30); a response
//                        must make progress too: each piece within S seconds.
//   --max-connections N  at most N connections at once (default 1000). One
//                        more is answered 503 and closed at once, unread (a
//                        client that had already sent its request may see a
//                        reset instead); waiting for a slot instead would let
//                        N slow clients stall every new one in the backlog.
//
// SIGINT or SIGTERM stops it gracefully: the listener closes, requests
// already received are answered, keep-alive connections end instead of
// waiting for another request, and the server exits 0 once every
// connection has finished.
#include <weft/weft.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "examples/shutdown.h"
#include "examples/accept.h"
#include "examples/args.h"
#include "examples/http_parse.h"

namespace {

using weft::io::Deadline;

constexpr size_t kChunk = 64 * 1024;  // file bytes read and sent at a time

int g_root_fd = -1;  // the document root, opened once at start
std::chrono::seconds g_request_timeout{10}, g_idle_timeout{30};
std::atomic<int> g_connections{0};  // being served now

bool send_text(int fd, const std::string& msg) {
  return weft::io::send_all(fd, msg.data(), msg.size(), Deadline::in(g_idle_timeout)) ==
         static_cast<int64_t>(msg.size());
}

std::string head_of(int status, uint64_t length, std::string_view type, bool keep_alive) {
  return "HTTP/1.1 " + std::to_string(status) + " " + http::reason(status) +
         "\r\nContent-Length: " + std::to_string(length) + "\r\nContent-Type: " + std::string(type) +
         "\r\nConnection: " + (keep_alive ? "keep-alive" : "close") + "\r\n\r\n";
}

// Sends a whole response; false if the connection must be closed.
bool respond(int fd, int status, std::string_view body, bool keep_alive, bool head_only) {
  std::string msg = head_of(status, body.size(), "text/plain", keep_alive);
  if (!head_only) msg.append(body);
  return send_text(fd, msg);
}

bool respond_error(int fd, int status, bool keep_alive, bool head_only) {
  return respond(fd, status, std::string(http::reason(status)) + "\n", keep_alive, head_only);
}

// Answers GET/HEAD /static/NAME; false if the connection must be closed.
bool send_file(int fd, std::string_view name, bool keep_alive, bool head_only) {
  // NAME is one path component (http::valid_name), so only a symbolic link
  // could lead out of the root: O_NOFOLLOW refuses it (ELOOP). O_NONBLOCK:
  // opening a FIFO does not wait for a writer (that would block an io_uring
  // worker thread or, with epoll, a weft worker). openat2's RESOLVE_BENEATH
  // would add nothing for a single component, and weft::io has no openat2.
  std::string path(name);
  int f = weft::io::openat(g_root_fd, path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  if (f < 0) {
    bool missing = f == -ENOENT || f == -ENOTDIR || f == -ELOOP || f == -EACCES;
    return respond_error(fd, missing ? 404 : 500, keep_alive, head_only);
  }
  struct statx st {};
  int status = 200;
  if (weft::io::statx(f, "", AT_EMPTY_PATH, STATX_TYPE | STATX_SIZE, &st) < 0) {
    status = 500;
  } else if (!S_ISREG(st.stx_mode)) {
    status = 404;  // a FIFO, a socket, a device or a directory
  } else if (fcntl(f, F_SETFL, 0) != 0) {
    // A regular file is read with O_NONBLOCK cleared: io_uring would
    // otherwise answer -EAGAIN for data not in the page cache.
    status = 500;
  }
  if (status != 200) {
    weft::io::close(f);
    return respond_error(fd, status, keep_alive, head_only);
  }
  bool ok = send_text(fd, head_of(200, st.stx_size, "application/octet-stream", keep_alive));
  if (ok && !head_only) {
    std::unique_ptr<char[]> chunk(new char[kChunk]);
    for (uint64_t off = 0; ok && off < st.stx_size;) {
      int64_t n = weft::io::pread(f, chunk.get(), std::min<uint64_t>(kChunk, st.stx_size - off),
                                  static_cast<off_t>(off));
      // A file that shrank or failed meanwhile: the promised length cannot be
      // kept, so the connection is closed.
      ok = n > 0 && weft::io::send_all(fd, chunk.get(), static_cast<size_t>(n), Deadline::in(g_idle_timeout)) == n;
      off += static_cast<uint64_t>(std::max<int64_t>(n, 0));
    }
  }
  weft::io::close(f);
  return ok;
}

// Receives up to `max` more bytes into *buf before the deadline; false on
// EOF, error, reset or the deadline.
bool receive(int fd, std::string* buf, size_t max, Deadline d) {
  char tmp[4096];
  int64_t n = weft::io::recv(fd, tmp, std::min(sizeof tmp, max), 0, d);
  if (n <= 0) return false;
  buf->append(tmp, static_cast<size_t>(n));
  return true;
}

void serve(int fd) {
  std::string buf;
  for (;;) {
    // Keep-alive: the next request must start within the idle timeout...
    if (buf.empty() && !receive(fd, &buf, http::kMaxHeader + 4, Deadline::in(g_idle_timeout))) return;
    // ... and its head be complete within the request timeout.
    Deadline head_by = Deadline::in(g_request_timeout);
    size_t end, searched = 0;
    while ((end = http::find_head_end(buf, searched)) == std::string::npos) {
      if (buf.size() >= http::kMaxHeader) {
        respond_error(fd, 431, false, false);
        return;
      }
      searched = buf.size();
      if (!receive(fd, &buf, http::kMaxHeader + 4 - buf.size(), head_by)) return;  // gone, or too slow
    }
    http::Request r = http::parse(std::string_view(buf).substr(0, end));
    if (r.status != 0) {
      respond_error(fd, r.status, false, false);
      return;
    }
    // Skip a request body (we serve no POSTs, but must not misread it); the
    // part not yet in buf must arrive within the request timeout.
    size_t consumed = end + 4;
    size_t in_buf = std::min(r.content_length, buf.size() - consumed);
    consumed += in_buf;
    Deadline body_by = Deadline::in(g_request_timeout);
    for (size_t left = r.content_length - in_buf; left > 0;) {
      char tmp[4096];
      int64_t n = weft::io::recv(fd, tmp, std::min(sizeof tmp, left), 0, body_by);
      if (n <= 0) return;
      left -= static_cast<size_t>(n);
    }
    bool head = r.method == "HEAD";
    bool ok;
    if (r.method != "GET" && !head) {
      ok = respond_error(fd, 405, r.keep_alive, false);
    } else if (r.target == "/" || r.target == "/hello") {
      ok = respond(fd, 200, "hello\n", r.keep_alive, head);
    } else if (r.target.substr(0, 8) == "/static/" && http::valid_name(r.target.substr(8))) {
      ok = send_file(fd, r.target.substr(8), r.keep_alive, head);
    } else {
      ok = respond_error(fd, 404, r.keep_alive, head);
    }
    if (!ok || !r.keep_alive) return;
    buf.erase(0, consumed);  // r's views into buf are dead from here
  }
}

// Accepts connections into `conns` until the listener fails (returns its
// error) or a graceful stop closes it (returns 0 once every connection has
// finished: after a grace period the rest are asked to stop).
int accept_loop(int lfd, int max_connections, examples::Shutdown& stop) {
  static const std::string k503 = head_of(503, 0, "text/plain", false);
  weft::TaskGroup conns(
      weft::TaskGroupOptions{.cancel_on_failure = false, .spawn = weft::SpawnOptions{.name = "http-conn"}});
  weft::io::Acceptor acceptor(lfd);
  for (;;) {
    int c = examples::accept_next(acceptor);
    if (c < 0) {
      if (!stop.stopping()) {
        conns.request_stop();  // the listener failed: stop serving
        return c;
      }
      size_t forced = stop.finish(conns, std::chrono::seconds(5));
      if (forced != 0) fprintf(stderr, "http_server: %zu connections stopped after the grace period\n", forced);
      return 0;
    }
    if (g_connections.load() >= max_connections) {
      // Never wait for this client: a new socket's buffer takes the answer.
      weft::io::send(c, k503.data(), k503.size(), MSG_DONTWAIT);
      weft::io::close(c);
      continue;
    }
    g_connections.fetch_add(1);
    absl::Status spawned = conns.spawn([c, &stop] {
      {
        examples::Shutdown::Connection registered(stop, c);  // until before the close
        serve(c);
      }
      weft::io::close(c);
      g_connections.fetch_sub(1);
    });
    if (!spawned.ok()) {  // out of memory: drop this connection, keep serving
      weft::io::close(c);
      g_connections.fetch_sub(1);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int request_timeout = 10, idle_timeout = 30, max_connections = 1000;
  examples::Args args = examples::parse(
      argc, argv, "Serves \"hello\" at / and files under /static/, HTTP/1.1 keep-alive.", true,
      {{"--request-timeout", &request_timeout, 1, 3600, "seconds for a request's head (and again its body)"},
       {"--idle-timeout", &idle_timeout, 1, 86400, "seconds a keep-alive connection may idle"},
       {"--max-connections", &max_connections, 1, 1 << 20, "connections at once; more are answered 503"}});
  g_request_timeout = std::chrono::seconds(request_timeout);
  g_idle_timeout = std::chrono::seconds(idle_timeout);
  g_root_fd = open(args.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (g_root_fd < 0) {
    fprintf(stderr, "http_server: cannot open --root %s: %s\n", args.root.c_str(), strerror(errno));
    return 1;
  }
  weft::Runtime rt(weft::Options{.workers = args.workers});
  if (!rt.status().ok()) {
    fprintf(stderr, "http_server: %s\n", rt.status().ToString().c_str());
    return 1;
  }
  // Errors found in a ULT come back to main as values: exit() in a ULT
  // would run static destructors while the workers still run.
  absl::StatusOr<int> listening =
      rt.block_on([&] { return weft::io::listen_tcp("0.0.0.0", static_cast<uint16_t>(args.port)); });
  if (!listening.ok() || *listening < 0) {
    fprintf(stderr, "http_server: cannot listen on port %d: %s\n", args.port,
            listening.ok() ? strerror(-*listening) : listening.status().ToString().c_str());
    return 1;
  }
  int lfd = *listening;
  examples::Shutdown stop(rt, lfd);
  if (!stop.status().ok()) {
    fprintf(stderr, "http_server: %s\n", stop.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<int> error = rt.block_on([&] {
    printf("listening on port %d (backend %s, %d workers)\n", weft::io::local_port(lfd), weft::io::backend(),
           rt.concurrency());
    fflush(stdout);
    return accept_loop(lfd, max_connections, stop);
  });
  if (error.ok() && *error == 0) {
    fprintf(stderr, "http_server: stopped by signal %d; every connection finished\n", stop.signal());
    return 0;
  }
  fprintf(stderr, "http_server: accept: %s\n",
          error.ok() ? strerror(-*error) : error.status().ToString().c_str());
  _exit(1);  // the shutdown watcher still waits for a signal: do not wait for it in ~Runtime
}
