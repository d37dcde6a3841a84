// runtime/thread_compat.h — per-thread libc state that follows a ULT
// (runtime/pthread_compat.cc has the interposed libc functions).
//
// Locale (uselocale). glibc keeps the current locale per kernel thread.
// libweft exports uselocale: called in a ULT it sets the ULT's locale
// (UltDesc::locale) as well as the KLT's. The switch path compares the
// resuming ULT's locale with the one its KLT has now (t_klt_locale, one
// %fs-relative load) and calls glibc's uselocale only when they differ,
// so ULTs that never call uselocale cost one compare per switch.
// UltDesc::locale == nullptr means the global locale (LC_GLOBAL_LOCALE).
#pragma once

#include <locale.h>

#include "runtime/ult.h"

namespace weft::rt {

// The locale this KLT has (as set by weft), nullptr for the global one.
extern thread_local locale_t t_klt_locale __attribute__((tls_model("initial-exec")));

// Sets this KLT's locale to `l` (nullptr: global) and records it in
// t_klt_locale. Out of line: rare.
void switch_klt_locale(locale_t l);

// On the switch path, after the ULT `u` resumed on this KLT.
inline void restore_ult_locale(const UltDesc* u) {
  if (__builtin_expect(u->locale != t_klt_locale, 0)) switch_klt_locale(u->locale);
}

}  // namespace weft::rt
