#include "hotspot/vmstructs.h"

#include <cstring>
#include <unordered_map>
#include <vector>

namespace heapwalk::hotspot {

namespace {

constexpr uint64_t kMaxEntries = 100000;

class Image {
 public:
  explicit Image(memory::MemorySource& m) : m_(m) {}
  bool u64(uint64_t a, uint64_t& v) { return m_.read(a, &v, 8) == 8; }
  /// A NUL-terminated name of at most 64 bytes ("" when unreadable or longer).
  const std::string& str(uint64_t a) {
    auto it = cache_.find(a);
    if (it != cache_.end()) return it->second;
    char buf[65] = {};
    size_t n = a ? m_.read(a, buf, 64) : 0;
    std::string s;
    size_t len = strnlen(buf, n);
    if (len < n) s.assign(buf, len);
    return cache_.emplace(a, std::move(s)).first->second;
  }

 private:
  memory::MemorySource& m_;
  std::unordered_map<uint64_t, std::string> cache_;
};

}  // namespace

std::optional<JavaHeap> java_heap(target::Target& t, std::string* why) {
  auto fail = [&](const std::string& w) -> std::optional<JavaHeap> {
    if (why) *why = w;
    return std::nullopt;
  };
  const target::Module* m = t.find_module([](const std::string& base) { return base == "libjvm.so"; });
  if (!m) return fail("not a JVM");
  auto f = t.module_file(*m, true);
  if (!f) return fail(m->path + ": not readable (or another build than the process's)");
  const uint64_t bias = m->base - f->first_load_vaddr();
  Image img(t.memory());
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
    return fail("libjvm's vmStructs tables not found");
  if (stride < 8 || stride > 256 || o_type >= stride || o_field >= stride || o_offset >= stride ||
      o_address >= stride || o_static >= stride)
    return fail("libjvm's vmStructs entry layout is implausible");
  uint64_t heap_var = 0, reserved = ~uint64_t{0}, mr_start = ~uint64_t{0}, mr_words = ~uint64_t{0};
  std::vector<uint8_t> e(stride);
  for (uint64_t i = 0; i < kMaxEntries; ++i) {
    uint64_t a = array + i * stride;
    if (t.memory().read(a, e.data(), e.size()) != e.size()) return fail("libjvm's vmStructs array unreadable");
    uint64_t tn = 0, fn = 0, off = 0, addr = 0;
    std::memcpy(&tn, e.data() + o_type, 8);
    if (tn == 0) break;
    std::memcpy(&fn, e.data() + o_field, 8);
    std::memcpy(&off, e.data() + o_offset, 8);
    std::memcpy(&addr, e.data() + o_address, 8);
    const std::string& type = img.str(tn);
    if (type != "Universe" && type != "CollectedHeap" && type != "MemRegion") continue;
    const std::string& field = img.str(fn);
    if (type == "Universe" && field == "_collectedHeap") heap_var = addr;
    if (type == "CollectedHeap" && field == "_reserved") reserved = off;
    if (type == "MemRegion" && field == "_start") mr_start = off;
    if (type == "MemRegion" && field == "_word_size") mr_words = off;
  }
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

}  // namespace heapwalk::hotspot
