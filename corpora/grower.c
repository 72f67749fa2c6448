// grower: a heap that grows by a known number of chunks of a known size, step by step, and
// prints its own counts at every step (the oracle of `heapwalk trend` and `heapwalk watch`).
//
//   grower OUTDIR READY_FD SIZE PER_STEP [INTERVAL_MS [THREADS]]
//
// Start-up: a fixed "noise" set (300 chunks of 40 bytes, 40 of 3000 bytes), then step 0
// (nothing grown yet): OUTDIR/truth.json is written, a line appended to OUTDIR/steps.jsonl,
// and one byte written to READY_FD.
//
// Each step: PER_STEP blocks of malloc(SIZE) kept, filled with text (one "grower record"
// line repeated), split over THREADS threads (each thread allocates in its own arena; the
// main thread is thread 0); PER_STEP / 4 blocks of malloc(200) kept, all zero; PER_STEP / 2
// blocks of malloc(64) allocated and freed again (churn: free chunks, never in use). Then the
// truth is rewritten (a temporary file renamed over truth.json) and appended to steps.jsonl:
//   {"step", "size", "chunk_size", "count", "bytes", "requested_bytes", "side_size",
//    "side_chunk_size", "side_count", "threads", "vm_rss_bytes", "time"}
// (count = blocks of SIZE kept so far, bytes = count * chunk_size.)
//
// INTERVAL_MS = 0 (default): a step runs for each byte read from stdin, followed by one byte
// to READY_FD; EOF on stdin exits. INTERVAL_MS > 0: a step every INTERVAL_MS milliseconds,
// forever (until killed: the OOM killer of a memory cgroup, say), nothing more on READY_FD.
//
// The kept pointers live in an mmapped array (not in the heap), so the only heap chunks of
// SIZE's chunk size the program makes are the ones it counts.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64
#define SIDE_SIZE 200
#define CHURN_SIZE 64
#define MAX_KEPT (1u << 26)

static size_t g_size, g_per_step;
static int g_threads = 1;
static void **g_kept;  // MAX_KEPT slots, mmapped
static size_t g_count, g_side_count;
static pthread_barrier_t g_start, g_done;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t chunk_size(size_t request) {
    size_t cs = (request + 8 + 15) & ~(size_t)15;
    return cs < 32 ? 32 : cs;
}

static void fill_text(char *p, size_t n, size_t serial) {
    char line[64];
    int len = snprintf(line, sizeof line, "grower record %zu: the quick brown fox\n", serial);
    for (size_t i = 0; i < n; i++)
        p[i] = line[i % (size_t)len];
}

static void keep(void *p) {
    pthread_mutex_lock(&g_lock);
    if (g_count + g_side_count < MAX_KEPT)
        g_kept[g_count + g_side_count] = p;
    pthread_mutex_unlock(&g_lock);
}

// One thread's share of a step: `n` blocks of SIZE, n / 4 of SIDE_SIZE, n / 2 of churn.
static void grow_share(size_t n, size_t serial) {
    void *churn[4096];
    for (size_t i = 0; i < n; i++) {
        char *p = malloc(g_size);
        if (!p)
            abort();
        fill_text(p, g_size, serial + i);
        keep(p);
        pthread_mutex_lock(&g_lock);
        g_count++;
        pthread_mutex_unlock(&g_lock);
    }
    for (size_t i = 0; i < n / 4; i++) {
        void *p = calloc(1, SIDE_SIZE);
        if (!p)
            abort();
        keep(p);
        pthread_mutex_lock(&g_lock);
        g_side_count++;
        pthread_mutex_unlock(&g_lock);
    }
    size_t m = n / 2 < 4096 ? n / 2 : 4096;
    for (size_t i = 0; i < m; i++)
        churn[i] = malloc(CHURN_SIZE);
    for (size_t i = 0; i < m; i++)
        free(churn[i]);
}

static size_t share(int t) {
    size_t base = g_per_step / (size_t)g_threads;
    return base + ((size_t)t < g_per_step % (size_t)g_threads ? 1 : 0);
}

static size_t g_step;
// Global (not static): the compiler may not drop the allocations it holds.
void *grower_noise[340];

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&g_start);
        grow_share(share(t), g_step * g_per_step + (size_t)t * 1000000);
        pthread_barrier_wait(&g_done);
    }
    return NULL;
}

static long vm_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib < 0 ? -1 : kib * 1024;
}

static void write_truth(const char *outdir, size_t step) {
    char path[4096], tmp[4096], buf[1024];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    size_t cs = chunk_size(g_size);
    int n = snprintf(buf, sizeof buf,
                     "{\"step\": %zu, \"size\": %zu, \"chunk_size\": %zu, \"count\": %zu, "
                     "\"bytes\": %zu, \"requested_bytes\": %zu, \"side_size\": %d, "
                     "\"side_chunk_size\": %zu, \"side_count\": %zu, \"threads\": %d, "
                     "\"vm_rss_bytes\": %ld, \"time\": %ld.%06ld}\n",
                     step, g_size, cs, g_count, g_count * cs, g_count * g_size, SIDE_SIZE,
                     chunk_size(SIDE_SIZE), g_side_count, g_threads, vm_rss_bytes(),
                     (long)tv.tv_sec, (long)tv.tv_usec);
    snprintf(tmp, sizeof tmp, "%s/truth.json.tmp", outdir);
    snprintf(path, sizeof path, "%s/truth.json", outdir);
    FILE *f = fopen(tmp, "w");
    if (!f || fwrite(buf, 1, (size_t)n, f) != (size_t)n || fclose(f) != 0)
        abort();
    if (rename(tmp, path) != 0)
        abort();
    snprintf(path, sizeof path, "%s/steps.jsonl", outdir);
    f = fopen(path, "a");
    if (!f || fwrite(buf, 1, (size_t)n, f) != (size_t)n || fclose(f) != 0)
        abort();
}

static void signal_ready(int fd) {
    char c = 'r';
    while (write(fd, &c, 1) < 0 && errno == EINTR)
        ;
}

static void step(const char *outdir, size_t n) {
    g_step = n;
    if (g_threads > 1) {
        pthread_barrier_wait(&g_start);
        grow_share(share(0), n * g_per_step);
        pthread_barrier_wait(&g_done);
    } else {
        grow_share(g_per_step, n * g_per_step);
    }
    write_truth(outdir, n);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: grower OUTDIR READY_FD SIZE PER_STEP [INTERVAL_MS [THREADS]]\n");
        return 2;
    }
    const char *outdir = argv[1];
    int ready = atoi(argv[2]);
    g_size = strtoul(argv[3], NULL, 0);
    g_per_step = strtoul(argv[4], NULL, 0);
    long interval = argc > 5 ? atol(argv[5]) : 0;
    g_threads = argc > 6 ? atoi(argv[6]) : 1;
    if (g_threads < 1 || g_threads > MAX_THREADS || g_size == 0) {
        fprintf(stderr, "grower: bad arguments\n");
        return 2;
    }
    g_kept = mmap(NULL, MAX_KEPT * sizeof(void *), PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g_kept == MAP_FAILED)
        return 1;
    // Noise that does not grow: the fastest-growing size must not be these.
    for (int i = 0; i < 300; i++)
        grower_noise[i] = calloc(1, 40);
    for (int i = 300; i < 340; i++)
        grower_noise[i] = calloc(1, 3000);
    pthread_barrier_init(&g_start, NULL, (unsigned)g_threads);
    pthread_barrier_init(&g_done, NULL, (unsigned)g_threads);
    for (int t = 1; t < g_threads; t++) {
        pthread_t th;
        if (pthread_create(&th, NULL, worker, (void *)(intptr_t)t) != 0)
            return 1;
    }
    write_truth(outdir, 0);
    signal_ready(ready);
    if (interval > 0) {
        struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
        for (size_t n = 1;; n++) {
            nanosleep(&ts, NULL);
            step(outdir, n);
        }
    }
    char c;
    for (size_t n = 1;; n++) {
        ssize_t got = read(0, &c, 1);
        if (got < 0 && errno == EINTR) {
            n--;
            continue;
        }
        if (got <= 0)
            break;
        step(outdir, n);
        signal_ready(ready);
    }
    return 0;
}
