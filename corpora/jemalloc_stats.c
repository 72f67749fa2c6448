/* jemalloc_stats — a multi-threaded program on jemalloc 5.3 that prints jemalloc's own statistics.
 *
 *   jemalloc_stats READY_FD OUTDIR [NTHREADS]
 *
 * Linked with -ljemalloc (or run with LD_PRELOAD=libjemalloc.so.2 / a -g build of it).
 * NTHREADS threads (default 4) each allocate a fixed pattern of sizes from 8 B to 256 KiB (slab
 * regions and large extents), free every third one (into their tcaches, slabs and dirty extents),
 * and park with their tcaches alive. The main thread then calls mallctl("epoch") and reads
 * stats.{allocated,active,metadata,resident,mapped,retained} and, for every initialised arena,
 * stats.arenas.<i>.{pactive,pdirty,pmuzzy,mapped,retained,resident,base,internal,
 * small.allocated,large.allocated,tcache_bytes} into static memory, then writes OUTDIR/truth.json
 * (the figures, and every allocation the threads hold: address and malloc_usable_size) with
 * write(2) from a static buffer — nothing here allocates after the epoch — writes one byte to
 * READY_FD and pauses forever.
 *
 * truth.json also carries, for the tcache oracle, each worker's LWP and arena (thread.arena; the
 * workers get an arena each) and, per arena, stats.arenas.<i>.bins.<j>.curregs and
 * lextents.<j>.curlextents of the tcache-able classes by size ("classes"): a worker's tcache
 * holds, per class, its arena's current regions less the ones it still holds ("held": per
 * class size, the regions the worker still holds).
 *
 * With a fourth argument "grow" it then waits for one byte on stdin, allocates and frees more
 * on the main thread, reads the statistics again and writes OUTDIR/truth2.json (the same
 * figures, "held" of the main thread's new allocations) and a second byte to READY_FD: two
 * snapshots of one process for `diff` (their statistics' differences are its oracle).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PER_THREAD 3000
#define MAX_THREADS 16
#define MAX_ARENAS 64

#define MAX_CLASSES 64
#define GROW 20000

static void *held[MAX_THREADS][PER_THREAD];
static int worker_lwp[MAX_THREADS];
static unsigned worker_arena[MAX_THREADS];
static size_t class_size[MAX_CLASSES];
static size_t class_cur[MAX_ARENAS][MAX_CLASSES];
static unsigned nclasses;
static void *grown[GROW];
static size_t grown_size[GROW];
static size_t held_size[MAX_THREADS][PER_THREAD];
static pthread_barrier_t done, park;

static const char *arena_keys[] = {"pactive", "pdirty", "pmuzzy", "mapped", "retained", "resident",
                                   "base", "internal", "small.allocated", "large.allocated", "tcache_bytes"};
#define NKEYS (sizeof arena_keys / sizeof arena_keys[0])
static const char *global_keys[] = {"allocated", "active", "metadata", "resident", "mapped", "retained"};
#define NGLOBAL (sizeof global_keys / sizeof global_keys[0])
static size_t arena_vals[MAX_ARENAS][NKEYS];
static int arena_ok[MAX_ARENAS];
static size_t global_vals[NGLOBAL];
static char out[1 << 22];
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
    /* A fixed pattern: mostly small, some pages, some large (tcache-able and not). */
    static const size_t sizes[] = {8, 16, 24, 40, 64, 100, 128, 200, 256, 500, 1000, 1024, 2000, 4096, 7000,
                                   10000, 14336, 16384, 20000, 32768, 40000, 65536, 100000, 262144};
    unsigned k = i % 64;
    if (k < 48) return sizes[k % 10];
    if (k < 60) return sizes[10 + k % 8];
    return sizes[18 + k % 6];
}

static void *worker(void *arg) {
    unsigned t = (unsigned)(uintptr_t)arg;
    for (unsigned i = 0; i < PER_THREAD; ++i) {
        size_t sz = size_for(i + t * 7);
        held[t][i] = malloc(sz);
        memset(held[t][i], (int)t + 1, sz < 64 ? sz : 64);
        held_size[t][i] = malloc_usable_size(held[t][i]);
    }
    for (unsigned i = 0; i < PER_THREAD; i += 3) {
        free(held[t][i]);
        held[t][i] = NULL;
    }
    worker_lwp[t] = (int)syscall(SYS_gettid);
    size_t asz = sizeof worker_arena[t];
    mallctl("thread.arena", &worker_arena[t], &asz, NULL, 0);
    pthread_barrier_wait(&done);
    pthread_barrier_wait(&park); /* never released: the tcache stays as it is */
    return NULL;
}

/* Reads the statistics (nothing allocates from the epoch to the write) and writes them to fd. */
static int snapshot(const char *path, int fd, unsigned nthreads, int second) {
    (void)path;
    uint64_t epoch = 1;
    size_t esz = sizeof epoch;
    unsigned nbins = 0, nhbins = 0;
    size_t usz0 = sizeof nbins;
    mallctl("arenas.nbins", &nbins, &usz0, NULL, 0);
    usz0 = sizeof nhbins;
    mallctl("arenas.nhbins", &nhbins, &usz0, NULL, 0);
    nclasses = nhbins < MAX_CLASSES ? nhbins : MAX_CLASSES;
    for (unsigned j = 0; j < nclasses; ++j) {
        char cname[64];
        if (j < nbins)
            snprintf(cname, sizeof cname, "arenas.bin.%u.size", j);
        else
            snprintf(cname, sizeof cname, "arenas.lextent.%u.size", j - nbins);
        size_t v = 0, vsz = sizeof v;
        mallctl(cname, &v, &vsz, NULL, 0);
        class_size[j] = v;
    }
    mallctl("epoch", &epoch, &esz, &epoch, esz);
    outlen = 0;
    unsigned narenas = 0;
    size_t usz = sizeof narenas;
    mallctl("arenas.narenas", &narenas, &usz, NULL, 0);
    if (narenas > MAX_ARENAS) narenas = MAX_ARENAS;
    char name[128];
    for (unsigned i = 0; i < NGLOBAL; ++i) {
        snprintf(name, sizeof name, "stats.%s", global_keys[i]);
        size_t v = 0, vsz = sizeof v;
        mallctl(name, &v, &vsz, NULL, 0);
        global_vals[i] = v;
    }
    for (unsigned a = 0; a < narenas; ++a) {
        _Bool init = 0;
        size_t bsz = sizeof init;
        snprintf(name, sizeof name, "arena.%u.initialized", a);
        if (mallctl(name, &init, &bsz, NULL, 0) != 0 || !init) continue;
        arena_ok[a] = 1;
        for (unsigned k = 0; k < NKEYS; ++k) {
            snprintf(name, sizeof name, "stats.arenas.%u.%s", a, arena_keys[k]);
            size_t v = 0, vsz = sizeof v;
            if (mallctl(name, &v, &vsz, NULL, 0) != 0) v = (size_t)-1;
            arena_vals[a][k] = v;
        }
        for (unsigned j = 0; j < nclasses; ++j) {
            if (j < nbins)
                snprintf(name, sizeof name, "stats.arenas.%u.bins.%u.curregs", a, j);
            else
                snprintf(name, sizeof name, "stats.arenas.%u.lextents.%u.curlextents", a, j - nbins);
            size_t v = 0, vsz = sizeof v;
            if (mallctl(name, &v, &vsz, NULL, 0) != 0) v = (size_t)-1;
            class_cur[a][j] = v;
        }
    }

    put("{\"narenas\": %u, \"stats\": {", narenas);
    for (unsigned i = 0; i < NGLOBAL; ++i) put("%s\"%s\": %zu", i ? ", " : "", global_keys[i], global_vals[i]);
    put("}, \"arenas\": [");
    int first = 1;
    for (unsigned a = 0; a < narenas; ++a) {
        if (!arena_ok[a]) continue;
        put("%s{\"index\": %u", first ? "" : ", ", a);
        first = 0;
        for (unsigned k = 0; k < NKEYS; ++k) put(", \"%s\": %zu", arena_keys[k], arena_vals[a][k]);
        put(", \"classes\": {");
        for (unsigned j = 0; j < nclasses; ++j) put("%s\"%zu\": %zu", j ? ", " : "", class_size[j], class_cur[a][j]);
        put("}}");
    }
    put("], \"threads\": [");
    for (unsigned t = 0; t < nthreads; ++t)
    {
        put("%s{\"lwp\": %d, \"arena\": %u, \"held\": {", t ? ", " : "", worker_lwp[t], worker_arena[t]);
        int any = 0;
        for (unsigned j = 0; j < nclasses; ++j) {
            unsigned n = 0;
            for (unsigned i = 0; i < PER_THREAD; ++i)
                if (held[t][i] && held_size[t][i] == class_size[j]) ++n;
            if (n) put("%s\"%zu\": %u", any++ ? ", " : "", class_size[j], n);
        }
        put("}}");
    }
    put("], \"held\": [");
    first = 1;
    if (second)
        for (unsigned i = 0; i < GROW; ++i)
            if (grown[i]) {
                put("%s[%lu, %zu]", first ? "" : ", ", (unsigned long)(uintptr_t)grown[i], grown_size[i]);
                first = 0;
            }
    for (unsigned t = 0; t < nthreads; ++t)
        for (unsigned i = 0; i < PER_THREAD; ++i)
            if (held[t][i]) {
                put("%s[%lu, %zu]", first ? "" : ", ", (unsigned long)(uintptr_t)held[t][i], held_size[t][i]);
                first = 0;
            }
    put("]}\n");
    if (write(fd, out, outlen) != (ssize_t)outlen) return 1;
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: jemalloc_stats READY_FD OUTDIR [NTHREADS]\n");
        return 2;
    }
    int ready = atoi(argv[1]);
    unsigned nthreads = argc > 3 ? (unsigned)atoi(argv[3]) : 4;
    if (nthreads < 1 || nthreads > MAX_THREADS) nthreads = 4;
    char path[4096];
    snprintf(path, sizeof path, "%s/truth.json", argv[2]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 1;
    uint64_t epoch = 1;
    size_t esz = sizeof epoch;
    mallctl("epoch", &epoch, &esz, &epoch, esz); /* ctl's own first-use allocations happen here */
    pthread_barrier_init(&done, NULL, nthreads + 1);
    pthread_barrier_init(&park, NULL, nthreads + 1);
    pthread_t th[MAX_THREADS];
    for (unsigned t = 0; t < nthreads; ++t) pthread_create(&th[t], NULL, worker, (void *)(uintptr_t)t);
    pthread_barrier_wait(&done);

    if (snapshot(path, fd, nthreads, 0) != 0) return 1;
    if (write(ready, "R", 1) != 1) return 1;
    if (argc > 4 && strcmp(argv[4], "grow") == 0) {
        char byte;
        if (read(0, &byte, 1) != 1) return 1;
        /* Growth on the main thread (arena 0): small, page-sized and large, a quarter freed. */
        for (unsigned i = 0; i < GROW; ++i) {
            size_t sz = size_for(i * 5 + 3) + (i % 20 == 0 ? 300000 : 0);
            grown[i] = malloc(sz);
            memset(grown[i], 0x77, sz < 64 ? sz : 64);
            grown_size[i] = malloc_usable_size(grown[i]);
        }
        for (unsigned i = 0; i < GROW; i += 4) {
            free(grown[i]);
            grown[i] = NULL;
        }
        snprintf(path, sizeof path, "%s/truth2.json", argv[2]);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || snapshot(path, fd, nthreads, 1) != 0) return 1;
        if (write(ready, "R", 1) != 1) return 1;
    }
    for (;;) pause();
}
