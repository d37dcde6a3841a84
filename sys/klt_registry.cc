// sys/klt_registry.cc — the registry of live KLTs (contract in klt.h).
//
// A doubly linked list of KltNodes (one per KLT, inside its Klt), guarded
// by a SysMutex (futex: a waiter sleeps with its signal mask unchanged, so
// signals sent to an exiting KLT by a walker are delivered). In a fork()
// child only the forking thread exists: the atfork child handler keeps its
// node (if it is a KLT) and frees the lock, which the prepare handler took
// so that the list is consistent at the fork.
#include "sys/klt_registry.h"

#include <pthread.h>

#include <new>

#include "sys/raw_syscall.h"

namespace weft::sys {
namespace {

SysMutex mutex;
KltNode head;  // sentinel; head.next is the oldest
int count = 0;

void ensure_head() {
  if (head.next == nullptr) {
    head.next = &head;
    head.prev = &head;
  }
}

void atfork_prepare() { mutex.lock(); }
void atfork_parent() { mutex.unlock(); }
void atfork_child() {
  // Only the forking thread survives. Keep its node (found by tid: the
  // kernel gave the child's thread a new tid, so match the TCB instead).
  ensure_head();
  void* self = reinterpret_cast<void*>(pthread_self());
  KltNode* keep = nullptr;
  for (KltNode* n = head.next; n != &head; n = n->next) {
    if (n->tp == self) keep = n;
  }
  for (KltNode* n = head.next; n != &head;) {
    KltNode* next = n->next;
    n->linked = false;
    n = next;
  }
  head.next = head.prev = &head;
  count = 0;
  if (keep != nullptr) {
    keep->tid = gettid();
    keep->next = keep->prev = &head;
    head.next = head.prev = keep;
    keep->linked = true;
    count = 1;
  }
  new (&mutex) SysMutex();
}

struct AtforkInstaller {
  AtforkInstaller() { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }
};

}  // namespace

SysMutex& registry_mutex() {
  static AtforkInstaller installer;  // first use, before any KLT exists
  return mutex;
}

void registry_add_locked(KltNode* n) {
  ensure_head();
  n->prev = head.prev;
  n->next = &head;
  head.prev->next = n;
  head.prev = n;
  n->linked = true;
  ++count;
}

void registry_remove_locked(KltNode* n) {
  if (!n->linked) return;
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = nullptr;
  n->linked = false;
  --count;
}

void registry_remove_self(KltNode* n) {
  SysLockGuard<SysMutex> g(registry_mutex());
  registry_remove_locked(n);
}

KltRegistryLock::KltRegistryLock() { registry_mutex().lock(); }
KltRegistryLock::~KltRegistryLock() { registry_mutex().unlock(); }

void klt_for_each_locked(void (*fn)(const KltInfo& info, void* arg), void* arg) {
  ensure_head();
  for (KltNode* n = head.next; n != &head; n = n->next) fn(KltInfo{n->klt, n->tid, n->tp}, arg);
}

int klt_count_locked() { return count; }

}  // namespace weft::sys
