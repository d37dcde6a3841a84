// runtime/ult_table.cc — the process-wide, never-freed table of descriptors.
//
// Invariant: chunks_[i] once non-null never changes and is never freed, so a
// lookup may read any descriptor at any time without a lock.
#include <cstdlib>
#include <new>

#include "runtime/ult.h"

namespace weft::rt::ult_table {
namespace {

constexpr uint32_t kChunkBits = 12;
constexpr uint32_t kChunkSize = 1u << kChunkBits;  // descriptors per chunk
constexpr uint32_t kMaxChunks = 4096;              // 16,777,216 descriptors

std::atomic<Ult*> chunks[kMaxChunks];
KltMutex lock;                 // guards free_list and next_index
Ult* free_list = nullptr;
uint32_t next_index = 0;       // descriptors created so far
std::atomic<uint64_t> created{0};

}  // namespace

Ult* allocate() {
  LockGuard<KltMutex> g(lock);
  if (free_list != nullptr) {
    Ult* u = free_list;
    free_list = u->next;
    u->next = nullptr;
    return u;
  }
  uint32_t index = next_index;
  uint32_t c = index >> kChunkBits;
  if (c >= kMaxChunks) return nullptr;
  Ult* chunk = chunks[c].load(std::memory_order_acquire);
  if (chunk == nullptr) {
    // Raw memory; descriptors are constructed one by one as they are first
    // handed out, so an unused chunk commits nothing.
    chunk = static_cast<Ult*>(aligned_alloc(alignof(Ult), sizeof(Ult) * kChunkSize));
    if (chunk == nullptr) return nullptr;
    chunks[c].store(chunk, std::memory_order_release);
  }
  Ult* u = new (&chunk[index & (kChunkSize - 1)]) Ult();
  u->index = index;
  ++next_index;
  created.store(next_index, std::memory_order_relaxed);
  return u;
}

void free(Ult* u) {
  LockGuard<KltMutex> g(lock);
  u->next = free_list;
  free_list = u;
}

Ult* lookup(uint64_t id_value) {
  uint32_t index = static_cast<uint32_t>(id_value);
  if (index >= created.load(std::memory_order_acquire)) return nullptr;
  Ult* chunk = chunks[index >> kChunkBits].load(std::memory_order_acquire);
  if (chunk == nullptr) return nullptr;
  return &chunk[index & (kChunkSize - 1)];
}

uint64_t size() { return created.load(std::memory_order_relaxed); }

}  // namespace weft::rt::ult_table
