// NMT from the image. Every layout decision below is made from what the image shows (symbol
// sizes and which symbols exist), never from the version string alone; docs/hotspot-nmt.md
// cites the JDK sources each rule encodes.
#include "hotspot/nmt.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include "hotspot/symbolizer.h"
#include "memory/memory.h"
#include "util/demangle.h"

namespace heapwalk::hotspot {

namespace {

// Mangled names of the statics NMT keeps its state in (JDK 11u-21).
constexpr const char* kMallocSnapshot = "_ZN19MallocMemorySummary9_snapshotE";
constexpr const char* kVmSnapshot = "_ZN20VirtualMemorySummary9_snapshotE";
constexpr const char* kTrackingLevel = "_ZN10MemTracker15_tracking_levelE";
// NMTUtil::_memory_type_names: const char*[mt_number_of_types] (jdk17u, nmtCommon.cpp).
constexpr const char* kTypeNames = "_ZN7NMTUtil18_memory_type_namesE";
// NMTUtil::_strings: struct S {const char* enum_s; const char* human_readable;}[mt_number_of_types]
// (jdk21u, src/hotspot/share/services/nmtCommon.{hpp,cpp} at jdk-21.0.x-ga; 21.0.12 DWARF:
// `ptype/o NMTUtil::_strings` = 28 x 16 bytes). Replaced _memory_type_names.
constexpr const char* kTypeStrings = "_ZN7NMTUtil8_stringsE";
constexpr const char* kVmRelease = "_ZN19Abstract_VM_Version13_s_vm_releaseE";
constexpr const char* kReservedRegions = "_ZN20VirtualMemoryTracker17_reserved_regionsE";
constexpr const char* kSiteTable = "_ZN15MallocSiteTable6_tableE";
constexpr const char* kThreadCount = "_ZN18ThreadStackTracker13_thread_countE";
// MallocSiteTable's statics that hold a NativeCallStack and a MallocSiteHashtableEntry (jdk11u
// src/hotspot/share/services/mallocSiteTable.hpp: `size_t _hash_entry_allocation_stack[
// CALC_OBJ_SIZE_IN_TYPE(NativeCallStack, size_t)]`, `_hash_entry_allocation_site[... entry]`);
// 17u and 21u made them pointers (8 bytes). Their sizes give sizeof(NativeCallStack) (40 in 11u:
// `address _stack[4]; unsigned int _hash_value;`, 11.0.24 DWARF) and sizeof(the entry) (72).
constexpr const char* kHashEntryStack = "_ZN15MallocSiteTable28_hash_entry_allocation_stackE";
constexpr const char* kHashEntrySite = "_ZN15MallocSiteTable27_hash_entry_allocation_siteE";
// MallocHeader's methods in every JDK with the bit-field header (jdk11u mallocTracker.hpp:
// `size_t _size : 64; _flags : 8; _pos_idx : 16; _bucket_idx : 40;`): release() and
// record_malloc_site() (11.0.24 .symtab).
constexpr const char* kBitfieldHeader[] = {
    "_ZNK12MallocHeader7releaseEv", "_ZNK12MallocHeader18record_malloc_siteERK15NativeCallStackmPmS3_10MemoryType",
    "_ZNK12MallocHeader18record_malloc_siteERK15NativeCallStackmPmS3_8MEMFLAGS"};
// Present since NMT became late-initializable (JDK-8256844): with it, NMT_TrackingLevel is
// {unknown=0, off=1, summary=2, detail=3}; before it {off=0, minimal=1, summary=2, detail=3,
// unknown=0xFF}.
[[maybe_unused]] constexpr const char* kPreInit = "_ZN10NMTPreInit";
// Present when MallocHeader carries the 0xE99E canary and the footer (JDK-8275320 and its
// 17u backport); before, the 16-byte header is bit fields with no canary. JDK 21 folded
// check_block_integrity() into the template resolve_checked_impl() (services/mallocHeader.
// inline.hpp, jdk21u); print_block_on_error() exists in both 17.0.21 and 21.0.12.
constexpr const char* kCheckIntegrity[] = {"_ZNK12MallocHeader21check_block_integrityEv",
                                           "_ZN12MallocHeader20resolve_checked_implIPvPS_EET0_T_",
                                           "_ZNK12MallocHeader20print_block_on_errorEP12outputStreamPh"};

constexpr uint16_t kHeaderCanary = 0xE99E;
// NativeCallStack: `address _stack[NMT_TrackingStackDepth]`, depth 4, a null pc ends the stack
// (utilities/nativeCallStack.hpp, openjdk/jdk17u).
constexpr size_t kStackDepth = 4;
constexpr size_t kStackBytes = kStackDepth * 8;
constexpr uint8_t kFooter0 = 0xE8, kFooter1 = 0x8E;
constexpr uint64_t kHeaderSize = 16;
constexpr uint64_t kFooterSize = 2;
// The bit-field header's site index bounds (jdk11u mallocTracker.hpp, _LP64): MallocSiteTable
// has table_size = 128 * 4 - 1 = 511 buckets (mallocSiteTable.hpp) of at most
// MAX_BUCKET_LENGTH = 0xFFFF entries.
constexpr size_t kBuckets11 = 511;
constexpr size_t kMaxBucketLength = 0xFFFF;

/// glibc's chunk size for a request (request2size, SIZE_SZ 8, MALLOC_ALIGNMENT 16, MINSIZE 32).
constexpr uint64_t request2size(uint64_t req) { return req + 8 + 15 < 32 ? 32 : (req + 8 + 15) & ~uint64_t{15}; }

}  // namespace

/// Reads bytes from the image; when the image lacks them (a core does not save read-only file
/// mappings), from the module's file, only when its build-id matches the image's
/// (Target::read_file_backed): a core naming any other file gets nothing from it.
bool read_image_or_file(target::Target& t, uint64_t addr, void* out, size_t len) {
  size_t got = t.memory().read(addr, out, len);
  if (got == len) return true;
  return t.read_file_backed(addr + got, static_cast<uint8_t*>(out) + got, len - got) == len - got;
}

namespace {

bool read_any(target::Target& t, uint64_t addr, void* out, size_t len) { return read_image_or_file(t, addr, out, len); }

std::string read_cstring(target::Target& t, uint64_t addr, size_t max = 256) {
  std::string s;
  char buf[64];
  while (s.size() < max) {
    size_t n = t.memory().read(addr + s.size(), buf, sizeof buf);
    if (n == 0) {
      if (!read_any(t, addr + s.size(), buf, 1)) break;
      n = 1;
    }
    for (size_t i = 0; i < n; ++i) {
      if (buf[i] == 0) return s;
      s += buf[i];
    }
  }
  return s;
}

uint64_t u64_at(const std::vector<uint8_t>& b, size_t off) {
  uint64_t v = 0;
  if (off + 8 <= b.size()) std::memcpy(&v, b.data() + off, 8);
  return v;
}

/// The symbol file for libjvm: its own .symtab, else the debug file by build-id.
struct JvmSymbols {
  std::unique_ptr<target::ElfFile> file;
  uint64_t bias = 0;
  std::string from;
};

}  // namespace

const std::vector<std::string>& default_names_17() {
  // NMTUtil::_memory_type_names, from MEMORY_TYPES_DO in memory/allocation.hpp (jdk17u).
  static const std::vector<std::string> names = {"Java Heap",
                                                 "Class",
                                                 "Thread",
                                                 "Thread Stack",
                                                 "Code",
                                                 "GC",
                                                 "Compiler",
                                                 "JVMCI",
                                                 "Internal",
                                                 "Other",
                                                 "Symbol",
                                                 "Native Memory Tracking",
                                                 "Shared class space",
                                                 "Arena Chunk",
                                                 "Test",
                                                 "Tracing",
                                                 "Logging",
                                                 "Statistics",
                                                 "Arguments",
                                                 "Module",
                                                 "Safepoint",
                                                 "Synchronization",
                                                 "Serviceability",
                                                 "Metaspace",
                                                 "String Deduplication",
                                                 "Object Monitors",
                                                 "Unknown"};
  return names;
}

const std::vector<std::string>& default_names_11() {
  // NMTUtil::_memory_type_names of jdk11u (src/hotspot/share/services/nmtCommon.cpp at
  // jdk-11.0.24-ga; enum MemoryType in memory/allocation.hpp): 21 types, no JVMCI, Statistics,
  // Serviceability, Metaspace, String Deduplication or Object Monitors; "Synchronizer" (17u:
  // "Synchronization") before "Safepoint". Checked against the 11.0.24 image.
  static const std::vector<std::string> names = {"Java Heap",
                                                 "Class",
                                                 "Thread",
                                                 "Thread Stack",
                                                 "Code",
                                                 "GC",
                                                 "Compiler",
                                                 "Internal",
                                                 "Other",
                                                 "Symbol",
                                                 "Native Memory Tracking",
                                                 "Shared class space",
                                                 "Arena Chunk",
                                                 "Test",
                                                 "Tracing",
                                                 "Logging",
                                                 "Arguments",
                                                 "Module",
                                                 "Synchronizer",
                                                 "Safepoint",
                                                 "Unknown"};
  return names;
}

const std::vector<std::string>& default_names_21() {
  // NMTUtil::_strings[].human_readable, from MEMORY_TYPES_DO in memory/allocation.hpp (jdk21u,
  // jdk-21.0.x-ga); checked against the 21.0.12 image. mtGCCardSet ("GCCardSet", JDK-8017163,
  // JDK 18) follows mtGC, so every later index moves by one from 17u's.
  static const std::vector<std::string> names = {"Java Heap",
                                                 "Class",
                                                 "Thread",
                                                 "Thread Stack",
                                                 "Code",
                                                 "GC",
                                                 "GCCardSet",
                                                 "Compiler",
                                                 "JVMCI",
                                                 "Internal",
                                                 "Other",
                                                 "Symbol",
                                                 "Native Memory Tracking",
                                                 "Shared class space",
                                                 "Arena Chunk",
                                                 "Test",
                                                 "Tracing",
                                                 "Logging",
                                                 "Statistics",
                                                 "Arguments",
                                                 "Module",
                                                 "Safepoint",
                                                 "Synchronization",
                                                 "Serviceability",
                                                 "Metaspace",
                                                 "String Deduplication",
                                                 "Object Monitors",
                                                 "Unknown"};
  return names;
}

unsigned jdk_feature_from_path(const std::string& path) {
  // The directory names JDK packages use: java-21-openjdk-amd64 (Debian), jdk-21.0.2 (tarballs),
  // java-21-openjdk-21.0.2... (Fedora), jdk21u, zulu21..., temurin-21-jdk.
  static const char* const stems[] = {"java-", "jdk-", "jdk", "zulu", "temurin-", "openjdk-"};
  unsigned best = 0;
  for (const char* stem : stems) {
    size_t len = std::strlen(stem);
    for (size_t at = path.find(stem); at != std::string::npos; at = path.find(stem, at + 1)) {
      size_t i = at + len, j = i;
      unsigned v = 0;
      while (j < path.size() && j - i < 3 && path[j] >= '0' && path[j] <= '9') v = v * 10 + unsigned(path[j++] - '0');
      if (j == i || (j < path.size() && path[j] >= '0' && path[j] <= '9')) continue;
      if (v >= 6 && v <= 99 && !best) best = v;
    }
  }
  return best;
}

// jcmd prints libstdc++'s demangling; match it so sites compare as text.
std::string demangle(const std::string& name) { return heapwalk::demangle_gnu(name); }

namespace {

class NmtReader {
 public:
  NmtReader(target::Target& t, ptmalloc::Heap* heap, bool detail, Nmt& out)
      : t_(t), heap_(heap), detail_(detail), n_(out) {}

  void run() {
    find_jvm();
    if (n_.found_jvm && have_symbols()) read_tables();
    if (heap_) {
      glibc_figures();
      walk_headers();
    } else {
      n_.diags.note("glibc malloc state not available: no header reconstruction, no untracked-malloc figure");
    }
    if (!n_.tables && n_.found_jvm && n_.headers_walked) {
      n_.source = "headers";
      if (n_.level == "unknown") n_.level = any_headers() ? "summary" : "off";
      rows_from_headers();
    }
    if (n_.found_jvm && !n_.tables && n_.header_layout.empty() && n_.level == "unknown") n_.level = "off";
    address_space();
  }

 private:
  bool any_headers() const {
    for (const auto& c : n_.headers)
      if (c.count) return true;
    return false;
  }

  /// The built-in name table for this JVM when the image's is unreadable: 21u's (28 types) when
  /// libjvm's path names JDK 18 or later (mtGCCardSet exists from 18 on), 11u's (21 types) when
  /// it names JDK 11 or earlier, else 17u's.
  const std::vector<std::string>& builtin_names() {
    unsigned f = jdk_feature_from_path(n_.libjvm);
    const char* which = f >= 18 ? "21u" : (f && f <= 11) ? "11u" : "17u";
    n_.names_from = std::string("the built-in JDK ") + which + " table (" +
                    (f ? "libjvm's path names JDK " + std::to_string(f) : "libjvm's path names no JDK release") + ")";
    return f >= 18 ? default_names_21() : (f && f <= 11) ? default_names_11() : default_names_17();
  }

  /// libjvm's symbols: from its .symtab or debug file, or given by the caller (fuzzing, tests).
  bool have_symbols() const { return syms_.file || !t_.overrides().symbols.empty(); }

  std::optional<uint64_t> sym(const char* name, uint64_t* size = nullptr) {
    const auto& given = t_.overrides().symbols;
    if (!given.empty()) {
      auto it = given.find(name);
      if (it == given.end()) return std::nullopt;
      if (size) *size = it->second.second;
      return it->second.first;
    }
    if (!syms_.file) return std::nullopt;
    auto s = syms_.file->symbol(name);
    if (!s) return std::nullopt;
    if (size) *size = s->size;
    return syms_.bias + s->value;
  }

  bool has_prefix_symbol(const char* prefix) {
    // ElfFile has no prefix query; the pre-init class has a handful of known statics.
    static const char* candidates[] = {"_ZN10NMTPreInit6_tableE", "_ZN10NMTPreInit12_num_mallocsE",
                                       "_ZN10NMTPreInit11create_tableEv",
                                       "_ZN10NMTPreInit10print_stateEP12outputStream"};
    (void)prefix;
    for (const char* c : candidates)
      if (sym(c)) return true;
    return false;
  }

  void find_jvm() {
    const target::Module* m = t_.find_module([](const std::string& base) { return base == "libjvm.so"; });
    if (!m) {
      n_.diags.note("no libjvm.so in the target: not a HotSpot JVM");
      return;
    }
    n_.found_jvm = true;
    n_.libjvm = m->path;
    n_.libjvm_base = m->base;
    n_.build_id = m->build_id;
    auto f = t_.module_file(*m);
    if (f && f->has_symtab()) {
      syms_.bias = m->base - f->first_load_vaddr();
      syms_.from = f->path();
      syms_.file = std::move(f);
    } else {
      std::string bid = !m->build_id.empty() ? m->build_id : (f ? f->build_id() : "");
      auto d = t_.debug_file(bid);
      if (d && d->has_symtab()) {
        syms_.bias = m->base - (f ? f->first_load_vaddr() : d->first_load_vaddr());
        syms_.from = d->path();
        syms_.file = std::move(d);
      }
    }
    if (!t_.overrides().symbols.empty()) {
      n_.symbols_file = "(given by the caller)";
    } else if (syms_.file) {
      n_.symbols_file = syms_.from;
    } else {
      n_.diags.note(m->path + ": no .symtab and no debug file" + (t_.overrides().no_files ? " (files not used)" : "") +
                    "; NMT tables unreadable, reconstructing from malloc headers");
    }
    // The JDK version: a pointer to a string built at startup (heap), readable in the image.
    if (auto a = sym(kVmRelease)) {
      uint64_t p = 0;
      if (read_any(t_, *a, &p, 8) && p) n_.jdk = read_cstring(t_, p, 128);
    }
  }

  void read_tables() {
    uint64_t names_size = 0, ms_size = 0, vs_size = 0;
    // The name table: const char*[N] (17u) or {enum_s, human_readable}[N] (21u).
    size_t name_stride = 8, name_off = 0;
    // 0: no table (a plain address: GCC 12's -Wmaybe-uninitialized misreads an optional here).
    uint64_t names_at = sym(kTypeNames, &names_size).value_or(0);
    if (!names_at) {
      names_at = sym(kTypeStrings, &names_size).value_or(0);
      if (names_at) name_stride = 16, name_off = 8;
    }
    auto ms = sym(kMallocSnapshot, &ms_size);
    auto vs = sym(kVmSnapshot, &vs_size);
    auto lvl = sym(kTrackingLevel);
    if (!ms || !vs || !lvl) {
      n_.diags.add("symbols", n_.libjvm_base, std::nullopt,
                   "libjvm symbols lack MallocMemorySummary::_snapshot / VirtualMemorySummary::_snapshot / "
                   "MemTracker::_tracking_level; reconstructing from malloc headers");
      return;
    }
    // Tracking level.
    uint32_t level = 0;
    if (!read_any(t_, *lvl, &level, 4)) {
      n_.diags.add("unreadable", *lvl, std::nullopt, "MemTracker::_tracking_level unreadable");
      return;
    }
    bool preinit = has_prefix_symbol("_ZN10NMTPreInit");
    const char* lv = "unknown";
    if (preinit) {
      static const char* l[] = {"unknown", "off", "summary", "detail"};
      if (level < 4) lv = l[level];
    } else {
      static const char* l[] = {"off", "minimal", "summary", "detail"};
      if (level < 4) lv = l[level];
    }
    n_.level = lv;
    std::string level_note =
        std::string("tracking level enum ") +
        (preinit ? "{unknown,off,summary,detail} (NMTPreInit present)" : "{off,minimal,summary,detail,unknown=0xFF}");

    // Number of types and their names.
    // The table's symbol size gives the number of types; bounded (the symbol table is input too).
    constexpr size_t kMaxTypes = 256;
    size_t ntypes = names_at && names_size ? names_size / name_stride : builtin_names().size();
    if (ntypes == 0 || ntypes > kMaxTypes) {
      n_.diags.add("symbols", names_at ? names_at : n_.libjvm_base, std::nullopt,
                   "implausible NMT name table (" + std::to_string(names_size) + " bytes); using a built-in table");
      names_at = 0;
      ntypes = builtin_names().size();
    }
    std::vector<std::string> names(ntypes);
    bool names_from_image = false;
    if (names_at) {
      std::vector<uint8_t> tab(ntypes * name_stride);
      if (read_any(t_, names_at, tab.data(), tab.size())) {
        names_from_image = true;
        for (size_t i = 0; i < ntypes; ++i) names[i] = read_cstring(t_, u64_at(tab, i * name_stride + name_off), 64);
      }
    }
    if (!names_from_image) {
      const auto& d = builtin_names();
      for (size_t i = 0; i < ntypes; ++i) names[i] = i < d.size() ? d[i] : "type " + std::to_string(i);
      n_.diags.note("NMT category names not readable from the image; using " + n_.names_from);
    } else {
      n_.names_from = name_stride == 16 ? "NMTUtil::_strings" : "NMTUtil::_memory_type_names";
    }
    n_.names = names;
    // Counter layout from MallocMemorySnapshot's size: N MallocMemory {malloc, arena} + one
    // trailing counter. 16-byte counters {count, size} (no peaks) or 32-byte {count, size,
    // peak_count, peak_size} (peaks in release builds, with _all_mallocs at the end).
    size_t csize = 0;
    if (ms_size == ntypes * 64 + 32)
      csize = 32;
    else if (ms_size == ntypes * 32 + 16)
      csize = 16;
    size_t vsize = 0;
    if (vs_size == ntypes * 16)
      vsize = 16;
    else if (vs_size == ntypes * 24)
      vsize = 24;
    if (!csize || !vsize) {
      n_.diags.add("symbols", *ms, std::nullopt,
                   "unknown NMT layout (MallocMemorySummary::_snapshot " + std::to_string(ms_size) +
                       " bytes, VirtualMemorySummary::_snapshot " + std::to_string(vs_size) + " bytes for " +
                       std::to_string(ntypes) + " types); reconstructing from malloc headers");
      return;
    }
    counter_size_ = csize;
    call_stack_layout();
    // JDK 21's MemSummaryReporter (the one whose VirtualMemory carries _peak_size) prints a
    // category when the largest of reserved and the malloc, arena and mmap peaks is > 0.
    print_peaks_ = vsize == 24;
    std::vector<uint8_t> mb(ms_size), vb(vs_size);
    if (!read_any(t_, *ms, mb.data(), mb.size()) || !read_any(t_, *vs, vb.data(), vb.size())) {
      n_.diags.add("unreadable", *ms, std::nullopt, "NMT snapshots unreadable in the image");
      return;
    }
    n_.raw.resize(ntypes);
    for (size_t i = 0; i < ntypes; ++i) {
      auto& c = n_.raw[i];
      c.name = names[i];
      size_t b = i * 2 * csize;
      c.malloc = {u64_at(mb, b), u64_at(mb, b + 8)};
      c.arena = {u64_at(mb, b + csize), u64_at(mb, b + csize + 8)};
      if (csize == 32) {
        c.malloc_peak = Counter{u64_at(mb, b + 16), u64_at(mb, b + 24)};
        c.arena_peak = Counter{u64_at(mb, b + csize + 16), u64_at(mb, b + csize + 24)};
      }
      c.vm_reserved = u64_at(vb, i * vsize);
      c.vm_committed = u64_at(vb, i * vsize + 8);
      if (vsize == 24) c.vm_peak = u64_at(vb, i * vsize + 16);
    }
    size_t tail = ntypes * 2 * csize;
    n_.all_mallocs = {u64_at(mb, tail), u64_at(mb, tail + 8)};
    n_.tables = true;
    n_.source = "symtab";
    n_.layout = std::to_string(ntypes) + " types; " + std::to_string(csize) + "-byte counters (" +
                (csize == 32 ? "with peaks; trailing _all_mallocs" : "no peaks; trailing _tracking_header") + "); " +
                std::to_string(vsize) + "-byte VirtualMemory; " + std::to_string(stack_size_) +
                "-byte NativeCallStack" + (stack_size_ == 40 ? " (with _hash_value)" : "") + "; " + level_note +
                "; names from " + n_.names_from + "; symbols from " + syms_.from;
    for (size_t i = 0; i < ntypes; ++i) index_[names[i]] = static_cast<unsigned>(i);
    if (n_.level == "off" || n_.level == "unknown" || n_.level == "minimal") return;
    summarize();
    if (detail_ && n_.level == "detail") read_sites();
    // The reserved regions exist from level summary on (VirtualMemoryTracker::initialize /
    // late_initialize allocate _reserved_regions when level >= NMT_summary, jdk11u-21u); in
    // summary mode their call stacks are empty.
    read_regions();
    stack_residency();
  }

  /// sizeof(NativeCallStack) and the malloc site entry's layout, from the sizes of MallocSiteTable's
  /// static buffers (kHashEntryStack / kHashEntrySite): arrays holding the objects in 11u,
  /// pointers (8 bytes) or absent later, where the 32-byte stack of 17.0.21 / 21.0.12 applies.
  void call_stack_layout() {
    uint64_t stack_sym = 0, site_sym = 0;
    bool have_stack = sym(kHashEntryStack, &stack_sym).has_value();
    bool have_site = sym(kHashEntrySite, &site_sym).has_value();
    if (have_stack && stack_sym == kStackBytes + 8) {
      // 11u: AllocationSite<MemoryCounter> = {NativeCallStack _call_stack (40), MemoryCounter e,
      // MEMFLAGS _flag (4 + pad)}; MallocSiteHashtableEntry = {MallocSite, _next}. 11.0.24 DWARF:
      // e at 40, _flag at 56, _next at 64, 72 bytes.
      stack_size_ = stack_sym;
      site_.counter = stack_size_;
      site_.flag = stack_size_ + counter_size_;
      site_.next = site_.flag + 8;
      site_.size = site_.next + 8;
      if (!have_site || site_sym != site_.size) {
        n_.diags.add("layout", *sym(kHashEntryStack), std::nullopt,
                     "40-byte NativeCallStack but MallocSiteTable::_hash_entry_allocation_site is " +
                         std::to_string(site_sym) + " bytes, not " + std::to_string(site_.size) +
                         "; malloc sites not read");
        site_.size = 0;
      }
    } else if (have_stack && stack_sym != 8) {
      n_.diags.add("layout", *sym(kHashEntryStack), std::nullopt,
                   "MallocSiteTable::_hash_entry_allocation_stack is " + std::to_string(stack_sym) +
                       " bytes (not a pointer, not a 40-byte NativeCallStack); sites and regions not read");
      stack_size_ = 0;
      site_.size = 0;
    } else {
      // 17u/21u: MallocSite = {NativeCallStack (32), MEMFLAGS _flag (4 or 1, + pad), MemoryCounter
      // _c}, uint32_t _hash (+pad), _next.
      stack_size_ = kStackBytes;
      site_.flag = kStackBytes;
      site_.counter = kStackBytes + 8;
      site_.next = site_.counter + counter_size_ + 8;
      site_.size = site_.next + 8;
    }
  }

  std::optional<unsigned> idx(const char* name) const {
    auto it = index_.find(name);
    if (it == index_.end()) return std::nullopt;
    return it->second;
  }

  /// MemSummaryReporter::report on a snapshot adjusted as MallocMemorySnapshot::make_adjustment.
  void summarize() {
    auto raw = n_.raw;  // the copy jcmd adjusts
    auto chunk = idx("Arena Chunk");
    auto stack = idx("Thread Stack");
    auto thread = idx("Thread");
    auto nmt = idx("Native Memory Tracking");
    uint64_t total_arena = 0;
    for (const auto& c : raw) total_arena += c.arena.bytes;
    Counter all = n_.all_mallocs;
    uint64_t overhead = 0;
    if (counter_size_ == 32) {
      // make_adjustment: one "free" of all arena bytes from mtChunk and from _all_mallocs
      // (MemoryCounter::deallocate decrements the count by one as well).
      if (chunk) {
        raw[*chunk].malloc.bytes -= std::min(raw[*chunk].malloc.bytes, total_arena);
        if (raw[*chunk].malloc.count) --raw[*chunk].malloc.count;
      }
      all.bytes -= std::min(all.bytes, total_arena);
      if (all.count) --all.count;
      // malloc_overhead() = _all_mallocs.count() * sizeof(MallocHeader)
      overhead = all.count * kHeaderSize;
      n_.total_malloc = {all.count, all.bytes + total_arena + overhead};
    } else {
      // 11u (and older 17u): make_adjustment is `_malloc[chunk_idx].record_free(arena_size)`,
      // MemoryCounter::deallocate: size -total_arena, count -1 (jdk11u mallocTracker.{hpp,cpp});
      // the headers are their own counter (_tracking_header, {count, count x 16}), not adjusted.
      // MemSummaryReporter::report's total is MallocMemorySnapshot::total() = Σ malloc + Σ arena +
      // _tracking_header.size; jcmd prints no total malloc count: ours is the header count.
      if (chunk) {
        raw[*chunk].malloc.bytes -= std::min(raw[*chunk].malloc.bytes, total_arena);
        if (raw[*chunk].malloc.count) --raw[*chunk].malloc.count;
      }
      overhead = all.bytes;
      uint64_t sum = 0;
      for (const auto& c : raw) sum += c.malloc.bytes + c.arena.bytes;
      n_.total_malloc = {all.count, sum + overhead};
    }
    for (const auto& c : raw) {
      n_.total_mmap_reserved += c.vm_reserved;
      n_.total_mmap_committed += c.vm_committed;
    }
    n_.total_reserved = n_.total_malloc.bytes + n_.total_mmap_reserved;
    n_.total_committed = n_.total_malloc.bytes + n_.total_mmap_committed;
    std::optional<uint64_t> thread_count;
    if (auto a = sym(kThreadCount)) {
      uint64_t v = 0;
      if (read_any(t_, *a, &v, 8)) thread_count = v;
    } else if (stack) {
      // No ThreadStackTracker (11u): MemTracker::record_thread_stack "uses thread stack malloc
      // slot for book keeping number of threads" (record_malloc(0, mtThreadStack)), and
      // MallocMemorySnapshot::thread_count() is that count (jdk11u memTracker.hpp, mallocTracker.hpp).
      thread_count = raw[*stack].malloc.count;
    }
    for (size_t i = 0; i < raw.size(); ++i) {
      if (stack && i == *stack) continue;
      const auto& c = raw[i];
      Row r;
      r.index = static_cast<unsigned>(i);
      r.name = c.name;
      r.malloc = c.malloc;
      // The reporter without peaks prints no count for Arena Chunk ("We don't know how many
      // arena chunks are in used, so don't report the count", jdk11u memReporter.cpp); raw has it.
      if (counter_size_ == 16 && chunk && i == *chunk) r.malloc.count = 0;
      r.arena = c.arena;
      r.malloc_peak = c.malloc_peak;
      r.arena_peak = c.arena_peak;
      r.mmap_reserved = c.vm_reserved;
      r.mmap_committed = c.vm_committed;
      r.mmap_peak = c.vm_peak;
      r.reserved = c.malloc.bytes + c.arena.bytes + c.vm_reserved;
      r.committed = c.malloc.bytes + c.arena.bytes + c.vm_committed;
      if (thread && i == *thread && stack) {
        // Thread stacks are tracked as virtual memory on Linux (ThreadStackTracker::track_as_vm).
        r.stack_reserved = raw[*stack].vm_reserved;
        r.stack_committed = raw[*stack].vm_committed;
        r.stack_peak = raw[*stack].vm_peak;
        r.reserved += *r.stack_reserved;
        r.committed += *r.stack_committed;
        r.threads = thread_count;
      }
      if (nmt && i == *nmt) {
        r.tracking_overhead = overhead;
        r.reserved += overhead;
        r.committed += overhead;
      }
      uint64_t shown = r.reserved;
      if (print_peaks_) {
        shown = std::max(shown, c.vm_peak.value_or(0));
        if (c.malloc_peak) shown = std::max(shown, c.malloc_peak->bytes);
        if (c.arena_peak) shown = std::max(shown, c.arena_peak->bytes);
      }
      if (shown > 0) n_.rows.push_back(std::move(r));
    }
  }

  /// Headers-only mode: one row per category that has headers (malloc only).
  void rows_from_headers() {
    const auto& names = builtin_names();
    n_.names = names;
    for (size_t i = 0; i < n_.headers.size(); ++i) {
      if (!n_.headers[i].count) continue;
      Row r;
      r.index = static_cast<unsigned>(i);
      r.name = i < names.size() ? names[i] : "type " + std::to_string(i);
      r.malloc = n_.headers[i];
      r.reserved = r.committed = r.malloc.bytes;
      n_.total_malloc.count += r.malloc.count;
      n_.total_malloc.bytes += r.malloc.bytes;
      n_.rows.push_back(std::move(r));
    }
    n_.total_reserved = n_.total_committed = n_.total_malloc.bytes;
    n_.layout = "malloc headers only (" + n_.header_layout + "); category names from " + n_.names_from +
                "; no virtual memory, arena or overhead figures";
  }

  void read_sites() {
    uint64_t table_size = 0;
    auto table = sym(kSiteTable, &table_size);
    if (!table || table_size < 8 || !site_.size) return;
    size_t nb = table_size / 8;
    uint64_t at = *table;
    if (table_size == 8) {
      // JDK 21: `static MallocSiteHashtableEntry** _table`, a C-heap array of table_size =
      // 4 * K + 3 = 4099 buckets (services/mallocSiteTable.hpp, jdk21u); 17u: the array itself
      // (511 buckets, the symbol's size). The glibc chunk holding it bounds the count.
      if (!read_any(t_, *table, &at, 8) || !at) return;
      constexpr size_t kBuckets21 = 4099;
      uint64_t chunk_size = 0;
      size_t usable = 0;
      if (read_any(t_, at - 8, &chunk_size, 8)) usable = (chunk_size & ~uint64_t{7}) - 8;
      nb = kBuckets21;
      if (usable < kBuckets21 * 8 || usable > kBuckets21 * 8 + 4096) {
        n_.diags.add("layout", at, std::nullopt,
                     "malloc site table: the chunk at the table pointer holds " + std::to_string(usable) +
                         " bytes, not 4099 buckets; reading the buckets that fit");
        nb = std::min<size_t>(usable / 8, kBuckets21);
      }
      if (!nb) return;
    }
    std::vector<uint64_t> buckets(nb);
    if (!read_any(t_, at, buckets.data(), nb * 8)) {
      n_.diags.add("unreadable", at, std::nullopt, "malloc site table unreadable");
      return;
    }
    // MallocSiteHashtableEntry: offsets from call_stack_layout().
    size_t entry = site_.size;
    size_t next_off = site_.next;
    // Every entry is on exactly one chain, once: an entry met again (a chain that loops, or
    // buckets sharing a chain) ends that chain with a diagnostic, and 1,000,000 entries in all
    // end the walk (a JVM has thousands of sites).
    constexpr size_t kMaxEntries = 1000000;
    std::unordered_set<uint64_t> seen;
    bool full = false;
    for (uint64_t head : buckets) {
      for (uint64_t p = head; p && !full;) {
        if (seen.size() >= kMaxEntries) {
          n_.diags.add("truncated", p, std::nullopt,
                       "more than " + std::to_string(kMaxEntries) + " malloc site entries; the rest not read");
          full = true;
          break;
        }
        if (!seen.insert(p).second) {
          n_.diags.add("cycle", p, std::nullopt, "malloc site table entry met twice (a chain loops); chain ended");
          break;
        }
        std::vector<uint8_t> e(entry);
        if (!read_any(t_, p, e.data(), entry)) {
          n_.diags.add("unreadable", p, std::nullopt, "malloc site table entry unreadable");
          break;
        }
        MallocSite s;
        s.stack = call_stack(e.data());
        // MEMFLAGS: a 4-byte enum in 11u/17u, `enum class MEMFLAGS : uint8_t` in 21u (21.0.12
        // DWARF: AllocationSite::_flag is 1 byte at 32, then padding): the low byte is the index.
        s.index = e[site_.flag];
        s.counter = {u64_at(e, site_.counter), u64_at(e, site_.counter + 8)};
        if (s.counter.bytes) n_.sites.push_back(std::move(s));
        p = u64_at(e, next_off);
      }
    }
    std::sort(n_.sites.begin(), n_.sites.end(),
              [](const MallocSite& a, const MallocSite& b) { return a.counter.bytes > b.counter.bytes; });
  }

  /// The NativeCallStack at `b` (kStackBytes readable): frames up to the first null pc, each
  /// symbolised by the one Symbolizer of this read (malloc sites and regions share its tables).
  CallStack call_stack(const uint8_t* b) {
    CallStack s;
    for (size_t f = 0; f < kStackDepth; ++f) {
      uint64_t pc = 0;
      std::memcpy(&pc, b + f * 8, 8);
      if (!pc) break;
      if (!symbolizer_) symbolizer_ = std::make_unique<Symbolizer>(t_);  // summary mode: none
      s.frames.push_back(pc);
      s.symbols.push_back(symbolizer_->describe(pc));
    }
    return s;
  }

  // VirtualMemoryTracker::_reserved_regions: SortedLinkedList<ReservedMemoryRegion>*, nodes in
  // ascending base order, each reserved region's committed parts a SortedLinkedList as well
  // (openjdk/jdk17u src/hotspot/share/services/virtualMemoryTracker.hpp: VirtualMemoryRegion
  // {_base_address, _size}; CommittedMemoryRegion : VirtualMemoryRegion {NativeCallStack _stack};
  // ReservedMemoryRegion : VirtualMemoryRegion {SortedLinkedList _committed_regions,
  // NativeCallStack _stack, MEMFLAGS _flag}; src/hotspot/share/utilities/linkedlist.hpp:
  // LinkedList {vptr, _head}, LinkedListNode<E> {E _data, _next}). Offsets as the DWARF of
  // 17.0.21 (openjdk-17-dbg) gives them: the committed list is 24 bytes, its _head at 8; the
  // NativeCallStack (stack_size_: 32, or 40 with 11u's _hash_value) moves what follows it
  // (11.0.24 DWARF: reserved _stack 40, _flag 80, _next 88, node 96; committed _next 56, node 64).
  static constexpr size_t kRsvHead = 16 + 8, kRsvStack = 40, kComStack = 16;
  static constexpr size_t kMaxStackSize = 40, kRsvMaxNode = kRsvStack + kMaxStackSize + 16;
  size_t rsv_flag() const { return kRsvStack + stack_size_; }
  size_t rsv_next() const { return rsv_flag() + 8; }
  size_t rsv_node() const { return rsv_next() + 8; }
  size_t com_next() const { return kComStack + stack_size_; }
  size_t com_node() const { return com_next() + 8; }
  // Bound for a hostile image, reserved and committed nodes together: a JVM has thousands.
  static constexpr size_t kMaxNodes = 1000000;

  /// One more region node to read, or false (once noted) when kMaxNodes were read.
  bool take_node(uint64_t at) {
    if (budget_ == 0) {
      if (!truncated_)
        n_.diags.add("truncated", at, std::nullopt,
                     "more than " + std::to_string(kMaxNodes) + " memory region nodes; the rest not read");
      truncated_ = true;
      return false;
    }
    --budget_;
    return true;
  }

  void read_regions() {
    auto list = sym(kReservedRegions);
    if (!list || stack_size_ < kStackBytes || stack_size_ > kMaxStackSize) return;
    uint64_t lp = 0;
    if (!read_any(t_, *list, &lp, 8) || !lp) return;
    uint64_t node = 0;  // LinkedList: vptr, _head
    if (!read_any(t_, lp + 8, &node, 8)) {
      n_.diags.add("unreadable", lp, std::nullopt, "VirtualMemoryTracker::_reserved_regions list unreadable");
      return;
    }
    budget_ = kMaxNodes;
    // The list is sorted and its regions neither overlap nor are empty (add_reserved_region), so
    // each node lies above the previous one: a loop or a stray pointer shows as out of order.
    uint64_t end = 0;
    while (node) {
      if (!take_node(node)) break;
      uint8_t b[kRsvMaxNode];
      if (!read_any(t_, node, b, rsv_node())) {
        n_.diags.add("unreadable", node, std::nullopt, "reserved memory region node unreadable; the rest not read");
        break;
      }
      VmRegion r;
      std::memcpy(&r.base, b, 8);
      std::memcpy(&r.size, b + 8, 8);
      if (r.base < end || !r.size || r.base + r.size < r.base) {
        n_.diags.add("cycle", node, std::nullopt,
                     "reserved memory region at " + hex(r.base) + " (" + std::to_string(r.size) +
                         " bytes) out of address order; the rest not read");
        break;
      }
      end = r.base + r.size;
      r.index = b[rsv_flag()];  // MEMFLAGS (low byte; 1 byte + padding in 21u, 4 bytes in 17u)
      // Only detail mode records the stacks; in summary mode they are whatever the constructor
      // left (JDK 21's FAKE_CALLSTACK leaves them uninitialised in release builds).
      if (n_.level == "detail") r.stack = call_stack(b + kRsvStack);
      uint64_t cnode = 0;
      std::memcpy(&cnode, b + kRsvHead, 8);
      read_committed(r, cnode);
      n_.regions.push_back(std::move(r));
      std::memcpy(&node, b + rsv_next(), 8);
    }
  }

  /// The committed parts of `r` from the list node `cnode`: ascending, not empty, inside `r`
  /// (add_committed_region merges and splits to keep them so).
  void read_committed(VmRegion& r, uint64_t cnode) {
    uint64_t end = r.base;
    while (cnode) {
      if (!take_node(cnode)) return;
      uint8_t c[kComStack + kMaxStackSize + 8];
      if (!read_any(t_, cnode, c, com_node())) {
        n_.diags.add("unreadable", cnode, std::nullopt,
                     "committed memory region node of the region at " + hex(r.base) + " unreadable");
        return;
      }
      CommittedRegion cr;
      std::memcpy(&cr.base, c, 8);
      std::memcpy(&cr.size, c + 8, 8);
      if (cr.base < end || !cr.size || cr.base + cr.size < cr.base || cr.base + cr.size > r.base + r.size) {
        n_.diags.add("bad_size", cnode, std::nullopt,
                     "committed region at " + hex(cr.base) + " (" + std::to_string(cr.size) +
                         " bytes) out of order or outside its reserved region at " + hex(r.base));
        return;
      }
      end = cr.base + cr.size;
      if (n_.level == "detail") cr.stack = call_stack(c + kComStack);
      r.committed += cr.size;
      r.committed_regions.push_back(std::move(cr));
      std::memcpy(&cnode, c + com_next(), 8);
    }
  }

  /// Whether each page of [lo, hi) is resident, the way jcmd's mincore probe would see it:
  /// live, the present bit of /proc/PID/pagemap (mincore counts a page mapped to the shared
  /// zero page as resident too, and a swapped-out page as not); in a core, a page the core
  /// saved that is not all zero (a kernel core and heapwalk's snapshot leave pages that were
  /// not resident as holes, gcore writes them as zeros; a resident page of zeros is missed).
  class PageProbe {
   public:
    explicit PageProbe(target::Target& t) : t_(t) {
      if (t.kind() == target::Target::Kind::Live && t.pid() > 0) {
        fd_ = ::open(("/proc/" + std::to_string(t.pid()) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC);
      }
    }
    ~PageProbe() {
      if (fd_ >= 0) ::close(fd_);
    }
    PageProbe(const PageProbe&) = delete;
    PageProbe& operator=(const PageProbe&) = delete;
    bool live() const { return fd_ >= 0; }
    /// Calls f(page address, resident) for every page of [lo, hi) (page aligned).
    template <typename F>
    void scan(uint64_t lo, uint64_t hi, F&& f) {
      if (fd_ >= 0) {
        std::vector<uint64_t> e((hi - lo) / kPage);
        ssize_t got = e.empty() ? 0 : ::pread(fd_, e.data(), e.size() * 8, static_cast<off_t>(lo / kPage * 8));
        size_t n = got > 0 ? static_cast<size_t>(got) / 8 : 0;
        for (size_t i = 0; i < e.size(); ++i) f(lo + i * kPage, i < n && (e[i] >> 63 & 1));
        return;
      }
      std::vector<uint8_t> flags;
      if (t_.memory().nonzero_pages(lo, hi, flags)) {  // a core file: its holes skipped unread
        for (size_t i = 0; i < flags.size(); ++i) f(lo + i * kPage, flags[i] != 0);
        return;
      }
      uint8_t buf[kPage];
      for (uint64_t a = lo; a < hi; a += kPage) {
        const uint8_t* p = t_.memory().direct(a, kPage);
        if (!p && t_.memory().read(a, buf, kPage) == kPage) p = buf;
        bool nonzero = false;
        for (size_t i = 0; p && i < kPage && !nonzero; i += 8) {
          uint64_t w;
          std::memcpy(&w, p + i, 8);
          nonzero = w != 0;
        }
        f(a, nonzero);
      }
    }
    static constexpr uint64_t kPage = 4096;

   private:
    target::Target& t_;
    int fd_ = -1;
  };

  /// StackResidency: every mtThreadStack region probed as SnapshotThreadStackWalker does.
  /// Committed parts already recorded stay committed (add_committed_region only adds).
  void stack_residency() {
    auto ts = idx("Thread Stack");
    auto thread = idx("Thread");
    if (!ts || !thread || n_.regions.empty()) return;
    PageProbe probe(t_);
    StackResidency s;
    s.source = probe.live() ? "pagemap" : "core";
    s.method = probe.live() ? "pages present in /proc/PID/pagemap (mincore's view: the zero page counts, "
                              "swapped-out pages do not)"
                            : "pages the core saved that are not all zero (a kernel core or heapwalk's "
                              "snapshot leaves out the pages that were not resident, gcore writes them as "
                              "zeros; a resident page of zeros is missed)";
    constexpr uint64_t P = PageProbe::kPage;
    for (const auto& r : n_.regions) {
      if (r.index != *ts) continue;
      ++s.regions;
      s.reserved += r.size;
      s.nmt_committed += r.committed;
      const uint64_t top = r.base + r.size;
      // thread_stack_uncommitted_bottom(): the committed parts that end below the top are
      // the guard zones HotSpot committed; the probe starts above the last of them.
      uint64_t bottom = r.base, guard = 0;
      size_t above = 0;
      for (; above < r.committed_regions.size(); ++above) {
        const auto& c = r.committed_regions[above];
        if (c.base + c.size >= top) break;
        bottom = c.base + c.size;
        guard += c.size;
      }
      uint64_t lo = bottom & ~(P - 1), hi = (top + P - 1) & ~(P - 1), n = 0;
      size_t ci = above;
      probe.scan(lo, hi, [&](uint64_t a, bool resident) {
        while (ci < r.committed_regions.size() && r.committed_regions[ci].base + r.committed_regions[ci].size <= a)
          ++ci;
        bool recorded = ci < r.committed_regions.size() && r.committed_regions[ci].base <= a;
        if (resident || recorded) n += std::min(a + P, top) - std::max(a, bottom);
      });
      s.guard += guard;
      s.committed += guard + n;
    }
    if (!s.regions) return;
    for (auto& row : n_.rows) {
      if (row.index != *thread || !row.stack_committed) continue;
      row.stack_committed_now = s.committed;
      row.committed_now = row.committed - *row.stack_committed + s.committed;
    }
    n_.total_committed_now = n_.total_committed - n_.raw[*ts].vm_committed + s.committed;
    n_.stacks = s;
  }

  void glibc_figures() {
    auto& g = n_.glibc;
    for (const auto& a : heap_->arenas()) {
      ++g.arenas;
      g.system += a.system_mem;
      g.in_use += a.in_use.bytes;
      g.in_use_count += a.in_use.count;
      g.free += a.fast.bytes + a.binned.bytes + a.tcache.bytes;
      g.top += a.top_size;
      if (!a.main)
        for (const auto& hr : a.heaps)
          if (heap_->params().heap_max > hr.size) g.heap_reserve_tail += heap_->params().heap_max - hr.size;
    }
    g.mmapped = heap_->mmapped().found.bytes;
    g.mmapped_count = heap_->mmapped().found.count;
    n_.glibc_ok = true;
  }

  /// Per-category sums of one header validator over the chunk walk.
  struct HeaderSums {
    std::vector<Counter> headers;
    Counter chunks, untracked;
    std::map<uint64_t, uint64_t> untracked_sizes, header_sizes;
    uint64_t hits() const { return chunks.count; }
    void take(bool ok, unsigned flags, uint64_t user, uint64_t chunk) {
      if (ok) {
        headers[flags].add(user);
        chunks.add(chunk);
        ++header_sizes[chunk];
      } else {
        untracked.add(chunk);
        ++untracked_sizes[chunk];
      }
    }
    /// Every chunk counted as untracked after all.
    void reject_all() {
      for (auto& c : headers) c = Counter{};
      untracked.count += chunks.count;
      untracked.bytes += chunks.bytes;
      chunks = Counter{};
      for (const auto& [size, count] : header_sizes) untracked_sizes[size] += count;
      header_sizes.clear();
    }
  };

  /// The flags of the malloc site table's entries, bucket by bucket (bit-field headers in
  /// detail mode name their entry by bucket and position; MallocSiteTable::lookup_or_add
  /// matches an entry on stack *and* flags, so the entry's flags must be the header's).
  std::vector<std::vector<uint8_t>> site_chain_flags() {
    std::vector<std::vector<uint8_t>> chains;
    uint64_t table_size = 0;
    auto table = sym(kSiteTable, &table_size);
    if (!table || table_size != kBuckets11 * 8 || !site_.size) return chains;
    std::vector<uint64_t> buckets(kBuckets11);
    if (!read_any(t_, *table, buckets.data(), buckets.size() * 8)) return {};
    chains.resize(kBuckets11);
    size_t guard = 0;
    std::vector<uint8_t> e(site_.size);
    for (size_t b = 0; b < kBuckets11; ++b) {
      for (uint64_t p = buckets[b]; p && chains[b].size() <= kMaxBucketLength && guard < kMaxNodes; ++guard) {
        if (!read_any(t_, p, e.data(), e.size())) return {};
        chains[b].push_back(e[site_.flag]);
        p = u64_at(e, site_.next);
      }
    }
    return chains;
  }

  /// Every in-use chunk whose user data starts with a live NMT header is attributed to its type.
  /// Two header layouts:
  /// - canary (17.0.x with JDK-8275320, 21): `_size`, `_flags` at 12, canary 0xE99E at 14, footer
  ///   0xE88E right after the user size;
  /// - bit fields (11u, older 17u): `_size : 64; _flags : 8; _pos_idx : 16; _bucket_idx : 40`,
  ///   nothing else to check, so `_size` >= 1 and the chunk must be exactly what glibc makes for
  ///   a request of `_size` + 16 bytes (os::malloc asks for size + sizeof(MallocHeader)); in detail mode the
  ///   bucket/position must name a site entry of the same flags.
  /// With symbols the layout follows them (canary: kCheckIntegrity; bit fields: kBitfieldHeader);
  /// without, the canary layout when any chunk shows it, else the bit-field one, said in a note.
  void walk_headers() {
    bool canary_syms = false, bitfield_syms = false;
    const bool syms = have_symbols();
    if (syms) {
      for (const char* s : kCheckIntegrity) canary_syms = canary_syms || sym(s).has_value();
      for (const char* s : kBitfieldHeader) bitfield_syms = bitfield_syms || sym(s).has_value();
      if (!canary_syms && !bitfield_syms) {
        n_.diags.note("no MallocHeader symbols of a known layout in libjvm: no reconstruction from headers");
        return;
      }
    }
    bool try_canary = !syms || canary_syms, try_bits = !syms || (bitfield_syms && !canary_syms);
    if (try_bits && syms && n_.tables && (n_.level == "off" || n_.level == "minimal")) {
      // Off: no headers; NMT_minimal's MallocHeader constructor returns before writing anything
      // (jdk11u mallocTracker.hpp). Every chunk is untracked.
      n_.diags.note("NMT level " + n_.level + ": no bit-field malloc header to read; every chunk untracked");
      try_bits = false;
    }
    size_t ntypes = n_.raw.empty() ? builtin_names().size() : n_.raw.size();
    HeaderSums canary, bits;
    canary.headers.assign(ntypes, Counter{});
    bits.headers.assign(ntypes, Counter{});
    std::vector<std::vector<uint8_t>> chains;
    bool check_sites = try_bits && n_.tables && n_.level == "detail";
    if (check_sites) {
      chains = site_chain_flags();
      if (chains.empty()) {
        n_.diags.add("layout", n_.libjvm_base, std::nullopt,
                     "malloc site table unreadable: bit-field headers checked by size only");
        check_sites = false;
      }
    }
    memory::Reader rd(t_.memory());
    heap_->walk(nullptr, [&](uint64_t addr, uint64_t size, ptmalloc::ChunkState st, const ptmalloc::Arena*, size_t) {
      bool mm = st == ptmalloc::ChunkState::Mmapped;
      if (st != ptmalloc::ChunkState::Used && !mm) return true;
      uint64_t mem = addr + 16;
      // Usable bytes: an in-use chunk may use the next chunk's prev_size field.
      uint64_t usable = mm ? size - 16 : size - 8;
      // A copy: the footer read below goes through the same Reader (live targets: its cache).
      uint8_t header[kHeaderSize];
      const uint8_t* h = size >= 32 && rd.try_copy(mem, header, kHeaderSize) ? header : nullptr;
      uint64_t user = 0, w1 = 0;
      if (h) {
        std::memcpy(&user, h, 8);
        std::memcpy(&w1, h + 8, 8);
      }
      if (try_canary) {
        bool ok = false;
        uint8_t flags = h ? h[12] : 0;
        if (h) {
          uint16_t mark;
          std::memcpy(&mark, h + 14, 2);
          if (mark == kHeaderCanary && flags < ntypes && h[13] == 0 && user <= usable &&
              usable - user >= kHeaderSize + kFooterSize) {
            uint8_t f[kFooterSize];
            ok = rd.try_copy(mem + kHeaderSize + user, f, kFooterSize) && f[0] == kFooter0 && f[1] == kFooter1;
          }
        }
        canary.take(ok, flags, user, size);
      } else if (!try_bits) {
        canary.take(false, 0, 0, size);
      }
      if (try_bits) {
        bool ok = false;
        unsigned flags = unsigned(w1 & 0xFF);
        // os::malloc and os::realloc turn size 0 into 1 (jdk11u runtime/os.cpp): _size >= 1.
        if (h && flags < ntypes && user >= 1 && user < (uint64_t{1} << 47)) {
          uint64_t nb = request2size(user + kHeaderSize);
          // glibc hands out the chunk it split (remainder >= MINSIZE 32 split off) or a whole
          // one up to 16 bytes larger; mmapped: nb + SIZE_SZ rounded up to the page (4 KiB).
          ok = mm ? size >= nb + 8 && size - (nb + 8) < 4096 : size == nb || size == nb + 16;
          if (ok && check_sites) {
            uint64_t pos = (w1 >> 8) & 0xFFFF, bucket = w1 >> 24;
            ok = bucket < chains.size() && pos < chains[bucket].size() && chains[bucket][pos] == flags;
          }
        }
        bits.take(ok, flags, user, size);
      }
      return true;
    });
    bool use_bits = try_bits && !(try_canary && canary.hits());
    HeaderSums& chosen = use_bits ? bits : canary;
    if (use_bits) {
      n_.header_layout = std::string("bit fields _size:64 _flags:8 _pos_idx:16 _bucket_idx:40 (no canary); ") +
                         "a block counts when _size >= 1 and its chunk is exactly glibc's for _size + 16 bytes" +
                         (check_sites ? " and _bucket_idx/_pos_idx name a malloc site of the same type" : "");
      std::string risk =
          "a chunk NMT did not make whose first word is its own size minus 16..31 and whose 9th byte is below " +
          std::to_string(ntypes) + " would be counted";
      if (syms) {
        n_.diags.note("bit-field MallocHeader (no canary): " + risk +
                      (check_sites ? " unless its site index fails" : ""));
      } else {
        // No symbols, no level: on an NMT-off JVM a few chunks pass by chance (11.0.24 test core:
        // 8 of 7874). NMT on puts a header on nearly every JVM block (94% of the chunks there).
        uint64_t all = bits.hits() + bits.untracked.count;
        bool on = bits.hits() >= 100 && bits.hits() * 10 >= all;
        n_.diags.note("no canary header in any chunk: assuming the bit-field MallocHeader (JDK 11u, older 17u); " +
                      std::to_string(bits.hits()) + " of " + std::to_string(all) + " in-use chunks pass" +
                      (on ? "; not proven exact without symbols: " + risk
                          : ", too few for NMT to be on (fewer than 100 or 10%): none counted"));
        if (!on) bits.reject_all();
      }
    } else {
      n_.header_layout = try_canary ? "canary 0xE99E, footer 0xE88E" : "none (NMT " + n_.level + ")";
    }
    n_.headers = std::move(chosen.headers);
    n_.header_chunks = chosen.chunks;
    n_.untracked = chosen.untracked;
    n_.headers_walked = true;
    for (const auto& [s, c] : chosen.untracked_sizes) n_.untracked_sizes.emplace_back(s, c);
  }

  /// Mapped bytes, split into files and anonymous memory, and how much of NMT's reserved
  /// regions lies in each: NMT reserves some ranges that are file mappings (CDS maps its
  /// archive, classes.jsa, into the "Shared class space" reservation), so counting NMT's
  /// reserved bytes and the mapped files separately counts those twice.
  void address_space() {
    const auto& rs = n_.regions;
    bool by_region = !rs.empty();
    for (const auto& r : t_.memory().regions()) {
      uint64_t len = r.end - r.start;
      n_.mapped += len;
      bool file = !r.path.empty() && r.path[0] == '/';
      (file ? n_.mapped_files : n_.mapped_anon) += len;
      uint64_t in = 0;
      if (by_region) {
        // Regions are sorted and disjoint: the first that ends above r.start, onwards.
        auto it = std::upper_bound(rs.begin(), rs.end(), r.start,
                                   [](uint64_t a, const VmRegion& v) { return a < v.base + v.size; });
        for (; it != rs.end() && it->base < r.end; ++it)
          in += std::min(r.end, it->base + it->size) - std::max(r.start, it->base);
      } else if (file && n_.tables && r.path.size() > 4 && r.path.compare(r.path.size() - 4, 4, ".jsa") == 0) {
        in = len;  // no region list: a CDS archive mapping is NMT's "Shared class space"
      }
      (file ? n_.nmt_in_files : n_.nmt_in_anon) += in;
    }
    n_.nmt_by_region = by_region;
  }

  target::Target& t_;
  ptmalloc::Heap* heap_;
  bool detail_;
  Nmt& n_;
  JvmSymbols syms_;
  size_t counter_size_ = 16;
  size_t stack_size_ = kStackBytes;  ///< sizeof(NativeCallStack): 32, or 40 with _hash_value (11u)
  /// MallocSiteHashtableEntry offsets (call_stack_layout); size 0: sites not readable.
  struct {
    size_t counter = 40, flag = 32, next = 64, size = 72;
  } site_;
  bool print_peaks_ = false;
  std::map<std::string, unsigned> index_;
  std::unique_ptr<Symbolizer> symbolizer_;  ///< made on the first stack
  size_t budget_ = 0;                       ///< region nodes still to read (read_regions)
  bool truncated_ = false;
};

}  // namespace

Nmt read_nmt(target::Target& t, ptmalloc::Heap* heap, bool detail) {
  Nmt n;
  NmtReader(t, heap, detail, n).run();
  return n;
}

}  // namespace heapwalk::hotspot
