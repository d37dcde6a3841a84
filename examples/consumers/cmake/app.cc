// A program that uses an installed weft (examples/consumers/): it spawns
// ten ULTs on a two-worker runtime, each squares its index, and the main
// ULT joins them and prints the sum. Exit status 0 when the sum is right.
#include <weft/weft.h>

#include <cstdio>
#include <vector>

int main() {
  weft::Runtime rt(weft::Options{.workers = 2});
  if (!rt.status().ok()) {
    std::fprintf(stderr, "app: %s\n", rt.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<int> sum = rt.block_on([] {
    std::vector<weft::JoinHandle<int>> ults;
    for (int i = 0; i < 10; ++i) ults.push_back(weft::spawn([i] { return i * i; }));
    int total = 0;
    for (auto& u : ults) {
      absl::StatusOr<int> r = u.join();
      if (!r.ok()) return -1;
      total += *r;
    }
    return total;
  });
  if (!sum.ok()) {
    std::fprintf(stderr, "app: %s\n", sum.status().ToString().c_str());
    return 1;
  }
  std::printf("weft %s: 10 ULTs, sum of squares %d\n", weft::version(), *sum);
  return *sum == 285 ? 0 : 1;
}
