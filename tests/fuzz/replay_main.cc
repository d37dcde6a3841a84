// tests/fuzz/replay_main.cc — runs a libFuzzer target without libFuzzer:
// every file of the seed corpus, then a fixed number of deterministic
// mutations of them (byte flips, inserts, deletes, splices, CRLF
// insertions). Used by the meson test http_parse_fuzz_replay so the target's
// checks run on every build with the project's compiler; the real,
// coverage-guided fuzzing is tests/fuzz/run.sh.
//
//   http_parse_fuzz_replay CORPUS_DIR [ROUNDS]
#include <dirent.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

uint64_t next(uint64_t* s) {  // xorshift64*
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

void run(const std::string& s) { LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR [ROUNDS]\n", argv[0]);
    return 2;
  }
  long rounds = argc > 2 ? strtol(argv[2], nullptr, 10) : 200000;
  std::vector<std::string> seeds;
  DIR* d = opendir(argv[1]);
  if (d == nullptr) {
    fprintf(stderr, "%s: cannot open %s\n", argv[0], argv[1]);
    return 2;
  }
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(std::string(argv[1]) + "/" + e->d_name, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    seeds.push_back(ss.str());
  }
  closedir(d);
  if (seeds.empty()) {
    fprintf(stderr, "%s: no seeds in %s\n", argv[0], argv[1]);
    return 2;
  }
  for (const std::string& s : seeds) run(s);
  static const char* kTokens[] = {"\r\n", "\r\n\r\n", " ", ":", "Content-Length: ", "99999999", "HTTP/1.1",
                                  "HTTP/1.0", "Connection: close", "/static/", "..", "\t", "\x7f"};
  uint64_t rng = 0x243F6A8885A308D3ULL;
  for (long i = 0; i < rounds; ++i) {
    std::string s = seeds[next(&rng) % seeds.size()];
    int muts = 1 + static_cast<int>(next(&rng) % 6);
    for (int m = 0; m < muts; ++m) {
      size_t at = s.empty() ? 0 : next(&rng) % (s.size() + 1);
      switch (next(&rng) % 6) {
        case 0: if (at < s.size()) s[at] = static_cast<char>(next(&rng)); break;
        case 1: s.insert(at, 1, static_cast<char>(next(&rng))); break;
        case 2: if (at < s.size()) s.erase(at, 1 + next(&rng) % 8); break;
        case 3: s.insert(at, kTokens[next(&rng) % (sizeof kTokens / sizeof kTokens[0])]); break;
        case 4: s.insert(at, seeds[next(&rng) % seeds.size()]); break;
        case 5: s.resize(at); break;
      }
    }
    run(s);
  }
  printf("http_parse_fuzz_replay: %zu seeds and %ld mutations, all checks held\n", seeds.size(), rounds);
  return 0;
}
