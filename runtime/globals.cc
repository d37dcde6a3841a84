// runtime/globals.cc — the one instance of the process-wide state (globals.h).
#include "runtime/globals.h"

namespace weft::rt {

Globals& globals() {
  static Globals* g = new Globals();
  return *g;
}

DeathRow& death_row() { return globals().death_row; }

}  // namespace weft::rt
