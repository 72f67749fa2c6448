#include "bindings/alloc_model.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "alloc/model.h"
#include "bindings/alloc_analysis.h"
#include "bindings/pytext.h"
#include "jemalloc/model.h"
#include "tcmalloc/model.h"
#include "util/errors.h"

namespace py = pybind11;

namespace heapwalk::bindings {

namespace {

/// The model of `allocator` ("jemalloc", "tcmalloc"), or of the allocator that owns malloc when
/// none is named. Error when the target uses neither.
std::unique_ptr<alloc::Model> open_model(target::Target& t, const std::optional<std::string>& allocator) {
  if (allocator && *allocator != "jemalloc" && *allocator != "tcmalloc")
    throw py::value_error("allocator must be 'jemalloc' or 'tcmalloc', not '" + *allocator + "'");
  std::optional<alloc::Kind> kind;
  if (allocator) kind = *allocator == "jemalloc" ? alloc::Kind::Jemalloc : alloc::Kind::Tcmalloc;
  py::gil_scoped_release nogil;
  return bindings::open_model(t, kind);
}

std::string module_of(alloc::Model& m) {
  if (auto* j = dynamic_cast<jemalloc::Model*>(&m)) return j->module();
  if (auto* c = dynamic_cast<tcmalloc::Model*>(&m)) return c->module_path();
  return "";
}

py::list diagnostics_of(target::Target& t, alloc::Model& m) {
  return diagnostics_list({&t.diagnostics(), &m.diagnostics()});
}

py::dict header(alloc::Model& m) {
  py::dict d;
  d["allocator"] = alloc::kind_name(m.kind());
  d["version"] = ustr(m.version());
  d["module"] = ustr(module_of(m));
  d["layout_source"] = ustr(m.layout_source());
  return d;
}

py::dict cache_dict(const alloc::ThreadCache& c) {
  py::dict x;
  x["lwp"] = c.lwp ? py::object(py::int_(c.lwp)) : py::object(py::none());
  x["address"] = c.address;
  x["bytes"] = c.bytes;
  uint64_t objects = 0;
  py::list bins;
  for (const auto& b : c.bins) {
    py::dict e;
    e["size"] = b.size;
    e["count"] = b.count;
    e["bytes"] = b.size * b.count;
    objects += b.count;
    bins.append(e);
  }
  x["objects"] = objects;
  x["bins"] = bins;
  return x;
}

// jemalloc 5.3.0's radix tree and edata_t, as native/jemalloc/model.cpp reads them
// (docs/jemalloc-layouts.md): the extent that maps `address`.
struct Extent {
  uint64_t edata = 0, address = 0, size = 0;
  unsigned state = 0, szind = 0, arena = 0;
  bool slab = false;
};

std::optional<Extent> jemalloc_extent(target::Target& t, uint64_t rtree, uint64_t address) {
  constexpr uint64_t kRoot = 120, kFanout = uint64_t{1} << 18, kPage = 4096;
  if (!rtree || (address >> 48)) return std::nullopt;
  memory::Reader r(t.memory());
  uint64_t leaf = 0, bits = 0;
  if (!r.try_u64(rtree + kRoot + 8 * ((address >> 30) & (kFanout - 1)), leaf) || !leaf || (leaf & 7))
    return std::nullopt;
  if (!r.try_u64(leaf + 8 * ((address >> 12) & (kFanout - 1)), bits) || !bits) return std::nullopt;
  uint64_t e = static_cast<uint64_t>(static_cast<int64_t>(bits << 16) >> 16) & ~uint64_t{127};
  uint64_t eb, ea, es;
  if (!e || !r.try_u64(e, eb) || !r.try_u64(e + 8, ea) || !r.try_u64(e + 16, es)) return std::nullopt;
  Extent x;
  x.edata = e;
  x.address = ea;
  x.size = es & ~(kPage - 1);
  x.arena = eb & 0xfff;
  x.slab = (eb >> 12) & 1;
  x.state = (eb >> 17) & 7;
  x.szind = (eb >> 20) & 0xff;
  if (address < x.address || address - x.address >= x.size) return std::nullopt;
  return x;
}

const char* extent_state(unsigned s) {
  static const char* const names[] = {"active", "dirty", "muzzy", "retained"};
  return s < 4 ? names[s] : "unknown";
}

bool keep_state(const std::string& filter, alloc::State s) {
  if (filter == "all") return true;
  if (filter == "used") return s == alloc::State::InUse;
  if (filter == "free") return s != alloc::State::InUse;
  return filter == alloc::state_name(s);
}

void check_filter(const std::string& state) {
  if (state != "all" && state != "used" && state != "free" && state != "in-use" && state != "cached" &&
      state != "released" && state != "metadata")
    throw py::value_error("state must be all, used, free, in-use, cached or released, not '" + state + "'");
}

struct Row {
  uint64_t address, size;
  alloc::State state;
  int pool;
};

/// A model's walk handed over a batch at a time, as bindings/streams.h's ChunkStream does for
/// ptmalloc: the walk runs on its own thread and is parked between batches (the target is never
/// read by two threads at once); a target that must be read on the calling thread is walked
/// there, whole, at the first next().
class AllocStream {
 public:
  AllocStream(std::unique_ptr<alloc::Model> m, std::string filter, std::optional<uint64_t> limit, size_t batch,
              bool threaded)
      : m_(std::move(m)), filter_(std::move(filter)), limit_(limit), batch_size_(batch ? batch : 1) {
    if (threaded) thread_ = std::thread([this] { run(); });
  }
  AllocStream(const AllocStream&) = delete;
  AllocStream& operator=(const AllocStream&) = delete;
  ~AllocStream() { stop(); }

  void stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      cancel_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  std::vector<Row> next() {
    if (!thread_.joinable() && !done_) return walk_here();
    std::unique_lock<std::mutex> l(mu_);
    if (!done_ && !cancel_) {
      want_ = true;
      cv_.notify_all();
      cv_.wait(l, [this] { return ready_ || done_; });
    }
    ready_ = false;
    std::vector<Row> out = std::move(out_);
    out_.clear();
    if (out.empty() && error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
    return out;
  }

  uint64_t total() const { return total_; }
  uint64_t listed() const { return listed_; }
  alloc::Model& model() { return *m_; }
  const std::map<std::string, uint64_t>& counts() const { return counts_; }

 private:
  bool take(const alloc::Allocation& a, std::vector<Row>& into) {
    counts_[alloc::state_name(a.state)] += 1;
    if (!keep_state(filter_, a.state)) return false;
    ++total_;
    if (limit_ && listed_ >= *limit_) return false;
    ++listed_;
    into.push_back({a.address, a.size, a.state, a.pool});
    return true;
  }

  std::vector<Row> walk_here() {
    done_ = true;
    std::vector<Row> all;
    m_->walk([&](const alloc::Allocation& a) {
      take(a, all);
      return true;
    });
    return all;
  }

  void run() {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [this] { return want_ || cancel_; });
      if (cancel_) return finish(l);
    }
    std::vector<Row> batch;
    batch.reserve(batch_size_);
    try {
      m_->walk([&](const alloc::Allocation& a) {
        if (!take(a, batch) || batch.size() < batch_size_) return true;
        std::unique_lock<std::mutex> l(mu_);
        out_ = std::move(batch);
        batch = std::vector<Row>();
        ready_ = true;
        want_ = false;
        cv_.notify_all();
        cv_.wait(l, [this] { return want_ || cancel_; });
        if (cancel_) return false;
        batch.reserve(batch_size_);
        return true;
      });
    } catch (...) {
      std::lock_guard<std::mutex> l(mu_);
      error_ = std::current_exception();
    }
    std::unique_lock<std::mutex> l(mu_);
    if (!cancel_) {
      out_ = std::move(batch);
      ready_ = true;
    }
    finish(l);
  }

  void finish(std::unique_lock<std::mutex>& l) {
    done_ = true;
    l.unlock();
    cv_.notify_all();
  }

  std::unique_ptr<alloc::Model> m_;
  std::string filter_;
  std::optional<uint64_t> limit_;
  size_t batch_size_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool want_ = false, ready_ = false, done_ = false, cancel_ = false;
  std::vector<Row> out_;
  std::exception_ptr error_;
  uint64_t total_ = 0, listed_ = 0;
  std::map<std::string, uint64_t> counts_;
  std::thread thread_;
};

struct PyAllocStream {
  std::shared_ptr<AllocStream> s;
  target::Target* t;
  py::object target_ref;  // keeps the Python Target alive while the stream is
  bool ended = false;

  py::list next() {
    if (ended) throw py::stop_iteration();
    std::vector<Row> rows;
    {
      py::gil_scoped_release nogil;
      rows = s->next();
    }
    if (rows.empty()) {
      ended = true;
      throw py::stop_iteration();
    }
    static const alloc::State kStates[] = {alloc::State::InUse, alloc::State::Cached, alloc::State::Free,
                                           alloc::State::Released, alloc::State::Metadata};
    py::object names[std::size(kStates)];
    for (size_t i = 0; i < std::size(kStates); ++i) names[i] = py::str(alloc::state_name(kStates[i]));
    const auto& pools = s->model().pools();
    std::vector<py::object> pool_addr;
    for (const auto& p : pools) pool_addr.push_back(py::int_(p.address));
    py::list out(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      bool known = r.pool >= 0 && static_cast<size_t>(r.pool) < pools.size();
      out[i] = py::make_tuple(r.address, r.size, names[static_cast<size_t>(r.state)],
                              known ? py::object(py::int_(r.pool)) : py::object(py::none()),
                              known ? pool_addr[r.pool] : py::object(py::none()));
    }
    return out;
  }
};

}  // namespace

py::dict alloc_summary(target::Target& t, const std::optional<std::string>& allocator) {
  auto m = open_model(t, allocator);
  py::dict d = header(*m);
  d["stats"] = stats_dict(m->stats());
  py::list pools;
  for (const auto& p : m->pools()) pools.append(pool_dict(p));
  d["pools"] = pools;
  py::list caches;
  for (const auto& c : m->thread_caches()) caches.append(cache_dict(c));
  d["thread_caches"] = caches;
  d["diagnostics"] = diagnostics_of(t, *m);
  return d;
}

py::dict alloc_tcache(target::Target& t, std::optional<int> lwp, const std::optional<std::string>& allocator) {
  auto m = open_model(t, allocator);
  py::dict d = header(*m);
  py::list caches;
  for (const auto& c : m->thread_caches())
    if (!lwp || c.lwp == *lwp) caches.append(cache_dict(c));
  d["thread_caches"] = caches;
  py::list threads;
  for (const auto& th : t.threads()) threads.append(th.lwp);
  d["lwps"] = threads;
  d["diagnostics"] = diagnostics_of(t, *m);
  return d;
}

py::dict alloc_chunk(target::Target& t, uint64_t address, uint64_t dump, const std::optional<std::string>& allocator) {
  auto m = open_model(t, allocator);
  py::dict d = header(*m);
  d["query"] = address;
  std::optional<alloc::Allocation> a;
  std::optional<Extent> ext;
  const tcmalloc::SpanInfo* span = nullptr;
  {
    py::gil_scoped_release nogil;
    a = m->find(address);
    if (auto* j = dynamic_cast<jemalloc::Model*>(m.get())) ext = jemalloc_extent(t, j->rtree(), address);
    if (auto* c = dynamic_cast<tcmalloc::Model*>(m.get())) {
      const auto& spans = c->spans();
      auto it = std::upper_bound(spans.begin(), spans.end(), address,
                                 [](uint64_t x, const tcmalloc::SpanInfo& s) { return x < s.address; });
      if (it != spans.begin() && address - std::prev(it)->address < std::prev(it)->bytes) span = &*std::prev(it);
    }
  }
  if (!a) {
    d["allocation"] = py::none();
    d["diagnostics"] = diagnostics_of(t, *m);
    return d;
  }
  py::dict x;
  x["address"] = a->address;
  x["size"] = a->size;
  x["state"] = alloc::state_name(a->state);
  x["offset"] = address - a->address;
  const auto& pools = m->pools();
  bool known = a->pool >= 0 && static_cast<size_t>(a->pool) < pools.size();
  x["pool"] = known ? py::object(py::int_(pools[a->pool].index)) : py::object(py::none());
  x["arena"] = known ? py::object(py::int_(pools[a->pool].address)) : py::object(py::none());
  x["pool_name"] = known ? py::object(ustr(pools[a->pool].name)) : py::object(py::none());
  x["size_class"] = py::none();
  x["span"] = py::none();
  if (ext) {
    py::dict s;
    s["kind"] = ext->state != 0 ? "free extent" : ext->slab ? "slab" : "large extent";
    s["address"] = ext->address;
    s["bytes"] = ext->size;
    s["state"] = extent_state(ext->state);
    s["edata"] = ext->edata;
    s["arena_index"] = ext->arena;
    uint64_t reg = jemalloc::index2size(ext->szind);
    if (ext->state == 0) {
      s["szind"] = ext->szind;
      x["size_class"] = reg;
      if (ext->slab && reg) s["regions"] = ext->size / reg;
    }
    x["span"] = s;
  } else if (span) {
    auto* c = dynamic_cast<tcmalloc::Model*>(m.get());
    py::dict s;
    static const char* const loc[] = {"in use", "normal free list", "returned free list"};
    s["kind"] = span->location ? "free span" : span->sizeclass ? "small-object span" : "large span";
    s["address"] = span->address;
    s["bytes"] = span->bytes;
    s["pages"] = span->bytes >> 13;
    s["location"] = loc[span->location % 3];
    s["sizeclass"] = span->sizeclass;
    const auto& classes = c->size_classes();
    if (span->sizeclass && span->sizeclass < classes.size() && classes[span->sizeclass].size) {
      x["size_class"] = classes[span->sizeclass].size;
      s["objects"] = span->bytes / classes[span->sizeclass].size;
    }
    x["span"] = s;
  }
  uint64_t n = std::min<uint64_t>(dump, a->size);
  std::string bytes;
  if (n) {
    std::vector<uint8_t> buf(n);
    size_t got = t.memory().read(a->address, buf.data(), n);
    static const char* const digits = "0123456789abcdef";
    for (size_t i = 0; i < got; ++i) {
      bytes.push_back(digits[buf[i] >> 4]);
      bytes.push_back(digits[buf[i] & 15]);
    }
  }
  x["bytes"] = bytes;
  x["bytes_at"] = a->address;
  d["allocation"] = x;
  d["diagnostics"] = diagnostics_of(t, *m);
  return d;
}

void register_alloc_types(py::module_& m) {
  py::class_<PyAllocStream>(m, "AllocStream")
      .def(
          "__iter__", [](PyAllocStream& s) -> PyAllocStream& { return s; }, py::return_value_policy::reference)
      .def("__next__", &PyAllocStream::next)
      .def_property_readonly("total", [](const PyAllocStream& s) { return s.s->total(); })
      .def_property_readonly("listed", [](const PyAllocStream& s) { return s.s->listed(); })
      .def_property_readonly("counts", [](const PyAllocStream& s) { return stats_dict(s.s->counts()); })
      .def_property_readonly("header", [](PyAllocStream& s) { return header(s.s->model()); })
      .def("diagnostics", [](PyAllocStream& s) { return diagnostics_of(*s.t, s.s->model()); });
}

py::object alloc_chunk_stream(py::object target_ref, target::Target& t, const std::string& state,
                              std::optional<uint64_t> limit, size_t batch,
                              const std::optional<std::string>& allocator) {
  check_filter(state);
  auto m = open_model(t, allocator);
  auto s = std::make_shared<AllocStream>(std::move(m), state, limit, batch, t.parallel_reads());
  return py::cast(PyAllocStream{std::move(s), &t, std::move(target_ref), false});
}

}  // namespace heapwalk::bindings
