/* tcmalloc_stats — a multi-threaded program on gperftools tcmalloc that records tcmalloc's own
 * statistics as the oracle for heapwalk's tcmalloc model (issue 16).
 *
 *   tcmalloc_stats NTHREADS OUTDIR READY_FD
 *
 * Linked with -ltcmalloc (Debian 12's libgoogle-perftools4, gperftools 2.10); run it with
 * LD_LIBRARY_PATH pointing at a -g build of the same version for the "with symbols" case.
 *
 * NTHREADS counts the main thread.  Each thread in turn (one at a time, so the state is
 * deterministic) allocates objects of many size classes and a few large (page heap) blocks,
 * frees about a third of them (into its thread cache, and past it into the central and transfer
 * caches), records the objects it keeps, then records MallocExtension_GetThreadCacheSize() and
 * parks.  The main thread then frees and releases some large blocks (page heap free and
 * unmapped spans), reads every MallocExtension_GetNumericProperty value into static memory, and
 * only then formats and writes OUTDIR/truth.json (no allocation after the properties are read:
 * snprintf into a static buffer, write(2)) and writes one byte to READY_FD.  It then waits for
 * gcore or a live reader, forever.
 *
 * truth.json: {"properties": {NAME: VALUE...}, "threads": [{"lwp", "pthread", "cache_bytes"}...],
 *              "held": [[ADDRESS, REQUESTED, ALLOCATED_SIZE]...]}
 * ALLOCATED_SIZE is MallocExtension_GetAllocatedSize (the size class, or the span's pages).
 *
 * With a fourth argument "grow" it then waits for one byte on stdin, allocates (small, medium
 * and large) and frees more on the main thread, reads the properties again and writes
 * OUTDIR/truth2.json (same form) and a second byte to READY_FD: two snapshots of one process
 * for `diff`, whose oracle is the difference of the two sets of properties.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <gperftools/malloc_extension_c.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_THREADS 64
#define PER_THREAD 3000
#define GROW 20000
#define MAX_HELD (MAX_THREADS * PER_THREAD + 64 + GROW)

static const char* const kProps[] = {
    "generic.current_allocated_bytes",
    "generic.heap_size",
    "generic.total_physical_bytes",
    "tcmalloc.slack_bytes",
    "tcmalloc.central_cache_free_bytes",
    "tcmalloc.transfer_cache_free_bytes",
    "tcmalloc.thread_cache_free_bytes",
    "tcmalloc.pageheap_free_bytes",
    "tcmalloc.pageheap_unmapped_bytes",
    "tcmalloc.pageheap_committed_bytes",
    "tcmalloc.pageheap_scavenge_count",
    "tcmalloc.pageheap_commit_count",
    "tcmalloc.pageheap_total_commit_bytes",
    "tcmalloc.pageheap_decommit_count",
    "tcmalloc.pageheap_total_decommit_bytes",
    "tcmalloc.pageheap_reserve_count",
    "tcmalloc.pageheap_total_reserve_bytes",
    "tcmalloc.max_total_thread_cache_bytes",
    "tcmalloc.current_total_thread_cache_bytes",
    "tcmalloc.aggressive_memory_decommit",
};
#define NPROPS (sizeof kProps / sizeof kProps[0])

struct held {
  uintptr_t addr;
  size_t req, alloc;
};
static struct held g_held[MAX_HELD];
static size_t g_nheld;
static size_t g_props[NPROPS];
static int g_props_ok[NPROPS];

struct tinfo {
  int index, lwp;
  pthread_t self;
  size_t cache_bytes;
};
static struct tinfo g_threads[MAX_THREADS];
static int g_nthreads;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_turn;   /* whose turn it is to allocate */
static int g_done;   /* threads that have finished and parked */
static char g_out[24u << 20];

static void keep(void* p, size_t req) {
  g_held[g_nheld].addr = (uintptr_t)p;
  g_held[g_nheld].req = req;
  g_held[g_nheld].alloc = MallocExtension_GetAllocatedSize(p);
  ++g_nheld;
}

/* The known pattern: sizes cycling through small classes, some medium, a few large. */
static size_t size_for(int t, int i) {
  static const size_t sizes[] = {8,   16,  24,   32,   48,   64,   100,  128,  200,   256,
                                 500, 777, 1024, 2000, 3000, 4096, 7000, 9000, 20000, 40000};
  if (i % 500 == 499) return 300000 + 8192 * (size_t)t; /* large: page heap spans */
  return sizes[(i + t) % (sizeof sizes / sizeof sizes[0])];
}

static void work(int t) {
  void* ptrs[PER_THREAD];
  size_t reqs[PER_THREAD];
  for (int i = 0; i < PER_THREAD; ++i) {
    reqs[i] = size_for(t, i);
    ptrs[i] = malloc(reqs[i]);
    memset(ptrs[i], 0x40 + t, reqs[i] < 64 ? reqs[i] : 64);
  }
  pthread_mutex_lock(&g_mu);
  for (int i = 0; i < PER_THREAD; ++i) {
    if (i % 3 == 1) {
      free(ptrs[i]);
    } else {
      keep(ptrs[i], reqs[i]);
    }
  }
  g_threads[t].index = t;
  g_threads[t].lwp = (int)syscall(SYS_gettid);
  g_threads[t].self = pthread_self();
  g_threads[t].cache_bytes = MallocExtension_GetThreadCacheSize();
  pthread_mutex_unlock(&g_mu);
}

static void* worker(void* arg) {
  int t = (int)(intptr_t)arg;
  pthread_mutex_lock(&g_mu);
  while (g_turn != t) pthread_cond_wait(&g_cv, &g_mu);
  pthread_mutex_unlock(&g_mu);
  work(t);
  pthread_mutex_lock(&g_mu);
  ++g_turn;
  ++g_done;
  pthread_cond_broadcast(&g_cv);
  while (1) pthread_cond_wait(&g_cv, &g_mu); /* parked for good: its thread cache stays */
  return NULL;
}

static size_t put(size_t n, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static size_t put(size_t n, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(g_out + n, sizeof g_out - n, fmt, ap);
  va_end(ap);
  if (k < 0 || (size_t)k >= sizeof g_out - n) {
    static const char msg[] = "tcmalloc_stats: output buffer too small\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
  }
  return n + (size_t)k;
}

static int snapshot(const char* path, int n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return 1;
  /* The oracle: read before anything else can allocate. */
  for (size_t i = 0; i < NPROPS; ++i) g_props_ok[i] = MallocExtension_GetNumericProperty(kProps[i], &g_props[i]);

  size_t o = put(0, "{\"properties\": {");
  int first = 1;
  for (size_t i = 0; i < NPROPS; ++i) {
    if (!g_props_ok[i]) continue;
    o = put(o, "%s\"%s\": %zu", first ? "" : ", ", kProps[i], g_props[i]);
    first = 0;
  }
  o = put(o, "},\n \"threads\": [");
  for (int t = 0; t < n; ++t)
    o = put(o, "%s{\"index\": %d, \"lwp\": %d, \"pthread\": %lu, \"cache_bytes\": %zu}", t ? ", " : "",
            g_threads[t].index, g_threads[t].lwp, (unsigned long)g_threads[t].self, g_threads[t].cache_bytes);
  o = put(o, "],\n \"held\": [");
  for (size_t i = 0; i < g_nheld; ++i)
    o = put(o, "%s[%lu, %zu, %zu]", i ? ",\n" : "", (unsigned long)g_held[i].addr, g_held[i].req, g_held[i].alloc);
  o = put(o, "]}\n");
  for (size_t w = 0; w < o;) {
    ssize_t k = write(fd, g_out + w, o - w);
    if (k <= 0) return 1;
    w += (size_t)k;
  }
  close(fd);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s NTHREADS OUTDIR READY_FD\n", argv[0]);
    return 2;
  }
  int n = atoi(argv[1]);
  if (n < 1 || n > MAX_THREADS) return 2;
  g_nthreads = n;
  char path[4096];
  snprintf(path, sizeof path, "%s/truth.json", argv[2]);
  int ready = atoi(argv[3]);
  {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
      perror(path);
      return 1;
    }
    close(fd);
  }

  pthread_t tids[MAX_THREADS];
  for (int t = 1; t < n; ++t) pthread_create(&tids[t], NULL, worker, (void*)(intptr_t)t);
  work(0);
  pthread_mutex_lock(&g_mu);
  g_turn = 1;
  pthread_cond_broadcast(&g_cv);
  while (g_done < n - 1) pthread_cond_wait(&g_cv, &g_mu);
  pthread_mutex_unlock(&g_mu);

  /* Page heap free and unmapped spans: free two big blocks, release part of the free pages. */
  /* volatile: the compiler would otherwise drop the malloc/free pairs */
  void* volatile big1 = malloc(6u << 20);
  void* guard1 = malloc(300000);
  void* volatile big2 = malloc(10u << 20);
  void* guard2 = malloc(300000);
  memset(big1, 1, 4096);
  memset(big2, 2, 4096);
  keep(guard1, 300000);
  keep(guard2, 300000);
  free(big1);
  free(big2);
  MallocExtension_ReleaseToSystem(4u << 20);
  g_threads[0].index = 0;
  g_threads[0].lwp = (int)syscall(SYS_gettid);
  g_threads[0].self = pthread_self();
  g_threads[0].cache_bytes = MallocExtension_GetThreadCacheSize();

  if (snapshot(path, n) != 0) return 1;
  char byte = 1;
  if (write(ready, &byte, 1) != 1) return 1;
  if (argc > 4 && strcmp(argv[4], "grow") == 0) {
    char got;
    if (read(0, &got, 1) != 1) return 1;
    static void* grown[GROW];
    for (int i = 0; i < GROW; ++i) {
      size_t req = size_for(0, i * 3 + 1) + (i % 25 == 0 ? 200000 : 0);
      grown[i] = malloc(req);
      memset(grown[i], 0x55, req < 64 ? req : 64);
    }
    for (int i = 0; i < GROW; i += 4) free(grown[i]);
    for (int i = 1; i < GROW; i += 4) keep(grown[i], 0);
    snprintf(path, sizeof path, "%s/truth2.json", argv[2]);
    g_threads[0].cache_bytes = MallocExtension_GetThreadCacheSize();
    if (snapshot(path, n) != 0) return 1;
    if (write(ready, &byte, 1) != 1) return 1;
  }
  close(ready);
  while (1) pause();
}
