// Running independent parts (one per arena, usually) on several threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace heapwalk {

/// Threads worth using for `n` parts: at most 8 and the machine's cores; 1 when `parallel` is
/// false (a gdb callback target serialises on the interpreter).
inline unsigned worker_count(size_t n, bool parallel) {
  if (!parallel) return 1;
  return static_cast<unsigned>(std::min<size_t>({n, 8, std::max(1u, std::thread::hardware_concurrency())}));
}

/// fn(k) for every k in [0, n) on `workers` threads (the caller's included). Every part runs even
/// when one throws; then the exception of the lowest k is rethrown, so errors are deterministic.
template <class F>
void parallel_for(unsigned workers, size_t n, F&& fn) {
  if (workers <= 1 || n <= 1) {
    std::exception_ptr first;
    for (size_t k = 0; k < n; ++k) {
      try {
        fn(k);
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
    return;
  }
  std::vector<std::exception_ptr> errors(n);
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t k; (k = next.fetch_add(1)) < n;) {
      try {
        fn(k);
      } catch (...) {
        errors[k] = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < workers && i < n; ++i) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
  for (auto& err : errors)
    if (err) std::rethrow_exception(err);
}

}  // namespace heapwalk
