// Progress and cancellation of long engine work, shared by every walk of the process.
//
// The front end (CLI, gdb) polls `done`/`total` from another thread to draw a progress line and
// sets `cancel` on Ctrl-C; hot loops call check() every few thousand steps, which throws
// Cancelled so the work unwinds cleanly (RAII releases mmaps and ptrace).
#pragma once

#include <atomic>
#include <cstdint>

#include "util/errors.h"

namespace heapwalk {

struct Cancelled : Error {
  Cancelled() : Error("interrupted") {}
};

struct Progress {
  std::atomic<uint64_t> done{0}, total{0};
  std::atomic<bool> cancel{false};
  std::atomic<const char*> phase{""};

  static Progress& get() {
    static Progress p;
    return p;
  }
  /// Throws Cancelled when the front end asked to stop.
  static void check() {
    if (get().cancel.load(std::memory_order_relaxed)) throw Cancelled();
  }
  static void start(const char* what, uint64_t total_units) {
    Progress& p = get();
    p.phase = what;
    p.total = total_units;
    p.done = 0;
  }
  static void advance(uint64_t units) { get().done.fetch_add(units, std::memory_order_relaxed); }
};

}  // namespace heapwalk
