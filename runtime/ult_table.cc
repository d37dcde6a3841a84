// runtime/ult_table.cc — the process-wide, never-freed table of descriptors
// (its state lives in Globals::table).
#include <cstdlib>
#include <new>

#include "runtime/globals.h"
#include "runtime/ult.h"

namespace weft::rt::ult_table {

using Table = Globals::Table;

UltDesc* allocate() {
  Table& t = globals().table;
  LockGuard<KltMutex> g(t.lock);
  if (t.free_list != nullptr) {
    UltDesc* u = t.free_list;
    t.free_list = u->next;
    u->next = nullptr;
    return u;
  }
  uint32_t index = t.next_index;
  uint32_t c = index >> Table::kChunkBits;
  if (c >= Table::kMaxChunks) return nullptr;
  UltDesc* chunk = t.chunks[c].load(std::memory_order_acquire);
  if (chunk == nullptr) {
    // Raw memory; descriptors are constructed one by one as they are first
    // handed out, so an unused chunk commits nothing.
    chunk = static_cast<UltDesc*>(aligned_alloc(alignof(UltDesc), sizeof(UltDesc) * Table::kChunkSize));
    if (chunk == nullptr) return nullptr;
    t.chunks[c].store(chunk, std::memory_order_release);
  }
  UltDesc* u = new (&chunk[index & (Table::kChunkSize - 1)]) UltDesc();
  u->index = index;
  ++t.next_index;
  t.created.store(t.next_index, std::memory_order_release);
  return u;
}

void free(UltDesc* u) {
  if (u->retired()) return;  // never reused: its ids must stay stale (ult.h)
  Table& t = globals().table;
  LockGuard<KltMutex> g(t.lock);
  u->next = t.free_list;
  t.free_list = u;
}

UltDesc* lookup(uint64_t id_value) {
  Table& t = globals().table;
  uint32_t index = static_cast<uint32_t>(id_value);
  if (index >= t.created.load(std::memory_order_acquire)) return nullptr;
  UltDesc* chunk = t.chunks[index >> Table::kChunkBits].load(std::memory_order_acquire);
  if (chunk == nullptr) return nullptr;
  return &chunk[index & (Table::kChunkSize - 1)];
}

uint64_t size() { return globals().table.created.load(std::memory_order_relaxed); }

}  // namespace weft::rt::ult_table
