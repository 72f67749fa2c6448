// The process model: memory, threads (with TLS base), modules and their symbols.
#pragma once

#include <elf.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "memory/capture.h"
#include "memory/memory.h"
#include "target/elf_file.h"
#include "target/safe_open.h"
#include "util/diagnostics.h"

namespace heapwalk::target {

struct Thread {
  int lwp = 0;
  uint64_t fs_base = 0;  ///< x86-64 thread pointer (TLS base)
  uint64_t rsp = 0;
  /// The 27 general registers (user_regs_struct order) when the core or ptrace gave them.
  std::array<uint64_t, 27> regs{};
  bool has_regs = false;
  /// Values of libc's `tcache` / `thread_arena` TLS variables when a caller (gdb) supplied them.
  std::optional<uint64_t> tcache, arena;
};

struct Module {
  std::string path;      ///< as the target named it
  uint64_t base = 0;     ///< address where file offset 0 is mapped
  uint64_t end = 0;      ///< end of its last mapping
  std::string build_id;  ///< from the image when readable, else ""
};

/// User-supplied addresses that win over every other way of finding them.
struct Overrides {
  std::optional<uint64_t> main_arena, mp, tcache_key;
  bool no_files = false;  ///< use no file from disk: everything from the memory image
  /// Symbols given by the caller (fuzzing, tests) instead of a file's: name -> (address, size).
  /// The NMT reader takes libjvm's statics from here when it is not empty.
  std::map<std::string, std::pair<uint64_t, uint64_t>> symbols;
};

/// The program headers of the ELF image mapped at `base` in the target (empty when the image's
/// ELF header is not there or is implausible). Reads at most 64 headers.
std::vector<Elf64_Phdr> image_program_headers(memory::MemorySource& mem, uint64_t base);

class Target {
 public:
  enum class Kind { Core, Live, Callback, Buffer };

  static std::unique_ptr<Target> open_core(const std::string& path, const std::string& sysroot);
  /// `threads` empty: ptrace-freeze and read registers; else trust the caller's (gdb's) threads.
  static std::unique_ptr<Target> attach(int pid, std::vector<Thread> threads, const std::string& sysroot = "");
  /// A live process read in place, not stopped: for a look before a capture (modules, libjvm's
  /// tables). Threads are unknown.
  static std::unique_ptr<Target> open_live(int pid, const std::string& sysroot = "");
  /// A live process captured (memory/capture.h): stopped only while its memory is copied, then
  /// analysed from the copy. `threads` non-empty: the caller (gdb) has stopped it and these are
  /// its threads.
  static std::unique_ptr<Target> capture(int pid, std::vector<Thread> threads, const std::string& sysroot,
                                         memory::CaptureOptions opt);
  static std::unique_ptr<Target> from_callback(memory::CallbackSource::ReadFn fn, std::vector<Thread> threads);
  /// For unit tests: any source, explicit modules and threads.
  static std::unique_ptr<Target> from_source(std::unique_ptr<memory::MemorySource> src, std::vector<Module> modules,
                                             std::vector<Thread> threads);

  memory::MemorySource& memory() { return *mem_; }
  Kind kind() const { return kind_; }
  /// Whether several threads may read memory at once (cores and live processes; a gdb callback
  /// serialises on the interpreter).
  bool parallel_reads() const { return kind_ == Kind::Core || kind_ == Kind::Live; }
  const std::string& path() const { return path_; }
  int pid() const { return pid_; }
  const std::vector<Thread>& threads() const { return threads_; }
  const std::vector<Module>& modules() const { return modules_; }
  const std::string& sysroot() const { return sysroot_; }
  Diagnostics& diagnostics() { return diags_; }
  Overrides& overrides() { return overrides_; }

  /// The module whose file name starts with `prefix` (e.g. "libc.so"), or nullptr.
  const Module* find_module(const std::function<bool(const std::string& base)>& match) const;
  /// The module's file on disk (resolved inside the sysroot), used only when its build-id equals
  /// the one the image shows (an image without a build-id note gives no way to check, so no file).
  /// `quiet`: record no diagnostic when it is missing or refused (callers that only name
  /// things, e.g. vtables, and report a summary themselves).
  std::unique_ptr<ElfFile> module_file(const Module& m, bool quiet = false);
  /// The separate debug file for a build-id under <sysroot>/usr/lib/debug/.build-id, then the host's;
  /// one whose own build-id note is missing or different is refused with a note.
  std::unique_ptr<ElfFile> debug_file(const std::string& build_id);
  /// Fills memory the image lacks (a core does not save read-only file mappings) from the file the
  /// region maps, only when that file is the module's (build-id checked as module_file); else a
  /// note, once per module, and nothing. Returns how many bytes were copied. Thread-safe.
  size_t read_file_backed(uint64_t addr, void* out, size_t len);
  /// The sysroot, held open (host root when none was given).
  const Root& root() const { return *root_; }
  /// The first truncation finding ("" when the core is complete).
  std::string truncation() const {
    for (const auto& d : diags_.items())
      if (d.kind == "truncated") return d.detail;
    return "";
  }
  /// The capture's figures when this target is a captured live process, else nullptr.
  const memory::CaptureStats* capture_stats() const;
  /// Releases OS resources (ptrace) early.
  void close();

 private:
  void modules_from_regions();
  void set_sysroot(const std::string& sysroot);
  std::unique_ptr<memory::MemorySource> mem_;
  std::shared_ptr<Root> root_ = std::make_shared<Root>("");
  std::mutex files_mu_;
  std::map<std::string, std::shared_ptr<ElfFile>> verified_;  // module path -> file (null: refused)
  Kind kind_ = Kind::Buffer;
  std::string path_, sysroot_;
  int pid_ = 0;
  std::vector<Thread> threads_;
  std::vector<Module> modules_;
  Overrides overrides_;
  Diagnostics diags_;
};

}  // namespace heapwalk::target
