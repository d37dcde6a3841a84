// tests/runtime_trace_test.cc — the event trace (Options::trace_file,
// WEFT_TRACE; runtime/trace.h): the file is valid JSON in the Chrome trace
// format and holds the events of a known workload (named ULTs that spawn,
// run, park on a timer and on a channel, are unparked and exit), a full
// ring keeps the newest events and says how many it lost, bad options and
// paths fail clearly, and WEFT_TRACE names one file per runtime.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <weft/weft.h>

#include "tests/json_mini.h"

namespace {

using weft_test::Json;

std::string TempPath(const std::string& leaf) {
  return testing::TempDir() + "/weft_trace_" + std::to_string(getpid()) + "_" + leaf;
}

// The file at `path` parsed; fails the test (and returns an empty value)
// if it is missing or not valid JSON.
Json LoadTrace(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "no trace file " << path;
  std::stringstream ss;
  ss << f.rdbuf();
  Json j;
  std::string err;
  EXPECT_TRUE(weft_test::parse_json(ss.str(), &j, &err)) << path << ": " << err;
  return j;
}

const std::vector<Json>& Events(const Json& trace) {
  static const std::vector<Json> none;
  const Json* ev = trace.get("traceEvents");
  return ev != nullptr && ev->type == Json::kArray ? ev->array : none;
}

std::string IdText(weft::UltId id) { return std::to_string(id.index()) + "." + std::to_string(id.generation()); }

// The ULT id an event is about ("3.1"), or "".
std::string UltOf(const Json& e) {
  const Json* a = e.get("args");
  return a != nullptr ? a->str("ult") : "";
}

TEST(Trace, KnownWorkloadIsRecorded) {
  std::string path = TempPath("known.json");
  weft::UltId sleeper_id, receiver_id;
  {
    weft::Runtime rt(weft::Options{.workers = 2, .trace_file = path});
    ASSERT_TRUE(rt.status().ok()) << rt.status();
    absl::Status st = rt.block_on([&] {
      auto sleeper = weft::spawn([] { weft::this_ult::sleep_for(std::chrono::milliseconds(5)); },
                                 weft::SpawnOptions{.name = "trace-sleeper"});
      weft::Channel<int> ch(0);
      std::atomic<bool> receiving{false};
      auto receiver = weft::spawn(
          [&] {
            receiving.store(true);
            absl::StatusOr<int> v = ch.recv();
            EXPECT_TRUE(v.ok() && *v == 7);
          },
          weft::SpawnOptions{.name = "trace-receiver"});
      sleeper_id = sleeper.id();
      receiver_id = receiver.id();
      while (!receiving.load()) weft::this_ult::yield();
      // Whether or not the receiver has parked yet, the send hands it 7;
      // the sleeper parks for certain (a timed sleep always parks).
      EXPECT_TRUE(ch.send(7).ok());
      EXPECT_TRUE(sleeper.join().ok());
      EXPECT_TRUE(receiver.join().ok());
    });
    ASSERT_TRUE(st.ok()) << st;
  }  // the file is written when the runtime stops
  Json trace = LoadTrace(path);
  const Json* other = trace.get("otherData");
  ASSERT_NE(other, nullptr);
  EXPECT_GT(other->num("events"), 0);
  EXPECT_EQ(other->num("events_overwritten"), 0);

  std::string sleeper = IdText(sleeper_id), receiver = IdText(receiver_id);
  int workers_named = 0, idle = 0;
  bool spawn_named = false, ran_named = false, parked_sleep = false, unparked = false, exited = false;
  bool receiver_ran = false;
  std::map<double, double> flow_start;  // id -> ts of "s"
  std::vector<std::pair<double, double>> flow_end;
  for (const Json& e : Events(trace)) {
    std::string ph = e.str("ph"), name = e.str("name"), cat = e.str("cat");
    ASSERT_FALSE(ph.empty()) << "an event without ph";
    if (ph == "M") {
      const Json* a = e.get("args");
      if (name == "thread_name" && a != nullptr && a->str("name").rfind("weft worker", 0) == 0) ++workers_named;
      continue;
    }
    EXPECT_GE(e.num("ts"), 0) << name;
    if (ph == "X") {
      EXPECT_GE(e.num("dur"), 0) << name;
      if (cat == "idle") ++idle;
      if (cat == "ult" && name == "trace-sleeper (" + sleeper + ")") ran_named = true;
      if (cat == "ult" && UltOf(e) == receiver) receiver_ran = true;
    } else if (ph == "i") {
      if (cat == "spawn" && UltOf(e) == sleeper && name == "spawn trace-sleeper (" + sleeper + ")") spawn_named = true;
      if (cat == "park" && UltOf(e) == sleeper && name == "park: sleep") parked_sleep = true;
      if (cat == "unpark" && UltOf(e) == sleeper) unparked = true;
      if (cat == "exit" && UltOf(e) == sleeper) exited = true;
    } else if (ph == "s") {
      flow_start[e.num("id")] = e.num("ts");
    } else if (ph == "f") {
      flow_end.emplace_back(e.num("id"), e.num("ts"));
    }
  }
  EXPECT_EQ(workers_named, 2);
  EXPECT_TRUE(spawn_named) << "no spawn event naming " << sleeper;
  EXPECT_TRUE(ran_named) << "no run slice of the sleeper";
  EXPECT_TRUE(receiver_ran);
  EXPECT_TRUE(parked_sleep) << "no 'park: sleep' of the sleeper";
  EXPECT_TRUE(unparked);
  EXPECT_TRUE(exited);
  EXPECT_GE(idle, 1) << "no idle slice: both workers slept while the sleeper slept";
  EXPECT_FALSE(flow_end.empty()) << "no wake arrow";
  for (auto [id, ts] : flow_end) {
    auto it = flow_start.find(id);
    ASSERT_NE(it, flow_start.end()) << "a wake arrow ends without a start";
    EXPECT_LE(it->second, ts);
  }
  unlink(path.c_str());
}

// A ring smaller than the run keeps the newest events: the exits at the
// end are there, and the overwritten ones are counted.
TEST(Trace, FullRingKeepsNewest) {
  std::string path = TempPath("full.json");
  weft::UltId a_id;
  {
    weft::Runtime rt(weft::Options{.workers = 1, .max_workers = 1, .trace_file = path, .trace_events = 1024});
    ASSERT_TRUE(rt.status().ok()) << rt.status();
    absl::Status st = rt.block_on([&] {
      auto yielder = [] {
        for (int i = 0; i < 3000; ++i) weft::this_ult::yield();
      };
      auto a = weft::spawn(yielder, weft::SpawnOptions{.name = "yielder-a"});
      auto b = weft::spawn(yielder, weft::SpawnOptions{.name = "yielder-b"});
      a_id = a.id();
      EXPECT_TRUE(a.join().ok());
      EXPECT_TRUE(b.join().ok());
    });
    ASSERT_TRUE(st.ok()) << st;
  }
  Json trace = LoadTrace(path);
  const Json* other = trace.get("otherData");
  ASSERT_NE(other, nullptr);
  EXPECT_GT(other->num("events_overwritten"), 0);
  EXPECT_LE(other->num("events"), 2 * 1024);  // the worker's ring and the shared one
  bool a_exit = false;
  for (const Json& e : Events(trace))
    if (e.str("cat") == "exit" && UltOf(e) == IdText(a_id)) a_exit = true;
  EXPECT_TRUE(a_exit) << "the newest events (the exit) are not kept";
  unlink(path.c_str());
}

TEST(Trace, BadOptionsFailTheStart) {
  weft::Runtime bad_path(weft::Options{.workers = 1, .trace_file = "/nonexistent-dir/weft/trace.json"});
  EXPECT_EQ(bad_path.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_path.status().message().find("/nonexistent-dir/weft/trace.json"), std::string::npos)
      << bad_path.status();
  weft::Runtime few(weft::Options{.workers = 1, .trace_file = TempPath("few.json"), .trace_events = 5});
  EXPECT_EQ(few.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(few.status().message().find("trace_events"), std::string::npos) << few.status();
  unlink(TempPath("few.json").c_str());
}

// The file cannot be written when the runtime stops: shutdown() says so
// (and so does stderr), nothing is silently lost.
TEST(Trace, WriteErrorIsReturnedByShutdown) {
  std::string dir = TempPath("gone");
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  std::string path = dir + "/trace.json";
  weft::Runtime rt(weft::Options{.workers = 1, .trace_file = path});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  ASSERT_TRUE(rt.block_on([] { weft::this_ult::yield(); }).ok());
  ASSERT_EQ(unlink(path.c_str()), 0);
  ASSERT_EQ(rmdir(dir.c_str()), 0);
  absl::Status st = rt.shutdown();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(path), std::string::npos) << st;
}

// WEFT_TRACE names the file of the first runtime that sets no trace_file;
// the next one's gets "-2" before ".json" (counted while the variable
// keeps its value: a fresh name for every repetition of the test).
TEST(Trace, EnvironmentNamesOneFilePerRuntime) {
  static int round = 0;
  std::string stem = TempPath("env" + std::to_string(++round));
  std::string path = stem + ".json";
  std::string second = stem + "-2.json";
  ASSERT_EQ(setenv("WEFT_TRACE", path.c_str(), 1), 0);
  for (int i = 0; i < 2; ++i) {
    weft::Runtime rt(weft::Options{.workers = 1});
    ASSERT_TRUE(rt.status().ok()) << rt.status();
    ASSERT_TRUE(rt.block_on([] { weft::this_ult::yield(); }).ok());
  }
  unsetenv("WEFT_TRACE");
  for (const std::string& p : {path, second}) {
    Json trace = LoadTrace(p);
    EXPECT_GT(trace.get("otherData") != nullptr ? trace.get("otherData")->num("events") : 0, 0) << p;
    unlink(p.c_str());
  }
}

}  // namespace
