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

const uint8_t* Reader::span(uint64_t addr, size_t len) {
  if (len == 0) len = 1;
  if (addr >= dstart_ && addr < dend_ && len <= dend_ - addr) return dptr_ + (addr - dstart_);
  uint64_t s = 0, e = 0;
  if (const uint8_t* p = src_.direct_span(addr, s, e)) {
    dptr_ = p;
    dstart_ = s;
    dend_ = e;
    if (len <= e - addr) return p + (addr - s);
  }
  if (const uint8_t* p = src_.direct(addr, len)) return p;
  if (cache_valid_ && addr >= cache_start_ && addr - cache_start_ <= cache_len_ &&
      len <= cache_len_ - (addr - cache_start_)) {
    return cache_.data() + (addr - cache_start_);
  }
  if (len > block_ / 2) {
    cache_.resize(len);
    size_t got = src_.read(addr, cache_.data(), len);
    cache_valid_ = got == len;
    cache_start_ = addr;
    cache_len_ = got;
    return cache_valid_ ? cache_.data() : nullptr;
  }
  // Forward walks get a large block; random access (list chasing) gets a page, so a live target
  // does not pay a 1 MiB read per hop.
  bool sequential = cache_valid_ && addr >= cache_start_ && addr - cache_start_ < cache_len_ + block_;
  size_t want = sequential ? block_ : 4096;
  uint64_t start = addr & ~uint64_t{0xfff};
  if ((addr - start) + len > want) want = static_cast<size_t>((addr - start) + len);
  cache_.resize(std::max(want, block_));
  size_t got = src_.read(start, cache_.data(), want);
  if (got < (addr - start) + len) {
    // The block may cross into an unreadable page; try exactly what was asked.
    got = src_.read(addr, cache_.data(), len);
    if (got < len) {
      cache_valid_ = false;
      return nullptr;
    }
    cache_start_ = addr;
    cache_len_ = got;
    cache_valid_ = true;
    return cache_.data();
  }
  cache_start_ = start;
  cache_len_ = got;
  cache_valid_ = true;
  return cache_.data() + (addr - start);
}

uint64_t Reader::u64(uint64_t addr, const char* what) {
  uint64_t v;
  if (!try_u64(addr, v)) throw Fault(addr, 8, what);
  return v;
}

void Reader::bytes(uint64_t addr, void* out, size_t len, const char* what) {
  if (src_.read(addr, out, len) != len) throw Fault(addr, len, what);
}

}  // namespace memory
}  // namespace heapwalk
