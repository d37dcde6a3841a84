// examples/args.h — the tiny command-line parser the examples share.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

namespace examples {

struct Args {
  int port = 8080;
  int workers = 0;  // 0: one per CPU
  std::string root = ".";
};

// An integer option of one program only: "--name N", N in [lo, hi]. *value
// holds the default on entry and the parsed value on return.
struct IntFlag {
  const char* name;
  int* value;
  int lo, hi;
  const char* help;
};

// Parses --port P --workers N [--root DIR], the program's `extra` options
// and --help. Exits with usage on --help (status 0) or on a bad argument
// (status 2). Call it from main() before starting a weft::Runtime.
inline Args parse(int argc, char** argv, const char* what, bool has_root = false,
                  std::initializer_list<IntFlag> extra = {}) {
  Args a;
  auto usage = [&](int status) {
    FILE* out = status == 0 ? stdout : stderr;
    fprintf(out, "usage: %s [--port P] [--workers N]%s%s\n  %s\n", argv[0], has_root ? " [--root DIR]" : "",
            extra.size() > 0 ? " [options]" : "", what);
    fprintf(out, "  --port P     TCP port to listen on (default %d; 0 picks a free one)\n", a.port);
    fprintf(out, "  --workers N  weft workers (default 0: one per CPU)\n");
    if (has_root) fprintf(out, "  --root DIR   directory served under /static/ (default .)\n");
    for (const IntFlag& f : extra) fprintf(out, "  %s N  %s (default %d)\n", f.name, f.help, *f.value);
    fprintf(out, "  WEFT_IO=uring|epoll picks the io backend; WEFT_LOG=debug logs.\n");
    exit(status);
  };
  auto find_extra = [&](const std::string& name) -> const IntFlag* {
    for (const IntFlag& f : extra)
      if (name == f.name) return &f;
    return nullptr;
  };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    auto number = [&](const char* v, int lo, int hi) {
      char* end = nullptr;
      long n = strtol(v, &end, 10);
      if (*v == '\0' || *end != '\0' || n < lo || n > hi) {
        fprintf(stderr, "%s: bad value '%s' for %s\n", argv[0], v, arg.c_str());
        usage(2);
      }
      return static_cast<int>(n);
    };
    if (arg == "--help" || arg == "-h") usage(0);
    else if (arg == "--port") a.port = number(value(), 0, 65535);
    else if (arg == "--workers") a.workers = number(value(), 0, 1024);
    else if (has_root && arg == "--root") a.root = value();
    else if (const IntFlag* f = find_extra(arg)) *f->value = number(value(), f->lo, f->hi);
    else {
      fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], arg.c_str());
      usage(2);
    }
  }
  return a;
}

}  // namespace examples
