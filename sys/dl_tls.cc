// sys/dl_tls.cc — static TLS of libraries dlopen'ed after KLTs exist (clone
// backend only; on the pthread backend glibc does this itself).
//
// The problem (issue 9 #18). A library with initial-exec TLS (or one whose
// TLS glibc places in the static TLS area) that is dlopen'ed after a KLT was
// created gets a block in every thread's static TLS area, at tp - offset.
// glibc copies the library's initial image into that block only for the
// threads on its own lists (_dl_init_static_tls); a raw KLT is not on them,
// so it reads zeros. KLTs created after the dlopen are fine: glibc's
// _dl_allocate_tls initialises every static module that exists then.
//
// The fix. libweft exports dlopen, dlmopen and dlclose. dlopen/dlmopen call
// glibc's (found with dlsym(RTLD_NEXT)) and, once it has returned, copy the
// initial image of each object that got a static TLS block during the call
// into the block of every registered KLT (klt.h's registry, under its lock,
// so no KLT is created or leaves meanwhile; a KLT created concurrently
// either is registered when the copy runs or had its TLS allocated after
// the object existed). "During the call" = present after, absent before
// (keyed by TLS module id and load address), taken from dl_iterate_phdr.
// Interposed dlopen/dlmopen/dlclose are serialised by one recursive lock,
// so a concurrent call cannot show a half-loaded object to the comparison,
// and a dlopen nested in a library constructor is handled by the outermost
// call. dlclose takes the same lock so that a destructor that calls dlopen
// (inside glibc's loader lock) cannot deadlock against an interposed
// dlopen waiting for that loader lock.
//
// Caller-dependent lookup. glibc's dlopen searches the RPATH/RUNPATH (and
// expands $ORIGIN) of the object that *called* it, and puts the library in
// the caller's link-map namespace; with an interposer in between the caller
// would be libweft. So for a name without '/' the interposer looks the name
// up along the caller's own search path first (dlinfo RTLD_DI_SERINFO of
// the caller's object: its RPATH, LD_LIBRARY_PATH, its RUNPATH) and opens
// the first file found there by path; otherwise it passes the name on
// unchanged (ld.so.cache and the default directories do not depend on the
// caller). A caller in another namespace gets dlmopen into that namespace.
// $ORIGIN and other tokens in the name are expanded relative to the caller.
//
// Limits (documented in klt.h): constructors of the new library that run
// on a weft KLT during dlopen still see its initial-exec TLS uninitialised
// on that KLT, and values they store there are replaced by the initial
// image when dlopen returns. With the static library, dlopen calls made by
// shared libraries reach this interposer only if the executable exports it
// (-Wl,--export-dynamic-symbol=dlopen, or -rdynamic).
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "sys/klt.h"
#include "sys/raw_log.h"
#include "sys/tls.h"

namespace weft::sys {
namespace {

using DlopenFn = void* (*)(const char*, int);
using DlmopenFn = void* (*)(Lmid_t, const char*, int);
using DlcloseFn = int (*)(void*);

std::atomic<DlopenFn> real_dlopen_fn{nullptr};
std::atomic<DlmopenFn> real_dlmopen_fn{nullptr};
std::atomic<DlcloseFn> real_dlclose_fn{nullptr};

template <class Fn>
Fn real(std::atomic<Fn>& slot, const char* name) {
  Fn f = slot.load(std::memory_order_acquire);
  if (f == nullptr) {
    f = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
    if (f == nullptr) {
      raw_logf("weft: cannot find glibc's %s (dlsym RTLD_NEXT failed)", name);
      abort();
    }
    slot.store(f, std::memory_order_release);
  }
  return f;
}

pthread_mutex_t dl_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;

}  // namespace

// Fork (klt_atfork_*): a dlopen on another thread at the fork would leave
// dl_lock held in the child. Taken first in sys/'s prepare step (it is
// held around glibc's loader lock and the registry lock).
void dl_atfork_prepare() { pthread_mutex_lock(&dl_lock); }
void dl_atfork_parent() { pthread_mutex_unlock(&dl_lock); }
void dl_atfork_child() {
  pthread_mutex_t fresh = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
  memcpy(&dl_lock, &fresh, sizeof fresh);
}

namespace {
int depth = 0;  // guarded by dl_lock
std::atomic<uint64_t> modules_initialised{0};

// One object with a TLS segment, as dl_iterate_phdr shows it.
struct TlsObject {
  size_t modid;
  ElfW(Addr) addr;
  const void* image;
  size_t filesz;
  size_t memsz;
  const void* inside;  // an address inside the object (for dladdr1)
};

int collect(dl_phdr_info* info, size_t, void* data) {
  auto* out = static_cast<std::vector<TlsObject>*>(data);
  if (info->dlpi_tls_modid == 0) return 0;
  TlsObject o{info->dlpi_tls_modid, info->dlpi_addr, nullptr, 0, 0, nullptr};
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_TLS) {
      o.image = reinterpret_cast<const void*>(info->dlpi_addr + ph.p_vaddr);
      o.filesz = ph.p_filesz;
      o.memsz = ph.p_memsz;
    } else if (ph.p_type == PT_LOAD && o.inside == nullptr) {
      o.inside = reinterpret_cast<const void*>(info->dlpi_addr + ph.p_vaddr);
    }
  }
  if (o.image != nullptr && o.inside != nullptr) out->push_back(o);
  return 0;
}

std::vector<TlsObject> tls_objects() {
  std::vector<TlsObject> v;
  dl_iterate_phdr(collect, &v);
  return v;
}

struct CopyJob {
  const TlsObject* obj;
  long offset;
};

void copy_into(const KltInfo& k, void* arg) {
  auto* job = static_cast<CopyJob*>(arg);
  char* dest = static_cast<char*>(k.tp) - job->offset;
  memcpy(dest, job->obj->image, job->obj->filesz);
  memset(dest + job->obj->filesz, 0, job->obj->memsz - job->obj->filesz);
}

bool same(const TlsObject& a, const TlsObject& b) { return a.modid == b.modid && a.addr == b.addr; }

// Copies the initial image of every object in `after` but not in `before`
// that has a static TLS block into every registered KLT.
void init_new_static_tls(const std::vector<TlsObject>& before, const std::vector<TlsObject>& after) {
  std::vector<CopyJob> jobs;
  for (const TlsObject& o : after) {
    bool old = false;
    for (const TlsObject& b : before) old = old || same(o, b);
    if (old) continue;
    Dl_info info;
    void* map = nullptr;
    if (dladdr1(o.inside, &info, &map, RTLD_DL_LINKMAP) == 0 || map == nullptr) continue;
    size_t modid = 0;
    long offset = 0;
    if (!tls_module_static_offset(map, &modid, &offset) || modid != o.modid) continue;
    if (o.filesz > o.memsz) continue;
    jobs.push_back(CopyJob{&o, offset});
  }
  if (jobs.empty()) return;
  KltRegistryLock lock;
  for (CopyJob& j : jobs) {
    klt_for_each_locked(copy_into, &j);
    modules_initialised.fetch_add(1, std::memory_order_relaxed);
  }
}

// The object that called the interposer, when it is not libweft itself.
void* caller_map(const void* ret) {
  Dl_info info;
  void* map = nullptr;
  if (ret == nullptr || dladdr1(ret, &info, &map, RTLD_DL_LINKMAP) == 0) return nullptr;
  Dl_info self;
  void* self_map = nullptr;
  if (dladdr1(reinterpret_cast<const void*>(&caller_map), &self, &self_map, RTLD_DL_LINKMAP) != 0 &&
      self_map == map)
    return nullptr;  // called from inside libweft (or the executable it is linked into)
  return map;
}

// The directory of `map`'s file ("$ORIGIN").
std::string origin_of(void* map) {
  const char* name = static_cast<link_map*>(map)->l_name;
  std::string path;
  if (name != nullptr && name[0] != '\0') {
    path = name;
  } else {  // the main program
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) path.assign(buf, static_cast<size_t>(n));
  }
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// The DT_RPATH or DT_RUNPATH string of `map` (nullptr if it has none).
// glibc has relocated DT_STRTAB in the dynamic section it keeps.
const char* dyn_path(void* map, ElfW(Sxword) tag) {
  const ElfW(Dyn)* dyn = static_cast<link_map*>(map)->l_ld;
  if (dyn == nullptr) return nullptr;
  const char* strtab = nullptr;
  const ElfW(Dyn)* found = nullptr;
  for (; dyn->d_tag != DT_NULL; ++dyn) {
    if (dyn->d_tag == DT_STRTAB) strtab = reinterpret_cast<const char*>(dyn->d_un.d_ptr);
    if (dyn->d_tag == tag) found = dyn;
  }
  if (strtab == nullptr || found == nullptr) return nullptr;
  return strtab + found->d_un.d_val;
}

void add_dirs(std::vector<std::string>* out, const char* list, const std::string& origin) {
  if (list == nullptr) return;
  std::string s(list);
  for (const char* token : {"${ORIGIN}", "$ORIGIN"}) {
    for (size_t at; (at = s.find(token)) != std::string::npos;) s.replace(at, strlen(token), origin);
  }
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t colon = s.find(':', pos);
    std::string dir = s.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
    if (!dir.empty() && dir.find('$') == std::string::npos) out->push_back(dir);  // $LIB, $PLATFORM: left to glibc
    if (colon == std::string::npos) break;
    pos = colon + 1;
  }
}

// The file glibc would open for `file` (a name without '/') when called
// from `map`, if the caller's RPATH / LD_LIBRARY_PATH / RUNPATH has it (in
// glibc's order); "" to let glibc search the cache and default directories,
// which do not depend on the caller.
std::string caller_search(const char* file, void* map) {
  std::vector<std::string> dirs;
  const std::string origin = origin_of(map);
  const char* runpath = dyn_path(map, DT_RUNPATH);
  if (runpath == nullptr) {
    add_dirs(&dirs, dyn_path(map, DT_RPATH), origin);
    // and the main program's RPATH, if it has no RUNPATH
    void* main_map = _r_debug.r_map;
    if (main_map != nullptr && main_map != map && dyn_path(main_map, DT_RUNPATH) == nullptr)
      add_dirs(&dirs, dyn_path(main_map, DT_RPATH), origin_of(main_map));
  }
  add_dirs(&dirs, secure_getenv("LD_LIBRARY_PATH"), origin);
  add_dirs(&dirs, runpath, origin);
  for (const std::string& d : dirs) {
    std::string path = d + "/" + file;
    if (access(path.c_str(), F_OK) == 0) return path;
  }
  return "";
}

bool already_loaded(Lmid_t lmid, bool use_lmid, const char* file) {
  void* h = use_lmid ? real(real_dlmopen_fn, "dlmopen")(lmid, file, RTLD_LAZY | RTLD_NOLOAD)
                     : real(real_dlopen_fn, "dlopen")(file, RTLD_LAZY | RTLD_NOLOAD);
  if (h == nullptr) {
    (void)dlerror();  // not an error of the caller's call
    return false;
  }
  real(real_dlclose_fn, "dlclose")(h);
  return true;
}

void* open_as_caller(Lmid_t lmid, bool use_lmid, const char* file, int mode, const void* ret) {
  std::string resolved;
  if (file != nullptr && file[0] != '\0') {
    void* map = caller_map(ret);
    if (map != nullptr) {
      Lmid_t caller_ns = LM_ID_BASE;
      if (!use_lmid && dlinfo(map, RTLD_DI_LMID, &caller_ns) == 0 && caller_ns != LM_ID_BASE) {
        lmid = caller_ns;
        use_lmid = true;
      }
      if (strchr(file, '$') != nullptr) {
        resolved = file;
        const std::string origin = origin_of(map);
        for (const char* token : {"${ORIGIN}", "$ORIGIN"}) {
          for (size_t at; (at = resolved.find(token)) != std::string::npos;)
            resolved.replace(at, strlen(token), origin);
        }
        file = resolved.c_str();
      }
      // A name without '/': an object already loaded under that name (or
      // soname) is glibc's answer whoever calls; otherwise search like the
      // caller would.
      if (strchr(file, '/') == nullptr && !already_loaded(lmid, use_lmid, file)) {
        std::string found = caller_search(file, map);
        if (!found.empty()) {
          resolved = found;
          file = resolved.c_str();
        }
      }
    }
  }
  if (use_lmid) return real(real_dlmopen_fn, "dlmopen")(lmid, file, mode);
  return real(real_dlopen_fn, "dlopen")(file, mode);
}

void* interposed_open(Lmid_t lmid, bool use_lmid, const char* file, int mode, const void* ret) {
  pthread_mutex_lock(&dl_lock);
  bool outermost = depth++ == 0;
  std::vector<TlsObject> before;
  if (outermost) before = tls_objects();
  void* h = open_as_caller(lmid, use_lmid, file, mode, ret);
  if (outermost && h != nullptr && (mode & RTLD_NOLOAD) == 0) init_new_static_tls(before, tls_objects());
  --depth;
  pthread_mutex_unlock(&dl_lock);
  return h;
}

}  // namespace

uint64_t dl_tls_modules_initialised() { return modules_initialised.load(std::memory_order_relaxed); }

}  // namespace weft::sys

extern "C" {

__attribute__((visibility("default"), noinline)) void* dlopen(const char* file, int mode) {
  return weft::sys::interposed_open(LM_ID_BASE, false, file, mode, __builtin_return_address(0));
}

__attribute__((visibility("default"), noinline)) void* dlmopen(Lmid_t lmid, const char* file, int mode) {
  return weft::sys::interposed_open(lmid, true, file, mode, __builtin_return_address(0));
}

__attribute__((visibility("default"))) int dlclose(void* handle) {
  pthread_mutex_lock(&weft::sys::dl_lock);
  int r = weft::sys::real(weft::sys::real_dlclose_fn, "dlclose")(handle);
  pthread_mutex_unlock(&weft::sys::dl_lock);
  return r;
}

}  // extern "C"
