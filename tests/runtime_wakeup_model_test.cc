// tests/runtime_wakeup_model_test.cc — an exhaustive model check of the
// wake-up handshakes (STYLE.md #7, "Tests that hunt interleavings").
//
// The code's actors — publishers of new ULTs (notify_work / wake_one),
// workers looking for work and going to sleep (Worker::find_runnable_inner)
// and the monitor choosing its tick (monitor_main) — are written here as
// step functions over one shared abstract state. Each step is one atomic
// action of the code, named by the lines it models (scheduler.cc,
// monitor.cc, scheduler.h at the fix of issue 9 #12); steps that the code
// does under one lock are one step. The checker enumerates every
// interleaving (depth-first, each distinct state once: sequential
// consistency, which the code gets from its locked RMWs and full_fence()),
// and checks:
//   - invariants in every state (npidle equals the idle set's size, no
//     negative counters);
//   - in every final state (no actor can move): no work is queued while an
//     active worker sleeps (a lost wake-up, or work left for a busy
//     worker's next pass), and the monitor is not in its long (100 ms)
//     sleep, un-kicked, while a worker runs ULTs.
// A second, smaller model checks that a worker retired by set_concurrency
// never sleeps with ULTs in its deque (the retired-worker flush).
//
// Each model has switches for the code as it was at 15df0bc; the tests
// assert that the checker finds each bug fixed in issue 9 #12 there, so the
// model is known to see them — and that the code as it is now has none.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>

namespace {

// ---------------------------------------------------------------------------
// A tiny explicit-state model checker
// ---------------------------------------------------------------------------

// State: a trivially copyable struct; Step(state, actor) applies actor's
// next atomic action and returns true, or returns false if the actor cannot
// move (finished, or blocked). Check/Final return an error message or "".
template <class State>
struct Model {
  int actors = 0;
  std::function<bool(State&, int)> step;
  std::function<std::string(const State&)> invariant;  // every state
  std::function<std::string(const State&)> final_check;  // states where no actor moves
  std::function<std::string(const State&)> describe;
};

struct Result {
  uint64_t states = 0;
  uint64_t finals = 0;
  std::string violation;  // first one found, with the trace that reaches it
};

template <class State>
Result Explore(const Model<State>& m, const State& init, uint64_t max_states = 20'000'000) {
  static_assert(std::is_trivially_copyable_v<State>);
  Result r;
  // Visited states by a 128-bit hash of their bytes (two independent 64-bit
  // FNV-1a variants): a collision could only hide a state, never report a
  // false violation, and at a few million states its odds are ~1e-25.
  struct H128 {
    uint64_t a, b;
    bool operator==(const H128& o) const { return a == o.a && b == o.b; }
  };
  struct HH {
    size_t operator()(const H128& h) const { return static_cast<size_t>(h.a ^ (h.b * 0x9E3779B97F4A7C15ULL)); }
  };
  std::unordered_set<H128, HH> seen;
  seen.reserve(1 << 20);
  struct Frame {
    State s;
    int next_actor;
    int via;  // the actor whose step led here (for the trace)
  };
  std::vector<Frame> stack;
  auto key = [](const State& s) {
    const auto* p = reinterpret_cast<const unsigned char*>(&s);
    uint64_t a = 0xcbf29ce484222325ULL, b = 0x84222325cbf29ce4ULL;
    for (size_t i = 0; i < sizeof s; ++i) {
      a = (a ^ p[i]) * 0x100000001b3ULL;
      b = (b ^ p[i] ^ (i << 8)) * 0x100000001b3ULL;
      b ^= b >> 29;
    }
    return H128{a, b};
  };
  auto trace = [&](const std::string& why) {
    std::string t = why + "\n  trace (actor: state after its step):\n";
    for (const Frame& f : stack) t += "    " + std::to_string(f.via) + ": " + m.describe(f.s) + "\n";
    return t;
  };
  seen.insert(key(init));
  stack.push_back({init, 0, -1});
  while (!stack.empty()) {
    if (r.states > max_states) {
      r.violation = "state space larger than the bound";
      return r;
    }
    Frame& f = stack.back();
    if (f.next_actor == 0) {
      ++r.states;
      if (std::string e = m.invariant(f.s); !e.empty()) {
        r.violation = trace("invariant: " + e);
        return r;
      }
      bool any = false;
      for (int a = 0; a < m.actors && !any; ++a) {
        State t = f.s;
        any = m.step(t, a);
      }
      if (!any) {
        ++r.finals;
        if (std::string e = m.final_check(f.s); !e.empty()) {
          r.violation = trace("final state: " + e);
          return r;
        }
      }
    }
    if (f.next_actor >= m.actors) {
      stack.pop_back();
      continue;
    }
    int a = f.next_actor++;
    State t = f.s;
    if (!m.step(t, a)) continue;
    if (!seen.insert(key(t)).second) continue;
    stack.push_back({t, 0, a});
  }
  return r;
}

// ---------------------------------------------------------------------------
// Model 1: publishers, workers and the monitor
// ---------------------------------------------------------------------------

struct Variant {
  bool old_wake_one = false;      // 15df0bc: CAS nmspinning before looking at the idle set
  bool old_kick_order = false;    // 15df0bc: kick the monitor before leaving the idle set, and only after a sleep
  bool old_no_respin = false;     // 15df0bc: a spinner whose re-check finds work does not spin again
  uint8_t timers = 1;             // bit i: worker i's timer expires once (a ULT woken by it)
};

constexpr int kW = 2;  // workers (all active)
constexpr int kP = 2;  // publishers (one new ULT each, to the global queue)

// The notify_work/wake_one sequence, run by a publisher and by a worker
// that stops spinning as the last spinner (Worker::stop_spinning).
enum NPc : uint8_t {
  N_IDLE,         // not notifying
  N_READ_NPIDLE,  // notify_work: full_fence(); load npidle            (scheduler.cc notify_work)
  N_READ_NMSPIN,  //              load nmspinning; both ok -> wake_one (scheduler.cc notify_work)
  // wake_one at 15df0bc (scheduler.cc 542-561 there):
  N_OLD_CAS,      // CAS nmspinning 0 -> 1, else return
  N_OLD_POP,      // lock idle_lock; pop the last idle worker (in_idle_set = false,
                  // woken_spinning = true, npidle--); unlock
  N_OLD_UNDO,     // none was idle: nmspinning-- ; return
  // wake_one now (scheduler.cc wake_one): the idle set first, nmspinning
  // 0 -> 1 under idle_lock only when a worker is there to be woken.
  N_NEW_LOCKED,   // lock idle_lock; empty -> return; CAS nmspinning 0 -> 1 fails -> return;
                  // pop the last idle worker (in_idle_set = false, woken_spinning = true,
                  // npidle--); unlock
  N_WAKE,         // w->poller->wake(): the wake is pending until w's Poller::wait consumes it
};

struct Notify {
  uint8_t pc = N_IDLE;
  int8_t npidle_seen = 0;
  int8_t target = -1;
};

enum WPc : uint8_t {
  W_TOP,         // find_runnable_inner: timers fired (a ULT woken by a timer is
                 // local work), inbox, run_next, deque, yield queue, global queue:
                 // take local work, else one ULT from the shared queues
  W_SPIN_DECIDE, // "Steal, as a spinner": become a spinner (nmspinning++) if at most
                 // half the busy workers spin
  W_STEAL,       // the steal rounds: take from the shared queues if any
  W_ANNOUNCE,    // lock idle_lock; idle.push_back(self); in_idle_set; npidle++   (scheduler.cc "announce")
  W_UNSPIN,      // if spinning: spinning = false; nmspinning--                 (scheduler.cc ~"if (spinning)")
  W_RECHECK,     // full_fence(); look at every queue once more: work -> no sleep (and a
                 // former spinner spins again: nmspinning++)
  W_SLEEP,       // poller->wait(): returns when a wake is pending (consumes it), or
                 // when this worker's timer expires (at most once in the model)
  W_REMOVE,      // remove_idle(): lock idle_lock; take woken_spinning; leave the set
  W_KICK_LOAD,   // kick_monitor: load monitor_idle
  W_KICK_XCHG,   //               exchange(monitor_idle, 0); was 1: futex_wake
  W_WOKEN_SPIN,  // woken_spinning: spinning or count down the extra nmspinning
  W_FOUND,       // find_runnable: found work; if spinning: stop_spinning (nmspinning--,
                 // the last spinner notifies)
  W_RUNNING,     // runs ULTs (final for the model: the monitor must be awake)
};

struct WorkerS {
  uint8_t pc = W_TOP;
  bool spinning = false;
  bool in_idle = false;
  bool woken_spinning = false;  // guarded by idle_lock
  bool wake_pending = false;    // the Poller's word
  bool local_work = false;      // a timer fired: a ULT to run here
  bool timer_left = true;       // one timer expiry available
  bool ws_taken = false;        // woken_spinning as remove_idle returned it
  bool was_spinning = false;    // spinning when it announced itself idle
  Notify n;
};

enum MPc : uint8_t {
  M_CHECK,     // monitor.cc: npidle >= active ? announce : short tick
  M_ANNOUNCE,  // monitor_idle.store(1, seq_cst)
  M_RECHECK,   // npidle < active (seq_cst) -> busy: monitor_idle = 0, short tick; else long sleep
  M_LONG,      // futex_wait(monitor_idle, 1) for 100 ms; returns once it is 0 (kicked)
  M_SHORT,     // the short tick: loops to M_CHECK while rounds remain
  M_AWAKE,     // out of rounds while on the short tick: awake (safe)
};

struct State1 {
  int8_t global = 0;  // ULTs in the shared queues (global queue, deques, run_next)
  int8_t npidle = 0;
  int8_t nmspinning = 0;
  int8_t idle[kW] = {-1, -1};  // the idle vector (wake_one pops the back)
  int8_t nidle = 0;
  uint8_t monitor_idle = 0;
  uint8_t mpc = M_CHECK;
  uint8_t mrounds = 2;
  uint8_t ppc[kP] = {0, 0};  // 0 push, 1 notifying, 2 done
  Notify pn[kP];
  WorkerS w[kW];
};

void IdleRemove(State1& s, int w) {
  for (int i = 0; i < s.nidle; ++i) {
    if (s.idle[i] == w) {
      for (int j = i; j + 1 < s.nidle; ++j) s.idle[j] = s.idle[j + 1];
      s.idle[--s.nidle] = -1;
      return;
    }
  }
}

// One step of a notify sequence (n.pc back to N_IDLE when it is done).
void NotifyStep(State1& s, Notify& n, const Variant& v) {
  switch (n.pc) {
    case N_READ_NPIDLE:
      n.npidle_seen = s.npidle;
      n.pc = N_READ_NMSPIN;
      return;
    case N_READ_NMSPIN:
      if (n.npidle_seen > 0 && s.nmspinning == 0) {
        n.pc = v.old_wake_one ? N_OLD_CAS : N_NEW_LOCKED;
      } else {
        n.pc = N_IDLE;
      }
      return;
    case N_OLD_CAS:
      if (s.nmspinning != 0) {
        n.pc = N_IDLE;
        return;
      }
      s.nmspinning = 1;
      n.pc = N_OLD_POP;
      return;
    case N_OLD_POP:
      if (s.nidle == 0) {
        n.pc = N_OLD_UNDO;
        return;
      }
      n.target = s.idle[s.nidle - 1];
      s.idle[--s.nidle] = -1;
      s.w[n.target].in_idle = false;
      s.w[n.target].woken_spinning = true;
      s.npidle--;
      n.pc = N_WAKE;
      return;
    case N_OLD_UNDO:
      s.nmspinning--;
      n.pc = N_IDLE;
      return;
    case N_NEW_LOCKED:
      if (s.nidle == 0 || s.nmspinning != 0) {
        n.pc = N_IDLE;
        return;
      }
      s.nmspinning = 1;
      n.target = s.idle[s.nidle - 1];
      s.idle[--s.nidle] = -1;
      s.w[n.target].in_idle = false;
      s.w[n.target].woken_spinning = true;
      s.npidle--;
      n.pc = N_WAKE;
      return;
    case N_WAKE:
      s.w[n.target].wake_pending = true;
      n.target = -1;
      n.pc = N_IDLE;
      return;
  }
}

bool WorkerStep(State1& s, int i, const Variant& v) {
  WorkerS& w = s.w[i];
  if (w.n.pc != N_IDLE) {  // notifying (stop_spinning as the last spinner)
    NotifyStep(s, w.n, v);
    if (w.n.pc == N_IDLE) w.pc = W_RUNNING;
    return true;
  }
  switch (w.pc) {
    case W_TOP:
      if (w.local_work) {
        w.local_work = false;
        w.pc = W_FOUND;
      } else if (s.global > 0) {
        s.global--;
        w.pc = W_FOUND;
      } else {
        w.pc = W_SPIN_DECIDE;
      }
      return true;
    case W_SPIN_DECIDE:
      // nact > 1 && (spinning || 2 * nmspinning < nact - npidle), read now.
      if (!w.spinning && 2 * s.nmspinning < kW - s.npidle) {
        w.spinning = true;
        s.nmspinning++;
        w.pc = W_STEAL;
      } else {
        w.pc = w.spinning ? W_STEAL : W_ANNOUNCE;
      }
      return true;
    case W_STEAL:
      if (s.global > 0) {
        s.global--;
        w.pc = W_FOUND;
      } else {
        w.pc = W_ANNOUNCE;
      }
      return true;
    case W_ANNOUNCE:
      s.idle[s.nidle++] = static_cast<int8_t>(i);
      w.in_idle = true;
      s.npidle++;
      w.pc = W_UNSPIN;
      return true;
    case W_UNSPIN:
      w.was_spinning = w.spinning;
      if (w.spinning) {
        w.spinning = false;
        s.nmspinning--;
      }
      w.pc = W_RECHECK;
      return true;
    case W_RECHECK:
      // Work found: no sleep. 15df0bc then left the idle set without a
      // kick at all; now W_REMOVE is followed by the kick in both cases.
      // A spinner that finds work here spins again ("Publishers that saw
      // us spinning woke nobody"), so that taking it notifies.
      if (s.global > 0) {
        if (w.was_spinning && !v.old_no_respin) {
          w.spinning = true;
          s.nmspinning++;
        }
        w.pc = W_REMOVE;
      } else {
        w.pc = W_SLEEP;
      }
      return true;
    case W_SLEEP:
      if (w.wake_pending) {
        w.wake_pending = false;
      } else if (w.timer_left) {
        w.timer_left = false;
        w.local_work = true;
      } else {
        return false;  // blocked in Poller::wait
      }
      // 15df0bc: `poller->wait(); kick_monitor();` then remove_idle. Now:
      // remove_idle, then kick_monitor, whether or not it slept.
      w.pc = v.old_kick_order ? W_KICK_LOAD : W_REMOVE;
      return true;
    case W_KICK_LOAD:
      w.pc = s.monitor_idle != 0 ? W_KICK_XCHG : (v.old_kick_order ? W_REMOVE : W_WOKEN_SPIN);
      return true;
    case W_KICK_XCHG:
      s.monitor_idle = 0;  // exchange(0) returned 1 or 0; either way the monitor's wait ends
      w.pc = v.old_kick_order ? W_REMOVE : W_WOKEN_SPIN;
      return true;
    case W_REMOVE:
      w.ws_taken = w.woken_spinning;
      w.woken_spinning = false;
      if (w.in_idle) {
        IdleRemove(s, i);
        w.in_idle = false;
        s.npidle--;
      }
      if (v.old_kick_order) {
        w.pc = W_WOKEN_SPIN;
      } else {
        w.pc = W_KICK_LOAD;
      }
      return true;
    case W_WOKEN_SPIN:
      if (w.ws_taken) {
        if (w.spinning) {
          s.nmspinning--;
        } else {
          w.spinning = true;
        }
      }
      w.ws_taken = false;
      w.pc = W_TOP;
      return true;
    case W_FOUND:
      if (w.spinning) {
        w.spinning = false;
        if (s.nmspinning-- == 1) {
          w.n.pc = N_READ_NPIDLE;
          return true;
        }
      }
      w.pc = W_RUNNING;
      return true;
    case W_RUNNING:
      return false;
  }
  return false;
}

bool MonitorStep(State1& s) {
  switch (s.mpc) {
    case M_CHECK:
      s.mpc = s.npidle >= kW ? M_ANNOUNCE : M_SHORT;
      return true;
    case M_ANNOUNCE:
      s.monitor_idle = 1;
      s.mpc = M_RECHECK;
      return true;
    case M_RECHECK:
      if (s.npidle < kW) {
        s.monitor_idle = 0;
        s.mpc = M_SHORT;
      } else {
        s.mpc = M_LONG;
      }
      return true;
    case M_LONG:
      if (s.monitor_idle == 1) return false;  // asleep for the long tick
      s.monitor_idle = 0;
      s.mpc = M_SHORT;
      return true;
    case M_SHORT:
      if (s.mrounds == 0) {
        s.mpc = M_AWAKE;
      } else {
        s.mrounds--;
        s.mpc = M_CHECK;
      }
      return true;
    case M_AWAKE:
      return false;
  }
  return false;
}

bool PublisherStep(State1& s, int p, const Variant& v) {
  switch (s.ppc[p]) {
    case 0:  // global_push: the ULT is in the shared queue (count published)
      s.global++;
      s.ppc[p] = 1;
      s.pn[p].pc = N_READ_NPIDLE;
      return true;
    case 1:
      NotifyStep(s, s.pn[p], v);
      if (s.pn[p].pc == N_IDLE) s.ppc[p] = 2;
      return true;
    default:
      return false;
  }
}

Model<State1> WakeModel(const Variant& v) {
  Model<State1> m;
  m.actors = kP + kW + 1;
  m.step = [v](State1& s, int a) {
    if (a < kP) return PublisherStep(s, a, v);
    if (a < kP + kW) return WorkerStep(s, a - kP, v);
    return MonitorStep(s);
  };
  m.invariant = [](const State1& s) -> std::string {
    int in = 0;
    for (const WorkerS& w : s.w) in += w.in_idle;
    if (in != s.npidle || s.nidle != s.npidle) return "npidle != size of the idle set";
    if (s.nmspinning < 0) return "nmspinning < 0";
    if (s.global < 0) return "global < 0";
    return "";
  };
  m.final_check = [](const State1& s) -> std::string {
    bool running = false, sleeping = false;
    for (const WorkerS& w : s.w) {
      running |= w.pc == W_RUNNING;
      sleeping |= w.pc == W_SLEEP;
    }
    if (s.global > 0 && sleeping)
      return "a ULT waits in the shared queue while a worker sleeps (lost wake-up: it waits for a busy worker's next pass)";
    if (s.mpc == M_LONG && s.monitor_idle == 1 && running)
      return "the monitor sleeps its long tick while a worker runs ULTs";
    return "";
  };
  m.describe = [](const State1& s) {
    char b[256];
    snprintf(b, sizeof b, "global=%d npidle=%d nmspin=%d midle=%d mpc=%d | P%d/%d P%d/%d | W0 pc=%d sp=%d idle=%d wp=%d | W1 pc=%d sp=%d idle=%d wp=%d",
             s.global, s.npidle, s.nmspinning, s.monitor_idle, s.mpc, s.ppc[0], s.pn[0].pc, s.ppc[1], s.pn[1].pc,
             s.w[0].pc, s.w[0].spinning, s.w[0].in_idle, s.w[0].wake_pending, s.w[1].pc, s.w[1].spinning,
             s.w[1].in_idle, s.w[1].wake_pending);
    return std::string(b);
  };
  return m;
}

Result CheckWake(const Variant& v) {
  State1 init;
  for (int i = 0; i < kW; ++i) init.w[i].timer_left = (v.timers >> i) & 1;
  return Explore(WakeModel(v), init);
}

// Every timer configuration (no timer, a timer on one worker, on both).
TEST(WakeupModel, CurrentCodeHasNoLostWakeupsAndNoSleepingMonitor) {
  for (uint8_t timers : {0, 1, 3}) {  // (2 is 1 with the workers renamed)
    Result r = CheckWake(Variant{.timers = timers});
    printf("[   INFO   ] timers %u: %llu states, %llu final states\n", timers,
           static_cast<unsigned long long>(r.states), static_cast<unsigned long long>(r.finals));
    EXPECT_EQ(r.violation, "") << "timers " << int{timers};
    EXPECT_GT(r.finals, 0u);
  }
}

// The model sees the bugs fixed in issue 9 #12 (so it is not blind to this
// class): each old order alone produces its violation.
TEST(WakeupModel, FindsTheNmspinningWindowOf15df0bc) {
  Result r = CheckWake(Variant{.old_wake_one = true, .timers = 0});
  printf("[   INFO   ] %llu states; violation:\n%s", static_cast<unsigned long long>(r.states), r.violation.c_str());
  EXPECT_NE(r.violation.find("lost wake-up"), std::string::npos) << r.violation;
}

TEST(WakeupModel, FindsTheRecheckWithoutRespinOf15df0bc) {
  Result r = CheckWake(Variant{.old_no_respin = true, .timers = 0});
  printf("[   INFO   ] %llu states; violation:\n%s", static_cast<unsigned long long>(r.states), r.violation.c_str());
  EXPECT_NE(r.violation.find("lost wake-up"), std::string::npos) << r.violation;
}

TEST(WakeupModel, FindsTheMonitorKickOrderOf15df0bc) {
  // With no timer: a worker that finds work in its re-check never kicked.
  // With a timer: the kick came before the worker left the idle set.
  for (uint8_t timers : {0, 1}) {
    Result r = CheckWake(Variant{.old_kick_order = true, .timers = timers});
    printf("[   INFO   ] timers %u: %llu states; violation:\n%s", timers, static_cast<unsigned long long>(r.states),
           r.violation.c_str());
    EXPECT_NE(r.violation.find("monitor sleeps"), std::string::npos) << r.violation;
  }
}

// ---------------------------------------------------------------------------
// Model 2: a retired worker's queues (set_concurrency flips)
// ---------------------------------------------------------------------------
//
// One worker W whose slot set_concurrency retires, activates and retires
// again (the controller), a ULT P pinned to W (it runs only from W's inbox)
// that spawns a child each time it runs, and whatever unparks P. Children
// spawned while W is active go to W's deque, which only active workers
// steal from; a retired W must hand them to the global queue.

struct Variant2 {
  bool old_flush_once = false;  // 15df0bc: retired_flushed, reset only by an active pass
};

enum RPc : uint8_t {
  R_TOP,        // find_runnable_inner: inbox_pop() before anything else (P runs here)
  R_ACT,        // bool act = active(); active: (15df0bc: retired_flushed = false) run a
                // deque ULT, else sleep; retired: flush deque/run_next to the global
                // queue (15df0bc: only if !retired_flushed; now whenever non-empty)
  R_SLEEP,      // the re-check and Poller::wait: inbox work or a pending wake ends it
  R_P_CHECK,    // P runs: weft::spawn reads local->active() (runtime.cc detail::spawn)
  R_P_PUSH,     //         submit_new: W's deque if it was active, else the global queue
  R_P_PARK,     //         P parks; W is back in its loop
  R_CHILD,      // W runs a child ULT taken from its deque; it exits
};

struct State2 {
  uint8_t pc = R_SLEEP;
  bool active = true;
  bool flushed = false;      // 15df0bc's retired_flushed
  bool wake_pending = false;
  bool inbox = false;        // P is queued in W's inbox
  bool p_parked = true;
  bool spawn_local = false;  // what P's spawn saw (active)
  uint8_t deque = 0;
  uint8_t global = 0;
  uint8_t cpc = 0;           // controller: lower, raise, lower, done
  uint8_t unparks = 3;       // times P is unparked
  uint8_t children = 0;
};

bool Worker2Step(State2& s, const Variant2& v) {
  switch (s.pc) {
    case R_TOP:
      if (s.inbox) {
        s.inbox = false;
        s.p_parked = false;
        s.pc = R_P_CHECK;
      } else {
        s.pc = R_ACT;
      }
      return true;
    case R_ACT:
      if (s.active) {
        if (v.old_flush_once) s.flushed = false;
        if (s.deque > 0) {
          s.deque--;
          s.pc = R_CHILD;
        } else {
          s.pc = R_SLEEP;
        }
      } else {
        if (v.old_flush_once ? !s.flushed : s.deque > 0) {
          s.flushed = true;
          s.global += s.deque;
          s.deque = 0;
        }
        s.pc = R_SLEEP;
      }
      return true;
    case R_SLEEP:
      // The re-check: an active worker looks at its deque too (the shared
      // queues); a retired one only at its inbox.
      if (s.inbox || (s.active && s.deque > 0)) {
        s.pc = R_TOP;
      } else if (s.wake_pending) {
        s.wake_pending = false;
        s.pc = R_TOP;
      } else {
        return false;
      }
      return true;
    case R_P_CHECK:
      s.spawn_local = s.active;
      s.pc = R_P_PUSH;
      return true;
    case R_P_PUSH:
      if (s.spawn_local) {
        s.deque++;
      } else {
        s.global++;
      }
      s.children++;
      s.pc = R_P_PARK;
      return true;
    case R_P_PARK:
      s.p_parked = true;
      s.pc = R_TOP;
      return true;
    case R_CHILD:
      s.pc = R_TOP;
      return true;
  }
  return false;
}

bool Controller2Step(State2& s) {
  switch (s.cpc) {
    case 0:
    case 2:  // set_concurrency lowers: W retired, woken to hand its queues over
      s.active = false;
      s.wake_pending = true;
      s.cpc++;
      return true;
    case 1:  // raises: W keeps its slot only if can_take_slot (no ULT running on it)
      if (s.pc == R_P_CHECK || s.pc == R_P_PUSH || s.pc == R_P_PARK || s.pc == R_CHILD) {
        s.cpc++;  // a spare takes the slot; W stays retired
        return true;
      }
      s.active = true;
      s.wake_pending = true;
      s.cpc++;
      return true;
    default:
      return false;
  }
}

bool Unparker2Step(State2& s) {
  if (s.unparks == 0 || !s.p_parked || s.inbox) return false;
  s.unparks--;
  s.inbox = true;  // make_runnable: P's home inbox, then wake_worker(W)
  s.wake_pending = true;
  return true;
}

Result CheckRetired(const Variant2& v) {
  Model<State2> m;
  m.actors = 3;
  m.step = [v](State2& s, int a) {
    if (a == 0) return Worker2Step(s, v);
    if (a == 1) return Controller2Step(s);
    return Unparker2Step(s);
  };
  m.invariant = [](const State2&) { return std::string(); };
  m.final_check = [](const State2& s) -> std::string {
    if (s.pc == R_SLEEP && !s.active && s.deque > 0)
      return "a retired worker sleeps with ULTs in its deque (nobody steals from it)";
    return "";
  };
  m.describe = [](const State2& s) {
    char b[160];
    snprintf(b, sizeof b, "pc=%d active=%d flushed=%d deque=%d global=%d inbox=%d parked=%d cpc=%d", s.pc, s.active,
             s.flushed, s.deque, s.global, s.inbox, s.p_parked, s.cpc);
    return std::string(b);
  };
  return Explore(m, State2{});
}

TEST(RetiredWorkerModel, CurrentCodeLeavesNothingInARetiredDeque) {
  Result r = CheckRetired(Variant2{});
  printf("[   INFO   ] %llu states, %llu final states\n", static_cast<unsigned long long>(r.states),
         static_cast<unsigned long long>(r.finals));
  EXPECT_EQ(r.violation, "");
  EXPECT_GT(r.finals, 0u);
}

TEST(RetiredWorkerModel, FindsTheFlushOnceOf15df0bc) {
  Result r = CheckRetired(Variant2{.old_flush_once = true});
  printf("[   INFO   ] %llu states; violation:\n%s", static_cast<unsigned long long>(r.states), r.violation.c_str());
  EXPECT_NE(r.violation.find("retired worker sleeps"), std::string::npos) << r.violation;
}

}  // namespace
