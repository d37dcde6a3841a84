// runtime/trace.cc — the event trace's rings, clock and JSON writer
// (trace.h says what is recorded and when it may be read).
#include "runtime/trace.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/scheduler.h"
#include "runtime/ult.h"
#include "sys/raw_syscall.h"
#include "weft/version.h"

namespace weft::rt::trace {
namespace {

uint64_t monotonic_raw_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Whether /proc/cpuinfo lists both constant_tsc and nonstop_tsc: the TSC
// then ticks at one rate on every CPU, in every power state.
bool tsc_is_invariant() {
  FILE* f = fopen("/proc/cpuinfo", "re");
  if (f == nullptr) return false;
  char line[4096];
  bool constant = false, nonstop = false;
  while (fgets(line, sizeof line, f) != nullptr) {
    if (strncmp(line, "flags", 5) != 0) continue;
    constant = strstr(line, " constant_tsc") != nullptr;
    nonstop = strstr(line, " nonstop_tsc") != nullptr;
    break;
  }
  fclose(f);
  return constant && nonstop;
}

// Set once, before any runtime records (Tracer::create); read by now().
std::atomic<int> g_use_tsc{-1};  // -1 unknown, 0 no, 1 yes

thread_local int32_t t_tid __attribute__((tls_model("initial-exec"))) = 0;

}  // namespace

uint64_t now() {
  if (g_use_tsc.load(std::memory_order_relaxed) == 1) return __rdtsc();
  return monotonic_raw_ns();
}

int32_t Ring::calling_tid() {
  if (t_tid == 0) t_tid = sys::gettid();
  return t_tid;
}

Ring::Ring(uint32_t capacity, bool per_klt) : mask_(capacity - 1), per_klt_(per_klt), ev_(new Event[capacity]) {
  WEFT_DCHECK((capacity & (capacity - 1)) == 0 && capacity != 0, "trace ring of %u slots", capacity);
}

std::vector<Event> Ring::snapshot(uint64_t* lost) const {
  uint64_t n = next_.load(std::memory_order_acquire);
  uint64_t cap = mask_ + 1;
  uint64_t first = n > cap ? n - cap : 0;
  *lost = first;
  std::vector<Event> out;
  out.reserve(static_cast<size_t>(n - first));
  for (uint64_t i = first; i < n; ++i) out.push_back(ev_[i & mask_]);
  WEFT_DCHECK(next_.load(std::memory_order_relaxed) == n, "trace ring written while it was read (%llu -> %llu events)",
              static_cast<unsigned long long>(n), static_cast<unsigned long long>(next_.load()));
  return out;
}

Tracer::Tracer(std::string path, uint32_t events)
    : path_(std::move(path)), events_(events), pid_(sys::getpid()), shared_(events, false) {
  t0_raw_ = now();
  t0_ns_ = monotonic_raw_ns();
  g_tracers.fetch_add(1, std::memory_order_relaxed);
}

void io_event(UltDesc* self, Kind kind, const char* op, int fd, int64_t v) {
  if (Ring* r = trace_ring_here(self->sched); r != nullptr)
    r->put(kind, self->id_value(), reinterpret_cast<uint64_t>(op), static_cast<uint64_t>(static_cast<int64_t>(fd)), v);
}

absl::StatusOr<std::unique_ptr<Tracer>> Tracer::create(std::string path, uint32_t events) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create the trace file '", path, "': ", strerror(errno)));
  }
  close(fd);
  if (g_use_tsc.load(std::memory_order_relaxed) < 0) g_use_tsc.store(tsc_is_invariant() ? 1 : 0);
  uint32_t cap = 1;
  while (cap < events) cap <<= 1;
  return std::unique_ptr<Tracer>(new Tracer(std::move(path), cap));
}

Ring* Tracer::new_worker_ring() {
  std::lock_guard<std::mutex> g(rings_lock_);
  rings_.push_back(std::make_unique<Ring>(events_, true));
  return rings_.back().get();
}

double Tracer::ns_per_tick() const {
  if (g_use_tsc.load(std::memory_order_relaxed) != 1) return 1.0;
  uint64_t raw = now(), ns = monotonic_raw_ns();
  if (raw <= t0_raw_ || ns <= t0_ns_) return 1.0;
  return static_cast<double>(ns - t0_ns_) / static_cast<double>(raw - t0_raw_);
}

namespace {

// Appends `s` as a JSON string's contents: quotes, backslashes and control
// characters escaped; bytes that are not valid UTF-8 (a name cut inside a
// character) become U+FFFD.
void append_escaped(std::string* out, const char* s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
      ++i;
    } else if (c < 0x20) {
      absl::StrAppendFormat(out, "\\u%04x", c);
      ++i;
    } else if (c < 0x80) {
      out->push_back(static_cast<char>(c));
      ++i;
    } else {
      size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
      bool ok = len != 0 && i + len <= n;
      for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
      if (ok) {
        out->append(s + i, len);
        i += len;
      } else {
        out->append("\\ufffd");
        ++i;
      }
    }
  }
}

std::string ult_id_text(uint64_t id) {
  return absl::StrFormat("%u.%u", static_cast<uint32_t>(id), static_cast<uint32_t>(id >> 32));
}

// A spawn event's name bytes (a, b, c: up to 24 bytes, NUL-padded).
std::string spawn_name(const Event& e) {
  char b[25] = {};
  memcpy(b, &e.a, 8);
  memcpy(b + 8, &e.b, 8);
  memcpy(b + 16, &e.c, 8);
  return std::string(b, strnlen(b, 24));
}

const char* kind_name(uint16_t k) {
  switch (k) {
    case kSpawn: return "spawn";
    case kPark: return "park";
    case kUnpark: return "unpark";
    case kSteal: return "steal";
    case kPreempt: return "preempt";
    case kExit: return "exit";
    case kHandoff: return "blocking handoff";
    case kKernelHandoff: return "kernel-block handoff";
    case kHogRescue: return "hog rescue";
    case kIoSubmit: return "io submit";
    case kIoDone: return "io done";
    default: return "?";
  }
}

}  // namespace

absl::Status Tracer::write() {
  if (sys::getpid() != pid_) return absl::OkStatus();
  struct Tagged {
    Event e;
    const Ring* ring;
  };
  std::vector<Tagged> all;
  uint64_t lost = 0;
  auto take = [&](const Ring* r) {
    uint64_t l = 0;
    for (const Event& e : r->snapshot(&l)) all.push_back({e, r});
    lost += l;
  };
  take(&shared_);
  {
    std::lock_guard<std::mutex> g(rings_lock_);
    for (auto& r : rings_) take(r.get());
  }
  std::stable_sort(all.begin(), all.end(), [](const Tagged& x, const Tagged& y) { return x.e.t < y.e.t; });

  // Names: from spawn events, else from the table while the id is current.
  std::unordered_map<uint64_t, std::string> names;
  for (const Tagged& x : all)
    if (x.e.kind == kSpawn) names[x.e.ult] = spawn_name(x.e);
  auto name_of = [&](uint64_t id) -> std::string {
    if (auto it = names.find(id); it != names.end() && !it->second.empty()) return it->second;
    if (UltDesc* u = ult_table::lookup(id); u != nullptr && u->id_value() == id) {
      char b[sizeof u->name + 1] = {};
      memcpy(b, u->name, sizeof u->name);
      if (b[0] != '\0') return std::string(b);
    }
    return "";
  };
  auto slice_name = [&](uint64_t id) {
    std::string n = name_of(id);
    return n.empty() ? absl::StrCat("ULT ", ult_id_text(id)) : absl::StrCat(n, " (", ult_id_text(id), ")");
  };

  double k = ns_per_tick();
  uint64_t base = all.empty() ? 0 : all.front().e.t;
  auto ts = [&](uint64_t t) { return absl::StrFormat("%.3f", static_cast<double>(t - base) * k / 1000.0); };
  int pid = pid_;

  std::string out;
  out.reserve(all.size() * 120 + 4096);
  absl::StrAppendFormat(&out,
                        "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"weft_version\":\"%s\",\"klt_backend\":\"%s\","
                        "\"events\":%u,\"events_overwritten\":%u,\"clock\":\"%s\"},\n\"traceEvents\":[\n",
                        weft::version(), weft::klt_backend(), all.size(), lost,
                        g_use_tsc.load() == 1 ? "tsc" : "CLOCK_MONOTONIC");
  bool first = true;
  auto begin_event = [&]() {
    if (!first) out.append(",\n");
    first = false;
  };
  begin_event();
  absl::StrAppendFormat(&out, "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"args\":{\"name\":\"weft runtime\"}}",
                        pid);
  // Thread names: pool workers by their ring, the others by tid.
  std::unordered_map<int32_t, bool> named;
  {
    std::lock_guard<std::mutex> g(rings_lock_);
    for (size_t i = 0; i < rings_.size(); ++i) {
      int32_t tid = rings_[i]->tid.load(std::memory_order_relaxed);
      if (tid == 0 || named[tid]) continue;
      named[tid] = true;
      begin_event();
      absl::StrAppendFormat(&out,
                            "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"weft "
                            "worker KLT %d (launched %zu)\"}}",
                            pid, tid, tid, i);
      begin_event();
      absl::StrAppendFormat(&out,
                            "{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":%d,\"tid\":%d,\"args\":{\"sort_"
                            "index\":%zu}}",
                            pid, tid, i);
    }
  }
  for (const Tagged& x : all) {
    if (named[x.e.tid]) continue;
    named[x.e.tid] = true;
    begin_event();
    absl::StrAppendFormat(&out,
                          "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"thread "
                          "%d\"}}",
                          pid, x.e.tid, x.e.tid);
  }

  // Per KLT: the ULT running (from kRun to the next kRun or kLoop), the
  // idle sleep (kIdle to kWake) and the blocking region (nested in its
  // ULT's slice). Unpark -> run is drawn as a flow arrow.
  struct KltState {
    uint64_t ult = 0, since = 0;
    uint64_t idle_since = 0, block_since = 0;
    bool in_ult = false, idle = false, blocking = false;
  };
  std::unordered_map<int32_t, KltState> klt;
  std::unordered_map<uint64_t, uint64_t> pending_flow;  // ULT -> flow id of its last unpark
  uint64_t next_flow = 1;
  auto slice = [&](int32_t tid, const char* cat, const std::string& name, uint64_t from, uint64_t to,
                   uint64_t ult) {
    begin_event();
    out.append("{\"ph\":\"X\",\"cat\":\"");
    out.append(cat);
    out.append("\",\"name\":\"");
    append_escaped(&out, name.data(), name.size());
    absl::StrAppendFormat(&out, "\",\"pid\":%d,\"tid\":%d,\"ts\":%s,\"dur\":%.3f", pid, tid, ts(from),
                          static_cast<double>(to - from) * k / 1000.0);
    if (ult != 0) absl::StrAppendFormat(&out, ",\"args\":{\"ult\":\"%s\"}", ult_id_text(ult));
    out.append("}");
  };
  auto end_run = [&](int32_t tid, KltState& st, uint64_t t) {
    if (!st.in_ult) return;
    if (st.blocking) {
      slice(tid, "blocking", "weft::blocking", st.block_since, t, st.ult);
      st.blocking = false;
    }
    slice(tid, "ult", slice_name(st.ult), st.since, t, st.ult);
    st.in_ult = false;
  };
  for (const Tagged& x : all) {
    const Event& e = x.e;
    KltState& st = klt[e.tid];
    switch (e.kind) {
      case kRun:
        end_run(e.tid, st, e.t);
        st.in_ult = true;
        st.ult = e.ult;
        st.since = e.t;
        if (auto it = pending_flow.find(e.ult); it != pending_flow.end()) {
          begin_event();
          absl::StrAppendFormat(&out,
                                "{\"ph\":\"f\",\"bp\":\"e\",\"cat\":\"wake\",\"name\":\"wake\",\"id\":%u,\"pid\":%d,"
                                "\"tid\":%d,\"ts\":%s}",
                                it->second, pid, e.tid, ts(e.t));
          pending_flow.erase(it);
        }
        continue;
      case kLoop:
        end_run(e.tid, st, e.t);
        continue;
      case kIdle:
        end_run(e.tid, st, e.t);
        st.idle = true;
        st.idle_since = e.t;
        continue;
      case kWake:
        if (st.idle) slice(e.tid, "idle", "idle", st.idle_since, e.t, 0);
        st.idle = false;
        continue;
      case kBlockBegin:
        st.blocking = st.in_ult;
        st.block_since = e.t;
        continue;
      case kBlockEnd:
        if (st.blocking) slice(e.tid, "blocking", "weft::blocking", st.block_since, e.t, e.ult);
        st.blocking = false;
        continue;
      default:
        break;
    }
    // An instant event on the recording KLT.
    begin_event();
    out.append("{\"ph\":\"i\",\"s\":\"t\",\"cat\":\"");
    out.append(kind_name(e.kind));
    out.append("\",\"name\":\"");
    std::string name = kind_name(e.kind);
    std::string args;
    switch (e.kind) {
      case kSpawn:
        absl::StrAppend(&name, " ", slice_name(e.ult));
        break;
      case kPark: {
        const char* what = reinterpret_cast<const char*>(e.a);
        absl::StrAppend(&name, ": ", what != nullptr ? what : "?");
        absl::StrAppendFormat(&args, ",\"object\":\"%#x\",\"fd\":%d", e.b, e.c);
        break;
      }
      case kUnpark:
        absl::StrAppend(&name, " ", slice_name(e.ult));
        if (e.a != 0) absl::StrAppendFormat(&args, ",\"by\":\"%s\"", ult_id_text(e.a));
        break;
      case kSteal:
        absl::StrAppendFormat(&args, ",\"from_slot\":%d", static_cast<int64_t>(e.a));
        break;
      case kHandoff:
      case kKernelHandoff:
        absl::StrAppendFormat(&args, ",\"slot\":%d,\"from_tid\":%d,\"to_tid\":%d", static_cast<int64_t>(e.a),
                              static_cast<int64_t>(e.b), e.c);
        break;
      case kHogRescue:
        absl::StrAppendFormat(&args, ",\"slot\":%d,\"moved\":%d", static_cast<int64_t>(e.a),
                              static_cast<int64_t>(e.b));
        break;
      case kIoSubmit:
      case kIoDone: {
        const char* op = reinterpret_cast<const char*>(e.a);
        absl::StrAppend(&name, " ", op != nullptr ? op : "?");
        absl::StrAppendFormat(&args, ",\"fd\":%d,\"%s\":%d", static_cast<int64_t>(e.b),
                              e.kind == kIoSubmit ? "bytes" : "result", e.c);
        break;
      }
      default:
        break;
    }
    append_escaped(&out, name.data(), name.size());
    absl::StrAppendFormat(&out, "\",\"pid\":%d,\"tid\":%d,\"ts\":%s,\"args\":{\"ult\":\"%s\"%s}}", pid, e.tid,
                          ts(e.t), ult_id_text(e.ult), args);
    if (e.kind == kUnpark) {
      uint64_t id = next_flow++;
      pending_flow[e.ult] = id;
      begin_event();
      absl::StrAppendFormat(&out,
                            "{\"ph\":\"s\",\"cat\":\"wake\",\"name\":\"wake\",\"id\":%u,\"pid\":%d,\"tid\":%d,"
                            "\"ts\":%s}",
                            id, pid, e.tid, ts(e.t));
    }
  }
  // Slices still open when the runtime stopped end at the last event.
  uint64_t last = all.empty() ? 0 : all.back().e.t;
  for (auto& [tid, st] : klt) {
    end_run(tid, st, last);
    if (st.idle) slice(tid, "idle", "idle", st.idle_since, last, 0);
  }
  out.append("\n]}\n");

  FILE* f = fopen(path_.c_str(), "we");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot write the trace file '", path_, "': ", strerror(errno)));
  size_t put = fwrite(out.data(), 1, out.size(), f);
  int err = put == out.size() ? 0 : errno;
  if (fclose(f) != 0 && err == 0) err = errno;
  if (err != 0 || put != out.size())
    return absl::InternalError(absl::StrCat("cannot write the trace file '", path_, "': ", strerror(err ? err : EIO)));
  return absl::OkStatus();
}

}  // namespace weft::rt::trace
