// Listings in batches (issue 15, "listings on big heaps"): `chunks --json --limit 0` and
// `bins --json` cost a batch of memory, not a Python object per chunk of the heap.
//
// ChunkStream runs Heap::walk on a thread of its own and hands its chunks over a batch at a
// time. The two threads take turns: the walk fills a batch only while the consumer waits in
// next(), and is parked in its visitor otherwise, so the heap is never read by two threads at
// once (the target can be queried between batches). Destroying the stream stops the walk.
// A target whose memory must be read on the calling thread (gdb's callback targets, see
// Target::parallel_reads) is walked there instead, whole, at the first next().
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "ptmalloc/heap.h"

namespace heapwalk::bindings {

struct ChunkRow {
  uint64_t address = 0, size = 0;
  ptmalloc::ChunkState state = ptmalloc::ChunkState::Used;
  const ptmalloc::Arena* arena = nullptr;
  size_t heap = 0;
};

class ChunkStream {
 public:
  using Keep = std::function<bool(ptmalloc::ChunkState)>;

  /// Chunks of `only` (every arena and the mmapped chunks when nullptr) that `keep` accepts, in
  /// walk order; the first `limit` are listed, all are counted (total()).
  ChunkStream(ptmalloc::Heap& heap, const ptmalloc::Arena* only, Keep keep, std::optional<uint64_t> limit, size_t batch,
              bool threaded)
      : heap_(heap), only_(only), keep_(std::move(keep)), limit_(limit), batch_size_(batch ? batch : 1) {
    if (threaded) thread_ = std::thread([this] { run(); });
  }
  ChunkStream(const ChunkStream&) = delete;
  ChunkStream& operator=(const ChunkStream&) = delete;
  ~ChunkStream() { stop(); }

  /// Stops the walk (if it is still going) and waits for its thread. next() then ends.
  void stop() {
    {
      std::lock_guard<std::mutex> l(m_);
      cancel_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  /// The next batch, empty at the end; rethrows what the walk threw (once, after its last batch).
  std::vector<ChunkRow> next() {
    if (!thread_.joinable() && !done_) return walk_here();
    std::unique_lock<std::mutex> l(m_);
    if (!done_ && !cancel_) {
      want_ = true;
      cv_.notify_all();
      cv_.wait(l, [this] { return ready_ || done_; });
    }
    ready_ = false;
    std::vector<ChunkRow> out = std::move(out_);
    out_.clear();
    if (out.empty() && error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
    return out;
  }

  /// Chunks the filter kept (listed or not); final once next() returned an empty batch.
  uint64_t total() const { return total_; }
  uint64_t listed() const { return listed_; }

 private:
  std::vector<ChunkRow> walk_here() {
    done_ = true;
    std::vector<ChunkRow> all;
    heap_.walk(only_, [&](uint64_t addr, uint64_t size, ptmalloc::ChunkState st, const ptmalloc::Arena* a, size_t hi) {
      if (!keep_(st)) return true;
      ++total_;
      if (limit_ && listed_ >= *limit_) return true;
      ++listed_;
      all.push_back({addr, size, st, a, hi});
      return true;
    });
    return all;
  }

  void run() {
    {
      std::unique_lock<std::mutex> l(m_);
      cv_.wait(l, [this] { return want_ || cancel_; });
      if (cancel_) return finish(l);
    }
    std::vector<ChunkRow> batch;
    batch.reserve(batch_size_);
    try {
      heap_.walk(only_,
                 [&](uint64_t addr, uint64_t size, ptmalloc::ChunkState st, const ptmalloc::Arena* a, size_t hi) {
                   if (!keep_(st)) return true;
                   ++total_;
                   if (limit_ && listed_ >= *limit_) return true;
                   ++listed_;
                   batch.push_back({addr, size, st, a, hi});
                   if (batch.size() < batch_size_) return true;
                   std::unique_lock<std::mutex> l(m_);
                   out_ = std::move(batch);
                   batch = std::vector<ChunkRow>();
                   ready_ = true;
                   want_ = false;
                   cv_.notify_all();
                   cv_.wait(l, [this] { return want_ || cancel_; });
                   if (cancel_) return false;
                   batch.reserve(batch_size_);
                   return true;
                 });
    } catch (...) {
      std::lock_guard<std::mutex> l(m_);
      error_ = std::current_exception();
    }
    std::unique_lock<std::mutex> l(m_);
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

  ptmalloc::Heap& heap_;
  const ptmalloc::Arena* only_;
  Keep keep_;
  std::optional<uint64_t> limit_;
  size_t batch_size_;
  std::mutex m_;
  std::condition_variable cv_;
  bool want_ = false, ready_ = false, done_ = false, cancel_ = false;
  std::vector<ChunkRow> out_;
  std::exception_ptr error_;
  uint64_t total_ = 0, listed_ = 0;
  std::thread thread_;
};

}  // namespace heapwalk::bindings
