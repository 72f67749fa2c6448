/* alloc_retain — a program for `report` on jemalloc or tcmalloc (issue 16): healthy, or keeping a
 * lot of freed memory, with the allocator's own figures as the oracle.
 *
 *   alloc_retain MODE OUTDIR READY_FD        (MODE: healthy | retain)
 *
 * Run with LD_PRELOAD=libjemalloc.so.2 or libtcmalloc.so.4 (the allocator's statistics calls
 * are looked up with dlsym, so one binary serves both; without either it runs on glibc).
 * healthy: 2 threads each allocate 24 MiB in blocks of 64 B .. 64 KiB and keep them all.
 * retain:  the same, then each thread frees 90 % of its blocks (whole runs of large blocks: the
 *          allocator's dirty pages / page heap free spans), leaving 10 % in use.
 * The threads park with their caches alive. The main thread then reads the allocator's own
 * figures into static memory (jemalloc: mallctl "epoch", stats.{allocated,active,resident,mapped,
 * retained}, stats.arenas.<i>.{pdirty,pmuzzy,tcache_bytes}, opt.dirty_decay_ms; tcmalloc: the
 * MallocExtension_GetNumericProperty values), writes OUTDIR/truth.json with write(2) from a
 * static buffer, writes one byte to READY_FD and pauses forever.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define NTHREADS 2
#define PER_THREAD 4096
#define MAX_ARENAS 64

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
typedef int (*prop_fn)(const char *, size_t *);

static void *blocks[NTHREADS][PER_THREAD];
static int retain_mode;
static pthread_barrier_t done, park;
static char out[1 << 16];
static size_t outlen;

static void put(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void put(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + outlen, sizeof out - outlen, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof out - outlen) outlen += (size_t)n;
}

static size_t size_for(unsigned i) {
    /* 24 MiB per thread: 3/4 of the blocks small (64 B .. 2 KiB), 1/4 large (32 .. 64 KiB). */
    static const size_t small[] = {64, 128, 256, 512, 1024, 2048};
    if (i % 4 != 3) return small[i % 6];
    return (i % 8 == 3) ? 32768 : 65536 + 4096;
}

static void *worker(void *arg) {
    unsigned t = (unsigned)(uintptr_t)arg;
    for (unsigned i = 0; i < PER_THREAD; ++i) {
        size_t sz = size_for(i);
        blocks[t][i] = malloc(sz);
        memset(blocks[t][i], (int)(t + 1), sz);
    }
    if (retain_mode)
        for (unsigned i = 0; i < PER_THREAD; ++i)
            if (i % 10 != 0) {
                free(blocks[t][i]);
                blocks[t][i] = NULL;
            }
    pthread_barrier_wait(&done);
    pthread_barrier_wait(&park); /* never released */
    return NULL;
}

static void jemalloc_truth(mallctl_fn mallctl) {
    uint64_t epoch = 1;
    size_t esz = sizeof epoch;
    mallctl("epoch", &epoch, &esz, &epoch, esz);
    static const char *global[] = {"allocated", "active", "resident", "mapped", "retained", "metadata"};
    static size_t gv[6];
    static size_t av[MAX_ARENAS][3];
    static int aok[MAX_ARENAS];
    char name[128];
    for (unsigned i = 0; i < 6; ++i) {
        size_t sz = sizeof gv[i];
        snprintf(name, sizeof name, "stats.%s", global[i]);
        mallctl(name, &gv[i], &sz, NULL, 0);
    }
    unsigned narenas = 0;
    size_t usz = sizeof narenas;
    mallctl("arenas.narenas", &narenas, &usz, NULL, 0);
    if (narenas > MAX_ARENAS) narenas = MAX_ARENAS;
    static const char *keys[] = {"pdirty", "pmuzzy", "tcache_bytes"};
    for (unsigned a = 0; a < narenas; ++a) {
        _Bool init = 0;
        size_t bsz = sizeof init;
        snprintf(name, sizeof name, "arena.%u.initialized", a);
        if (mallctl(name, &init, &bsz, NULL, 0) != 0 || !init) continue;
        aok[a] = 1;
        for (unsigned k = 0; k < 3; ++k) {
            size_t sz = sizeof av[a][k];
            snprintf(name, sizeof name, "stats.arenas.%u.%s", a, keys[k]);
            mallctl(name, &av[a][k], &sz, NULL, 0);
        }
    }
    ssize_t decay = 0;
    size_t dsz = sizeof decay;
    mallctl("opt.dirty_decay_ms", &decay, &dsz, NULL, 0);
    put("{\"allocator\": \"jemalloc\", \"stats\": {");
    for (unsigned i = 0; i < 6; ++i) put("%s\"%s\": %zu", i ? ", " : "", global[i], gv[i]);
    put("}, \"dirty_decay_ms\": %zd, \"arenas\": [", decay);
    int first = 1;
    for (unsigned a = 0; a < narenas; ++a) {
        if (!aok[a]) continue;
        put("%s{\"index\": %u, \"pdirty\": %zu, \"pmuzzy\": %zu, \"tcache_bytes\": %zu}", first ? "" : ", ", a,
            av[a][0], av[a][1], av[a][2]);
        first = 0;
    }
    put("]}\n");
}

static void tcmalloc_truth(prop_fn get) {
    static const char *props[] = {"generic.current_allocated_bytes",     "generic.heap_size",
                                  "tcmalloc.pageheap_free_bytes",        "tcmalloc.pageheap_unmapped_bytes",
                                  "tcmalloc.central_cache_free_bytes",   "tcmalloc.transfer_cache_free_bytes",
                                  "tcmalloc.thread_cache_free_bytes",    "tcmalloc.max_total_thread_cache_bytes"};
    enum { N = sizeof props / sizeof props[0] };
    static size_t v[N];
    static int ok[N];
    for (unsigned i = 0; i < N; ++i) ok[i] = get(props[i], &v[i]);
    put("{\"allocator\": \"tcmalloc\", \"properties\": {");
    int first = 1;
    for (unsigned i = 0; i < N; ++i) {
        if (!ok[i]) continue;
        put("%s\"%s\": %zu", first ? "" : ", ", props[i], v[i]);
        first = 0;
    }
    put("}}\n");
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: alloc_retain healthy|retain OUTDIR READY_FD\n");
        return 2;
    }
    retain_mode = strcmp(argv[1], "retain") == 0;
    int ready = atoi(argv[3]);
    char path[4096];
    snprintf(path, sizeof path, "%s/truth.json", argv[2]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 1;
    mallctl_fn mallctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
    prop_fn prop = (prop_fn)dlsym(RTLD_DEFAULT, "MallocExtension_GetNumericProperty");
    if (mallctl) { /* ctl's first-use allocations before the threads run */
        uint64_t epoch = 1;
        size_t esz = sizeof epoch;
        mallctl("epoch", &epoch, &esz, &epoch, esz);
    }
    pthread_barrier_init(&done, NULL, NTHREADS + 1);
    pthread_barrier_init(&park, NULL, NTHREADS + 1);
    pthread_t th[NTHREADS];
    for (unsigned t = 0; t < NTHREADS; ++t) pthread_create(&th[t], NULL, worker, (void *)(uintptr_t)t);
    pthread_barrier_wait(&done);
    if (mallctl)
        jemalloc_truth(mallctl);
    else if (prop)
        tcmalloc_truth(prop);
    else
        put("{\"allocator\": \"ptmalloc\"}\n");
    if (write(fd, out, outlen) != (ssize_t)outlen) return 1;
    close(fd);
    if (write(ready, "R", 1) != 1) return 1;
    for (;;) pause();
}
