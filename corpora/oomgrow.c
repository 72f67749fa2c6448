/* oomgrow — native memory that only grows, until the kernel's OOM killer ends it (heapwalk
 * watch, issue 13).
 *
 *   oomgrow OUTDIR READY_FD SIZE PER_STEP STEP_MS [NTHREADS]
 *
 * NTHREADS threads (default 2, each its own arena) each malloc PER_STEP blocks of SIZE bytes
 * every STEP_MS milliseconds, fill them (so every page is resident: the cgroup charges it), and
 * never free them (a leak: the pointers are kept in a list of blocks so nothing is unreachable
 * either). After each step the main thread appends one line to OUTDIR/progress.jsonl (one
 * write(2) with O_APPEND, so a kill leaves whole lines):
 *   {"time": UNIX_SECONDS, "blocks": N, "size": SIZE, "chunk_size": request2size(SIZE),
 *    "bytes": N*SIZE, "step": K}
 * — the program's own count at each report, the oracle for the growth `watch` and `trend` must
 * name. One byte goes to READY_FD after the first step. It never exits by itself.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static size_t g_size, g_per_step;
static long g_step_ms;
static atomic_ulong g_blocks;
static atomic_uint g_ready;

struct node {
    struct node *next;
};

static void *grow(void *arg) {
    (void)arg;
    struct node *head = NULL;
    for (;;) {
        for (size_t i = 0; i < g_per_step; i++) {
            struct node *n = malloc(g_size);
            if (!n) abort();
            memset(n, 0x5a, g_size);
            n->next = head;
            head = n;
        }
        atomic_fetch_add(&g_blocks, g_per_step);
        atomic_fetch_add(&g_ready, 1);
        struct timespec ts = {g_step_ms / 1000, (g_step_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return head;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: oomgrow OUTDIR READY_FD SIZE PER_STEP STEP_MS [NTHREADS]\n");
        return 2;
    }
    const char *outdir = argv[1];
    int ready_fd = atoi(argv[2]);
    g_size = strtoul(argv[3], NULL, 0);
    g_per_step = strtoul(argv[4], NULL, 0);
    g_step_ms = atol(argv[5]);
    int nthreads = argc > 6 ? atoi(argv[6]) : 2;
    if (g_size < sizeof(struct node) || nthreads < 1 || nthreads > 64) return 2;
    size_t chunk = (g_size + 8 + 15) & ~(size_t)15;
    if (chunk < 32) chunk = 32;
    char path[4096];
    snprintf(path, sizeof path, "%s/progress.jsonl", outdir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
    if (fd < 0) return 1;
    pthread_t th[64];
    for (int i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, grow, NULL);
    int told = 0;
    for (unsigned long step = 1;; step++) {
        struct timespec ts = {g_step_ms / 1000, (g_step_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        unsigned long n = atomic_load(&g_blocks);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        char buf[256];
        int len = snprintf(buf, sizeof buf,
                           "{\"time\": %ld.%06ld, \"blocks\": %lu, \"size\": %zu, \"chunk_size\": %zu, "
                           "\"bytes\": %lu, \"step\": %lu}\n",
                           (long)now.tv_sec, now.tv_nsec / 1000, n, g_size, chunk, n * g_size, step);
        if (write(fd, buf, (size_t)len) != len) abort();
        if (!told && atomic_load(&g_ready) >= (unsigned)nthreads) {
            if (write(ready_fd, "r", 1) != 1) abort();
            told = 1;
        }
    }
}
