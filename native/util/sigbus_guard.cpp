#include "util/sigbus_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace heapwalk::util {

namespace {

constexpr size_t kSlots = 64;
constexpr uintptr_t kPage = 4096;

struct Slot {
  std::atomic<uintptr_t> start{0}, end{0};
  std::atomic<uint64_t> faults{0};
  char name[256] = {};
};

Slot g_slots[kSlots];
struct sigaction g_previous {};
std::once_flag g_installed;
std::mutex g_register;  // registration only; the handler reads the atomics

void on_sigbus(int sig, siginfo_t* info, void* ctx) {
  auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (auto& s : g_slots) {
    uintptr_t a = s.start.load(std::memory_order_acquire), b = s.end.load(std::memory_order_acquire);
    if (a && addr >= a && addr < b) {
      void* page = reinterpret_cast<void*>(addr & ~(kPage - 1));
      // A private page of zeros in place of the vanished file page (mmap is a plain system call:
      // safe in a signal handler). The faulting load is then retried and reads zeros.
      if (::mmap(page, kPage, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED) {
        s.faults.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      break;
    }
  }
  // Not ours: whatever handled SIGBUS before (gdb's, Python's faulthandler) or the default.
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) {
      g_previous.sa_sigaction(sig, info, ctx);
      return;
    }
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGBUS, &dfl, nullptr);  // the fault repeats on return and ends the process
}

void install() {
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, &g_previous);
}

}  // namespace

bool guard_mapping(const void* base, size_t len, const std::string& name) {
  if (!base || !len) return false;
  std::call_once(g_installed, install);
  std::lock_guard<std::mutex> lock(g_register);
  for (auto& s : g_slots) {
    if (s.start.load() == 0) {
      std::strncpy(s.name, name.c_str(), sizeof s.name - 1);
      s.faults.store(0);
      s.end.store(reinterpret_cast<uintptr_t>(base) + len, std::memory_order_release);
      s.start.store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);
      return true;
    }
  }
  return false;
}

void unguard_mapping(const void* base) {
  std::lock_guard<std::mutex> lock(g_register);
  for (auto& s : g_slots) {
    if (s.start.load() == reinterpret_cast<uintptr_t>(base)) {
      s.start.store(0, std::memory_order_release);
      s.end.store(0, std::memory_order_release);
      s.faults.store(0);
      s.name[0] = 0;
    }
  }
}

std::vector<ShrunkFile> shrunk_files() {
  std::lock_guard<std::mutex> lock(g_register);
  std::vector<ShrunkFile> out;
  for (auto& s : g_slots) {
    uint64_t n = s.faults.load();
    if (s.start.load() && n) out.push_back({s.name, n});
  }
  return out;
}

}  // namespace heapwalk::util
