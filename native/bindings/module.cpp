// pybind11 bindings: plain dicts out, engine exceptions mapped to Python classes.
// Nothing in the engine depends on this file.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "analysis/classify.h"
#include "analysis/reach.h"
#include "analysis/retention.h"
#include "bindings/alloc_analysis.h"
#include "bindings/alloc_model.h"
#include "bindings/alloc_report.h"
#include "bindings/inspect_py.h"
#include "bindings/jemalloc.h"
#include "bindings/pytext.h"
#include "bindings/streams.h"
#include "bindings/tcmalloc_binding.h"
#include "hotspot/nmt.h"
#include "hotspot/vmstructs.h"
#include "memory/capture.h"
#include "ptmalloc/heap.h"
#include "target/symbols.h"
#include "target/target.h"
#include "util/errors.h"
#include "util/progress.h"
#include "util/sigbus_guard.h"

namespace py = pybind11;
using namespace heapwalk;

namespace {

using heapwalk::bindings::ustr;
/// ustr, or None for an empty string.
py::object ustr_or_none(const std::string& s) { return s.empty() ? py::object(py::none()) : py::object(ustr(s)); }

using heapwalk::bindings::count_dict;
using heapwalk::bindings::diagnostics_list;
using heapwalk::bindings::kSchema;
using heapwalk::bindings::opt;

class PyTarget {
 public:
  explicit PyTarget(std::unique_ptr<target::Target> t) : t_(std::move(t)) {}

  ptmalloc::Heap& heap() {
    if (!t_) throw Error("target is closed");
    if (!heap_) {
      py::gil_scoped_release nogil;
      heap_ = std::make_unique<ptmalloc::Heap>(*t_, version_hint_);
      heap_->summarize();
    }
    return *heap_;
  }
  /// The target, or Error when closed (for the bindings in other files).
  target::Target& open() {
    if (!t_) throw Error("target is closed");
    return *t_;
  }
  py::list diags() { return diagnostics_list({&t_->diagnostics(), heap_ ? &heap_->diagnostics() : &empty_}); }

  py::dict describe() {
    if (!t_) throw Error("target is closed");
    py::dict d;
    const char* kinds[] = {"core", "live", "callback", "buffer"};
    d["kind"] = kinds[static_cast<int>(t_->kind())];
    d["path"] = t_->path().empty() ? py::object(py::none()) : py::object(ustr(t_->path()));
    d["pid"] = t_->pid() ? py::object(py::int_(t_->pid())) : py::object(py::none());
    py::list threads, modules;
    for (const auto& th : t_->threads()) {
      py::dict x;
      x["lwp"] = th.lwp;
      x["fs_base"] = th.fs_base;
      threads.append(x);
    }
    for (const auto& m : t_->modules()) {
      py::dict x;
      x["path"] = ustr(m.path);
      x["base"] = m.base;
      x["build_id"] = ustr(m.build_id);
      modules.append(x);
    }
    d["threads"] = threads;
    d["modules"] = modules;
    if (const auto* c = t_->capture_stats()) d["capture"] = capture_dict(*c);
    d["diagnostics"] = diagnostics_list({&t_->diagnostics()});
    return d;
  }

  /// How a live target was captured (memory/capture.h): the freeze, the copy, the file.
  static py::dict capture_dict(const memory::CaptureStats& c) {
    py::dict d;
    d["frozen_seconds"] = c.frozen_seconds;
    d["copy_seconds"] = c.copy_seconds;
    d["prefault_seconds"] = c.prefault_seconds;
    d["capture_seconds"] = c.total_seconds;
    d["copied_bytes"] = c.copied_bytes;
    d["planned_bytes"] = c.planned_bytes;
    d["late_bytes"] = c.late_bytes;
    d["precopy"] = c.precopy;
    d["precopied_bytes"] = c.precopied_bytes;
    d["recopied_bytes"] = c.recopied_bytes;
    d["stale_bytes"] = c.stale_bytes;
    d["unreadable_bytes"] = c.unreadable_bytes;
    d["excluded_bytes"] = c.excluded_bytes;
    d["mappings"] = c.mappings;
    d["copied_mappings"] = c.copied_mappings;
    d["file_bytes"] = c.file_bytes;
    d["file_allocated_bytes"] = c.file_allocated;
    d["gcore_bytes"] = c.gcore_bytes;
    d["path"] = c.path.empty() ? py::object(py::none()) : py::object(ustr(c.path));
    d["tmpdir"] = c.tmpdir.empty() ? py::object(py::none()) : py::object(ustr(c.tmpdir));
    d["store"] = ustr(c.store);
    return d;
  }

  py::dict glibc_dict() {
    const auto& g = heap().glibc();
    py::dict d;
    d["version"] = ustr(g.version);
    d["layout_source"] = ustr(g.layout_source);
    d["layout"] = ustr(g.layout->name);
    d["version_source"] = ustr(g.version_source);
    d["libc"] = ustr(g.libc_path);
    d["build_id"] = ustr(g.build_id);
    d["debug_file"] = ustr(g.debug_file);
    d["main_arena"] = g.main_arena;
    d["mp_"] = g.mp;
    py::dict how;
    for (const auto& [k, v] : g.how) how[ustr(k)] = ustr(v);
    d["symbols"] = how;
    return d;
  }

  py::dict arenas() {
    auto& h = heap();
    py::dict out;
    out["schema"] = kSchema;
    out["glibc"] = glibc_dict();
    py::list arenas;
    for (const auto& a : h.arenas()) {
      py::dict d;
      d["address"] = a.address;
      d["index"] = a.index;
      d["main"] = a.main;
      d["system_bytes"] = a.system_mem;
      d["max_system_bytes"] = a.max_system_mem;
      py::list heaps;
      for (const auto& hr : a.heaps) {
        py::dict x;
        x["address"] = hr.address;
        x["size"] = hr.size;
        x["mprotect_size"] = hr.mprotect_size;
        heaps.append(x);
      }
      d["heaps"] = heaps;
      d["fastbins"] = h.layout().has_fastbins ? py::object(count_dict(a.fast)) : py::object(py::none());
      py::dict bins = count_dict(a.binned);
      bins["malloc_info_bytes"] = a.binned_raw;
      d["bins"] = bins;
      d["top"] = a.top;
      d["top_bytes"] = a.top_size;
      d["tcache"] = count_dict(a.tcache);
      d["in_use"] = count_dict(a.in_use);
      d["attached_threads"] = opt(a.attached_threads);
      arenas.append(d);
    }
    out["arenas"] = arenas;
    py::list threads;
    for (const auto& tc : h.threads()) {
      py::dict d;
      d["lwp"] = tc.lwp;
      d["arena"] = opt(tc.arena);
      py::dict t;
      t["address"] = opt(tc.address);
      t["count"] = tc.total.count;
      t["bytes"] = tc.total.bytes;
      d["tcache"] = t;
      threads.append(d);
    }
    out["threads"] = threads;
    const auto& m = h.mmapped();
    py::dict mm;
    mm["count"] = m.n_mmaps;
    mm["bytes"] = m.mmapped_mem;
    mm["max_count"] = m.max_n_mmaps;
    mm["max_bytes"] = m.max_mmapped_mem;
    mm["found"] = count_dict(m.found);
    py::list sus;
    for (const auto& c : m.suspects) sus.append(py::int_(c.address));
    mm["suspects"] = sus;
    out["mmapped"] = mm;
    const auto& p = h.params();
    py::dict params;
    params["trim_threshold"] = p.trim_threshold;
    params["top_pad"] = p.top_pad;
    params["mmap_threshold"] = p.mmap_threshold;
    params["arena_test"] = p.arena_test;
    params["arena_max"] = p.arena_max;
    params["sbrk_base"] = p.sbrk_base;
    params["tcache_bins"] = p.tcache_bins;
    params["tcache_count"] = p.tcache_count;
    out["params"] = params;
    out["diagnostics"] = diags();
    return out;
  }

  const ptmalloc::Arena* select(std::optional<uint64_t> arena) {
    if (!arena) return nullptr;
    const auto* a = heap().find_arena(*arena);
    if (!a)
      throw Error("no arena " + (*arena < 4096 ? std::to_string(*arena) : hex(*arena)) + " (see `heapwalk arenas`)");
    return a;
  }

  static py::list chunk_list(const std::vector<ptmalloc::FreeChunk>& cs, bool with_size) {
    py::list l;
    for (const auto& c : cs) {
      if (with_size) {
        py::dict x;
        x["address"] = c.address;
        x["size"] = c.size;
        l.append(x);
      } else {
        l.append(py::int_(c.address));
      }
    }
    return l;
  }

  /// `chunks`: list at most this many chunks of each list (None: all).
  py::dict bins(std::optional<uint64_t> arena, std::optional<uint64_t> chunks) {
    const auto* only = select(arena);
    auto listed = [&](const ptmalloc::Arena& a, const ptmalloc::FreeList& fl) {
      if (!chunks) return h_list(a, fl);
      ptmalloc::ListCursor at;
      return heap().list_chunks(a, fl, at, static_cast<size_t>(*chunks));
    };
    auto& h = heap();
    py::list arenas;
    for (const auto& a : h.arenas()) {
      if (only && only != &a) continue;
      py::dict d;
      d["address"] = a.address;
      d["index"] = a.index;
      d["main"] = a.main;
      py::list fb, bs;
      for (const auto& fl : a.fastbins) {
        py::dict x;
        x["index"] = fl.index;
        x["size"] = fl.count ? (fl.index + 2) * h.layout().alignment : 0;
        x["count"] = fl.count;
        x["bytes"] = fl.bytes;
        x["chunks"] = chunk_list(listed(a, fl), false);
        fb.append(x);
      }
      for (const auto& fl : a.bins) {
        py::dict x;
        x["index"] = fl.index;
        x["kind"] = ptmalloc::state_name(fl.kind);
        x["count"] = fl.count;
        x["bytes"] = fl.bytes;
        x["chunks"] = chunk_list(listed(a, fl), true);
        bs.append(x);
      }
      d["fastbins"] = fb;
      d["bins"] = bs;
      py::dict top;
      top["address"] = a.top;
      top["size"] = a.top_size;
      d["top"] = top;
      arenas.append(d);
    }
    py::dict out;
    out["schema"] = kSchema;
    out["arenas"] = arenas;
    out["diagnostics"] = diags();
    return out;
  }

  py::dict tcache(std::optional<int> lwp) {
    auto& h = heap();
    py::list threads;
    bool found = false;
    for (const auto& tc : h.threads()) {
      if (lwp && tc.lwp != *lwp) continue;
      found = true;
      py::dict d;
      d["lwp"] = tc.lwp;
      d["address"] = opt(tc.address);
      d["arena"] = opt(tc.arena);
      d["count"] = tc.total.count;
      d["bytes"] = tc.total.bytes;
      py::list bins;
      for (const auto& fl : tc.bins) {
        py::dict x;
        x["index"] = fl.index;
        auto range = ptmalloc::tcache_bin_sizes(h.layout(), fl.index);
        x["size"] = range.first;
        if (range.second != range.first) x["max_size"] = range.second;
        x["count"] = fl.count;
        x["bytes"] = fl.bytes;
        x["chunks"] = chunk_list(fl.chunks, false);
        bins.append(x);
      }
      d["bins"] = bins;
      threads.append(d);
    }
    if (lwp && !found) throw Error("no thread with LWP " + std::to_string(*lwp) + " (see `heapwalk arenas`)");
    py::dict out;
    out["schema"] = kSchema;
    out["threads"] = threads;
    out["diagnostics"] = diags();
    return out;
  }

  std::vector<ptmalloc::FreeChunk> h_list(const ptmalloc::Arena& a, const ptmalloc::FreeList& fl) {
    return heap().list_chunks(a, fl);
  }

  // ---- streamed listings (issue 15): bindings/streams.h; the classes are bound below ----
  std::shared_ptr<bindings::ChunkStream> chunk_stream(std::optional<uint64_t> arena, const std::string& state,
                                                      std::optional<uint64_t> limit, size_t batch) {
    if (state != "all" && state != "free" && state != "used")
      throw Error("state must be all, free or used, not " + state);
    const auto* only = select(arena);
    bool free_only = state == "free", used_only = state == "used";
    auto s = std::make_shared<bindings::ChunkStream>(
        heap(), only,
        [free_only, used_only](ptmalloc::ChunkState st) {
          if (free_only) return ptmalloc::is_free(st);
          if (used_only) return st == ptmalloc::ChunkState::Used || st == ptmalloc::ChunkState::Mmapped;
          return true;
        },
        limit, batch, t_->parallel_reads());
    streams_.push_back(s);
    return s;
  }
  /// The arena (by address or index) and its `position`-th non-empty fastbin or bin.
  std::pair<const ptmalloc::Arena*, const ptmalloc::FreeList*> free_list(uint64_t arena, bool fast, size_t position) {
    const auto* a = select(arena);
    const auto& lists = fast ? a->fastbins : a->bins;
    if (position >= lists.size()) throw Error("no such list");
    return {a, &lists[position]};
  }
  bool closed() const { return !t_; }

  static py::dict chunk_rec(uint64_t addr, uint64_t size, ptmalloc::ChunkState st, const ptmalloc::Arena* a,
                            size_t heap_index) {
    py::dict x;
    x["address"] = addr;
    x["size"] = size;
    x["state"] = ptmalloc::state_name(st);
    x["arena"] = a ? py::object(py::int_(a->address)) : py::object(py::none());
    x["heap"] =
        a && heap_index < a->heaps.size() ? py::object(py::int_(a->heaps[heap_index].address)) : py::object(py::none());
    return x;
  }

  py::dict chunks(std::optional<uint64_t> arena, const std::string& state, std::optional<uint64_t> limit) {
    if (state != "all" && state != "free" && state != "used")
      throw Error("state must be all, free or used, not " + state);
    const auto* only = select(arena);
    auto& h = heap();
    struct Rec {
      uint64_t a, s;
      ptmalloc::ChunkState st;
      const ptmalloc::Arena* ar;
      size_t hi;
    };
    std::vector<Rec> recs;
    uint64_t total = 0;
    {
      py::gil_scoped_release nogil;
      h.walk(only, [&](uint64_t addr, uint64_t size, ptmalloc::ChunkState st, const ptmalloc::Arena* a, size_t hi) {
        bool f = ptmalloc::is_free(st);
        bool used = st == ptmalloc::ChunkState::Used || st == ptmalloc::ChunkState::Mmapped;
        if ((state == "free" && !f) || (state == "used" && !used)) return true;
        ++total;
        if (!limit || recs.size() < *limit) recs.push_back({addr, size, st, a, hi});
        return true;
      });
    }
    py::list l;
    for (const auto& r : recs) l.append(chunk_rec(r.a, r.s, r.st, r.ar, r.hi));
    py::dict out;
    out["schema"] = kSchema;
    out["chunks"] = l;
    out["total"] = total;
    out["truncated"] = total > recs.size();
    out["diagnostics"] = diags();
    return out;
  }

  /// In-use chunks (heap and mmapped) by chunk size, ascending: what `report` saves for
  /// `diff` ("a few KB per connection"), aggregated here rather than per chunk in Python.
  py::list size_classes() {
    auto& h = heap();
    std::map<uint64_t, uint64_t> counts;
    {
      py::gil_scoped_release nogil;
      h.walk(nullptr, [&](uint64_t, uint64_t size, ptmalloc::ChunkState st, const ptmalloc::Arena*, size_t) {
        if (st == ptmalloc::ChunkState::Used || st == ptmalloc::ChunkState::Mmapped) ++counts[size];
        return true;
      });
    }
    py::list l;
    for (const auto& [size, n] : counts) {
      py::dict x;
      x["size"] = size;
      x["count"] = n;
      x["bytes"] = size * n;
      l.append(x);
    }
    return l;
  }

  py::dict chunk(uint64_t addr) {
    auto& h = heap();
    py::dict out;
    out["schema"] = kSchema;
    out["query"] = addr;
    out["chunk"] = py::none();
    out["prev"] = py::none();
    out["next"] = py::none();
    out["arena"] = py::none();
    auto finish = [&](uint64_t c, uint64_t size, ptmalloc::ChunkState st, const ptmalloc::Arena* a, size_t hi) {
      py::dict rec = chunk_rec(c, size, st, a, hi);
      rec["mem"] = c + 16;
      rec["usable"] = st == ptmalloc::ChunkState::Mmapped ? size - 16 : (size >= 8 ? size - 8 : 0);
      rec["offset"] = static_cast<int64_t>(addr) - static_cast<int64_t>(c + 16);
      out["chunk"] = rec;
      out["arena"] = a ? py::object(py::int_(a->address)) : py::object(py::none());
    };
    // An mmapped chunk owns its whole mapping: a memalign'd one sits above the mapping's start,
    // and an address below its header is still "in" it (a negative offset).
    for (const auto& m : h.mmapped().chunks) {
      auto ext = ptmalloc::mmap_extent(h.layout(), m.address, m.prev_size, m.size | 2);
      if (addr >= ext.base && addr - ext.base < ext.size) {
        finish(m.address, m.size, ptmalloc::ChunkState::Mmapped, nullptr, 0);
        py::dict mapping;
        mapping["base"] = ext.base;
        mapping["size"] = ext.size;
        py::dict rec = out["chunk"];
        rec["mapping"] = mapping;
        out["diagnostics"] = diags();
        return out;
      }
    }
    const ptmalloc::Arena* a = h.arena_of(addr);
    if (a) {
      struct Rec {
        uint64_t a = 0, s = 0;
        ptmalloc::ChunkState st{};
        size_t hi = 0;
        bool set = false;
      } prev, hit, next;
      {
        py::gil_scoped_release nogil;
        h.walk(a, [&](uint64_t c, uint64_t size, ptmalloc::ChunkState st, const ptmalloc::Arena*, size_t hi) {
          if (hit.set) {
            next = {c, size, st, hi, true};
            return false;
          }
          if (addr >= c && addr - c < size) {
            hit = {c, size, st, hi, true};
            return true;
          }
          if (c > addr) return false;
          prev = {c, size, st, hi, true};
          return true;
        });
      }
      if (hit.set) {
        finish(hit.a, hit.s, hit.st, a, hit.hi);
        if (prev.set && a->heaps[prev.hi].address == a->heaps[hit.hi].address)
          out["prev"] = chunk_rec(prev.a, prev.s, prev.st, a, prev.hi);
        if (next.set && a->heaps[next.hi].address == a->heaps[hit.hi].address)
          out["next"] = chunk_rec(next.a, next.s, next.st, a, next.hi);
      } else {
        out["arena"] = a->address;
      }
    }
    out["diagnostics"] = diags();
    return out;
  }

  /// A NativeCallStack as `[{"pc", "symbol"}]` (malloc sites, reserved and committed regions).
  static py::list frames_list(const hotspot::CallStack& s) {
    py::list frames;
    for (size_t i = 0; i < s.frames.size(); ++i) {
      py::dict f;
      f["pc"] = s.frames[i];
      f["symbol"] = ustr(i < s.symbols.size() ? s.symbols[i] : std::string());
      frames.append(f);
    }
    return frames;
  }

  static py::dict counter_dict(const hotspot::Counter& c, const std::optional<hotspot::Counter>& peak) {
    py::dict d;
    d["bytes"] = c.bytes;
    d["count"] = c.count;
    if (peak) {
      py::dict p;
      p["bytes"] = peak->bytes;
      p["count"] = peak->count;
      d["peak"] = p;
    }
    return d;
  }

  static py::dict stacks_dict(const hotspot::StackResidency& s) {
    py::dict d;
    d["source"] = s.source;
    d["method"] = s.method;
    d["regions"] = s.regions;
    d["reserved"] = s.reserved;
    d["committed_nmt"] = s.nmt_committed;
    d["committed"] = s.committed;
    d["guard"] = s.guard;
    return d;
  }

  static py::dict rc(uint64_t reserved, uint64_t committed) {
    py::dict d;
    d["reserved"] = reserved;
    d["committed"] = committed;
    return d;
  }

  /// `nmt --json` (see API.md, docs/hotspot-nmt.md).
  py::dict nmt(bool detail) {
    if (!t_) throw Error("target is closed");
    ptmalloc::Heap* h = nullptr;
    std::string heap_error;
    try {
      h = &heap();
    } catch (const Error& e) {
      heap_error = e.what();
    }
    hotspot::Nmt n;
    {
      py::gil_scoped_release nogil;
      n = hotspot::read_nmt(*t_, h, detail);
    }
    if (!heap_error.empty()) n.diags.note("glibc malloc state: " + heap_error);
    py::dict d;
    d["level"] = ustr(n.level);
    d["jdk"] = ustr_or_none(n.jdk);
    d["source"] = ustr(n.source);
    d["layout"] = ustr(n.layout);
    d["names_from"] = ustr_or_none(n.names_from);
    py::dict jvm;
    jvm["path"] = ustr_or_none(n.libjvm);
    jvm["base"] = n.libjvm_base;
    jvm["build_id"] = ustr(n.build_id);
    jvm["symbols"] = ustr_or_none(n.symbols_file);
    d["libjvm"] = jvm;
    py::list cats;
    for (const auto& r : n.rows) {
      py::dict c;
      c["name"] = ustr(r.name);
      c["reserved"] = r.reserved;
      c["committed"] = r.committed;
      c["malloc"] = counter_dict(r.malloc, r.malloc_peak);
      c["arena"] = counter_dict(r.arena, r.arena_peak);
      c["mmap"] = rc(r.mmap_reserved, r.mmap_committed);
      if (r.mmap_peak) c["mmap"]["peak"] = *r.mmap_peak;
      if (r.stack_reserved) c["stack"] = rc(*r.stack_reserved, *r.stack_committed);
      if (r.stack_reserved && r.stack_peak) c["stack"]["peak"] = *r.stack_peak;
      if (r.stack_reserved && r.stack_committed_now) c["stack"]["committed_now"] = *r.stack_committed_now;
      if (r.committed_now) c["committed_now"] = *r.committed_now;
      if (r.stack_reserved) c["threads"] = r.threads ? py::object(py::int_(*r.threads)) : py::object(py::none());
      if (r.tracking_overhead) c["tracking_overhead"] = *r.tracking_overhead;
      cats.append(c);
    }
    d["categories"] = cats;
    d["thread_stacks"] = n.stacks ? py::object(stacks_dict(*n.stacks)) : py::object(py::none());
    py::dict total = rc(n.total_reserved, n.total_committed);
    if (n.stacks) total["committed_now"] = n.total_committed_now;
    total["malloc"] = counter_dict(n.total_malloc, std::nullopt);
    total["mmap"] = rc(n.total_mmap_reserved, n.total_mmap_committed);
    d["total"] = total;
    d["untracked_malloc"] =
        n.headers_walked ? py::object(counter_dict(n.untracked, std::nullopt)) : py::object(py::none());
    py::list raw;
    for (const auto& c : n.raw) {
      py::dict x;
      x["name"] = ustr(c.name);
      x["malloc"] = counter_dict(c.malloc, c.malloc_peak);
      x["arena"] = counter_dict(c.arena, c.arena_peak);
      x["mmap"] = rc(c.vm_reserved, c.vm_committed);
      raw.append(x);
    }
    d["raw"] = raw;
    d["all_mallocs"] = n.tables ? py::object(counter_dict(n.all_mallocs, std::nullopt)) : py::object(py::none());
    if (n.headers_walked) {
      py::dict hd;
      hd["layout"] = ustr(n.header_layout);
      py::list hc;
      for (size_t i = 0; i < n.headers.size(); ++i) {
        if (!n.headers[i].count) continue;
        py::dict x;
        x["index"] = i;
        x["name"] =
            ustr(i < n.raw.size() ? n.raw[i].name : (i < n.names.size() ? n.names[i] : "type " + std::to_string(i)));
        x["bytes"] = n.headers[i].bytes;
        x["count"] = n.headers[i].count;
        hc.append(x);
      }
      hd["categories"] = hc;
      hd["chunks"] = counter_dict(n.header_chunks, std::nullopt);
      py::list us;
      for (const auto& [size, count] : n.untracked_sizes) {
        py::dict x;
        x["size"] = size;
        x["count"] = count;
        us.append(x);
      }
      hd["untracked_sizes"] = us;
      d["headers"] = hd;
    } else {
      d["headers"] = py::none();
    }
    if (n.glibc_ok) {
      py::dict g;
      g["arenas"] = n.glibc.arenas;
      g["system"] = n.glibc.system;
      g["in_use"] = n.glibc.in_use;
      g["in_use_count"] = n.glibc.in_use_count;
      g["free"] = n.glibc.free;
      g["top"] = n.glibc.top;
      g["mmapped"] = n.glibc.mmapped;
      g["mmapped_count"] = n.glibc.mmapped_count;
      g["heap_reserve_tail"] = n.glibc.heap_reserve_tail;
      d["glibc"] = g;
    } else {
      d["glibc"] = py::none();
    }
    // Reconciliation of the address space (mapped bytes), line by line.
    py::list rec;
    auto line = [&](const char* what, int64_t bytes, const std::string& note = "") {
      py::dict x;
      x["what"] = ustr(what);
      x["bytes"] = bytes;
      if (!note.empty()) x["note"] = note;
      rec.append(x);
    };
    if (n.found_jvm) {
      int64_t nmt_vm = static_cast<int64_t>(n.total_mmap_reserved);
      int64_t glibc_sys = n.glibc_ok ? static_cast<int64_t>(n.glibc.system) : 0;
      int64_t glibc_mm = n.glibc_ok ? static_cast<int64_t>(n.glibc.mmapped) : 0;
      for (const auto& r : n.rows)
        if (r.mmap_reserved || r.stack_reserved)
          line(r.name.c_str(), static_cast<int64_t>(r.mmap_reserved + r.stack_reserved.value_or(0)));
      line("glibc arenas (system bytes)", glibc_sys);
      int64_t tail = n.glibc_ok ? static_cast<int64_t>(n.glibc.heap_reserve_tail) : 0;
      line("glibc heaps reserved beyond system bytes", tail);
      line("glibc mmapped chunks", glibc_mm);
      // NMT's regions that map files (the CDS archive) are in NMT's lines already; what NMT
      // reserves in anonymous memory comes out of the anonymous total (by region when the
      // region list was read, else NMT's total less the files known to be NMT's).
      int64_t in_files = static_cast<int64_t>(n.nmt_in_files);
      int64_t in_anon = n.nmt_by_region ? static_cast<int64_t>(n.nmt_in_anon) : nmt_vm - in_files;
      line("mapped files", static_cast<int64_t>(n.mapped_files) - in_files,
           in_files ? "not counting " + std::to_string(in_files) +
                          " bytes of files mapped inside NMT's regions (the CDS archive), counted above"
                    : "");
      int64_t other = static_cast<int64_t>(n.mapped_anon) - in_anon - glibc_sys - tail - glibc_mm;
      int64_t unmapped = n.nmt_by_region ? nmt_vm - in_files - in_anon : 0;
      std::string why;
      if (other < 0)
        why = "the figures above exceed the anonymous mappings by " + std::to_string(-other) +
              " bytes (shown as 0): glibc's or NMT's accounting covers memory the address space no longer maps";
      if (unmapped > 0)
        why += std::string(why.empty() ? "" : "; ") + "NMT's regions include " + std::to_string(unmapped) +
               " bytes that are not mapped, so the lines add up to more than the total";
      line("other anonymous", std::max<int64_t>(other, 0), why);
      line("total mapped", static_cast<int64_t>(n.mapped));
    }
    d["reconciliation"] = rec;
    py::list sites;
    for (const auto& s : n.sites) {
      py::dict x;
      x["frames"] = frames_list(s.stack);
      x["category"] = ustr(s.index < n.raw.size() ? n.raw[s.index].name : std::to_string(s.index));
      x["bytes"] = s.counter.bytes;
      x["count"] = s.counter.count;
      sites.append(x);
    }
    py::list regions;
    for (const auto& r : n.regions) {
      py::dict x;
      x["base"] = r.base;
      x["size"] = r.size;
      x["committed"] = r.committed;
      x["category"] = ustr(r.index < n.raw.size() ? n.raw[r.index].name : std::to_string(r.index));
      x["frames"] = frames_list(r.stack);
      py::list committed;
      for (const auto& c : r.committed_regions) {
        py::dict y;
        y["base"] = c.base;
        y["size"] = c.size;
        y["frames"] = frames_list(c.stack);
        committed.append(y);
      }
      x["committed_regions"] = committed;
      regions.append(x);
    }
    if (detail) {
      d["sites"] = sites;
      d["regions"] = regions;
    }
    py::dict out;
    out["schema"] = kSchema;
    out["nmt"] = d;
    out["diagnostics"] = diagnostics_list({&t_->diagnostics(), h ? &h->diagnostics() : &empty_, &n.diags});
    return out;
  }

  void close() {
    for (auto& w : streams_)
      if (auto s = w.lock()) s->stop();
    streams_.clear();
    modules_.reset();
    heap_.reset();
    if (t_) t_->close();
    t_.reset();
  }

  target::Target& target() {
    if (!t_) throw Error("target is closed");
    return *t_;
  }

  std::unique_ptr<target::Target> t_;
  std::unique_ptr<ptmalloc::Heap> heap_;
  std::unique_ptr<target::ModuleIndex> modules_;

  // ---- classify (issue 5) ----
  py::dict classify(std::optional<uint64_t> arena, bool free_chunks, std::optional<uint64_t> top,
                    const std::string& list = "", uint64_t list_limit = 0) {
    const auto* only = select(arena);
    auto& h = heap();
    analysis::ClassifyResult res;
    {
      py::gil_scoped_release nogil;
      if (!modules_) modules_ = std::make_unique<target::ModuleIndex>(*t_);
      analysis::ClassifyOptions opt;
      opt.arena = only;
      opt.free_chunks = free_chunks;
      opt.list = list;
      opt.list_limit = list_limit;
      res = analysis::classify(h, *t_, *modules_, opt);
    }
    py::dict out = bindings::classify_doc(res, free_chunks, top, list, 16);
    out["diagnostics"] = diags();
    return out;
  }

  // ---- chunk inspection (issue 15: ptmalloc/inspect.h) ----
  py::dict chunk_fields(uint64_t chunk, uint64_t size, const std::string& state, uint64_t dump) {
    auto& h = heap();
    ptmalloc::ChunkFields f;
    {
      py::gil_scoped_release nogil;
      f = ptmalloc::chunk_fields(h, *t_, chunk, size, bindings::parse_state(state), dump);
    }
    return bindings::fields_dict(f);
  }
  py::dict describe_address(uint64_t addr) {
    if (!t_) throw Error("target is closed");
    return bindings::address_dict(ptmalloc::describe_address(*t_, addr));
  }
  py::dict vis(std::optional<uint64_t> from, std::optional<uint64_t> arena, uint64_t count, uint64_t per_chunk) {
    const auto* only = select(arena);
    auto& h = heap();
    std::vector<ptmalloc::VisChunk> v;
    {
      py::gil_scoped_release nogil;
      v = ptmalloc::vis_chunks(h, *t_, from, only, count, per_chunk);
    }
    py::dict out;
    out["schema"] = kSchema;
    out["chunks"] = bindings::vis_list(v);
    out["diagnostics"] = diags();
    return out;
  }
  py::dict try_free(uint64_t mem, std::optional<int> lwp) {
    auto& h = heap();
    ptmalloc::FreeVerdict v;
    {
      py::gil_scoped_release nogil;
      v = ptmalloc::try_free(h, *t_, mem, lwp);
    }
    py::dict out = bindings::free_dict(v);
    out["schema"] = kSchema;
    out["glibc"] = ustr(h.glibc().version);
    out["diagnostics"] = diags();
    return out;
  }
  // ---- leaks (issue 5: conservative reachability) ----
  py::dict leaks(std::optional<uint64_t> arena, std::optional<uint64_t> limit, bool largest, bool anon_roots) {
    const auto* only = select(arena);
    auto& h = heap();
    analysis::ReachResult res;
    std::vector<uint64_t> leaked_addrs;
    std::vector<analysis::ClassRow> leaked_classes;
    {
      py::gil_scoped_release nogil;
      analysis::ReachOptions opt;
      opt.arena = only;
      opt.limit = limit.value_or(0);
      opt.largest = largest;
      opt.anon_roots = anon_roots;
      opt.all_leaked = &leaked_addrs;
      res = analysis::find_leaks(h, *t_, opt);
      // What the leaked chunks hold, by the classifier (issue 5: "leaked ... with classes").
      if (!leaked_addrs.empty()) {
        if (!modules_) modules_ = std::make_unique<target::ModuleIndex>(*t_);
        std::sort(leaked_addrs.begin(), leaked_addrs.end());
        analysis::ClassifyOptions copt;
        copt.arena = only;
        copt.only_chunks = &leaked_addrs;
        leaked_classes = analysis::classify(h, *t_, *modules_, copt).used;
      }
    }
    py::dict out = bindings::leaks_doc(res, leaked_classes, anon_roots, 16);
    out["diagnostics"] = diags_plus(res.diagnostics);
    return out;
  }
  // ---- retention and report (issue 6) ----
  static py::dict residency_dict(const analysis::Residency& r, const std::string& source) {
    py::dict d;
    if (source == "pagemap") {
      d["resident"] = r.resident;
      d["swapped"] = r.swapped;
      d["absent"] = r.absent;
    } else if (source == "core") {
      d["zero"] = r.zero;
      d["unsaved"] = r.unsaved;
    }
    return d;
  }

  static void figures_into(py::dict& d, const analysis::Figures& f, const std::string& source) {
    d["free_bytes"] = f.free();
    // What malloc_trim(0) would give back now: live, the resident and swapped pages of its
    // ranges (pages already released or never touched give nothing back); else all of them.
    uint64_t trimmable = source == "pagemap" ? f.trim.resident + f.trim.swapped : f.trimmable();
    d["trimmable_bytes"] = trimmable;
    d["tcache_bytes"] = f.tcache;
    d["top_bytes"] = f.top;
    d["fastbin_bytes"] = f.fast;
    d["bin_bytes"] = f.binned;
    d["in_use_bytes"] = f.in_use;
    d["trim_range_bytes"] = f.trimmable();
    d["trim_chunk_bytes"] = f.trim_chunks;
    d["trim_top_bytes"] = f.trim_top;
    d["fragment_bytes"] = f.fragments;
    d["top_kept_bytes"] = f.top_kept;
    d["consolidated_into_top_bytes"] = f.into_top;
    d["released_bytes"] =
        source == "pagemap" ? py::object(py::int_(f.trim.absent + f.kept.absent)) : py::object(py::none());
    py::dict res;
    res["trim_ranges"] = residency_dict(f.trim, source);
    res["top_kept_pages"] = residency_dict(f.kept, source);
    d["residency"] = res;
  }

  py::dict retention_dict(const analysis::Retention& r) {
    const auto& p = heap().params();
    py::dict d;
    figures_into(d, r.total, r.residency);
    d["residency_source"] = ustr(r.residency);
    d["residency_detail"] = ustr(r.residency_detail);
    d["page_size"] = r.page;
    py::dict params;
    params["trim_threshold"] = p.trim_threshold;
    params["top_pad"] = p.top_pad;
    params["mmap_threshold"] = p.mmap_threshold;
    params["arena_max"] = p.arena_max;
    params["arena_test"] = p.arena_test;
    params["heap_max"] = p.heap_max;
    params["no_dyn_threshold"] = opt(p.no_dyn_threshold);
    params["mmap_max"] = p.n_mmaps_max;
    d["params"] = params;
    py::list arenas;
    for (const auto& a : r.arenas) {
      py::dict x;
      x["address"] = a.address;
      x["index"] = a.index;
      x["main"] = a.main;
      x["system_bytes"] = a.system;
      x["threads"] = a.threads;
      x["attached_threads"] = opt(a.attached_threads);
      x["top_trimmed_by_malloc_trim"] = a.main && a.contiguous;
      figures_into(x, a.f, r.residency);
      py::list heaps;
      for (const auto& hr : a.heaps) {
        py::dict y;
        y["address"] = hr.address;
        y["size"] = hr.size;
        y["reserved"] = hr.reserved;
        figures_into(y, hr.f, r.residency);
        heaps.append(y);
      }
      x["heaps"] = heaps;
      arenas.append(x);
    }
    d["arenas"] = arenas;
    return d;
  }

  static py::dict pressure_dict(const analysis::Pressure& p) {
    py::dict d;
    d["arenas"] = p.arenas;
    d["limit"] = opt(p.limit);
    d["limit_source"] = ustr(p.limit_source);
    d["cores"] = p.cores ? py::object(py::int_(*p.cores)) : py::object(py::none());
    d["cores_source"] = ustr(p.cores_source);
    d["narenas"] = opt(p.narenas);
    d["threads"] = p.threads;
    d["max_threads_per_arena"] = p.max_threads_per_arena;
    d["heaps"] = p.heaps;
    d["heap_bytes"] = p.heap_bytes;
    d["heap_reserved_bytes"] = p.heap_reserved;
    return d;
  }

  py::list diags_plus(const Diagnostics& extra) {
    return diagnostics_list({&t_->diagnostics(), heap_ ? &heap_->diagnostics() : &empty_, &extra});
  }

  /// `retention --json` (API.md): free memory by where it sits and what malloc_trim(0) returns.
  py::dict retention(bool residency) {
    auto& h = heap();
    analysis::Retention r;
    {
      py::gil_scoped_release nogil;
      analysis::RetentionOptions o;
      o.residency = residency;
      r = analysis::compute_retention(h, *t_, o);
    }
    py::dict out;
    out["schema"] = kSchema;
    out["retention"] = retention_dict(r);
    out["pressure"] = pressure_dict(r.pressure);
    out["diagnostics"] = diags_plus(r.notes);
    return out;
  }

  /// `report --json` engine part: retention, pressure, the mappings reconciled by group, the
  /// glibc split and (with a JVM) NMT's summary. Python adds classes and the verdict.
  py::dict report(bool residency) {
    if (!t_) throw Error("target is closed");
    auto& h = heap();
    analysis::Retention r;
    analysis::Mappings m;
    hotspot::Nmt n;
    std::vector<analysis::AllocRetention> others;
    std::vector<analysis::OwnedRange> owned;
    Diagnostics others_notes;
    bool jvm = false;
    for (const auto& mod : t_->modules())
      if (mod.path.find("libjvm.so") != std::string::npos) jvm = true;
    {
      py::gil_scoped_release nogil;
      analysis::RetentionOptions o;
      o.residency = residency;
      if (jvm) n = hotspot::read_nmt(*t_, &h, true);
      others = analysis::compute_alloc_retention(*t_, others_notes);  // jemalloc, tcmalloc (issue 16)
      for (const auto& a : others) owned.insert(owned.end(), a.ranges.begin(), a.ranges.end());
      m = analysis::reconcile_mappings(&h, *t_, jvm && n.found_jvm ? &n : nullptr, &owned);
      r = analysis::compute_retention(h, *t_, o);
    }
    py::dict out;
    out["schema"] = kSchema;
    out["target"] = describe_short();
    out["retention"] = retention_dict(r);
    out["pressure"] = pressure_dict(r.pressure);
    out["allocator"] = "ptmalloc";  // the malloc owner; "allocators": the others' part
    for (const auto& a : others)
      if (a.owns_malloc) out["allocator"] = alloc::kind_name(a.kind);
    out["allocators"] = bindings::alloc_report(others);
    py::dict g;
    uint64_t system = 0, mmapped = h.mmapped().mmapped_mem;
    for (const auto& a : h.arenas()) system += a.system_mem;
    g["version"] = ustr(h.glibc().version);
    g["system_bytes"] = system;
    g["mmapped_bytes"] = mmapped;
    g["mmapped_count"] = h.mmapped().n_mmaps;
    g["in_use_bytes"] = r.total.in_use;  // chunks in use (tcache, free lists, top excluded)
    g["free_bytes"] = r.total.free();
    g["glibc_in_use_bytes"] = system - (r.total.fast + r.total.binned + r.total.top);  // mallinfo2 uordblks
    out["glibc"] = g;
    py::dict maps;
    maps["mapped_bytes"] = m.mapped;
    maps["writable_bytes"] = m.writable;
    maps["footprint_bytes"] = m.footprint;
    maps["resident_bytes"] = opt(m.resident);
    maps["resident_source"] = ustr(m.resident_source);
    py::list groups;
    for (const auto& x : m.groups) {
      py::dict y;
      y["label"] = ustr(x.label);
      y["kind"] = ustr(x.kind);
      y["mapped_bytes"] = x.mapped;
      y["writable_bytes"] = x.writable;
      y["resident_bytes"] = opt(x.resident);
      y["regions"] = x.regions;
      y["arena"] = opt(x.arena);
      groups.append(y);
    }
    maps["groups"] = groups;
    out["mappings"] = maps;
    if (jvm && n.found_jvm) {
      py::dict j;
      j["level"] = ustr(n.level);
      j["jdk"] = ustr(n.jdk);
      py::list cats;
      for (const auto& row : n.rows) {
        py::dict c;
        c["name"] = ustr(row.name);
        c["reserved"] = row.reserved;
        c["committed"] = row.committed;
        if (row.committed_now) c["committed_now"] = *row.committed_now;
        c["malloc"] = row.malloc.bytes;
        cats.append(c);
      }
      j["categories"] = cats;
      j["total_reserved"] = n.total_reserved;
      j["total_committed"] = n.total_committed;
      if (n.stacks) j["total_committed_now"] = n.total_committed_now;
      j["thread_stacks"] = n.stacks ? py::object(stacks_dict(*n.stacks)) : py::object(py::none());
      j["malloc_bytes"] = n.total_malloc.bytes;
      j["untracked_malloc"] =
          n.headers_walked ? py::object(counter_dict(n.untracked, std::nullopt)) : py::object(py::none());
      for (const auto& a : others)  // jemalloc/tcmalloc answers malloc: its allocations too (issue 16)
        if (a.owns_malloc && a.nmt && a.nmt->canary) {
          hotspot::Counter c = n.headers_walked ? n.untracked : hotspot::Counter{};
          c.count += a.nmt->untracked_count;
          c.bytes += a.nmt->untracked_bytes;
          j["untracked_malloc"] = counter_dict(c, std::nullopt);
        }
      out["nmt"] = j;
    } else {
      out["nmt"] = py::none();
    }
    Diagnostics extra;
    extra.append(r.notes);
    extra.append(m.notes);
    if (jvm) extra.append(n.diags);
    extra.append(others_notes);
    for (const auto& a : others) extra.append(a.notes);
    out["diagnostics"] = diags_plus(extra);
    return out;
  }

  py::dict describe_short() {
    py::dict d;
    const char* kinds[] = {"core", "live", "callback", "buffer"};
    d["kind"] = kinds[static_cast<int>(t_->kind())];
    d["path"] = t_->path().empty() ? py::object(py::none()) : py::object(ustr(t_->path()));
    d["pid"] = t_->pid() ? py::object(py::int_(t_->pid())) : py::object(py::none());
    d["threads"] = t_->threads().size();
    if (const auto* c = t_->capture_stats()) {
      d["frozen_seconds"] = c->frozen_seconds;
      d["copied_bytes"] = c->copied_bytes;
      d["capture"] = capture_dict(*c);
    }
    return d;
  }
  std::string version_hint_;
  Diagnostics empty_;
  std::vector<std::weak_ptr<bindings::ChunkStream>> streams_;
};

/// `Target.chunk_stream()`: batches of (address, size, state, arena, heap) tuples.
struct PyChunkStream {
  std::shared_ptr<bindings::ChunkStream> s;
  PyTarget* t;
  bool ended = false;

  py::list next() {
    if (ended) throw py::stop_iteration();
    if (t->closed()) throw Error("target is closed");
    std::vector<bindings::ChunkRow> rows;
    {
      py::gil_scoped_release nogil;
      rows = s->next();
    }
    if (rows.empty()) {
      ended = true;
      throw py::stop_iteration();
    }
    static const ptmalloc::ChunkState kStates[] = {
        ptmalloc::ChunkState::Used,     ptmalloc::ChunkState::Tcache,  ptmalloc::ChunkState::Fastbin,
        ptmalloc::ChunkState::Unsorted, ptmalloc::ChunkState::Small,   ptmalloc::ChunkState::Large,
        ptmalloc::ChunkState::Top,      ptmalloc::ChunkState::Mmapped, ptmalloc::ChunkState::Fencepost};
    py::object names[std::size(kStates)];
    for (size_t i = 0; i < std::size(kStates); ++i) names[i] = py::str(ptmalloc::state_name(kStates[i]));
    py::list out(rows.size());
    const ptmalloc::Arena* last_arena = nullptr;
    py::object arena_obj = py::none();
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      if (r.arena != last_arena || i == 0) {
        last_arena = r.arena;
        arena_obj = r.arena ? py::object(py::int_(r.arena->address)) : py::object(py::none());
      }
      py::object heap_obj = r.arena && r.heap < r.arena->heaps.size()
                                ? py::object(py::int_(r.arena->heaps[r.heap].address))
                                : py::object(py::none());
      out[i] = py::make_tuple(r.address, r.size, names[static_cast<size_t>(r.state)], arena_obj, heap_obj);
    }
    return out;
  }
};

/// `Target.free_list_stream()`: one fastbin's (addresses) or bin's ((address, size) tuples) chunks.
struct PyFreeListStream {
  PyTarget* t;
  const ptmalloc::Arena* arena;
  const ptmalloc::FreeList* list;
  bool fast;
  size_t batch;
  ptmalloc::ListCursor at;

  py::list next() {
    if (t->closed()) throw Error("target is closed");
    std::vector<ptmalloc::FreeChunk> cs;
    {
      py::gil_scoped_release nogil;
      cs = t->heap().list_chunks(*arena, *list, at, batch);
    }
    if (cs.empty()) throw py::stop_iteration();
    py::list out(cs.size());
    for (size_t i = 0; i < cs.size(); ++i)
      out[i] = fast ? py::object(py::int_(cs[i].address)) : py::object(py::make_tuple(cs[i].address, cs[i].size));
    return out;
  }
};

void apply_overrides(target::Target& t, const std::optional<py::dict>& ov) {
  if (!ov) return;
  auto get = [&](const char* k) -> std::optional<uint64_t> {
    if (!ov->contains(k) || (*ov)[k].is_none()) return std::nullopt;
    return (*ov)[k].cast<uint64_t>();
  };
  t.overrides().main_arena = get("main_arena");
  t.overrides().mp = get("mp_");
  t.overrides().tcache_key = get("tcache_key");
  if (ov->contains("no_files")) t.overrides().no_files = (*ov)["no_files"].cast<bool>();
}

std::string version_override(const std::optional<py::dict>& ov) {
  if (!ov || !ov->contains("glibc_version") || (*ov)["glibc_version"].is_none()) return "";
  return (*ov)["glibc_version"].cast<std::string>();
}

std::vector<target::Thread> threads_from(const std::optional<py::list>& l) {
  std::vector<target::Thread> out;
  if (!l) return out;
  for (auto item : *l) {
    auto d = item.cast<py::dict>();
    target::Thread t;
    t.lwp = d["lwp"].cast<int>();
    if (d.contains("fs_base") && !d["fs_base"].is_none()) t.fs_base = d["fs_base"].cast<uint64_t>();
    if (d.contains("rsp") && !d["rsp"].is_none()) t.rsp = d["rsp"].cast<uint64_t>();
    if (d.contains("regs") && !d["regs"].is_none()) {  // 27 words, user_regs_struct order
      auto regs = d["regs"].cast<std::vector<uint64_t>>();
      if (regs.size() == t.regs.size()) {
        std::copy(regs.begin(), regs.end(), t.regs.begin());
        t.has_regs = true;
      }
    }
    if (d.contains("tcache") && !d["tcache"].is_none()) t.tcache = d["tcache"].cast<uint64_t>();
    if (d.contains("arena") && !d["arena"].is_none()) t.arena = d["arena"].cast<uint64_t>();
    out.push_back(t);
  }
  return out;
}

py::dict layout_dict(const ptmalloc::Layout& l) {
  py::dict d;
  d["name"] = ustr(l.name);
  d["last"] = ustr(l.last);
  d["source"] = ustr(l.source);
#define F(x) d[#x] = l.x
  F(ms_size);
  F(ms_fastbins);
  F(ms_top);
  F(ms_last_remainder);
  F(ms_bins);
  F(ms_next);
  F(ms_next_free);
  F(ms_attached_threads);
  F(ms_system_mem);
  F(ms_max_system_mem);
  F(hi_size);
  F(hi_ar_ptr);
  F(hi_prev);
  F(hi_heap_size);
  F(hi_mprotect_size);
  F(mp_size);
  F(mp_trim_threshold);
  F(mp_top_pad);
  F(mp_mmap_threshold);
  F(mp_arena_test);
  F(mp_arena_max);
  F(mp_n_mmaps);
  F(mp_n_mmaps_max);
  F(mp_max_n_mmaps);
  F(mp_mmapped_mem);
  F(mp_max_mmapped_mem);
  F(mp_sbrk_base);
  F(mp_tcache_bins);
  F(mp_tcache_max_bytes);
  F(mp_tcache_count);
  F(tc_counts);
  F(tc_entries);
  F(tc_size);
  F(te_next);
  F(te_key);
  F(tcache_bins);
  F(tcache_count_width);
  F(nfastbins);
  F(nbins);
#undef F
  return d;
}

PyObject* g_error = nullptr;
PyObject* g_format = nullptr;
PyObject* g_fault = nullptr;
PyObject* g_symbol = nullptr;

void raise_with(PyObject* cls, const char* msg, const char* attr, py::object value) {
  py::object inst = py::reinterpret_borrow<py::object>(cls)(ustr(msg));
  if (attr) inst.attr(attr) = value;
  PyErr_SetObject(cls, inst.ptr());
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "heapwalk engine: glibc malloc arenas from cores and live processes";
  g_error = PyErr_NewException("heapwalk._native.Error", PyExc_RuntimeError, nullptr);
  g_format = PyErr_NewException("heapwalk._native.FormatError", g_error, nullptr);
  g_fault = PyErr_NewException("heapwalk._native.FaultError", g_error, nullptr);
  g_symbol = PyErr_NewException("heapwalk._native.SymbolError", g_error, nullptr);
  m.attr("Error") = py::handle(g_error);
  m.attr("FormatError") = py::handle(g_format);
  m.attr("FaultError") = py::handle(g_fault);
  m.attr("SymbolError") = py::handle(g_symbol);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Cancelled&) {
      PyErr_SetNone(PyExc_KeyboardInterrupt);
    } catch (const FormatError& e) {
      raise_with(g_format, e.what(), "path", ustr(e.path));
    } catch (const Fault& e) {
      py::object inst = py::reinterpret_borrow<py::object>(g_fault)(ustr(e.what()));
      inst.attr("address") = e.address;
      inst.attr("size") = e.size;
      PyErr_SetObject(g_fault, inst.ptr());
    } catch (const SymbolError& e) {
      raise_with(g_symbol, e.what(), "symbol", ustr(e.symbol));
    } catch (const Error& e) {
      raise_with(g_error, e.what(), nullptr, py::none());
    } catch (const std::bad_alloc&) {
      raise_with(g_error, "out of memory", nullptr, py::none());
    }
  });

  bindings::register_alloc_types(m);
  py::class_<PyChunkStream>(m, "ChunkStream")
      .def(
          "__iter__", [](PyChunkStream& s) -> PyChunkStream& { return s; }, py::return_value_policy::reference)
      .def("__next__", &PyChunkStream::next)
      .def_property_readonly("total", [](const PyChunkStream& s) { return s.s->total(); })
      .def_property_readonly("listed", [](const PyChunkStream& s) { return s.s->listed(); })
      .def("diagnostics", [](PyChunkStream& s) {
        if (s.t->closed()) throw Error("target is closed");
        return s.t->diags();
      });
  py::class_<PyFreeListStream>(m, "FreeListStream")
      .def(
          "__iter__", [](PyFreeListStream& s) -> PyFreeListStream& { return s; }, py::return_value_policy::reference)
      .def("__next__", &PyFreeListStream::next);
  py::class_<PyTarget>(m, "Target")
      .def("describe", &PyTarget::describe)
      .def("arenas", &PyTarget::arenas)
      .def("bins", &PyTarget::bins, py::arg("arena") = py::none(), py::arg("chunks") = py::none())
      .def(
          "chunk_stream",
          [](PyTarget& t, std::optional<uint64_t> arena, const std::string& state, std::optional<uint64_t> limit,
             size_t batch) {
            return PyChunkStream{t.chunk_stream(arena, state, limit, batch), &t};
          },
          py::arg("arena") = py::none(), py::arg("state") = "all", py::arg("limit") = py::none(),
          py::arg("batch") = 16384, py::keep_alive<0, 1>())
      .def(
          "free_list_stream",
          [](PyTarget& t, uint64_t arena, bool fast, size_t position, size_t batch) {
            auto [a, fl] = t.free_list(arena, fast, position);
            return PyFreeListStream{&t, a, fl, fast, batch ? batch : 1, {}};
          },
          py::arg("arena"), py::arg("fast"), py::arg("position"), py::arg("batch") = 16384, py::keep_alive<0, 1>())
      .def("tcache", &PyTarget::tcache, py::arg("lwp") = py::none())
      .def("chunks", &PyTarget::chunks, py::arg("arena") = py::none(), py::arg("state") = "all",
           py::arg("limit") = py::none())
      .def("chunk", &PyTarget::chunk, py::arg("addr"))
      .def("size_classes", &PyTarget::size_classes)
      .def("chunk_fields", &PyTarget::chunk_fields, py::arg("chunk"), py::arg("size"), py::arg("state"),
           py::arg("dump") = 64)
      .def("describe_address", &PyTarget::describe_address, py::arg("addr"))
      .def("vis", &PyTarget::vis, py::arg("from") = py::none(), py::arg("arena") = py::none(), py::arg("count") = 10,
           py::arg("per_chunk") = 256)
      .def("try_free", &PyTarget::try_free, py::arg("mem"), py::arg("lwp") = py::none())
      .def("classify", &PyTarget::classify, py::arg("arena") = py::none(), py::arg("free") = false,
           py::arg("top") = py::none(), py::arg("list") = "", py::arg("list_limit") = 0)
      .def("leaks", &PyTarget::leaks, py::arg("arena") = py::none(), py::arg("limit") = py::none(),
           py::arg("largest") = false, py::arg("anon_roots") = false)
      .def("nmt", &PyTarget::nmt, py::arg("detail") = false)
      .def("retention", &PyTarget::retention, py::arg("residency") = true)
      .def("report", &PyTarget::report, py::arg("residency") = true)
      .def("allocators", [](PyTarget& t) { return bindings::allocators(t.open()); })
      .def(
          "jemalloc", [](PyTarget& t, bool allocations) { return bindings::jemalloc(t.open(), allocations); },
          py::arg("allocations") = false)
      .def(
          "jemalloc_chunks",
          [](PyTarget& t, const std::string& state, std::optional<uint64_t> limit) {
            return bindings::jemalloc_chunks(t.open(), state, limit);
          },
          py::arg("state") = "all", py::arg("limit") = py::none())
      .def(
          "alloc_classify",
          [](PyTarget& t, const std::string& allocator, bool free, std::optional<uint64_t> top, const std::string& list,
             uint64_t list_limit) {
            return bindings::alloc_classify(t.open(), t.modules_, allocator, free, top, list, list_limit);
          },
          py::arg("allocator"), py::arg("free") = false, py::arg("top") = py::none(), py::arg("list") = "",
          py::arg("list_limit") = 0)
      .def(
          "alloc_leaks",
          [](PyTarget& t, const std::string& allocator, std::optional<uint64_t> limit, bool largest, bool anon_roots) {
            return bindings::alloc_leaks(t.open(), t.modules_, allocator, limit, largest, anon_roots);
          },
          py::arg("allocator"), py::arg("limit") = py::none(), py::arg("largest") = false,
          py::arg("anon_roots") = false)
      .def(
          "alloc_summary",
          [](PyTarget& t, std::optional<std::string> a) { return bindings::alloc_summary(t.open(), a); },
          py::arg("allocator") = py::none())
      .def(
          "alloc_tcache",
          [](PyTarget& t, std::optional<int> lwp, std::optional<std::string> a) {
            return bindings::alloc_tcache(t.open(), lwp, a);
          },
          py::arg("lwp") = py::none(), py::arg("allocator") = py::none())
      .def(
          "alloc_chunk",
          [](PyTarget& t, uint64_t addr, uint64_t dump, std::optional<std::string> a) {
            return bindings::alloc_chunk(t.open(), addr, dump, a);
          },
          py::arg("addr"), py::arg("dump") = 64, py::arg("allocator") = py::none())
      .def(
          "alloc_chunk_stream",
          [](py::object self, const std::string& state, std::optional<uint64_t> limit, size_t batch,
             std::optional<std::string> a) {
            return bindings::alloc_chunk_stream(self, self.cast<PyTarget&>().open(), state, limit, batch, a);
          },
          py::arg("state") = "all", py::arg("limit") = py::none(), py::arg("batch") = 16384,
          py::arg("allocator") = py::none())
      .def("close", &PyTarget::close)
      .def("tcmalloc", [](PyTarget& t) { return bindings::tcmalloc_summary(t.target()); })
      .def(
          "tcmalloc_allocations",
          [](PyTarget& t, const std::string& state) { return bindings::tcmalloc_allocations(t.target(), state); },
          py::arg("state") = "in-use")
      .def(
          "__enter__", [](PyTarget& t) -> PyTarget& { return t; }, py::return_value_policy::reference)
      .def("__exit__", [](PyTarget& t, py::args) {
        t.close();
        return false;
      });

  m.def(
      "open_core",
      [](const std::string& path, std::optional<std::string> sysroot, std::optional<py::dict> overrides) {
        std::unique_ptr<target::Target> t;
        {
          py::gil_scoped_release nogil;
          t = target::Target::open_core(path, sysroot.value_or(""));
        }
        apply_overrides(*t, overrides);
        auto pt = std::make_unique<PyTarget>(std::move(t));
        pt->version_hint_ = version_override(overrides);
        return pt;
      },
      py::arg("path"), py::arg("sysroot") = py::none(), py::arg("overrides") = py::none());
  m.def(
      "attach",
      [](int pid, std::optional<py::list> threads, std::optional<py::dict> overrides,
         std::optional<std::string> sysroot, bool capture, bool java_heap, std::optional<uint64_t> max_copy,
         std::optional<std::string> snapshot, std::optional<std::string> tmpdir, std::string store) {
        if (store != "auto" && store != "memory" && store != "file")
          throw py::value_error("store must be 'auto', 'memory' or 'file', not '" + store + "'");
        auto th = threads_from(threads);
        std::unique_ptr<target::Target> t;
        {
          py::gil_scoped_release nogil;
          if (capture || snapshot) {
            memory::CaptureOptions opt;
            opt.out = snapshot.value_or("");
            opt.tmpdir = tmpdir.value_or("");
            opt.max_bytes = max_copy.value_or(0);
            opt.store = store == "memory" ? memory::CaptureStore::Memory
                        : store == "file" ? memory::CaptureStore::File
                                          : memory::CaptureStore::Auto;
            if (!java_heap) {
              // Where the Java heap is, from the running process (libjvm's vmStructs), so it is
              // not copied: heapwalk never reads it.
              auto probe = target::Target::open_live(pid, sysroot.value_or(""));
              if (auto jh = hotspot::java_heap(*probe)) opt.exclude.push_back({{jh->start, jh->end}, "the Java heap"});
            }
            t = target::Target::capture(pid, std::move(th), sysroot.value_or(""), std::move(opt));
          } else {
            t = target::Target::attach(pid, std::move(th), sysroot.value_or(""));
          }
        }
        apply_overrides(*t, overrides);
        auto pt = std::make_unique<PyTarget>(std::move(t));
        pt->version_hint_ = version_override(overrides);
        return pt;
      },
      py::arg("pid"), py::arg("threads") = py::none(), py::arg("overrides") = py::none(),
      py::arg("sysroot") = py::none(), py::arg("capture") = true, py::arg("java_heap") = false,
      py::arg("max_copy") = py::none(), py::arg("snapshot") = py::none(), py::arg("tmpdir") = py::none(),
      py::arg("store") = "auto");
  m.def(
      "open_callback",
      [](py::function read, std::optional<py::list> threads, std::optional<py::dict> overrides,
         std::optional<std::string> glibc_version) {
        auto fn = [read](uint64_t addr, void* out, size_t len) -> size_t {
          py::gil_scoped_acquire gil;
          try {
            py::object r = read(addr, len);
            if (r.is_none()) return 0;
            std::string s = r.cast<py::bytes>();
            size_t n = std::min(s.size(), len);
            std::memcpy(out, s.data(), n);
            return n;
          } catch (py::error_already_set&) {
            return 0;
          }
        };
        auto t = target::Target::from_callback(fn, threads_from(threads));
        apply_overrides(*t, overrides);
        auto pt = std::make_unique<PyTarget>(std::move(t));
        pt->version_hint_ = glibc_version ? *glibc_version : version_override(overrides);
        return pt;
      },
      py::arg("read"), py::arg("threads") = py::none(), py::arg("overrides") = py::none(),
      py::arg("glibc_version") = py::none());
  m.def(
      "layout",
      [](const std::string& version) -> py::object {
        const auto* l = ptmalloc::layout_for(version);
        if (!l) return py::none();
        return layout_dict(*l);
      },
      py::arg("version"));
  m.attr("SCHEMA") = kSchema;
  m.def(
      "diagnostic_kinds",
      [] {
        py::list out;
        for (const auto& k : diagnostic_kinds()) {
          py::dict d;
          d["kind"] = k.kind;
          d["severity"] = severity_name(k.severity);
          d["meaning"] = k.meaning;
          out.append(d);
        }
        return out;
      },
      "Every diagnostic kind: [{kind, severity (note|warning|error), meaning}]; error means the "
      "result is incomplete or may be wrong (exit status 1)");
  m.def(
      "progress",
      [] {
        auto& p = Progress::get();
        return py::make_tuple(ustr(p.phase.load()), p.done.load(), p.total.load());
      },
      "(phase, done, total) of the engine's current long work");
  m.def(
      "cancel", [](bool on) { Progress::get().cancel = on; }, py::arg("on") = true,
      "Ask the engine's current work to stop (it raises KeyboardInterrupt); cancel(False) resets");
}
