// sys/thread_stack.cc — setting and reading what glibc believes the calling
// thread's stack is (thread_stack.h).
#include "sys/thread_stack.h"

#include <dlfcn.h>
#include <pthread.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace weft::sys {
namespace {

// 0 until found: a real offset is never 0 (the TCB header is there).
std::atomic<long> stack_off{0};

// Address space only (the probe touches a few pages). 2 MiB, not less: a
// pre-allocated stack also holds the thread's static TLS, and under
// ThreadSanitizer its runtime needs about 900 KiB of it (with 128 KiB the
// probe's pthread_create failed with EINVAL and no runtime could start).
constexpr size_t kProbeStack = 2 * 1024 * 1024;

struct Probe {
  char* lo = nullptr;
  size_t size = 0;
  size_t sizeof_pthread = 0;
  long found = -1;          // offset of the pair, -1 none, -2 ambiguous
  bool getattr_ok = false;  // pthread_getattr_np reported [lo, lo+size)
};

void* probe_thread(void* p) {
  auto* pr = static_cast<Probe*>(p);
  const char* self = reinterpret_cast<const char*>(pthread_self());
  for (size_t off = 0; off + 16 <= pr->sizeof_pthread; off += 8) {
    void* block;
    size_t size;
    memcpy(&block, self + off, 8);
    memcpy(&size, self + off + 8, 8);
    if (block == pr->lo && size == pr->size) pr->found = pr->found == -1 ? static_cast<long>(off) : -2;
  }
  pthread_attr_t a;
  if (pthread_getattr_np(pthread_self(), &a) == 0) {
    void* addr = nullptr;
    size_t size = 0;
    pthread_attr_getstack(&a, &addr, &size);
    pr->getattr_ok = addr == pr->lo && size == pr->size;
    pthread_attr_destroy(&a);
  }
  return nullptr;
}

// Returns nullptr, or why the fields could not be found.
const char* discover(int* err) {
  *err = -ENOTSUP;
  auto* sz = static_cast<const uint32_t*>(dlsym(RTLD_DEFAULT, "_thread_db_sizeof_pthread"));
  if (sz == nullptr || *sz < 256 || *sz > 65536) return "weft: _thread_db_sizeof_pthread is missing or unexpected";
  Probe pr;
  pr.size = kProbeStack;
  pr.sizeof_pthread = *sz;
  void* m = mmap(nullptr, kProbeStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (m == MAP_FAILED) {
    *err = -ENOMEM;
    return "weft: no memory for the thread-stack probe";
  }
  pr.lo = static_cast<char*>(m);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstack(&attr, pr.lo, pr.size);
  pthread_t t;
  int r = pthread_create(&t, &attr, probe_thread, &pr);
  pthread_attr_destroy(&attr);
  if (r != 0) {
    munmap(m, kProbeStack);
    *err = -r;
    return "weft: pthread_create failed while probing glibc's thread-stack fields (transient: retry)";
  }
  pthread_join(t, nullptr);
  munmap(m, kProbeStack);
  if (pr.found < 0) return "weft: glibc's struct pthread stackblock fields were not found";
  if (!pr.getattr_ok) return "weft: pthread_getattr_np does not report struct pthread's stackblock";
  // __libc_alloca_cutoff (GLIBC_PRIVATE) must now give a quarter of a
  // stack we set on this thread; checked, then the fields are restored.
  using CutoffFn = int (*)(size_t);
  auto cutoff = reinterpret_cast<CutoffFn>(dlsym(RTLD_DEFAULT, "__libc_alloca_cutoff"));
  if (cutoff != nullptr) {
    char* self = reinterpret_cast<char*>(pthread_self());
    void* saved_block;
    size_t saved_size;
    memcpy(&saved_block, self + pr.found, 8);
    memcpy(&saved_size, self + pr.found + 8, 8);
    size_t probe = 128 * 1024;
    memcpy(self + pr.found + 8, &probe, 8);
    bool ok = cutoff(probe / 4) != 0 && cutoff(probe / 4 + 1) == 0;
    memcpy(self + pr.found, &saved_block, 8);
    memcpy(self + pr.found + 8, &saved_size, 8);
    if (!ok) return "weft: __libc_alloca_cutoff does not follow struct pthread's stackblock_size";
  }
  stack_off.store(pr.found, std::memory_order_release);
  *err = 0;
  return nullptr;
}

}  // namespace

int thread_stack_init(const char** what) {
  if (stack_off.load(std::memory_order_acquire) != 0) return 0;
  static std::atomic<int> permanent{0};  // -ENOTSUP once a check failed
  if (int p = permanent.load(std::memory_order_acquire); p != 0) {
    if (what) *what = "weft: glibc's struct pthread stack fields are not understood";
    return p;
  }
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&lock);
  int err = 0;
  const char* why = nullptr;
  if (stack_off.load(std::memory_order_acquire) == 0) {
    why = discover(&err);
    if (err == -ENOTSUP) permanent.store(err, std::memory_order_release);
  }
  pthread_mutex_unlock(&lock);
  if (why != nullptr && what) *what = why;
  return err;
}

bool thread_stack_known() { return stack_off.load(std::memory_order_relaxed) != 0; }

long thread_stack_offset() { return stack_off.load(std::memory_order_relaxed); }

void thread_stack_set_for(void* tp, void* lo, size_t size) {
  long off = thread_stack_offset();
  if (off == 0) return;
  char* t = static_cast<char*>(tp);
  memcpy(t + off, &lo, 8);
  memcpy(t + off + 8, &size, 8);
}

void thread_stack_get(void** lo, size_t* size) {
  long off = thread_stack_offset();
  if (off == 0) {
    *lo = nullptr;
    *size = 0;
    return;
  }
  const char* t = reinterpret_cast<const char*>(pthread_self());
  memcpy(lo, t + off, 8);
  memcpy(size, t + off + 8, 8);
}

}  // namespace weft::sys
