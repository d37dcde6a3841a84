// examples/http_parse.h — the HTTP/1.1 request-head parser of
// examples/http_server.cc, in a header of its own so that the fuzz target
// (tests/fuzz/http_parse_fuzz.cc) checks the very code the server runs.
// Plain C++, no weft: it parses bytes already received.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstring>
#include <string_view>

namespace http {

constexpr size_t kMaxHeader = 8192;  // request line + headers; more: 431
constexpr size_t kMaxBody = 1 << 20;  // request bodies are read and discarded; more: 413

struct Request {
  int status = 0;  // 0: well formed; else the error status to answer (400, 413, 501, 505)
  std::string_view method, target;  // point into the parsed head
  bool keep_alive = true;
  size_t content_length = 0;
};

inline bool is_alnum(char c) { return isalnum(static_cast<unsigned char>(c)) != 0; }

inline bool is_tchar(char c) { return c != '\0' && (is_alnum(c) || strchr("!#$%&'*+-.^_`|~", c) != nullptr); }

inline bool is_token(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar); }

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (tolower(static_cast<unsigned char>(a[i])) != tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

inline std::string_view strip(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

inline bool is_field_value(std::string_view s) {
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

// A decimal Content-Length without sign or overflow.
inline bool parse_size(std::string_view s, size_t* out) {
  if (s.empty() || s.size() > 18) return false;
  size_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  *out = n;
  return true;
}

inline Request bad(int status) {
  Request r;
  r.status = status;
  return r;
}

// Parses a request head (request line and headers) without its final
// CRLF CRLF.
inline Request parse(std::string_view head) {
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
  // "HTTP/" DIGIT "." DIGIT; only 1.0 and 1.1 are served.
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || !isdigit(static_cast<unsigned char>(version[5])) ||
      version[6] != '.' || !isdigit(static_cast<unsigned char>(version[7])))
    return bad(400);
  if (version == "HTTP/1.0") {
    r.keep_alive = false;
  } else if (version != "HTTP/1.1") {
    return bad(505);
  }
  bool have_length = false;
  while (eol != std::string_view::npos) {
    size_t start = eol + 2;
    eol = head.find("\r\n", start);
    std::string_view h = head.substr(start, eol == std::string_view::npos ? head.npos : eol - start);
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

// Where the head in buf ends (the offset of its CRLF CRLF), or npos. `from`
// is how much of buf was searched before (a caller appending bytes passes the
// old size, so a head sent one byte at a time costs linear, not quadratic,
// time).
inline size_t find_head_end(std::string_view buf, size_t from) {
  return buf.find("\r\n\r\n", from < 3 ? 0 : from - 3);
}

// A file name the server may serve from its root: letters, digits, '.', '_'
// and '-', not starting with '.', at most 255 bytes. A single path component,
// so it can name nothing outside the root directory itself.
inline bool valid_name(std::string_view n) {
  if (n.empty() || n[0] == '.' || n.size() > 255) return false;
  for (char c : n)
    if (!is_alnum(c) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

inline const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
  }
  return "Error";
}

}  // namespace http
