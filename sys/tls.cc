// sys/tls.cc — making glibc TCBs for raw-clone KLTs and recycling them
// (see tls.h for the life of a TCB and the heritage scheme).
//
// Rules for this file (it runs in odd contexts, see runtime/HACKING.md):
// tls_thread_start/finish run on a KLT that glibc does not know about, with
// all signals blocked; tls_allocate/release run on the creator/reaper.
#include "sys/tls.h"

#include <dlfcn.h>
#include <gnu/libc-version.h>
#include <link.h>
#include <locale.h>
#include <netdb.h>
#include <pthread.h>
#include <resolv.h>
#include <sched.h>
#undef p_type  // resolv.h defines it as a macro; ElfW(Phdr) has a member of that name

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "sys/raw_syscall.h"
#include "sys/spin.h"

namespace weft::sys {
namespace {

// x86_64 tcbhead_t fields that the ABI fixes: compilers emit %fs:0x28 for the
// stack protector and glibc's PTR_MANGLE reads %fs:0x30; %fs:0 and %fs:0x10
// are the TCB's self pointers that TLS access and pthread_self() read.
constexpr size_t kTcbTcb = 0x00;
constexpr size_t kTcbDtv = 0x08;
constexpr size_t kTcbSelf = 0x10;
constexpr size_t kTcbMultipleThreads = 0x18;  // glibc <= 2.37; validated
constexpr size_t kTcbStackGuard = 0x28;
constexpr size_t kTcbPointerGuard = 0x30;
constexpr size_t kTcbFeature1 = 0x48;  // CET feature word

// struct rseq (linux/rseq.h): cpu_id_start, cpu_id, rseq_cs, flags.
constexpr size_t kRseqCpuId = 4;
constexpr size_t kRseqMinSize = 32;
constexpr uint32_t kRseqSig = 0x53053053;  // glibc's RSEQ_SIG on x86
constexpr uint32_t kRseqCpuUninitialized = static_cast<uint32_t>(-1);
constexpr uint32_t kRseqCpuFailed = static_cast<uint32_t>(-2);

constexpr size_t kRobustHeadSize = 24;  // struct robust_list_head
constexpr int kKeyDestructorRounds = 4;  // PTHREAD_DESTRUCTOR_ITERATIONS
constexpr size_t kHeritageCap = 256;

using AllocateTlsFn = void* (*)(void*);
using DeallocateTlsFn = void (*)(void*, bool);
using VoidFn = void (*)();
using ResCloseFn = void (*)(res_state);

// Everything discovered about glibc by tls_init(). Written once, read-only
// afterwards (published by the thread-safe static in tls_init).
struct Layout {
  AllocateTlsFn allocate_tls;
  DeallocateTlsFn deallocate_tls;
  VoidFn ctype_init;
  VoidFn call_tls_dtors;
  ResCloseFn res_nclose;

  size_t sizeof_pthread;
  size_t tid_off;
  size_t list_off;
  size_t specific_off;       // struct pthread_key_data *specific[specific_count]
  size_t specific_count;
  size_t first_block_off;    // specific_1stblock, which specific[0] points at
  size_t level2_count;       // entries per second-level block
  size_t key_data_size;      // sizeof(struct pthread_key_data)
  size_t key_data_seq_off;
  size_t key_data_data_off;
  const char* keys;          // __pthread_keys
  size_t keys_count;
  size_t key_struct_size;
  size_t key_struct_seq_off;
  size_t key_struct_destr_off;
  size_t robust_off;
  long robust_futex_offset;
  bool rseq_enabled;
  long rseq_off;
  size_t rseq_size;
  long libc_block_off;       // libc's static TLS block, relative to tp
  size_t libc_block_size;
  long resp_off;             // libc's __resp, relative to tp
  size_t lm_tls_modid_off;   // struct link_map: l_tls_modid (size_t)
  size_t lm_tls_offset_off;  //                  l_tls_offset (ptrdiff_t, tp - block)
};

Layout L;

// Heritage pool: libc TLS blocks of dead KLTs, waiting for a new KLT.
// Guarded by heritage_lock (a spinlock that yields after a while: the
// critical sections are a few loads and stores, and the callers may be on
// any kind of thread).
SpinFlag heritage_lock;
void* heritage[kHeritageCap];
size_t heritage_count = 0;
std::atomic<uint64_t> stat_inherited{0};
std::atomic<uint64_t> stat_dropped{0};

// tls_init's one-time pthread_create (see there).
std::atomic<bool> multithreaded{false};
// Serialises tls_init's one-time step (it calls pthread_create, which may
// take long: a futex mutex, not a spinlock).
SysMutex init_lock;

template <class T>
T& at(void* base, long off) {
  return *reinterpret_cast<T*>(static_cast<char*>(base) + off);
}

const uint32_t* descriptor(const char* name) {
  return static_cast<const uint32_t*>(dlsym(RTLD_DEFAULT, name));
}

void* noop_thread(void*) { return nullptr; }

struct PhdrSearch {
  const void* needle;
  const void* block = nullptr;
  size_t size = 0;
  ElfW(Addr) addr = 0;
  size_t modid = 0;
};

int find_tls_block(dl_phdr_info* info, size_t, void* data) {
  auto* s = static_cast<PhdrSearch*>(data);
  if (info->dlpi_tls_data == nullptr) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_TLS) continue;
    const char* lo = static_cast<const char*>(info->dlpi_tls_data);
    const char* p = static_cast<const char*>(s->needle);
    if (p >= lo && p < lo + ph.p_memsz) {
      s->block = lo;
      s->size = ph.p_memsz;
      s->addr = info->dlpi_addr;
      s->modid = info->dlpi_tls_modid;
      return 1;
    }
  }
  return 0;
}

// Returns nullptr on success, or a message naming what did not match.
const char* discover() {
  static char message[256];
  auto fail = [](const char* what) {
    snprintf(message, sizeof message, "weft: glibc %s is not supported by the raw-clone KLT backend: %s",
             gnu_get_libc_version(), what);
    return message;
  };

  L.allocate_tls = reinterpret_cast<AllocateTlsFn>(dlsym(RTLD_DEFAULT, "_dl_allocate_tls"));
  L.deallocate_tls = reinterpret_cast<DeallocateTlsFn>(dlsym(RTLD_DEFAULT, "_dl_deallocate_tls"));
  L.ctype_init = reinterpret_cast<VoidFn>(dlsym(RTLD_DEFAULT, "__ctype_init"));
  L.call_tls_dtors = reinterpret_cast<VoidFn>(dlsym(RTLD_DEFAULT, "__call_tls_dtors"));
  L.res_nclose = reinterpret_cast<ResCloseFn>(dlsym(RTLD_DEFAULT, "__res_nclose"));
  if (!L.allocate_tls || !L.deallocate_tls) return fail("_dl_allocate_tls/_dl_deallocate_tls not found");
  if (!L.ctype_init || !L.call_tls_dtors || !L.res_nclose)
    return fail("__ctype_init, __call_tls_dtors or __res_nclose not found");

  const uint32_t* sz = descriptor("_thread_db_sizeof_pthread");
  const uint32_t* tid = descriptor("_thread_db_pthread_tid");
  const uint32_t* list = descriptor("_thread_db_pthread_list");
  const uint32_t* specific = descriptor("_thread_db_pthread_specific");
  const uint32_t* level2 = descriptor("_thread_db_pthread_key_data_level2_data");
  const uint32_t* kd_size = descriptor("_thread_db_sizeof_pthread_key_data");
  const uint32_t* kd_seq = descriptor("_thread_db_pthread_key_data_seq");
  const uint32_t* kd_data = descriptor("_thread_db_pthread_key_data_data");
  const uint32_t* keys = descriptor("_thread_db___pthread_keys");
  const uint32_t* ks_size = descriptor("_thread_db_sizeof_pthread_key_struct");
  const uint32_t* ks_seq = descriptor("_thread_db_pthread_key_struct_seq");
  const uint32_t* ks_destr = descriptor("_thread_db_pthread_key_struct_destr");
  L.keys = static_cast<const char*>(dlsym(RTLD_DEFAULT, "__pthread_keys"));
  if (!sz || !tid || !list || !specific || !level2 || !kd_size || !kd_seq || !kd_data || !keys ||
      !ks_size || !ks_seq || !ks_destr || !L.keys)
    return fail("a _thread_db_* layout descriptor or __pthread_keys is missing");

  // Descriptors are {size in bits, element count, offset}.
  L.sizeof_pthread = *sz;
  L.tid_off = tid[2];
  L.list_off = list[2];
  L.specific_off = specific[2];
  L.specific_count = specific[0] / 64;
  L.level2_count = level2[1];
  L.key_data_size = *kd_size;
  L.key_data_seq_off = kd_seq[2];
  L.key_data_data_off = kd_data[2];
  L.keys_count = keys[1];
  L.key_struct_size = *ks_size;
  L.key_struct_seq_off = ks_seq[2];
  L.key_struct_destr_off = ks_destr[2];
  if (tid[0] != 32 || L.sizeof_pthread < 1024 || L.sizeof_pthread > 65536)
    return fail("struct pthread has an unexpected size or tid type");
  if (L.specific_off < L.key_data_size * L.level2_count)
    return fail("pthread-specific layout is unexpected");
  L.first_block_off = L.specific_off - L.key_data_size * L.level2_count;
  if (L.keys_count != L.specific_count * L.level2_count)
    return fail("PTHREAD_KEYS_MAX does not match the key-data levels");

  // Validate everything against the calling thread.
  void* tp = tls_self();
  if (at<void*>(tp, kTcbTcb) != tp || at<void*>(tp, kTcbSelf) != tp ||
      reinterpret_cast<void*>(pthread_self()) != tp)
    return fail("the TCB self pointers (%fs:0, %fs:0x10) do not equal pthread_self()");
  if (at<int>(tp, static_cast<long>(L.tid_off)) != gettid())
    return fail("struct pthread's tid field does not hold gettid()");
  if (at<void*>(tp, static_cast<long>(L.list_off)) == nullptr)
    return fail("struct pthread's list node is empty");
  if (at<void*>(tp, static_cast<long>(L.specific_off)) !=
      static_cast<char*>(tp) + L.first_block_off)
    return fail("specific[0] does not point at specific_1stblock");

  void* head = nullptr;
  size_t len = 0;
  if (raw_syscall(SYS_get_robust_list, 0, reinterpret_cast<long>(&head),
                  reinterpret_cast<long>(&len)) != 0 ||
      len != kRobustHeadSize || head < tp ||
      static_cast<char*>(head) + len > static_cast<char*>(tp) + L.sizeof_pthread)
    return fail("the robust-list head is not inside struct pthread");
  L.robust_off = static_cast<size_t>(static_cast<char*>(head) - static_cast<char*>(tp));
  L.robust_futex_offset = at<long>(head, 8);

  // rseq: glibc >= 2.35 exports where its area is; older glibc has none.
  auto* rseq_off = static_cast<const long*>(dlsym(RTLD_DEFAULT, "__rseq_offset"));
  auto* rseq_size = static_cast<const unsigned*>(dlsym(RTLD_DEFAULT, "__rseq_size"));
  L.rseq_enabled = rseq_off && rseq_size && *rseq_size > 0;
  if (L.rseq_enabled) {
    L.rseq_off = *rseq_off;
    L.rseq_size = *rseq_size < kRseqMinSize ? kRseqMinSize : *rseq_size;
    if (L.rseq_off < 0 || static_cast<size_t>(L.rseq_off) + L.rseq_size > L.sizeof_pthread ||
        (reinterpret_cast<uintptr_t>(tp) + L.rseq_off) % 32 != 0)
      return fail("the rseq area is not an aligned part of struct pthread");
  }

  // libc's own static TLS block: the one that holds errno.
  PhdrSearch s{&errno};
  dl_iterate_phdr(find_tls_block, &s);
  if (s.block == nullptr || s.size == 0 || s.size > 4096)
    return fail("libc's static TLS block was not found");
  L.libc_block_off = static_cast<const char*>(s.block) - static_cast<char*>(tp);
  L.libc_block_size = s.size;
  void* resp = dlsym(RTLD_DEFAULT, "__resp");
  if (resp == nullptr) return fail("__resp not found");
  L.resp_off = static_cast<char*>(resp) - static_cast<char*>(tp);
  if (L.resp_off < L.libc_block_off ||
      L.resp_off + 8 > L.libc_block_off + static_cast<long>(L.libc_block_size))
    return fail("__resp is not in libc's TLS block");
  if (L.libc_block_off + static_cast<long>(L.libc_block_size) > 0)
    return fail("libc's TLS block is not below the TCB");

  // struct link_map's TLS fields (for dlopen'ed static TLS, dl_tls.cc),
  // checked against libc's own link map: its module id is the one
  // dl_iterate_phdr reports and its static offset puts its block where
  // errno is.
  const uint32_t* lm_modid = descriptor("_thread_db_link_map_l_tls_modid");
  const uint32_t* lm_offset = descriptor("_thread_db_link_map_l_tls_offset");
  if (!lm_modid || !lm_offset || lm_modid[0] != 64 || lm_offset[0] != 64)
    return fail("the link_map TLS descriptors are missing or unexpected");
  L.lm_tls_modid_off = lm_modid[2];
  L.lm_tls_offset_off = lm_offset[2];
  const link_map* libc_map = nullptr;
  for (const link_map* m = _r_debug.r_map; m != nullptr; m = m->l_next) {
    if (m->l_addr == s.addr) libc_map = m;
  }
  if (libc_map == nullptr) return fail("libc's link_map was not found");
  size_t modid = 0;
  long offset = 0;
  if (!tls_module_static_offset(libc_map, &modid, &offset) || modid != s.modid ||
      -offset != L.libc_block_off)
    return fail("struct link_map's l_tls_modid/l_tls_offset do not describe libc's TLS block");
  return nullptr;
}

}  // namespace

bool tls_module_static_offset(const void* map, size_t* modid, long* offset) {
  if (L.lm_tls_offset_off == 0) {  // tls_init() has not succeeded: no KLT exists
    *modid = 0;
    *offset = 0;
    return false;
  }
  const char* m = static_cast<const char*>(map);
  *modid = *reinterpret_cast<const size_t*>(m + L.lm_tls_modid_off);
  *offset = *reinterpret_cast<const long*>(m + L.lm_tls_offset_off);
  // x86_64 (TLS_TCB_AT_TP): 0 is NO_TLS_OFFSET, -1 FORCED_DYNAMIC_TLS_OFFSET.
  return *modid != 0 && *offset > 0;
}

int tls_init(const char** what) {
  // The layout checks are facts about this glibc: computed once, cached.
  static const char* const failure = discover();
  if (failure != nullptr) {
    if (what) *what = failure;
    return -ENOTSUP;
  }
  // glibc's single-thread fast paths (lock-free malloc CAS, stdio without
  // locks) are switched off only by pthread_create; raw KLTs need them off.
  // This step can fail for passing reasons (memory, thread limits), so it is
  // retried by the next call rather than cached.
  if (multithreaded.load(std::memory_order_acquire)) return 0;
  init_lock.lock();
  int result = 0;
  if (!multithreaded.load(std::memory_order_relaxed)) {
    pthread_t t;
    int r = pthread_create(&t, nullptr, noop_thread, nullptr);
    if (r != 0) {
      if (what) *what = "pthread_create failed while making glibc multi-threaded (transient: retry)";
      result = -r;
    } else {
      pthread_join(t, nullptr);
      if (at<int>(tls_self(), kTcbMultipleThreads) != 1) {
        static char message[160];
        snprintf(message, sizeof message,
                 "weft: glibc %s is not supported by the raw-clone KLT backend: "
                 "tcbhead_t.multiple_threads is not at %%fs:0x18",
                 gnu_get_libc_version());
        if (what) *what = message;
        result = -ENOTSUP;
      } else {
        multithreaded.store(true, std::memory_order_release);
      }
    }
  }
  init_lock.unlock();
  return result;
}

void* tls_allocate() {
  void* tp = L.allocate_tls(nullptr);
  if (tp == nullptr) return nullptr;
  char* t = static_cast<char*>(tp);
  void* me = tls_self();

  // _dl_allocate_tls set the DTV at +8 and zeroed the TCB; zero it again
  // ourselves (but the DTV) rather than depend on that detail.
  void* dtv = at<void*>(t, kTcbDtv);
  memset(t, 0, L.sizeof_pthread);
  at<void*>(t, kTcbDtv) = dtv;

  at<void*>(t, kTcbTcb) = t;
  at<void*>(t, kTcbSelf) = t;
  at<int>(t, kTcbMultipleThreads) = 1;
  at<uintptr_t>(t, kTcbStackGuard) = at<uintptr_t>(me, kTcbStackGuard);
  at<uintptr_t>(t, kTcbPointerGuard) = at<uintptr_t>(me, kTcbPointerGuard);
  at<uint32_t>(t, kTcbFeature1) = at<uint32_t>(me, kTcbFeature1);

  // A self-linked list node: glibc's fork() unlinks the forking thread's node.
  char* node = t + L.list_off;
  at<void*>(node, 0) = node;
  at<void*>(node, 8) = node;
  at<void*>(t, static_cast<long>(L.specific_off)) = t + L.first_block_off;

  char* head = t + L.robust_off;  // empty robust list: list.next == &list
  at<void*>(head, 0) = head;
  at<long>(head, 8) = L.robust_futex_offset;
  at<void*>(head, 16) = nullptr;

  if (L.rseq_enabled) at<uint32_t>(t, L.rseq_off + kRseqCpuId) = kRseqCpuUninitialized;

  void* inherited = nullptr;
  {
    SysLockGuard<SpinFlag> g(heritage_lock);
    if (heritage_count > 0) inherited = heritage[--heritage_count];
  }
  if (inherited != nullptr) {
    memcpy(t + L.libc_block_off, inherited, L.libc_block_size);
    free(inherited);
    stat_inherited.fetch_add(1, std::memory_order_relaxed);
  }
  return tp;
}

std::atomic<uint32_t>* tls_tid_word(void* tp) {
  return reinterpret_cast<std::atomic<uint32_t>*>(static_cast<char*>(tp) + L.tid_off);
}

void tls_thread_start(void* tp, void* res) {
  raw_syscall(SYS_set_robust_list, reinterpret_cast<long>(static_cast<char*>(tp) + L.robust_off),
              kRobustHeadSize);
  if (L.rseq_enabled) {
    void* area = static_cast<char*>(tp) + L.rseq_off;
    long r = raw_syscall(SYS_rseq, reinterpret_cast<long>(area), static_cast<long>(L.rseq_size), 0,
                         kRseqSig);
    if (r != 0) at<uint32_t>(area, kRseqCpuId) = kRseqCpuFailed;  // sched_getcpu() falls back
  }
  L.ctype_init();
  at<void*>(tp, L.resp_off) = res;
  errno = 0;
  h_errno = 0;
}

void tls_thread_run_destructors(void* tp) {
  // glibc's own order: C++ thread_local destructors, then pthread-key
  // destructors. A key destructor may touch a thread_local with a
  // destructor, registering it anew, so repeat both until neither has
  // anything left (the registration list lives in libc's TLS block, which
  // the next KLT inherits: it must be empty here).
  char** specific = reinterpret_cast<char**>(static_cast<char*>(tp) + L.specific_off);
  for (int round = 0; round < kKeyDestructorRounds; ++round) {
    L.call_tls_dtors();
    bool again = false;
    for (size_t i = 0; i < L.specific_count; ++i) {
      char* level2 = specific[i];
      if (level2 == nullptr) continue;
      for (size_t j = 0; j < L.level2_count; ++j) {
        char* kd = level2 + j * L.key_data_size;
        void* data = at<void*>(kd, static_cast<long>(L.key_data_data_off));
        if (data == nullptr) continue;
        at<void*>(kd, static_cast<long>(L.key_data_data_off)) = nullptr;
        const char* key = L.keys + (i * L.level2_count + j) * L.key_struct_size;
        auto destr = at<void (*)(void*)>(const_cast<char*>(key), static_cast<long>(L.key_struct_destr_off));
        if (at<uintptr_t>(kd, static_cast<long>(L.key_data_seq_off)) ==
                at<uintptr_t>(const_cast<char*>(key), static_cast<long>(L.key_struct_seq_off)) &&
            destr != nullptr) {
          destr(data);
          again = true;
        }
      }
    }
    if (!again) break;
  }
  L.call_tls_dtors();
}

void tls_thread_finish(void* tp, void* res) {
  tls_thread_run_destructors(tp);  // anything a signal handler registered meanwhile
  char** specific = reinterpret_cast<char**>(static_cast<char*>(tp) + L.specific_off);
  for (size_t i = 1; i < L.specific_count; ++i) {  // specific[0] is the inline block
    free(specific[i]);
    specific[i] = nullptr;
  }

  uselocale(LC_GLOBAL_LOCALE);  // the next owner of this libc block starts global
  while (dlerror() != nullptr) {
  }  // frees a pending dlerror result, which the next owner would otherwise see
  auto* rs = static_cast<res_state>(res);
  if (rs->nscount != 0) L.res_nclose(rs);  // a zeroed state was never initialised
}

void tls_release(void* tp) {
  void* copy = malloc(L.libc_block_size);
  bool kept = false;
  if (copy != nullptr) {
    memcpy(copy, static_cast<char*>(tp) + L.libc_block_off, L.libc_block_size);
    SysLockGuard<SpinFlag> g(heritage_lock);
    if (heritage_count < kHeritageCap) {
      heritage[heritage_count++] = copy;
      kept = true;
    }
  }
  if (!kept) {
    free(copy);
    stat_dropped.fetch_add(1, std::memory_order_relaxed);
  }
  L.deallocate_tls(tp, true);
}

SpinFlag& tls_heritage_lock_for_test() { return heritage_lock; }

TlsStats tls_stats() {
  return TlsStats{stat_inherited.load(std::memory_order_relaxed),
                  stat_dropped.load(std::memory_order_relaxed)};
}

size_t tls_resolver_state_size() { return sizeof(struct __res_state); }

// Fork (runtime/HACKING.md, "An atfork child"): the heritage lock and
// tls_init's init_lock are taken before fork so that no other thread holds
// one at the instant of the fork; the child resets them.
void tls_atfork_prepare() {
  init_lock.lock();
  heritage_lock.lock();
}

void tls_atfork_parent() {
  heritage_lock.unlock();
  init_lock.unlock();
}

void tls_atfork_child() {
  heritage_lock.reset_after_fork();
  init_lock.reset_after_fork();
}

}  // namespace weft::sys
