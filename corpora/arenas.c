/* arenas — a multi-threaded corpus program with chunks in every free-list kind.
 *
 *   arenas NTHREADS OUTDIR READY_FD [ARENA_MAX [BULK_MIB]]
 *
 * NTHREADS counts the main thread (1 = main thread only).  ARENA_MAX, when given and non-zero,
 * is passed to mallopt(M_ARENA_MAX) so that threads share arenas.  BULK_MIB, when given and
 * non-zero (needs NTHREADS >= 2), makes thread 1 allocate that many MiB of 0x400-byte chunks
 * (kept) at the end of its allocation phase, so that its arena grows past one 64 MiB heap:
 * its bins then hold chunks of the first heap while its top is in the last one.
 *
 * Portable across glibc 2.30 .. 2.43 (built against each version's headers; see the version
 * macros below): mallinfo2 exists from 2.33 (older: mallinfo, int fields, written under the
 * same "mallinfo2" key), the tcache_perthread_struct chunk is 0x290 (2.30-2.41) / 0x300
 * (2.42+), glibc 2.43 has no fastbins (chunks "freed to the fastbins" below go to the unsorted
 * bin instead and coalesce; truth.json says "has_fastbins": false and the fastbins tallies are
 * then only what the program freed past the tcache) and a new mmapped-chunk header (size field
 * = mapping - 16).  The tcache truth assumes 7 chunks per tcache bin: glibc 2.43's default is
 * 16, so run it with GLIBC_TUNABLES=glibc.malloc.tcache_count=7.  On 2.43 the tcache is
 * created on a thread's first free, not its first malloc, which changes where it sits but not
 * the accounting.
 *
 * Every thread (in turn, one at a time, so that the result is deterministic) builds the same
 * kind of heap state in the arena glibc gives it:
 *
 *   live       allocations of known sizes that the program keeps;
 *   mmapped    a few allocations >= 256 KiB (above the 128 KiB mmap threshold), kept, one of
 *              them from posix_memalign (its chunk is not at its mapping's start); their
 *              addresses are in the truth ("mmapped_mems");
 *   small/large  chunks freed while their tcache bin is full (or too big for the tcache),
 *              guarded by live neighbours so they cannot coalesce, then sorted out of the
 *              unsorted list into the small and large bins by a 32 KiB request that has to be
 *              carved from top (larger than every free chunk, so no bin chunk is split);
 *   unsorted   chunks freed after that sort, guarded, with no malloc in that arena afterwards;
 *   fastbins   7 chunks of a fast size freed to fill the tcache bin, then more freed;
 *   tcache     fewer than (or exactly) 7 chunks of a few tcache sizes;
 *   top        always there; the last chunk below it is a live guard.
 *
 * The phases run arena-wide in order (all threads allocate, all free into bins, all sort, all
 * free into unsorted, all free into fastbins, all free into tcache) so that a shared arena
 * keeps every kind too: nobody mallocs after anybody's unsorted frees.  malloc_consolidate only
 * runs from a large request or a free >= 64 KiB, and the fastbin frees come after both.
 *
 * Then the main thread writes the ground truth into OUTDIR (malloc_info.xml, malloc_stats.txt,
 * truth.json), writes one byte to READY_FD and pauses forever.  Writing the truth does not
 * touch the heap: the FILE for malloc_info is opened (and given a static buffer) before the
 * heap state is built, truth.json is formatted into a static buffer and written with write(2),
 * and malloc_stats goes to fd 2 after a dup2 of a file opened early.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_THREADS 64
#define MAX_PTRS 256
#define HEAP_MAX_SIZE (64UL * 1024 * 1024) /* glibc 2.36 64-bit: 2 * DEFAULT_MMAP_THRESHOLD_MAX */
#define NON_MAIN_ARENA 0x4UL
#define GLIBC_AT_LEAST(minor) (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= (minor)))
#if GLIBC_AT_LEAST(42)
#define TCACHE_STRUCT_CHUNK 0x300 /* uint16_t num_slots[76] + 76 entries = 0x2f8, chunk 0x300 */
#elif GLIBC_AT_LEAST(30)
#define TCACHE_STRUCT_CHUNK 0x290 /* sizeof(tcache_perthread_struct) 0x280 + 16, glibc >= 2.30 */
#else
#define TCACHE_STRUCT_CHUNK 0x250 /* char counts[64] + 64 entries = 0x240, chunk 0x250 */
#endif
#if GLIBC_AT_LEAST(43)
#define HAS_FASTBINS 0
#else
#define HAS_FASTBINS 1
#endif
#define BULK_CHUNK 0x400

enum { PH_ALLOC, PH_FREE_BINS, PH_SORT, PH_FREE_UNSORTED, PH_FREE_FAST, PH_FREE_TCACHE, NPHASES };

struct tally {
    size_t count, bytes;
};

struct list {
    void *p[MAX_PTRS];
    size_t n;
};

struct tstate {
    int index;
    pid_t lwp;
    pthread_t th;
    int cmd;  /* phase requested by the main thread, -1 = none */
    int done; /* last phase completed */
    uintptr_t arena; /* non-main arena address (from heap_info.ar_ptr), 0 for main_arena */
    int in_main_arena;
    size_t dtv_chunk; /* chunk size of the dtv calloc'd by pthread_create (0 for main thread) */
    struct list live, mmapped;
    struct list to_bins, to_unsorted, to_fast, to_tcache;
    struct tally t_live, t_mmapped, t_tcache, t_fast, t_unsorted, t_small, t_large;
    struct tally t_bulk;   /* part of t_live: the BULK_MIB chunks (not in the live list) */
    size_t heaps_crossed;  /* new heaps the bulk allocation started */
    size_t tcache_chunk;   /* chunk size of its tcache_perthread_struct */
};

static struct tstate T[MAX_THREADS];
static int nthreads;
static size_t bulk_mib;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void die(const char *msg) {
    /* Only before the heap state is built or on a fatal error. */
    dprintf(2, "arenas: %s: %s\n", msg, strerror(errno));
    _exit(3);
}

static size_t chunk_size(void *mem) { return ((const volatile size_t *)mem)[-1] & ~(size_t)7; }
static int chunk_non_main(void *mem) { return (((size_t *)mem)[-1] & NON_MAIN_ARENA) != 0; }

static void push(struct list *l, void *p) {
    if (l->n >= MAX_PTRS) {
        errno = ENOSPC;
        die("too many pointers");
    }
    l->p[l->n++] = p;
}

/* malloc a chunk of exactly `csize` bytes (a multiple of 16, >= 0x20). */
static void *mchunk(size_t csize) {
    void *p = malloc(csize - 8);
    if (!p) die("malloc");
    memset(p, 0x5a, csize - 8);
    if (chunk_size(p) != csize) {
        errno = EINVAL;
        die("unexpected chunk size");
    }
    return p;
}

static void keep(struct tstate *t, void *p) {
    push(&t->live, p);
    t->t_live.count++;
    t->t_live.bytes += chunk_size(p);
}

static void *guard(struct tstate *t) {
    void *g = mchunk(0x20);
    keep(t, g);
    return g;
}

/* BULK_MIB MiB of kept 0x400-byte chunks.  When the heap is full, sysmalloc starts a new heap
   and frees the old top minus its fenceposts (glibc malloc/arena.c + malloc.c sysmalloc):
   into the tcache, a fastbin or the unsorted bin depending on its size and version, which
   would spoil the program's free-list truth.  So the old top is taken back at once with a
   malloc of exactly its size (nothing else in this arena is free yet, so malloc returns that
   very chunk: tcache hit, or an exact fit from the unsorted list) and kept.  An old top too
   small to free is left as sysmalloc made it: an in-use chunk of 16 or 32 bytes followed by
   the 0-sized fencepost, which the walker reports as a fencepost, not as in use. */
static void bulk(struct tstate *t) {
    size_t n = bulk_mib * 1024 * 1024 / BULK_CHUNK;
    char *prev = NULL; /* previous bulk chunk (chunk address) */
    for (size_t k = 0; k < n; k++) {
        void *p = malloc(BULK_CHUNK - 8);
        if (!p) die("malloc bulk");
        if (chunk_size(p) != BULK_CHUNK) {
            errno = EINVAL;
            die("unexpected bulk chunk size");
        }
        *(volatile char *)p = (char)k;
        char *c = (char *)p - 16;
        t->t_live.count++;
        t->t_live.bytes += BULK_CHUNK;
        t->t_bulk.count++;
        t->t_bulk.bytes += BULK_CHUNK;
        if (prev && c != prev + BULK_CHUNK) {
            char *old_top = prev + BULK_CHUNK;
            if (((uintptr_t)c & ~(HEAP_MAX_SIZE - 1)) == ((uintptr_t)prev & ~(HEAP_MAX_SIZE - 1))) {
                errno = EINVAL;
                die("bulk chunk not contiguous within a heap");
            }
            t->heaps_crossed++;
            size_t sz = ((size_t *)old_top)[1] & ~(size_t)7;
            size_t next = ((size_t *)(old_top + sz))[1] & ~(size_t)7;
            if (next == 16) { /* freed old top, then the 16-byte fencepost */
                void *r = malloc(sz - 8);
                if (r != old_top + 16) {
                    errno = EINVAL;
                    die("could not take back the old top");
                }
                t->t_live.count++;
                t->t_live.bytes += sz;
#if GLIBC_AT_LEAST(43)
                /* 2.43 creates a thread's tcache on its first free (tcache_init (NULL):
                   __libc_malloc2 (sizeof), chunk 0x300) or, before that, when _int_malloc
                   stashes or takes an exact fit, as this malloc did (the thread has not freed
                   anything yet): tcache_init (av) calls _int_malloc (av, request2size (sizeof)),
                   which pads the request a second time: chunk 0x310. */
                t->tcache_chunk = TCACHE_STRUCT_CHUNK + 16;
#endif
            } else if (!(next == 0 && sz <= 32)) {
                errno = EINVAL;
                die("unexpected old top layout");
            }
        }
        /* On 2.43 taking the old top back can create the tcache (tcache_init from _int_malloc),
           carved from the new heap's top: re-anchor on the next chunk. */
        int crossed = prev && c != prev + BULK_CHUNK;
        prev = crossed ? NULL : c;
    }
}

/* ---- the phases ---------------------------------------------------------------------------- */

static void phase_alloc(struct tstate *t) {
    int i = t->index;
    /* Live allocations of known sizes. */
    for (int k = 0; k < 4 + i % 3; k++) keep(t, mchunk(0x30 + 0x10 * k));
    keep(t, mchunk(0x3f0 + 0x100 * (i % 4)));
    keep(t, mchunk(0x1000));
    void *z = calloc(1, 0x2000 - 8);
    if (!z) die("calloc");
    keep(t, z);

    /* Where did glibc put us? */
    void *probe = t->live.p[0];
    if (chunk_non_main(probe)) {
        uintptr_t heap = (uintptr_t)probe & ~(HEAP_MAX_SIZE - 1);
        t->arena = *(uintptr_t *)heap; /* heap_info.ar_ptr is the first field */
        t->in_main_arena = 0;
    } else {
        t->arena = 0;
        t->in_main_arena = 1;
    }

    /* Small-bin sizes (0x90: just above the fastbin maximum; 0x3f0: the largest small size):
       7 to fill the tcache bin, then some for the small bins, one more for unsorted. */
    static const size_t small_sizes[] = {0x90, 0x3f0};
    for (int s = 0; s < 2; s++) {
        size_t cs = small_sizes[s];
        for (int k = 0; k < 7; k++) {
            void *p = mchunk(cs);
            push(&t->to_bins, p); /* freed first in PH_FREE_BINS: these land in tcache */
        }
        for (int k = 0; k < 1 + (i + s) % 2; k++) {
            push(&t->to_bins, mchunk(cs));
            guard(t);
        }
        push(&t->to_unsorted, mchunk(cs));
        guard(t);
    }
    /* Large-bin sizes (>= 0x400, above the tcache maximum 0x410, below the 64 KiB
       consolidation threshold). */
    size_t large_sizes[] = {0x500, 0x800 + 0x10 * (size_t)i, 0x2000 + 0x100 * (size_t)(i % 8), 0x2f00};
    for (int s = 0; s < 4; s++) {
        push(&t->to_bins, mchunk(large_sizes[s]));
        guard(t);
    }
    /* Unsorted candidates that are too large for the tcache. */
    push(&t->to_unsorted, mchunk(0x610));
    guard(t);
    push(&t->to_unsorted, mchunk(0x1010 + 0x10 * (size_t)(i % 5)));
    guard(t);

    /* Fast sizes: 7 per size fill the tcache bin, the rest go to the fastbin. */
    static const size_t fast_sizes[] = {0x20, 0x50, 0x80};
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < 7 + 1 + (i + s) % 3; k++) push(&t->to_fast, mchunk(fast_sizes[s]));

    /* Tcache-only sizes: 0x100 x3, 0x250 x7 (a full bin), 0x410 x1 (the largest tcache size). */
    for (int k = 0; k < 3; k++) push(&t->to_tcache, mchunk(0x100));
    for (int k = 0; k < 7; k++) push(&t->to_tcache, mchunk(0x250));
    push(&t->to_tcache, mchunk(0x410));

    /* Mmapped chunks (kept). */
    for (int k = 0; k < 2 + i % 2; k++) {
        void *m = malloc(256 * 1024 + 4096 * (size_t)i + 8192 * (size_t)k);
        if (!m) die("malloc mmapped");
        size_t raw = ((size_t *)m)[-1];
        if (!(raw & 0x2)) {
            errno = EINVAL;
            die("large allocation is not mmapped");
        }
        push(&t->mmapped, m);
        t->t_mmapped.count++;
#if GLIBC_AT_LEAST(43)
        /* mmap_set_chunk: size field = mapping size - offset - CHUNK_HDR_SZ (offset 0 here). */
        t->t_mmapped.bytes += (raw & ~(size_t)7) + 16;
#else
        t->t_mmapped.bytes += malloc_usable_size(m) + 16;
#endif
    }

    /* One from posix_memalign: _int_memalign moves the chunk up inside its mapping and keeps the
       offset in its prev_size (alignment 32: 48 bytes up, 2.43: 16; 4096: 4080 up). */
    {
        size_t align = i % 2 ? 4096 : 32;
        void *m = NULL;
        if (posix_memalign(&m, align, 300 * 1024 + 4096 * (size_t)i) != 0 || !m) die("posix_memalign");
        size_t raw = ((size_t *)m)[-1], off = ((size_t *)m)[-2] & ~(size_t)1;
        if (!(raw & 0x2) || off == 0) {
            errno = EINVAL;
            die("aligned allocation is not an mmapped chunk inside its mapping");
        }
        push(&t->mmapped, m);
        t->t_mmapped.count++;
#if GLIBC_AT_LEAST(43)
        t->t_mmapped.bytes += off + (raw & ~(size_t)7) + 16; /* mmap_size () */
#else
        t->t_mmapped.bytes += off + (raw & ~(size_t)7); /* munmap_chunk: prev_size + size */
#endif
    }

    if (bulk_mib && i == 1) bulk(t);

    /* Guard the arena's last chunk from top. */
    guard(t);
}

static void phase_free_bins(struct tstate *t) {
    /* Per small size: the first 7 go to the tcache, the others to unsorted (sorted later);
       large sizes go to unsorted (sorted later). */
    size_t seen_small[2] = {0, 0};
    for (size_t k = 0; k < t->to_bins.n; k++) {
        void *p = t->to_bins.p[k];
        size_t cs = chunk_size(p);
        int s = cs == 0x90 ? 0 : cs == 0x3f0 ? 1 : -1;
        free(p);
        if (s >= 0 && seen_small[s]++ < 7) {
            t->t_tcache.count++;
            t->t_tcache.bytes += cs;
        } else if (s >= 0) {
            t->t_small.count++;
            t->t_small.bytes += cs;
        } else {
            t->t_large.count++;
            t->t_large.bytes += cs;
        }
    }
}

static void phase_sort(struct tstate *t) {
    /* Larger than every free chunk: walks the unsorted list (sorting into small/large bins),
       finds nothing big enough in the bins, and is carved from top. */
    keep(t, mchunk(0x8000));
    /* No guard after it: a small request here would be carved out of a small-bin chunk and
       leave its remainder in the unsorted list.  The trigger chunk itself sits below top. */
}

static void phase_free_unsorted(struct tstate *t) {
    for (size_t k = 0; k < t->to_unsorted.n; k++) {
        void *p = t->to_unsorted.p[k];
        size_t cs = chunk_size(p);
        free(p);
        t->t_unsorted.count++;
        t->t_unsorted.bytes += cs;
    }
}

static void phase_free_fast(struct tstate *t) {
    size_t seen[3] = {0, 0, 0};
    for (size_t k = 0; k < t->to_fast.n; k++) {
        void *p = t->to_fast.p[k];
        size_t cs = chunk_size(p);
        int s = cs == 0x20 ? 0 : cs == 0x50 ? 1 : 2;
        free(p);
        if (seen[s]++ < 7) {
            t->t_tcache.count++;
            t->t_tcache.bytes += cs;
        } else {
            t->t_fast.count++;
            t->t_fast.bytes += cs;
        }
    }
}

static void phase_free_tcache(struct tstate *t) {
    for (size_t k = 0; k < t->to_tcache.n; k++) {
        void *p = t->to_tcache.p[k];
        size_t cs = chunk_size(p);
        free(p);
        t->t_tcache.count++;
        t->t_tcache.bytes += cs;
    }
}

static void run_phase(struct tstate *t, int ph) {
    switch (ph) {
    case PH_ALLOC: phase_alloc(t); break;
    case PH_FREE_BINS: phase_free_bins(t); break;
    case PH_SORT: phase_sort(t); break;
    case PH_FREE_UNSORTED: phase_free_unsorted(t); break;
    case PH_FREE_FAST: phase_free_fast(t); break;
    case PH_FREE_TCACHE: phase_free_tcache(t); break;
    }
}

/* ---- threads ------------------------------------------------------------------------------- */

static void *thread_main(void *arg) {
    struct tstate *t = arg;
    t->lwp = gettid();
    /* The dtv that pthread_create calloc'd for this thread (in the creator's arena): the TCB
       holds &dtv[1] at %fs:8, the block starts one dtv_t (16 bytes) earlier. */
    void *dtv;
    __asm__ volatile("mov %%fs:8, %0" : "=r"(dtv));
    t->dtv_chunk = malloc_usable_size((char *)dtv - 16) + 8;
    pthread_mutex_lock(&mu);
    t->done = -1;
    pthread_cond_broadcast(&cv);
    for (;;) {
        while (t->cmd == t->done) pthread_cond_wait(&cv, &mu);
        int ph = t->cmd;
        pthread_mutex_unlock(&mu);
        run_phase(t, ph);
        pthread_mutex_lock(&mu);
        t->done = ph;
        pthread_cond_broadcast(&cv);
        /* After the last phase this waits on the condition variable forever (no malloc). */
    }
    return NULL;
}

/* ---- ground truth -------------------------------------------------------------------------- */

static char jbuf[1 << 20];
static size_t jlen;

static void jprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(jbuf + jlen, sizeof jbuf - jlen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof jbuf - jlen) {
        errno = ENOSPC;
        die("truth.json buffer");
    }
    jlen += (size_t)n;
}

static void jtally(const char *name, struct tally x, const char *sep) {
    jprintf("\"%s\": {\"count\": %zu, \"bytes\": %zu}%s", name, x.count, x.bytes, sep);
}

static void write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

static char info_buf[1 << 16];

/* mallinfo2() (glibc >= 2.33) or mallinfo() (int fields) with the same field names. */
struct mi_sizes {
    size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};

static struct mi_sizes get_mallinfo(void) {
    struct mi_sizes r;
#if GLIBC_AT_LEAST(33)
    struct mallinfo2 m = mallinfo2();
#define MI_FIELD(f) ((size_t)m.f)
#else
    struct mallinfo m = mallinfo();
#define MI_FIELD(f) ((size_t)(unsigned int)m.f)
#endif
    r.arena = MI_FIELD(arena);
    r.ordblks = MI_FIELD(ordblks);
    r.smblks = MI_FIELD(smblks);
    r.hblks = MI_FIELD(hblks);
    r.hblkhd = MI_FIELD(hblkhd);
    r.usmblks = MI_FIELD(usmblks);
    r.fsmblks = MI_FIELD(fsmblks);
    r.uordblks = MI_FIELD(uordblks);
    r.fordblks = MI_FIELD(fordblks);
    r.keepcost = MI_FIELD(keepcost);
#undef MI_FIELD
    return r;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        dprintf(2, "usage: arenas NTHREADS OUTDIR READY_FD [ARENA_MAX [BULK_MIB]]\n");
        return 2;
    }
    nthreads = atoi(argv[1]);
    const char *outdir = argv[2];
    int ready_fd = atoi(argv[3]);
    int arena_max = argc > 4 ? atoi(argv[4]) : 0;
    bulk_mib = argc > 5 ? strtoul(argv[5], NULL, 0) : 0;
    if (nthreads < 1 || nthreads > MAX_THREADS) {
        dprintf(2, "arenas: NTHREADS must be 1..%d\n", MAX_THREADS);
        return 2;
    }
    if (bulk_mib && nthreads < 2) {
        dprintf(2, "arenas: BULK_MIB needs NTHREADS >= 2 (thread 1 allocates it)\n");
        return 2;
    }
    if (arena_max > 0) mallopt(M_ARENA_MAX, arena_max);

    /* Everything that allocates happens now, before the heap state is built. */
    char path[4096];
    snprintf(path, sizeof path, "%s/malloc_info.xml", outdir);
    FILE *info = fopen(path, "w");
    if (!info) die(path);
    setvbuf(info, info_buf, _IOFBF, sizeof info_buf);
    size_t file_chunk = chunk_size(info); /* fopen mallocs the FILE in main_arena */
    snprintf(path, sizeof path, "%s/malloc_stats.txt", outdir);
    int stats_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (stats_fd < 0) die(path);
    snprintf(path, sizeof path, "%s/truth.json", outdir);
    int truth_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (truth_fd < 0) die(path);

    for (int i = 0; i < nthreads; i++) T[i].tcache_chunk = TCACHE_STRUCT_CHUNK;
    T[0].index = 0;
    T[0].lwp = gettid();
    T[0].th = pthread_self();
    for (int i = 1; i < nthreads; i++) {
        T[i].index = i;
        T[i].cmd = -1;
        T[i].done = -2;
        if (pthread_create(&T[i].th, NULL, thread_main, &T[i]) != 0) die("pthread_create");
        pthread_mutex_lock(&mu);
        while (T[i].done != -1) pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    }

    /* Build the heap state, one thread at a time, phase by phase. */
    for (int ph = 0; ph < NPHASES; ph++) {
        run_phase(&T[0], ph);
        for (int i = 1; i < nthreads; i++) {
            pthread_mutex_lock(&mu);
            T[i].cmd = ph;
            pthread_cond_broadcast(&cv);
            while (T[i].done != ph) pthread_cond_wait(&cv, &mu);
            pthread_mutex_unlock(&mu);
        }
    }

    /* ---- ground truth; from here on nothing may allocate or free ---- */
    malloc_info(0, info);
    fflush(info); /* never fclose: that would free the FILE */
    if (dup2(stats_fd, 2) < 0) die("dup2");
    malloc_stats();
    struct mi_sizes mi = get_mallinfo();

    jprintf("{\"program\": \"arenas\", \"pid\": %d, \"nthreads\": %d, \"arena_max\": %d,\n",
            (int)getpid(), nthreads, arena_max);
    jprintf("\"glibc\": \"%s\", \"built_for\": \"%d.%d\", \"has_fastbins\": %s, "
            "\"mallinfo_source\": \"%s\", \"tcache_struct_chunk\": %d, \"bulk_mib\": %zu,\n",
            gnu_get_libc_version(), __GLIBC__, __GLIBC_MINOR__, HAS_FASTBINS ? "true" : "false",
            GLIBC_AT_LEAST(33) ? "mallinfo2" : "mallinfo", TCACHE_STRUCT_CHUNK, bulk_mib);
    jprintf("\"mallinfo2\": {\"arena\": %zu, \"ordblks\": %zu, \"smblks\": %zu, \"hblks\": %zu, "
            "\"hblkhd\": %zu, \"usmblks\": %zu, \"fsmblks\": %zu, \"uordblks\": %zu, "
            "\"fordblks\": %zu, \"keepcost\": %zu},\n",
            mi.arena, mi.ordblks, mi.smblks, mi.hblks, mi.hblkhd, mi.usmblks, mi.fsmblks,
            mi.uordblks, mi.fordblks, mi.keepcost);
    /* libc's own chunks that we know of: each thread's tcache_perthread_struct (in the arena
       of its first malloc), the FILE that fopen allocated (main thread, main arena), and the
       dtv that pthread_create calloc'd for every new thread (main thread, main arena). */
    jprintf("\"libc_chunks\": [\n");
    for (int i = 0; i < nthreads; i++) {
        jprintf("  {\"what\": \"tcache_perthread_struct\", \"lwp\": %d, \"main_arena\": %s, "
                "\"arena\": ",
                (int)T[i].lwp, T[i].in_main_arena ? "true" : "false");
        if (T[i].in_main_arena)
            jprintf("null");
        else
            jprintf("%lu", (unsigned long)T[i].arena);
        jprintf(", \"size\": %zu},\n", T[i].tcache_chunk);
    }
    for (int i = 1; i < nthreads; i++)
        jprintf("  {\"what\": \"dtv\", \"lwp\": %d, \"main_arena\": true, \"arena\": null, "
                "\"size\": %zu},\n",
                (int)T[i].lwp, T[i].dtv_chunk);
    jprintf("  {\"what\": \"FILE\", \"lwp\": %d, \"main_arena\": true, \"arena\": null, "
            "\"size\": %zu}\n],\n",
            (int)T[0].lwp, file_chunk);
    jprintf("\"threads\": [\n");
    for (int i = 0; i < nthreads; i++) {
        struct tstate *t = &T[i];
        jprintf("  {\"index\": %d, \"lwp\": %d, \"main_arena\": %s, ", i, (int)t->lwp,
                t->in_main_arena ? "true" : "false");
        if (t->in_main_arena)
            jprintf("\"arena\": null, ");
        else
            jprintf("\"arena\": %lu, ", (unsigned long)t->arena);
        jtally("live", t->t_live, ", ");
        jtally("mmapped", t->t_mmapped, ", ");
        jprintf("\"mmapped_mems\": [");
        for (size_t k = 0; k < t->mmapped.n; k++)
            jprintf("%s%lu", k ? ", " : "", (unsigned long)(uintptr_t)t->mmapped.p[k]);
        jprintf("], ");
        jtally("tcache", t->t_tcache, ", ");
        jtally("fastbins", t->t_fast, ", ");
        jtally("unsorted", t->t_unsorted, ", ");
        jtally("small", t->t_small, ", ");
        jtally("large", t->t_large, ", ");
        jtally("bulk", t->t_bulk, ", ");
        jprintf("\"heaps_crossed\": %zu", t->heaps_crossed);
        jprintf("}%s\n", i + 1 < nthreads ? "," : "");
    }
    jprintf("]}\n");
    write_all(truth_fd, jbuf, jlen);
    fsync(truth_fd);

    char one = 'R';
    write_all(ready_fd, &one, 1);
    for (;;) pause();
}
