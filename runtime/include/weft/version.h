// weft/version.h — library version and build configuration.
#pragma once

namespace weft {

// The library version, e.g. "0.1.0".
const char* version();

// How this build of weft makes its kernel threads: "clone" (raw clone3 with a
// glibc-compatible TCB, the default) or "pthread" (sanitizer builds).
const char* klt_backend();

}  // namespace weft
