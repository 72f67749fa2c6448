/* many — millions of chunks, for the benchmark.
 *
 *   many NCHUNKS READY_FD [NTHREADS] [OUTDIR]
 *
 * NTHREADS threads (default 4, at most 256, main included) each allocate NCHUNKS/NTHREADS chunks of mixed
 * sizes (a fixed LCG: ~90% 0x20..0x70, ~9.5% up to 0x200, ~0.5% up to 4 KiB), then free every
 * 8th one (tcache, fastbins, unsorted; neighbours stay live so little coalesces).  Non-main
 * arenas grow past one 64 MiB heap, so their heap_info chains have several heaps.  The pointer
 * arrays are themselves big mmapped chunks.  When all threads are done the main thread writes
 * OUTDIR/malloc_info.xml and OUTDIR/truth.json (with mallinfo2) if OUTDIR is given (the FILE
 * is opened with a static buffer before the heap is built, and never closed), writes one byte
 * to READY_FD and pauses forever.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct worker {
    int index;
    size_t n;
    void **ptrs;
    size_t freed;
    pthread_t th;
};

static pthread_barrier_t done;

static void die(const char *msg) {
    dprintf(2, "many: %s: %s\n", msg, strerror(errno));
    _exit(3);
}

static void work(struct worker *w) {
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(w->index + 1);
    w->ptrs = malloc(w->n * sizeof(void *));
    if (!w->ptrs) die("malloc ptrs");
    for (size_t k = 0; k < w->n; k++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        unsigned r = (unsigned)(x >> 33);
        unsigned pick = r % 1000;
        size_t sz;
        if (pick < 900)
            sz = 8 + (r >> 10) % 0x60;
        else if (pick < 995)
            sz = 0x70 + (r >> 10) % 0x190;
        else
            sz = 0x200 + (r >> 10) % 0xe00;
        void *p = malloc(sz);
        if (!p) die("malloc");
        *(volatile char *)p = (char)k;
        w->ptrs[k] = p;
    }
    for (size_t k = 3; k < w->n; k += 8) {
        free(w->ptrs[k]);
        w->ptrs[k] = NULL;
        w->freed++;
    }
}

static void *thread_main(void *arg) {
    work(arg);
    pthread_barrier_wait(&done);
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        dprintf(2, "usage: many NCHUNKS READY_FD [NTHREADS] [OUTDIR]\n");
        return 2;
    }
    size_t total = strtoull(argv[1], NULL, 0);
    int ready_fd = atoi(argv[2]);
    int nthreads = argc > 3 ? atoi(argv[3]) : 4;
    if (nthreads < 1 || nthreads > 256) nthreads = 4;
    int truth_fd = -1;
    FILE *info = NULL;
    static char info_buf[1 << 16];
    if (argc > 4) {
        char path[4096];
        snprintf(path, sizeof path, "%s/truth.json", argv[4]);
        truth_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (truth_fd < 0) die(path);
        snprintf(path, sizeof path, "%s/malloc_info.xml", argv[4]);
        info = fopen(path, "w");
        if (!info) die(path);
        setvbuf(info, info_buf, _IOFBF, sizeof info_buf);
    }
    static struct worker W[256];
    pthread_barrier_init(&done, NULL, (unsigned)nthreads);
    for (int i = 0; i < nthreads; i++) {
        W[i].index = i;
        W[i].n = total / (size_t)nthreads + (i == 0 ? total % (size_t)nthreads : 0);
    }
    for (int i = 1; i < nthreads; i++)
        if (pthread_create(&W[i].th, NULL, thread_main, &W[i]) != 0) die("pthread_create");
    work(&W[0]);
    pthread_barrier_wait(&done);

    if (truth_fd >= 0) {
        static char buf[1024];
        size_t freed = 0;
        for (int i = 0; i < nthreads; i++) freed += W[i].freed;
        malloc_info(0, info);
        fflush(info);
        struct mallinfo2 mi = mallinfo2();
        int n = snprintf(buf, sizeof buf,
                         "{\"program\": \"many\", \"pid\": %d, \"allocated\": %zu, \"freed\": %zu, "
                         "\"nthreads\": %d,\n \"mallinfo2\": {\"arena\": %zu, \"ordblks\": %zu, "
                         "\"smblks\": %zu, \"hblks\": %zu, \"hblkhd\": %zu, \"usmblks\": %zu, "
                         "\"fsmblks\": %zu, \"uordblks\": %zu, \"fordblks\": %zu, \"keepcost\": %zu}}\n",
                         (int)getpid(), total, freed, nthreads, mi.arena, mi.ordblks, mi.smblks,
                         mi.hblks, mi.hblkhd, mi.usmblks, mi.fsmblks, mi.uordblks, mi.fordblks,
                         mi.keepcost);
        if (write(truth_fd, buf, (size_t)n) != n) die("write truth");
    }
    char one = 'R';
    if (write(ready_fd, &one, 1) != 1) die("write ready");
    for (;;) pause();
}
