// A program linked with libweft-hook (examples/consumers/): its interposers
// are in place (weft::hook::active()), so a plain usleep() in a ULT parks
// the ULT instead of blocking its worker. Four ULTs on one worker sleep
// 20 ms each through usleep(); prints whether the hook is active and what
// the sleeps returned. Exit status 0 when the hook is active and every
// sleep returned 0.
#include <unistd.h>
#include <weft/hook.h>
#include <weft/weft.h>

#include <cstdio>
#include <vector>

int main() {
  weft::Runtime rt(weft::Options{.workers = 1});
  if (!rt.status().ok()) {
    std::fprintf(stderr, "hook_app: %s\n", rt.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<int> failed = rt.block_on([] {
    std::vector<weft::JoinHandle<int>> ults;
    for (int i = 0; i < 4; ++i) ults.push_back(weft::spawn([] { return usleep(20 * 1000); }));
    int bad = 0;
    for (auto& u : ults) {
      absl::StatusOr<int> r = u.join();
      if (!r.ok() || *r != 0) ++bad;
    }
    return bad;
  });
  if (!failed.ok()) {
    std::fprintf(stderr, "hook_app: %s\n", failed.status().ToString().c_str());
    return 1;
  }
  bool active = weft::hook::active();
  std::printf("weft-hook active: %s, 4 ULTs slept in usleep(): %d failed\n", active ? "yes" : "no", *failed);
  return active && *failed == 0 ? 0 : 1;
}
