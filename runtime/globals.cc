// runtime/globals.cc — the one instance of the process-wide state (globals.h).
#include "runtime/globals.h"

#include "runtime/debug_info.h"

namespace weft::rt {

Globals& globals() {
  static Globals* g = [] {
    auto* n = new Globals();
    // Where debuggers find the ULT table (debug_info.h).
    weft_debug_info.chunks = reinterpret_cast<uint64_t>(&n->table.chunks[0]);
    weft_debug_info.created = reinterpret_cast<uint64_t>(&n->table.created);
    return n;
  }();
  return *g;
}

DeathRow& death_row() { return globals().death_row; }

}  // namespace weft::rt
