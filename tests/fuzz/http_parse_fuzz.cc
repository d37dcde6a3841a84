// tests/fuzz/http_parse_fuzz.cc — fuzz target for examples/http_parse.h,
// the request parser examples/http_server.cc runs on untrusted bytes.
//
// Built two ways:
//   - with clang's libFuzzer, ASan and UBSan by tests/fuzz/run.sh (called
//     from tests/run-all.sh for a bounded time);
//   - with the project's compiler and tests/fuzz/replay_main.cc as the meson
//     test http_parse_fuzz_replay: the seed corpus plus a fixed number of
//     deterministic mutations of it, on every build.
//
// Besides memory errors (ASan) and undefined behaviour (UBSan), it checks
// what the server relies on:
//   - parse() answers 0 or one of 400, 413, 501, 505; for 0, method is a
//     token, target starts with '/' and has no control bytes or spaces,
//     both point into the head, and content_length <= kMaxBody;
//   - find_head_end() called as the server calls it (on a buffer that grows
//     by pieces, passing the previous size) finds the same CRLF CRLF as a
//     search of the whole buffer;
//   - valid_name() accepts only single path components that cannot leave
//     the root (no '/', not starting with '.').
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "examples/http_parse.h"

namespace {

#define FUZZ_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "http_parse_fuzz: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                         \
    }                                                                                  \
  } while (0)

bool inside(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

void check_request(std::string_view head, const http::Request& r) {
  FUZZ_CHECK(r.status == 0 || r.status == 400 || r.status == 413 || r.status == 501 || r.status == 505);
  if (r.status != 0) return;
  FUZZ_CHECK(http::is_token(r.method));
  FUZZ_CHECK(!r.target.empty() && r.target[0] == '/');
  for (unsigned char c : r.target) FUZZ_CHECK(c > 0x20 && c < 0x7f);
  FUZZ_CHECK(inside(r.method, head) && inside(r.target, head));
  FUZZ_CHECK(r.method.data() == head.data());
  FUZZ_CHECK(r.content_length <= http::kMaxBody);
  std::string line = std::string(r.method) + " " + std::string(r.target) + " HTTP/1.";
  FUZZ_CHECK(head.substr(0, line.size()) == line);
}

void check_name(std::string_view n) {
  if (!http::valid_name(n)) return;
  FUZZ_CHECK(!n.empty() && n.size() <= 255 && n[0] != '.');
  FUZZ_CHECK(n.find('/') == std::string_view::npos && n.find('\0') == std::string_view::npos);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);

  // The input as one head, whatever it contains.
  check_request(in, http::parse(in));

  // The input as a byte stream arriving in pieces (sizes taken from the
  // input itself), framed as the server frames it: head, parse, skip body.
  std::string buf;
  size_t searched = 0, piece = 1, body_left = 0;
  for (size_t pos = 0; pos < in.size();) {
    size_t take = std::min(in.size() - pos, 1 + (piece++ * 7 + static_cast<unsigned char>(in[pos])) % 61);
    std::string_view bytes = in.substr(pos, take);
    pos += take;
    size_t skip = std::min(body_left, bytes.size());  // the rest of a body, read past buf
    body_left -= skip;
    bytes.remove_prefix(skip);
    buf.append(bytes);
    for (;;) {
      size_t end = http::find_head_end(buf, searched);
      FUZZ_CHECK(end == buf.find("\r\n\r\n"));
      if (end == std::string::npos) {
        if (buf.size() >= http::kMaxHeader) return 0;  // 431, closed
        searched = buf.size();
        break;
      }
      std::string_view head = std::string_view(buf).substr(0, end);
      http::Request r = http::parse(head);
      check_request(head, r);
      if (r.status != 0) return 0;  // the server answers and closes
      if (r.target.substr(0, 8) == "/static/") check_name(r.target.substr(8));
      size_t in_buf = std::min(r.content_length, buf.size() - end - 4);
      body_left = r.content_length - in_buf;
      FUZZ_CHECK(body_left == 0 || end + 4 + in_buf == buf.size());
      buf.erase(0, end + 4 + in_buf);
      searched = 0;
    }
  }
  check_name(in.substr(0, 300));
  return 0;
}
