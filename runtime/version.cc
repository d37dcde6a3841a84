// runtime/version.cc — weft::version() and weft::klt_backend().
#include "weft/version.h"

#include "sys/klt.h"

namespace weft {

const char* version() { return "0.1.0"; }

const char* klt_backend() { return sys::klt_backend_name(); }

}  // namespace weft
