// sys/raw_log.cc — formatting and writing raw log lines with no allocation
// and no locks (raw_log.h).
#include "sys/raw_log.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "sys/raw_syscall.h"

namespace weft::sys {
namespace {

struct Buf {
  char data[512];
  size_t n = 0;
  void put(char c) {
    if (n < sizeof data - 1) data[n++] = c;
  }
  void puts(const char* s) {
    if (s == nullptr) s = "(null)";
    while (*s) put(*s++);
  }
  void putu(unsigned long long v, unsigned base) {
    char tmp[24];
    int i = 0;
    do {
      tmp[i++] = "0123456789abcdef"[v % base];
      v /= base;
    } while (v != 0);
    while (i > 0) put(tmp[--i]);
  }
  void puti(long long v) {
    if (v < 0) {
      put('-');
      putu(static_cast<unsigned long long>(-(v + 1)) + 1, 10);
    } else {
      putu(static_cast<unsigned long long>(v), 10);
    }
  }
};

void format(Buf* b, const char* fmt, va_list ap) {
  for (const char* p = fmt; *p; ++p) {
    if (*p != '%') {
      b->put(*p);
      continue;
    }
    const char* start = p++;
    int longs = 0;
    bool size = false;
    while (*p == 'l') ++longs, ++p;
    if (*p == 'z') size = true, ++p;
    switch (*p) {
      case 's': b->puts(va_arg(ap, const char*)); break;
      case 'c': b->put(static_cast<char>(va_arg(ap, int))); break;
      case '%': b->put('%'); break;
      case 'd':
      case 'i':
        if (size || longs > 0) b->puti(longs > 1 ? va_arg(ap, long long) : va_arg(ap, long));
        else b->puti(va_arg(ap, int));
        break;
      case 'u':
      case 'x': {
        unsigned base = *p == 'x' ? 16 : 10;
        if (size || longs > 0) b->putu(longs > 1 ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned long), base);
        else b->putu(va_arg(ap, unsigned), base);
        break;
      }
      case 'p':
        b->puts("0x");
        b->putu(reinterpret_cast<uintptr_t>(va_arg(ap, void*)), 16);
        break;
      default:  // unknown: copy literally
        for (const char* q = start; q <= p && *q; ++q) b->put(*q);
        if (*p == '\0') return;
    }
  }
}

void emit(Buf* b) {
  if (b->n == 0 || b->data[b->n - 1] != '\n') {
    if (b->n == sizeof b->data - 1) b->n--;
    b->data[b->n++] = '\n';
  }
  raw_syscall(SYS_write, 2, reinterpret_cast<long>(b->data), static_cast<long>(b->n));
}

}  // namespace

void raw_vlogf(const char* fmt, va_list ap) {
  Buf b;
  format(&b, fmt, ap);
  emit(&b);
}

void raw_logf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  raw_vlogf(fmt, ap);
  va_end(ap);
}

void check_failed(const char* file, int line, const char* cond, const char* fmt, ...) {
  Buf b;
  b.puts("weft: check failed at ");
  b.puts(file);
  b.put(':');
  b.puti(line);
  b.puts(": ");
  b.puts(cond);
  if (fmt[0] != '\0') {
    b.puts(": ");
    va_list ap;
    va_start(ap, fmt);
    format(&b, fmt, ap);
    va_end(ap);
  }
  emit(&b);
  abort();
}

}  // namespace weft::sys
