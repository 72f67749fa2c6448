// A live process: /proc/PID/mem bulk reads, /proc/PID/maps, optional ptrace freeze.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/core_file.h"
#include "memory/memory.h"

namespace heapwalk::memory {

class LiveProcess : public MemorySource {
 public:
  /// Opens /proc/PID/mem and maps. When `freeze` is true every thread is ptrace-seized and
  /// interrupted (for a consistent view and to read fs_base); they are released on destruction.
  LiveProcess(int pid, bool freeze);
  ~LiveProcess() override;
  LiveProcess(const LiveProcess&) = delete;
  LiveProcess& operator=(const LiveProcess&) = delete;

  size_t read(uint64_t addr, void* out, size_t len) override;
  const std::vector<Region>& regions() const override { return regions_; }
  /// Threads with fs_base (only filled when frozen; otherwise lwp only).
  const std::vector<CoreThread>& threads() const { return threads_; }
  int pid() const { return pid_; }
  /// Ptrace-seizes and interrupts every thread (threads started meanwhile too) and reads their
  /// registers; throws FormatError when a thread cannot be traced.
  void freeze();
  bool frozen() const { return !seized_.empty(); }
  void release();

 private:
  void load_maps();
  int pid_;
  int fd_ = -1;
  std::vector<Region> regions_;
  std::vector<CoreThread> threads_;
  std::vector<int> seized_;
  int mm_pid_ = 0;            ///< memory_task(pid_)
  std::vector<int> skipped_;  ///< zombies and threads that exited during the freeze
};

/// The task whose /proc entries and process_vm_readv reach `pid`'s memory: `pid` itself, or a
/// live thread when the thread-group leader is a zombie (it has exited; its threads run on, and
/// only they still have the address space).
int memory_task(int pid);

/// One task's state letter from /proc/PID/task/TID/stat ('R', 'S', 'D', 'T', 'Z', ...), or 0.
char task_state(int pid, int tid);

}  // namespace heapwalk::memory
