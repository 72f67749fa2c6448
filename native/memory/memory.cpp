#include "memory/memory.h"

#include <algorithm>

#include "util/diagnostics.h"

namespace heapwalk {

Fault::Fault(uint64_t address_, uint64_t size_, const std::string& what)
    : Error("cannot read " + std::to_string(size_) + " bytes at " + hex(address_) +
            (what.empty() ? std::string() : " (" + what + ")")),
      address(address_),
      size(size_) {}

namespace memory {

uint64_t MemorySource::readable_span(uint64_t addr, uint64_t max) const {
  const auto& rs = regions();
  auto it = std::upper_bound(rs.begin(), rs.end(), addr, [](uint64_t a, const Region& r) { return a < r.start; });
  if (it == rs.begin()) return 0;
  --it;
  uint64_t total = 0;
  uint64_t cur = addr;
  while (it != rs.end() && it->start <= cur && cur < it->end && total < max) {
    if (!it->read || !it->saved) break;
    uint64_t stop = std::min(it->end, it->saved_end ? it->saved_end : it->end);
    if (cur >= stop) break;
    total += stop - cur;
    if (stop != it->end) break;
    cur = stop;
    ++it;
  }
  return std::min(total, max);
}

void BufferSource::add(uint64_t start, std::vector<uint8_t> bytes, std::string path) {
  Region r;
  r.start = start;
  r.end = start + bytes.size();
  r.read = r.write = true;
  r.saved_end = r.end;
  r.path = std::move(path);
  // keep regions sorted; data_ parallel to regions_
  auto pos = std::upper_bound(regions_.begin(), regions_.end(), start,
                              [](uint64_t a, const Region& x) { return a < x.start; });
  size_t idx = static_cast<size_t>(pos - regions_.begin());
  regions_.insert(pos, r);
  data_.insert(data_.begin() + static_cast<long>(idx), std::move(bytes));
}

const uint8_t* BufferSource::direct(uint64_t addr, size_t len) {
  for (size_t i = 0; i < regions_.size(); ++i) {
    const Region& r = regions_[i];
    if (addr >= r.start && addr < r.end && len <= r.end - addr) return data_[i].data() + (addr - r.start);
  }
  return nullptr;
}

size_t BufferSource::read(uint64_t addr, void* out, size_t len) {
  size_t done = 0;
  auto* dst = static_cast<uint8_t*>(out);
  while (done < len) {
    uint64_t a = addr + done;
    bool found = false;
    for (size_t i = 0; i < regions_.size(); ++i) {
      const Region& r = regions_[i];
      if (a >= r.start && a < r.end) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(len - done, r.end - a));
        std::memcpy(dst + done, data_[i].data() + (a - r.start), n);
        done += n;
        found = true;
        break;
      }
    }
    if (!found) break;
  }
  return done;
}

size_t CallbackSource::read(uint64_t addr, void* out, size_t len) {
  auto* dst = static_cast<uint8_t*>(out);
  size_t done = 0;
  while (done < len) {
    size_t want = std::min(len - done, kMaxPiece);
    size_t got = std::min(fn_(addr + done, dst + done, want), want);
    done += got;
    if (got < want) break;
  }
  return done;
}

const uint8_t* Reader::span(uint64_t addr, size_t len) {
  if (len == 0) len = 1;
  // Refused whatever the source: the same answer for a core and a live process, and no length
  // read from the target becomes the size of a cache block.
  if (len > block_) return nullptr;
  if (addr >= dstart_ && addr < dend_ && len <= dend_ - addr) return dptr_ + (addr - dstart_);
  uint64_t s = 0, e = 0;
  if (const uint8_t* p = src_.direct_span(addr, s, e)) {
    dptr_ = p;
    dstart_ = s;
    dend_ = e;
    if (len <= e - addr) return p + (addr - s);
  }
  if (const uint8_t* p = src_.direct(addr, len)) return p;
  for (unsigned k : {last_, 1 - last_}) {
    const Block& b = blocks_[k];
    if (b.holds(addr, len)) {
      last_ = k;
      return b.data.data() + (addr - b.start);
    }
  }
  // Forward walks get a large block; random access (list chasing) gets a page, so a live target
  // does not pay a 1 MiB read per hop.
  const Block& prev = blocks_[last_];
  bool sequential = prev.valid && addr >= prev.start && addr - prev.start < prev.len + block_;
  // The block that did not serve the latest call: the pointer that call returned stays valid.
  Block& b = blocks_[1 - last_];
  if (!fill(b, addr, len, sequential)) return nullptr;
  last_ = 1 - last_;
  return b.data.data() + (addr - b.start);
}

bool Reader::fill(Block& b, uint64_t addr, size_t len, bool sequential) {
  size_t want = sequential ? block_ : 4096;
  uint64_t start = addr & ~uint64_t{0xfff};
  const size_t need = static_cast<size_t>(addr - start) + len;  // <= block_ + 4095
  if (need > want) want = need;
  // Grown only here, while no span points into this block; never past block_ + 4 KiB.
  if (b.data.size() < want) b.data.resize(want);
  size_t got = src_.read(start, b.data.data(), want);
  if (got < need) {
    // The block may cross into an unreadable page; try exactly what was asked.
    start = addr;
    got = src_.read(addr, b.data.data(), len);
    if (got < len) {
      b.valid = false;
      return false;
    }
  }
  b.start = start;
  b.len = got;
  b.valid = true;
  return true;
}

uint64_t Reader::u64(uint64_t addr, const char* what) {
  uint64_t v;
  if (!try_u64(addr, v)) throw Fault(addr, 8, what);
  return v;
}

void Reader::bytes(uint64_t addr, void* out, size_t len, const char* what) {
  if (src_.read(addr, out, len) != len) throw Fault(addr, len, what);
}

bool mapped(const std::vector<memory::Region>& rs, uint64_t addr, uint64_t len) {
  if (rs.empty()) return true;
  if (addr + len < addr) return false;
  auto it =
      std::upper_bound(rs.begin(), rs.end(), addr, [](uint64_t a, const memory::Region& r) { return a < r.start; });
  if (it == rs.begin()) return false;
  --it;
  uint64_t end = addr + len;
  while (it != rs.end() && it->start <= addr && addr < it->end) {
    if (end <= it->end) return true;
    addr = it->end;
    ++it;
  }
  return false;
}

}  // namespace memory
}  // namespace heapwalk
