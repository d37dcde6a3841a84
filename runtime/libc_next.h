// runtime/libc_next.h — the definition of a C library function that comes
// after weft's own (weft interposes pthread_sigmask, setuid, system...
// and forwards to glibc's outside ULTs).
#pragma once

#include <dlfcn.h>

#include <cstdlib>

#include "sys/raw_log.h"

namespace weft::rt {

// The next definition of `name` after the object that calls this (with
// libweft.so: the C library's; with libweft.a, after the program's). A
// name the C library lacks is a broken installation: logged, then abort.
// Callers keep the result in a function-local static.
template <class F>
F libc_next(const char* name) {
  void* p = dlsym(RTLD_NEXT, name);
  if (p == nullptr) {
    sys::raw_logf("weft: %s not found in the C library (dlsym RTLD_NEXT)", name);
    abort();
  }
  return reinterpret_cast<F>(p);
}

}  // namespace weft::rt
