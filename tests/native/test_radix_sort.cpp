// radix_sort (in-place MSD) against std::sort: sizes around the std::sort cut-off, narrow and
// wide key spans, duplicates, keys near 2^64.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "util/radix_sort.h"

namespace {

void check(std::vector<uint64_t> v) {
  auto want = v;
  std::sort(want.begin(), want.end());
  heapwalk::radix_sort(v);
  EXPECT_EQ(v, want);
}

TEST(RadixSort, EqualsStdSort) {
  std::mt19937_64 rng(7);
  for (size_t n : {0, 1, 2, 4095, 4096, 4097, 100000}) {
    for (uint64_t span : {uint64_t{0}, uint64_t{15}, uint64_t{1} << 30, uint64_t{1} << 47, ~uint64_t{0}}) {
      std::vector<uint64_t> v(n);
      uint64_t base = span == ~uint64_t{0} ? 0 : 0x7f0000000000;
      for (auto& x : v) x = base + (span ? rng() % (span == ~uint64_t{0} ? span : span + 1) : 0);
      check(v);
    }
  }
}

TEST(RadixSort, HeapAddressesWithStateBits) {
  // The free index: 16-aligned chunk addresses with a state in the low bits, some twice.
  std::mt19937_64 rng(11);
  std::vector<uint64_t> v;
  for (int i = 0; i < 50000; ++i) {
    uint64_t a = 0x555555559000 + (rng() % (1u << 26)) * 16;
    v.push_back(a | (rng() % 6));
    if (i % 97 == 0) v.push_back(a | 2);
  }
  v.push_back(~uint64_t{0});
  check(v);
}

TEST(RadixSort, ManyEqualKeysAndDeepSpans) {
  // Buckets that never shrink (all keys equal, or few distinct ones) and keys that differ only in
  // low bits under a wide span: every level of the recursion, down to std::sort.
  std::mt19937_64 rng(17);
  check(std::vector<uint64_t>(200000, 0x7f0000001230));
  std::vector<uint64_t> v;
  for (int i = 0; i < 300000; ++i) v.push_back(0x7f0000000000 + 16 * (rng() % 3));
  check(v);
  v.clear();
  for (int i = 0; i < 300000; ++i) v.push_back((rng() % 2 ? 0 : uint64_t{1} << 62) + (rng() % 100000));
  check(v);
}

}  // namespace
