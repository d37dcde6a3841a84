// sys/raw_log.h — logging and assertions that are safe where spdlog is not.
//
// raw_logf formats into a stack buffer and writes it to stderr with one
// write(2): it never allocates, takes no lock and does not touch errno, so
// signal handlers, an atfork child, the scheduler's switch path and tiny
// stacks may use it. It understands %s %c %d %i %u %x %p %% with the length
// modifiers l, ll, z; anything else is copied literally. Lines longer than
// 512 bytes are truncated.
//
// WEFT_DCHECK(cond, fmt, ...) checks an invariant in debug builds
// (-Ddchecks=true, on by default for non-release builds): when `cond` is
// false it logs the file, line, condition and message with raw_logf and
// aborts. In release builds it compiles to nothing (the condition is not
// evaluated). WEFT_CHECK is the same but always on.
#pragma once

#include <cstdarg>

namespace weft::sys {

void raw_logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void raw_vlogf(const char* fmt, va_list ap);

[[noreturn]] void check_failed(const char* file, int line, const char* cond, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

}  // namespace weft::sys

#define WEFT_CHECK(cond, ...)                                                      \
  do {                                                                             \
    if (__builtin_expect(!(cond), 0))                                              \
      ::weft::sys::check_failed(__FILE__, __LINE__, #cond, "" __VA_ARGS__);        \
  } while (0)

#if WEFT_DCHECK_ENABLED
#define WEFT_DCHECK(cond, ...) WEFT_CHECK(cond, __VA_ARGS__)
#else
#define WEFT_DCHECK(cond, ...) \
  do {                         \
    if (false) (void)(cond);   \
  } while (0)
#endif
