// examples/http_server.cc — a small HTTP/1.1 server on weft: one ULT per
// connection, keep-alive and pipelining.
//
//   http_server --port 8080 --workers 2 --root ./public
//
//   GET /  or  /hello     -> 200 "hello\n"
//   GET /static/NAME      -> the file ROOT/NAME (NAME: letters, digits, . _ -,
//                            not starting with '.'; at most 4 MiB)
//   HEAD of either        -> the same headers, no body
//   anything malformed    -> 400 and the connection is closed; other errors:
//                            404, 405, 413, 431, 501
// Connections idle for 30 s are closed.
#include <weft/weft.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "examples/args.h"

namespace {

constexpr size_t kMaxHeader = 8192;
constexpr size_t kMaxBody = 1 << 20;     // discarded request bodies
constexpr size_t kMaxFile = 4 << 20;
constexpr auto kIdle = std::chrono::seconds(30);

std::string g_root;

struct Request {
  int status = 0;  // 0: well formed; else the error status to answer
  std::string_view method, target;
  bool http10 = false;
  bool keep_alive = true;
  size_t content_length = 0;
};

bool is_alnum(char c) { return isalnum(static_cast<unsigned char>(c)) != 0; }

bool is_tchar(char c) { return c != '\0' && (is_alnum(c) || strchr("!#$%&'*+-.^_`|~", c) != nullptr); }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (tolower(static_cast<unsigned char>(a[i])) != tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

std::string_view strip(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A decimal Content-Length without sign or overflow.
bool parse_size(std::string_view s, size_t* out) {
  if (s.empty() || s.size() > 18) return false;
  size_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  *out = n;
  return true;
}

Request bad(int status) {
  Request r;
  r.status = status;
  return r;
}

bool is_token(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar); }

bool is_field_value(std::string_view s) {
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

// Parses the head [request line, headers] without its final CRLF CRLF.
Request parse(std::string_view head) {
  Request r;
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) return bad(400);
  r.method = line.substr(0, sp1);
  r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(r.method) || r.target.empty() || r.target[0] != '/') return bad(400);
  for (unsigned char c : r.target)
    if (c <= 0x20 || c >= 0x7f) return bad(400);
  if (version == "HTTP/1.0") {
    r.http10 = true;
    r.keep_alive = false;
  } else if (version != "HTTP/1.1") {
    return bad(version.substr(0, 5) == "HTTP/" ? 505 : 400);
  }
  bool have_length = false;
  while (eol != std::string_view::npos) {
    size_t start = eol + 2;
    eol = head.find("\r\n", start);
    std::string_view h = head.substr(start, eol == std::string_view::npos ? head.npos : eol - start);
    if (h.empty()) return bad(400);
    size_t colon = h.find(':');
    if (colon == std::string_view::npos || !is_token(h.substr(0, colon))) return bad(400);
    std::string_view name = h.substr(0, colon);
    std::string_view value = strip(h.substr(colon + 1));
    if (!is_field_value(value)) return bad(400);
    if (iequals(name, "content-length")) {
      size_t n;
      if (!parse_size(value, &n) || (have_length && n != r.content_length)) return bad(400);
      have_length = true;
      r.content_length = n;
    } else if (iequals(name, "transfer-encoding")) {
      return bad(501);
    } else if (iequals(name, "connection")) {
      if (iequals(value, "close")) r.keep_alive = false;
      if (iequals(value, "keep-alive")) r.keep_alive = true;
    }
  }
  if (r.content_length > kMaxBody) return bad(413);
  return r;
}

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
  }
  return "Error";
}

bool respond(int fd, int status, std::string_view body, bool keep_alive, bool head_only,
             std::string_view type = "text/plain") {
  std::string msg = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) +
                    "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nContent-Type: " + std::string(type) +
                    "\r\nConnection: " + (keep_alive ? "keep-alive" : "close") + "\r\n\r\n";
  if (!head_only) msg.append(body);
  return weft::io::send_all(fd, msg.data(), msg.size(), weft::io::Deadline::in(kIdle)) >= 0;
}

bool valid_name(std::string_view n) {
  if (n.empty() || n[0] == '.' || n.size() > 255) return false;
  for (char c : n)
    if (!is_alnum(c) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

// Reads ROOT/NAME into *out: 200, 404, 413 or 500.
int read_file(std::string_view name, std::string* out) {
  std::string path = g_root + "/" + std::string(name);
  int fd = weft::io::openat(AT_FDCWD, path.c_str(), O_RDONLY);
  if (fd < 0) return fd == -ENOENT || fd == -ENOTDIR ? 404 : 500;
  struct statx st {};
  int status = 200;
  if (weft::io::statx(fd, "", AT_EMPTY_PATH, STATX_SIZE | STATX_TYPE, &st) < 0 || !S_ISREG(st.stx_mode)) {
    status = 404;
  } else if (st.stx_size > kMaxFile) {
    status = 413;
  } else {
    out->resize(st.stx_size);
    size_t done = 0;
    while (done < out->size()) {
      int64_t n = weft::io::pread(fd, out->data() + done, out->size() - done, static_cast<off_t>(done));
      if (n <= 0) {
        status = 500;
        break;
      }
      done += static_cast<size_t>(n);
    }
  }
  weft::io::close(fd);
  return status;
}

void serve(int fd) {
  std::string buf;
  buf.reserve(kMaxHeader);
  for (;;) {
    size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (buf.size() >= kMaxHeader) {
        respond(fd, 431, "header too large\n", false, false);
        return;
      }
      char tmp[4096];
      int64_t n = weft::io::recv(fd, tmp, std::min(sizeof tmp, kMaxHeader + 4 - buf.size()), 0,
                                 weft::io::Deadline::in(kIdle));
      if (n <= 0) return;  // closed, reset, or idle too long
      buf.append(tmp, static_cast<size_t>(n));
    }
    Request r = parse(std::string_view(buf).substr(0, end));
    size_t consumed = end + 4;
    if (r.status != 0) {
      respond(fd, r.status, std::string(reason(r.status)) + "\n", false, false);
      return;
    }
    // Skip a request body (we serve no POSTs, but must not misread it).
    size_t body = r.content_length;
    while (body > 0) {
      size_t take = std::min(body, buf.size() - consumed);
      consumed += take;
      body -= take;
      if (body == 0) break;
      buf.clear();
      consumed = 0;
      char tmp[4096];
      int64_t n = weft::io::recv(fd, tmp, std::min(sizeof tmp, body), 0, weft::io::Deadline::in(kIdle));
      if (n <= 0) return;
      buf.assign(tmp, static_cast<size_t>(n));
    }
    bool head = r.method == "HEAD";
    bool ok;
    if (r.method != "GET" && !head) {
      ok = respond(fd, 405, "method not allowed\n", r.keep_alive, false);
    } else if (r.target == "/" || r.target == "/hello") {
      ok = respond(fd, 200, "hello\n", r.keep_alive, head);
    } else if (r.target.substr(0, 8) == "/static/" && valid_name(r.target.substr(8))) {
      std::string content;
      int status = read_file(r.target.substr(8), &content);
      ok = status == 200 ? respond(fd, 200, content, r.keep_alive, head, "application/octet-stream")
                         : respond(fd, status, std::string(reason(status)) + "\n", r.keep_alive, head);
    } else {
      ok = respond(fd, 404, "not found\n", r.keep_alive, head);
    }
    if (!ok || !r.keep_alive) return;
    buf.erase(0, consumed);
  }
}

}  // namespace

int main(int argc, char** argv) {
  examples::Args args =
      examples::parse(argc, argv, "Serves \"hello\" at / and files under /static/, HTTP/1.1 keep-alive.", true);
  g_root = args.root;
  weft::Runtime rt(weft::Options{.workers = args.workers});
  if (!rt.status().ok()) {
    fprintf(stderr, "http_server: %s\n", rt.status().ToString().c_str());
    return 1;
  }
  absl::Status s = rt.block_on([&] {
    int lfd = weft::io::listen_tcp("0.0.0.0", static_cast<uint16_t>(args.port));
    if (lfd < 0) {
      fprintf(stderr, "http_server: cannot listen on port %d: %s\n", args.port, strerror(-lfd));
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
      weft::Ult u = weft::spawn(
          [c] {
            serve(c);
            weft::io::close(c);
          },
          weft::SpawnOptions{.name = "http-conn"});
      if (!u.status().ok()) weft::io::close(c);
    }
  });
  fprintf(stderr, "http_server: %s\n", s.ToString().c_str());
  return 1;
}
