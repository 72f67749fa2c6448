// The HotSpot model: Native Memory Tracking (NMT) read from a JVM's image (core or live), and
// the per-block NMT malloc headers found by the glibc chunk walk. Layouts and the arithmetic
// jcmd applies are documented, with citations, in docs/hotspot-nmt.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ptmalloc/heap.h"
#include "target/target.h"
#include "util/diagnostics.h"

namespace heapwalk::hotspot {

struct Counter {
  uint64_t count = 0, bytes = 0;
  void add(uint64_t b) {
    ++count;
    bytes += b;
  }
};

/// One NMT memory type (MEMFLAGS index) as the image holds it (before jcmd's adjustments).
struct RawCategory {
  std::string name;
  Counter malloc, arena;
  std::optional<Counter> malloc_peak, arena_peak;  ///< when the counters carry peaks
  uint64_t vm_reserved = 0, vm_committed = 0;
  std::optional<uint64_t> vm_peak;
};

/// One line of `jcmd VM.native_memory summary` (scale=1), computed as MemSummaryReporter does.
struct Row {
  unsigned index = 0;  ///< MEMFLAGS index
  std::string name;
  uint64_t reserved = 0, committed = 0;
  Counter malloc, arena;
  std::optional<Counter> malloc_peak, arena_peak;
  uint64_t mmap_reserved = 0, mmap_committed = 0;
  std::optional<uint64_t> mmap_peak, stack_peak;  ///< VirtualMemory::_peak_size (JDK 21)
  /// Thread: the stacks (Thread Stack category) folded in; NMT: the malloc headers.
  std::optional<uint64_t> stack_reserved, stack_committed, threads, tracking_overhead;
  /// Thread: the stacks' committed bytes computed now, as the next jcmd would record them
  /// (`StackResidency`); `committed_now` is `committed` with that figure in place of NMT's.
  std::optional<uint64_t> stack_committed_now, committed_now;
};

/// Thread stacks' committed bytes computed the way jcmd's report computes them, from the
/// image instead of NMT's stale record. NMT does not track stack growth: the committed parts
/// of a thread stack in the image are what the last report (jcmd VM.native_memory, or the
/// thread's creation: HotSpot commits its guard zones) recorded. Each report first runs
/// VirtualMemoryTracker::snapshot_thread_stacks(), which for every mtThreadStack region probes
/// [thread_stack_uncommitted_bottom(), top) page by page with mincore (os::committed_in_range,
/// src/hotspot/os/posix/os_posix.cpp; RegionIterator and SnapshotThreadStackWalker in
/// src/hotspot/share/services/virtualMemoryTracker.cpp, openjdk/jdk17u jdk-17.0.x and jdk21u
/// jdk-21.0.x) and adds each resident run as a committed region; the bottom is the top of the
/// committed parts that end below the region's top (the guard zones).
struct StackResidency {
  /// "pagemap" (live: present pages, as mincore counts them) or "core" (pages the core saved
  /// that are not all zero).
  std::string source;
  std::string method;  ///< one sentence: how a page was judged resident
  uint64_t regions = 0, reserved = 0;
  uint64_t nmt_committed = 0;  ///< Σ committed parts in the image (NMT's figure)
  uint64_t committed = 0;      ///< computed: guard parts + resident pages above them
  uint64_t guard = 0;          ///< committed parts below the probed range (guard zones)
};

/// A NativeCallStack of detail mode: up to 4 return addresses (the first null ends it) and
/// their symbols, as jcmd prints them.
struct CallStack {
  std::vector<uint64_t> frames;
  std::vector<std::string> symbols;  ///< "module!function+0xoff" (demangled), "module+0xoff" or "" per frame
};

/// A malloc call site of detail mode (MallocSiteTable entry).
struct MallocSite {
  CallStack stack;
  unsigned index = 0;  ///< MEMFLAGS index
  Counter counter;
};

/// A committed part of a reserved region (CommittedMemoryRegion) and the stack that committed it
/// (empty for the thread-stack parts NMT records itself when it reports).
struct CommittedRegion {
  uint64_t base = 0, size = 0;
  CallStack stack;
};

/// A reserved virtual memory region of detail mode (ReservedMemoryRegion): the stack that
/// reserved it and its committed parts, in address order.
struct VmRegion {
  uint64_t base = 0, size = 0, committed = 0;
  unsigned index = 0;
  CallStack stack;
  std::vector<CommittedRegion> committed_regions;
};

/// glibc figures for the reconciliation (from the ptmalloc model).
struct GlibcFigures {
  uint64_t arenas = 0, system = 0, in_use = 0, in_use_count = 0, free = 0, top = 0;
  uint64_t mmapped = 0, mmapped_count = 0;
  /// Non-main heaps are HEAP_MAX-sized mappings of which heap_info.size is in use: the rest.
  uint64_t heap_reserve_tail = 0;
};

struct Nmt {
  std::string level = "unknown";  ///< off | summary | detail | unknown (no JVM found)
  std::string source = "none";    ///< symtab | dwarf | headers | none
  std::string layout;             ///< how the layout was chosen (symbol sizes, symbols present)
  std::string jdk;                ///< Abstract_VM_Version::_s_vm_release
  std::string libjvm, build_id, symbols_file;
  uint64_t libjvm_base = 0;
  bool found_jvm = false, tables = false;

  /// Category names per MEMFLAGS index: the image's table, else a built-in one (17u or 21u,
  /// chosen from libjvm's path; see `names_from`).
  std::vector<std::string> names;
  std::string names_from;
  std::vector<RawCategory> raw;  ///< per MEMFLAGS index (tables read)
  Counter all_mallocs;           ///< raw MallocMemorySnapshot::_all_mallocs (or header counter)

  // jcmd's summary
  std::vector<Row> rows;  ///< the categories jcmd prints (reserved > 0 at scale 1), in order
  uint64_t total_reserved = 0, total_committed = 0;
  Counter total_malloc;
  uint64_t total_mmap_reserved = 0, total_mmap_committed = 0;

  // reconstruction from malloc headers
  bool headers_walked = false;
  std::string header_layout;                                   ///< "canary 0xE99E" | ""
  std::vector<Counter> headers;                                ///< per MEMFLAGS index: Σ user sizes from headers
  Counter header_chunks;                                       ///< glibc chunks carrying a header (chunk bytes)
  Counter untracked;                                           ///< in-use chunks without an NMT header (chunk bytes)
  std::vector<std::pair<uint64_t, uint64_t>> untracked_sizes;  ///< chunk size -> count
  GlibcFigures glibc;
  bool glibc_ok = false;

  // detail (regions: also in summary mode, where their stacks are empty)
  std::vector<MallocSite> sites;
  std::vector<VmRegion> regions;

  /// Thread stacks' residency computed now (reserved regions read, level summary or detail).
  std::optional<StackResidency> stacks;
  uint64_t total_committed_now = 0;  ///< total_committed with the computed stack figure

  // address space
  uint64_t mapped = 0, mapped_files = 0, mapped_anon = 0;
  /// NMT reserved bytes lying in file / anonymous mappings: from the region list when read
  /// (`nmt_by_region`), else only the CDS archive's file mappings (*.jsa) are known.
  uint64_t nmt_in_files = 0, nmt_in_anon = 0;
  bool nmt_by_region = false;

  Diagnostics diags;
};

/// Reads bytes from the image; when the image lacks them (a core does not save read-only file
/// mappings), from the file the region maps (under the sysroot, unless files are not used).
bool read_image_or_file(target::Target& t, uint64_t addr, void* out, size_t len);

/// Reads NMT from the target. `heap` (may be null: glibc not understood) provides the chunk
/// walk for the header reconstruction and the glibc figures. Never throws for a target without
/// a JVM: `found_jvm` is false and a note says so.
Nmt read_nmt(target::Target& t, ptmalloc::Heap* heap, bool detail);

/// The category names of JDK 17u (MEMFLAGS order), for images whose name table is unreadable.
const std::vector<std::string>& default_names_17();

/// The category names of JDK 11u (21 types; "Synchronizer", no Metaspace type).
const std::vector<std::string>& default_names_11();

/// The category names of JDK 21u (28 types: mtGCCardSet after mtGC, mtNone "Unknown" last).
const std::vector<std::string>& default_names_21();

/// The JDK feature release a libjvm path names ("java-21-openjdk-amd64", "jdk-21.0.2",
/// "jdk17u"), or 0 when it names none.
unsigned jdk_feature_from_path(const std::string& path);

/// Demangles an Itanium C++ name; returns it unchanged when it cannot (util/demangle.h).
std::string demangle(const std::string& name);

}  // namespace heapwalk::hotspot
