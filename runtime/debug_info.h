// runtime/debug_info.h — what a debugger needs to find every ULT without
// debug information: the layout record `weft_debug_info` (debug_info.cc),
// read by the gdb extension (runtime/weft-gdb.py) on a live process or a
// core file, and the wait note each ULT leaves before it parks (read by
// weft::dump_ults and by gdb).
//
// The record is a plain C struct exported under a fixed name (in .dynsym of
// libweft.so, in .symtab of a static program: `strip --strip-debug` keeps
// it, a full strip of a static program removes it). Every field is a
// 32- or 64-bit integer at a fixed place, so a reader needs no DWARF types:
// a release build without -g can be debugged. Bump kVersion when a field
// changes meaning; add fields only at the end.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "weft/signal.h"

namespace weft::rt {

struct UltDesc;

// What a ULT waits for, written by the ULT itself just before it parks and
// cleared when the wait ends (WaitNote). Other threads (dump_ults, gdb)
// read it without synchronization: a hint for humans, possibly stale by
// the time it is printed. `what` is a string with static storage ("Mutex",
// "recv", "sleep"), `obj` the primitive or null, `arg` an fd or -1.
class WaitNote {
 public:
  WaitNote(UltDesc* self, const char* what, const void* obj = nullptr, int64_t arg = -1);
  ~WaitNote();
  WaitNote(const WaitNote&) = delete;
  WaitNote& operator=(const WaitNote&) = delete;

 private:
  UltDesc* self_;
};

struct Scheduler;

// ULTs of one runtime by state (dump.cc): one pass over the ULT table
// without a lock, each descriptor read once (a racy snapshot, as in
// dump_ults). kParking counts as running (its switch-out is under way).
struct UltCounts {
  uint64_t running = 0, runnable = 0, parked = 0, exited_unjoined = 0;
};
UltCounts count_ults(const Scheduler* s);

// The thread that dumps every ULT to stderr (dump.cc) on WEFT_DUMP_SIGNAL,
// which it receives through a weft::SignalSet, and when no ULT of its
// runtime has switched for hang_ns while ULTs wait to run (hang_ns 0:
// WEFT_HANG_DUMP's seconds, or off). No thread when neither is asked for.
// Made after the runtime has started; destroyed before it shuts down. A
// forked child has no such thread (fork copies only the forking thread):
// destroyed there, it lets go of the parent's without waiting.
class DumpWatch {
 public:
  DumpWatch(Scheduler* s, int64_t hang_ns);
  ~DumpWatch();
  DumpWatch(const DumpWatch&) = delete;
  DumpWatch& operator=(const DumpWatch&) = delete;

 private:
  void run();
  Scheduler* sched_;
  int64_t hang_ns_;
  int pid_;  // the process whose thread thread_ is
  std::unique_ptr<SignalSet> set_;
  std::atomic<uint32_t> stop_{0};  // 1: leave run(); a futex word (the 100 ms tick waits on it)
  std::thread thread_;
};

// The owner word of the weft::Mutex at m (0 free, a UltDesc*, or a
// pthread_t with the low bit set), for dumps (sync/mutex.cc).
uintptr_t debug_mutex_owner(const void* m);

}  // namespace weft::rt

extern "C" {
// Layout of weft's ULT table and descriptors, version 1. Offsets are bytes
// from the start of the named structure. A descriptor is in use while its
// `live_in` word is non-null (from spawn until it is released after join
// or detach); its state word then says running/runnable (0), parking (1),
// parked (2) or exited (3) in its low two bits.
struct WeftDebugInfo {
  uint32_t magic;           // kWeftDebugMagic
  uint32_t version;         // 1
  uint64_t chunks;          // address of the array of chunk pointers (UltDesc*[max_chunks])
  uint64_t created;         // address of the uint32_t count of descriptors created
  uint32_t chunk_bits;      // descriptors per chunk = 1 << chunk_bits
  uint32_t max_chunks;
  uint32_t desc_size;       // sizeof(UltDesc): stride within a chunk
  // UltDesc
  uint32_t ult_sp;          // void*: saved stack pointer while switched out (see ctx_*)
  uint32_t ult_state;       // uint32_t state word
  uint32_t ult_index;       // uint32_t
  uint32_t ult_generation;  // uint32_t; id = generation << 32 | index
  uint32_t ult_name;        // char[ult_name_len], NUL-terminated
  uint32_t ult_name_len;
  uint32_t ult_worker;      // Worker*: running on, or last ran on
  uint32_t ult_live_in;     // Scheduler*: non-null while in use
  uint32_t ult_eff_prio;    // uint8_t: 0 background, 1 normal, 2 high
  uint32_t ult_wait_what;   // const char*: what it waits for, or null
  uint32_t ult_wait_obj;    // const void*
  uint32_t ult_wait_arg;    // int64_t: fd, or -1
  uint32_t ult_bound;       // bool: runs on a KLT of its own
  // Worker
  uint32_t worker_index;    // int: slot, -1 for a bound worker
  uint32_t worker_tid;      // int: its KLT's thread id
  uint32_t worker_current;  // UltDesc*: the ULT it runs now, or null
  // The switch frame at a switched-out ULT's saved stack pointer
  // (sys/context_layout.h): where each callee-saved register and the
  // resume address lie, and the frame's size (rsp after the switch
  // returns = sp + ctx_frame_size).
  uint32_t ctx_frame_size;
  uint32_t ctx_rip, ctx_rbp, ctx_rbx, ctx_r12, ctx_r13, ctx_r14, ctx_r15;
  // UltDesc, added after the fields above: the ULT's stack mapping (a
  // running ULT whose worker's `current` does not name it, inside
  // weft::blocking() or while parking, is found by a thread's stack
  // pointer lying in it).
  uint32_t ult_stack_base;  // char*: lowest address of the mapping (guard included)
  uint32_t ult_stack_size;  // size_t: bytes of the mapping
};
inline constexpr uint32_t kWeftDebugMagic = 0x74666577;  // "weft"
extern struct WeftDebugInfo weft_debug_info;
}
