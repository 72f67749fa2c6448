// Shared by fuzz_jemalloc and fuzz_tcmalloc (see fuzz/README.md): a sparse process image big
// enough for the allocators' radix trees (a jemalloc rtree root or leaf, a tcmalloc page map root
// or leaf, is 1-2 MiB) and a seed maker that cuts such an image from a real core.
//
//   u8 flags (bit 7: fuzz::kNoDirect), u8 nregions (1..32), u8 nthreads (0..8), u8 reserved
//   u64 module_base, u64 module_end
//   nregions × {u64 address, u32 length (<= 8 MiB), u8 bits (bit 0: the allocator's module maps it)}
//   nthreads × {u64 fs_base, u32 lwp}
//   u8 nmapped (0..64), nmapped × {u64 start, u64 end}: mappings the image declares without bytes
//   (a core's unsaved segments: the models check that an extent or span lies in the target's
//   mappings)
//   patches to the end: {u8 region, u32 offset, u16 length, length bytes}
//
// Every region starts zero-filled (at most 48 MiB in all; overlapping regions are dropped); the
// patches write the non-zero bytes. Seeds: with HEAPWALK_FUZZ_SEED=CORE:OUT in the environment the
// target opens CORE, runs its model over it with every read recorded (no files: the symbol-free
// search), writes the bytes it read as such an image to OUT and exits (fuzz/make_seeds.py
// --alloc-fuzzers).
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>

#include "alloc/model.h"
#include "fuzz_common.h"

namespace fuzz {

constexpr uint64_t kMaxAllocRegion = 8 << 20, kMaxAllocImage = 48 << 20;

/// The image's bytes (a BufferSource) plus mappings declared without bytes: regions() lists the
/// union of both (module regions as they are), read() serves the bytes only.
class AllocSource : public memory::MemorySource {
 public:
  explicit AllocSource(std::unique_ptr<memory::MemorySource> inner, std::vector<std::pair<uint64_t, uint64_t>> mapped)
      : inner_(std::move(inner)) {
    std::vector<std::pair<uint64_t, uint64_t>> spans = std::move(mapped);
    for (const auto& r : inner_->regions())
      if (r.path.empty()) spans.emplace_back(r.start, r.end);
    std::sort(spans.begin(), spans.end());
    std::vector<std::pair<uint64_t, uint64_t>> merged;
    for (auto [a, e] : spans) {
      if (e <= a) continue;
      if (!merged.empty() && a <= merged.back().second)
        merged.back().second = std::max(merged.back().second, e);
      else
        merged.emplace_back(a, e);
    }
    for (const auto& r : inner_->regions())
      if (!r.path.empty()) regions_.push_back(r);
    for (auto [a, e] : merged) {
      bool clash = false;  // a declared mapping may not cover a module's region
      for (const auto& r : inner_->regions())
        if (!r.path.empty() && r.start < e && a < r.end) clash = true;
      if (clash) continue;
      memory::Region r;
      r.start = a;
      r.end = r.saved_end = e;
      r.read = r.write = true;
      regions_.push_back(r);
    }
    std::sort(regions_.begin(), regions_.end(),
              [](const memory::Region& x, const memory::Region& y) { return x.start < y.start; });
  }
  size_t read(uint64_t addr, void* out, size_t len) override { return inner_->read(addr, out, len); }
  const std::vector<memory::Region>& regions() const override { return regions_; }

 private:
  std::unique_ptr<memory::MemorySource> inner_;
  std::vector<memory::Region> regions_;
};

struct AllocImage {
  uint8_t flags = 0;
  std::vector<std::pair<uint64_t, uint64_t>> mapped;
  std::unique_ptr<memory::BufferSource> mem = std::make_unique<memory::BufferSource>();
  std::vector<target::Thread> threads;
  target::Module module;
};

inline AllocImage parse_alloc_image(const uint8_t* data, size_t size, const std::string& module_path) {
  AllocImage im;
  Bytes b{data, size};
  im.flags = b.get<uint8_t>();
  unsigned nreg = 1 + b.get<uint8_t>() % 32;
  unsigned nth = b.get<uint8_t>() % 9;
  (void)b.get<uint8_t>();
  im.module.path = module_path;
  im.module.base = b.get<uint64_t>();
  im.module.end = b.get<uint64_t>();
  struct Reg {
    uint64_t addr;
    uint32_t len;
    bool module;
    std::vector<uint8_t> bytes;
  };
  std::vector<Reg> regs;
  uint64_t total = 0;
  for (unsigned i = 0; i < nreg; ++i) {
    Reg r;
    r.addr = b.get<uint64_t>();
    r.len = static_cast<uint32_t>(b.get<uint32_t>() % (kMaxAllocRegion + 1));
    r.module = b.get<uint8_t>() & 1;
    if (r.addr + r.len < r.addr) r.len = 0;
    bool overlaps = false;
    for (const auto& o : regs)
      if (o.len && r.len && r.addr < o.addr + o.len && o.addr < r.addr + r.len) overlaps = true;
    if (overlaps || total + r.len > kMaxAllocImage) r.len = 0;
    total += r.len;
    r.bytes.assign(r.len, 0);
    regs.push_back(std::move(r));
  }
  for (unsigned i = 0; i < nth; ++i) {
    target::Thread t;
    t.fs_base = b.get<uint64_t>();
    t.lwp = static_cast<int>(b.get<uint32_t>() & 0x3fffffff);
    im.threads.push_back(t);
  }
  unsigned nmapped = b.get<uint8_t>() % 65;
  for (unsigned i = 0; i < nmapped; ++i) {
    uint64_t a = b.get<uint64_t>(), e = b.get<uint64_t>();
    im.mapped.emplace_back(a, e);
  }
  while (b.left() >= 7) {
    uint8_t ri = b.get<uint8_t>();
    uint32_t off = b.get<uint32_t>();
    uint16_t len = b.get<uint16_t>();
    size_t k = std::min<size_t>(len, b.left());
    Reg& r = regs[ri % regs.size()];
    if (off < r.len) std::memcpy(r.bytes.data() + off, b.here(), std::min<size_t>(k, r.len - off));
    b.off += k;
  }
  for (auto& r : regs)
    if (r.len) im.mem->add(r.addr, std::move(r.bytes), r.module ? module_path : std::string());
  return im;
}

inline std::unique_ptr<target::Target> alloc_target(AllocImage& im) {
  std::unique_ptr<memory::MemorySource> src;
  if (im.flags & kNoDirect)
    src = std::make_unique<ReadOnlySource>(std::move(im.mem));
  else
    src = std::move(im.mem);
  if (!im.mapped.empty()) src = std::make_unique<AllocSource>(std::move(src), std::move(im.mapped));
  auto t = target::Target::from_source(std::move(src), {im.module}, im.threads);
  t->overrides().no_files = true;
  return t;
}

/// A source that records every range read through it (the seed maker's).
class RecordingSource : public memory::MemorySource {
 public:
  explicit RecordingSource(memory::MemorySource& inner) : inner_(inner) {}
  size_t read(uint64_t addr, void* out, size_t len) override {
    size_t got = inner_.read(addr, out, len);
    if (got) reads.emplace_back(addr, addr + got);
    return got;
  }
  const std::vector<memory::Region>& regions() const override { return inner_.regions(); }
  std::vector<std::pair<uint64_t, uint64_t>> reads;

 private:
  memory::MemorySource& inner_;
};

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof v];
  std::memcpy(b, &v, sizeof v);
  out.insert(out.end(), b, b + sizeof v);
}

/// HEAPWALK_FUZZ_SEED=CORE:OUT: runs `exercise` on CORE's memory, recording what it reads, and
/// writes the image of those bytes to OUT. Returns false when the variable is not set.
inline bool make_alloc_seed(const std::function<bool(const target::Module&)>& is_module,
                            const std::function<void(target::Target&)>& exercise) {
  const char* spec = std::getenv("HEAPWALK_FUZZ_SEED");
  if (!spec) return false;
  std::string s(spec);
  size_t colon = s.rfind(':');
  if (colon == std::string::npos) ::abort();
  auto core = target::Target::open_core(s.substr(0, colon), "");
  const target::Module* mod = nullptr;
  for (const auto& m : core->modules())
    if (is_module(m)) mod = &m;
  if (!mod) {
    std::fprintf(stderr, "seed: the allocator's module is not in %s\n", s.substr(0, colon).c_str());
    std::exit(1);
  }
  auto rec_own = std::make_unique<RecordingSource>(core->memory());
  RecordingSource* rec = rec_own.get();
  std::vector<target::Thread> threads(core->threads().begin(),
                                      core->threads().begin() + std::min<size_t>(core->threads().size(), 8));
  auto t = target::Target::from_source(std::move(rec_own), {*mod}, threads);
  t->overrides().no_files = true;
  exercise(*t);
  // The reads, merged per core region into at most 32 image regions of at most 8 MiB.
  auto reads = rec->reads;
  std::sort(reads.begin(), reads.end());
  const auto& cregs = core->memory().regions();
  struct Out {
    uint64_t start, end;
    bool module;
  };
  std::vector<Out> outs;
  for (auto [a, e] : reads) {
    auto it = std::upper_bound(cregs.begin(), cregs.end(), a,
                               [](uint64_t x, const memory::Region& r) { return x < r.start; });
    if (it == cregs.begin()) continue;
    const memory::Region& cr = *--it;
    if (a >= cr.end) continue;
    e = std::min(e, cr.end);
    bool module = cr.path == mod->path;
    // Within one core region, reads join into one image region of at most 8 MiB (the gaps
    // are zero-filled: memory, not input bytes).
    if (!outs.empty() && outs.back().start >= cr.start && e - outs.back().start <= kMaxAllocRegion) {
      outs.back().end = std::max(outs.back().end, e);
    } else {
      outs.push_back({a, std::min(e, a + kMaxAllocRegion), module});
    }
  }
  // At most 32 regions and 48 MiB: the module's own (and what adjoins them: .bss) first, then
  // the smallest (the allocator's structures; heaps last).
  auto near_module = [&](const Out& o) {
    for (const auto& r : cregs)
      if (r.path == mod->path && (r.end == o.start || (o.start >= r.start && o.start < r.end + (4 << 20)))) return true;
    return o.module;
  };
  std::stable_sort(outs.begin(), outs.end(), [&](const Out& x, const Out& y) {
    bool mx = near_module(x), my = near_module(y);
    if (mx != my) return mx;
    return x.end - x.start < y.end - y.start;  // structures (small) before heaps
  });
  uint64_t total = 0;
  std::vector<Out> kept;
  for (auto& o : outs)
    if (kept.size() < 32 && total + (o.end - o.start) <= kMaxAllocImage) {
      kept.push_back(o);
      total += o.end - o.start;
    }
  std::sort(kept.begin(), kept.end(), [](const Out& x, const Out& y) { return x.start < y.start; });
  // The core's other mappings, declared without bytes (the biggest 64, joined when adjacent).
  std::vector<std::pair<uint64_t, uint64_t>> declared;
  for (const auto& r : cregs) {
    if (r.path == mod->path) continue;
    if (!declared.empty() && declared.back().second == r.start)
      declared.back().second = r.end;
    else
      declared.emplace_back(r.start, r.end);
  }
  std::stable_sort(declared.begin(), declared.end(),
                   [](const auto& x, const auto& y) { return x.second - x.first > y.second - y.first; });
  if (declared.size() > 64) declared.resize(64);
  std::vector<uint8_t> img;
  put<uint8_t>(img, 0);
  put<uint8_t>(img, static_cast<uint8_t>(kept.size() - 1));
  put<uint8_t>(img, static_cast<uint8_t>(threads.size()));
  put<uint8_t>(img, 0);
  put<uint64_t>(img, mod->base);
  put<uint64_t>(img, mod->end);
  for (const auto& o : kept) {
    put<uint64_t>(img, o.start);
    put<uint32_t>(img, static_cast<uint32_t>(o.end - o.start));
    put<uint8_t>(img, o.module ? 1 : 0);
  }
  for (const auto& th : threads) {
    put<uint64_t>(img, th.fs_base);
    put<uint32_t>(img, static_cast<uint32_t>(th.lwp));
  }
  put<uint8_t>(img, static_cast<uint8_t>(declared.size()));
  for (const auto& [a, e] : declared) {
    put<uint64_t>(img, a);
    put<uint64_t>(img, e);
  }
  // Patches: the non-zero 8-byte words, runs joined across gaps shorter than 16 bytes; the
  // module's regions first, and with HEAPWALK_FUZZ_SEED_MAX=N no more once the image has N bytes
  // (small committed seeds; the rest of the image stays zero).
  const char* max_env = std::getenv("HEAPWALK_FUZZ_SEED_MAX");
  size_t max_bytes = max_env ? std::strtoull(max_env, nullptr, 0) : ~size_t{0};
  std::vector<size_t> order(kept.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    bool mx = near_module(kept[x]), my = near_module(kept[y]);
    if (mx != my) return mx;
    return kept[x].end - kept[x].start < kept[y].end - kept[y].start;  // structures before heaps
  });
  for (size_t ri : order) {
    if (img.size() >= max_bytes) break;
    std::vector<uint8_t> bytes(kept[ri].end - kept[ri].start);
    size_t got = core->memory().read(kept[ri].start, bytes.data(), bytes.size());
    bytes.resize(got & ~size_t{7});
    size_t i = 0;
    while (i < bytes.size()) {
      uint64_t w;
      std::memcpy(&w, bytes.data() + i, 8);
      if (!w) {
        i += 8;
        continue;
      }
      size_t j = i + 8, last = j;
      while (j < bytes.size() && j - i < 60000) {
        std::memcpy(&w, bytes.data() + j, 8);
        if (w)
          last = j + 8;
        else if (j - last >= 16)
          break;
        j += 8;
      }
      put<uint8_t>(img, static_cast<uint8_t>(ri));
      put<uint32_t>(img, static_cast<uint32_t>(i));
      put<uint16_t>(img, static_cast<uint16_t>(last - i));
      img.insert(img.end(), bytes.begin() + static_cast<long>(i), bytes.begin() + static_cast<long>(last));
      i = last;
    }
  }
  std::string out = s.substr(colon + 1);
  FILE* f = std::fopen(out.c_str(), "wb");
  if (!f || std::fwrite(img.data(), 1, img.size(), f) != img.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "seed: cannot write %s\n", out.c_str());
    std::exit(1);
  }
  std::fprintf(stderr, "seed: %s: %zu regions, %zu bytes\n", out.c_str(), kept.size(), img.size());
  std::exit(0);
}

/// The allocator-neutral part of a fuzz run over `m`: pools and thread caches, a whole walk (at
/// most 4 M allocations; `check_pool` traps on a pool index out of range, `ordered` on a walk
/// out of address order), find() on one of the first allocations and on the last, find()
/// against the walk (HEAPWALK_FUZZ_CHECK_FIND) and what a seed reaches (HEAPWALK_FUZZ_VERBOSE).
inline uint64_t exercise_model(heapwalk::alloc::Model& m, bool check_pool, bool ordered) {
  uint64_t sum = 0;
  for (const auto& p : m.pools()) sum += p.in_use + p.free + p.stats.size();
  for (const auto& c : m.thread_caches()) sum += c.bytes + c.bins.size();
  uint64_t prev = 0, n = 0, probe[3] = {};
  m.walk([&](const heapwalk::alloc::Allocation& a) {
    sum += a.address ^ a.size ^ static_cast<uint64_t>(a.state);
    if (check_pool && a.pool >= static_cast<int>(m.pools().size())) __builtin_trap();
    if (ordered && a.address < prev) __builtin_trap();  // the walk is in address order
    if (n < 3) probe[n] = a.address + a.size / 2;
    ++n;
    prev = a.address;
    return n < (1u << 22);
  });
  // find() on one of the first allocations and on the last (jemalloc's walks the tree again).
  if (auto f = m.find(probe[n % 3])) sum += f->size;
  (void)m.find(prev);
  if (std::getenv("HEAPWALK_FUZZ_CHECK_FIND")) {  // find() agrees with the walk (intact seeds)
    uint64_t bad = 0;
    m.walk([&](const heapwalk::alloc::Allocation& a) {
      auto f = m.find(a.address + a.size / 2);
      if (!f || f->address != a.address || f->size != a.size || f->state != a.state) {
        if (bad++ < 4)
          std::fprintf(stderr, "walk %llx %llu %d find %llx %llu %d\n", (unsigned long long)a.address,
                       (unsigned long long)a.size, (int)a.state, f ? (unsigned long long)f->address : 0ull,
                       f ? (unsigned long long)f->size : 0ull, f ? (int)f->state : -1);
      }
      return true;
    });
    std::fprintf(stderr, "find disagrees with the walk on %llu allocations\n", static_cast<unsigned long long>(bad));
  }
  if (std::getenv("HEAPWALK_FUZZ_VERBOSE"))  // what a seed reaches: fuzz/README.md
    std::fprintf(stderr, "%zu pools, %zu thread caches, %llu allocations, %zu diagnostics\n", m.pools().size(),
                 m.thread_caches().size(), static_cast<unsigned long long>(n), m.diagnostics().items().size());
  if (std::getenv("HEAPWALK_FUZZ_VERBOSE"))
    for (size_t i = 0; i < m.diagnostics().items().size() && i < 5; ++i)
      std::fprintf(stderr, "  %s: %s\n", m.diagnostics().items()[i].kind.c_str(),
                   m.diagnostics().items()[i].detail.c_str());
  return sum;
}

}  // namespace fuzz
