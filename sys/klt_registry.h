// sys/klt_registry.h — the registry of live KLTs, shared by both KLT
// backends (the contract is in klt.h). Internal to sys/.
#pragma once

#include "sys/klt.h"
#include "sys/spin.h"

namespace weft::sys {

// Embedded in each backend's Klt. Linked only under the registry lock.
struct KltNode {
  KltNode* prev = nullptr;
  KltNode* next = nullptr;
  Klt* klt = nullptr;
  void* tp = nullptr;
  int tid = 0;
  bool linked = false;
};

SysMutex& registry_mutex();

// Caller holds registry_mutex().
void registry_add_locked(KltNode* n);
void registry_remove_locked(KltNode* n);

// Removes `n` (the calling KLT's node) under the lock; a no-op if it is not
// linked. Waits, with the current signal mask, while a walker holds the lock.
void registry_remove_self(KltNode* n);

}  // namespace weft::sys
