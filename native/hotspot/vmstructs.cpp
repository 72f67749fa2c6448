#include "hotspot/vmstructs.h"

#include <cstring>
#include <unordered_map>
#include <vector>

#include "hotspot/nmt.h"

namespace heapwalk::hotspot {

namespace {

constexpr uint64_t kMaxEntries = 100000;

class Image {
 public:
  explicit Image(target::Target& t) : t_(t), m_(t.memory()) {}
  bool u64(uint64_t a, uint64_t& v) { return m_.read(a, &v, 8) == 8 || read_image_or_file(t_, a, &v, 8); }
  /// A NUL-terminated name of at most 64 bytes ("" when unreadable or longer).
  const std::string& str(uint64_t a) {
    auto it = cache_.find(a);
    if (it != cache_.end()) return it->second;
    char buf[65] = {};
    size_t n = a ? m_.read(a, buf, 64) : 0;
    // A core does not save read-only file mappings (the names are in libjvm's .rodata): read
    // them from the file (64 bytes, else up to the end of the page, near a mapping's end).
    if (a && strnlen(buf, n) == n) {
      if (read_image_or_file(t_, a, buf, 64))
        n = 64;
      else if (size_t page = 4096 - (a & 4095); page < 64 && read_image_or_file(t_, a, buf, page))
        n = page;
    }
    std::string s;
    size_t len = strnlen(buf, n);
    if (len < n) s.assign(buf, len);
    return cache_.emplace(a, std::move(s)).first->second;
  }

 private:
  target::Target& t_;
  memory::MemorySource& m_;
  std::unordered_map<uint64_t, std::string> cache_;
};

/// Calls visit(type, field, offset, address) for every VMStructEntry of the JVM's table; false
/// (and `why`) when the table is not found.
template <typename F>
bool walk_entries(target::Target& t, Image& img, std::string& why, F&& visit) {
  const target::Module* m = t.find_module([](const std::string& base) { return base == "libjvm.so"; });
  if (!m) return why = "not a JVM", false;
  auto f = t.module_file(*m, true);
  if (!f) return why = m->path + ": not readable (or another build than the process's)", false;
  const uint64_t bias = m->base - f->first_load_vaddr();
  auto global = [&](const char* name, uint64_t& v) {
    auto s = f->symbol(name);
    return s && img.u64(bias + s->value, v);
  };
  uint64_t array = 0, o_type = 0, o_field = 0, o_static = 0, o_offset = 0, o_address = 0, stride = 0;
  if (!global("gHotSpotVMStructs", array) || !global("gHotSpotVMStructEntryTypeNameOffset", o_type) ||
      !global("gHotSpotVMStructEntryFieldNameOffset", o_field) ||
      !global("gHotSpotVMStructEntryIsStaticOffset", o_static) ||
      !global("gHotSpotVMStructEntryOffsetOffset", o_offset) ||
      !global("gHotSpotVMStructEntryAddressOffset", o_address) || !global("gHotSpotVMStructEntryArrayStride", stride))
    return why = "libjvm's vmStructs tables not found", false;
  if (stride < 8 || stride > 256 || o_type >= stride || o_field >= stride || o_offset >= stride ||
      o_address >= stride || o_static >= stride)
    return why = "libjvm's vmStructs entry layout is implausible", false;
  std::vector<uint8_t> e(stride);
  for (uint64_t i = 0; i < kMaxEntries; ++i) {
    uint64_t a = array + i * stride;
    if (t.memory().read(a, e.data(), e.size()) != e.size()) return why = "libjvm's vmStructs array unreadable", false;
    uint64_t tn = 0, fn = 0, off = 0, addr = 0;
    std::memcpy(&tn, e.data() + o_type, 8);
    if (tn == 0) break;
    std::memcpy(&fn, e.data() + o_field, 8);
    std::memcpy(&off, e.data() + o_offset, 8);
    std::memcpy(&addr, e.data() + o_address, 8);
    visit(img.str(tn), fn, off, addr);
  }
  return true;
}

}  // namespace

std::optional<JavaHeap> java_heap(target::Target& t, std::string* why) {
  std::string w;
  auto fail = [&](const std::string& r) -> std::optional<JavaHeap> {
    if (why) *why = r;
    return std::nullopt;
  };
  Image img(t);
  uint64_t heap_var = 0, reserved = ~uint64_t{0}, mr_start = ~uint64_t{0}, mr_words = ~uint64_t{0};
  bool ok = walk_entries(t, img, w, [&](const std::string& type, uint64_t fn, uint64_t off, uint64_t addr) {
    if (type != "Universe" && type != "CollectedHeap" && type != "MemRegion") return;
    const std::string& field = img.str(fn);
    if (type == "Universe" && field == "_collectedHeap") heap_var = addr;
    if (type == "CollectedHeap" && field == "_reserved") reserved = off;
    if (type == "MemRegion" && field == "_start") mr_start = off;
    if (type == "MemRegion" && field == "_word_size") mr_words = off;
  });
  if (!ok) return fail(w);
  if (!heap_var || reserved > 4096 || mr_start > 64 || mr_words > 64)
    return fail("libjvm's vmStructs do not name Universe::_collectedHeap->_reserved");
  uint64_t heap = 0, start = 0, words = 0;
  if (!img.u64(heap_var, heap) || heap == 0) return fail("the JVM has no Java heap yet");
  if (!img.u64(heap + reserved + mr_start, start) || !img.u64(heap + reserved + mr_words, words))
    return fail("CollectedHeap::_reserved unreadable");
  if (words == 0 || words > (uint64_t{1} << 45) || start + words * 8 < start || (start & 4095))
    return fail("CollectedHeap::_reserved is implausible");
  return JavaHeap{start, start + words * 8};
}

std::vector<JavaHeap> code_heaps(target::Target& t) {
  Image img(t);
  std::string w;
  uint64_t heaps_var = 0, len_off = ~uint64_t{0}, data_off = ~uint64_t{0}, memory_off = ~uint64_t{0};
  uint64_t low_off = ~uint64_t{0}, high_off = ~uint64_t{0};
  bool ok = walk_entries(t, img, w, [&](const std::string& type, uint64_t fn, uint64_t off, uint64_t addr) {
    bool ga = type.rfind("GrowableArray", 0) == 0;
    if (type != "CodeCache" && type != "CodeHeap" && type != "VirtualSpace" && !ga) return;
    const std::string& field = img.str(fn);
    if (type == "CodeCache" && field == "_heaps") heaps_var = addr;
    if (type == "CodeHeap" && field == "_memory") memory_off = off;
    if (type == "VirtualSpace" && field == "_low_boundary") low_off = off;
    if (type == "VirtualSpace" && field == "_high_boundary") high_off = off;
    if (ga && field == "_len") len_off = off;
    if (ga && field == "_data") data_off = off;
  });
  std::vector<JavaHeap> out;
  if (!ok || !heaps_var || len_off > 64 || data_off > 64 || memory_off > 4096 || low_off > 256 || high_off > 256)
    return out;
  uint64_t arr = 0, data = 0;
  uint32_t len = 0;
  if (!img.u64(heaps_var, arr) || !arr || t.memory().read(arr + len_off, &len, 4) != 4 ||
      !img.u64(arr + data_off, data) || !data || len > 16)
    return out;
  for (uint32_t i = 0; i < len; ++i) {
    uint64_t heap = 0, lo = 0, hi = 0;
    if (!img.u64(data + i * 8, heap) || !heap || !img.u64(heap + memory_off + low_off, lo) ||
        !img.u64(heap + memory_off + high_off, hi))
      continue;
    if (lo && hi > lo && !(lo & 4095) && hi - lo < (uint64_t{1} << 40)) out.push_back({lo, hi});
  }
  return out;
}

}  // namespace heapwalk::hotspot
