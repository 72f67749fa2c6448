/* freezeprobe — measures, from inside a process, the longest time it was stopped.
 *
 *   gcc -O2 -Wall -Wextra -shared -fPIC -pthread -o freezeprobe.so freezeprobe.c
 *   HEAPWALK_FREEZEPROBE=/tmp/probe LD_PRELOAD=./freezeprobe.so PROGRAM ARGS...
 *
 * When HEAPWALK_FREEZEPROBE names a file, the constructor creates it (4 KiB), maps it shared and
 * starts one thread (all signals blocked) that wakes every 1 ms: clock_nanosleep(CLOCK_MONOTONIC,
 * TIMER_ABSTIME) on a grid of absolute deadlines.  At each wake-up it takes the time since the
 * previous wake-up (the gap) and keeps the largest.  Deadlines missed while the process was
 * stopped are skipped (the next deadline is the first grid point after now), so a stop of T
 * shows as one gap of about T, not as a burst of immediate wake-ups.  A ptrace freeze (every
 * thread seized and interrupted), gcore or SIGSTOP stops this thread with the others: the
 * longest gap is the longest freeze (plus up to one period and the scheduling latency).  An
 * idle process reads 1-2 ms.
 *
 * The file is the only interface, so reading it disturbs nothing (no signal, no syscall in the
 * target).  Little-endian uint64 words, each written atomically:
 *   [0] magic "FRZPROBE" (0x45424f52505a5246)   [1] layout version (1)   [2] pid
 *   [3] period ns (1,000,000)
 *   [4] reset request: the reader increments it to reset the figures
 *   [5] reset seen: the probe copies [4] here after zeroing [6] and [7] (a reader waits for it)
 *   [6] max gap ns since the last reset      [7] wake-ups since the last reset
 *   [8] CLOCK_MONOTONIC ns of the last wake-up (now - [8] is the gap in progress, if any)
 *   [9] CLOCK_MONOTONIC ns of the wake-up that ended the max gap
 * Only the probe thread writes words 5-9 and only the reader writes word 4, so a reset cannot
 * race with an update.  The probe thread never calls malloc (no arena, no tcache); glibc's
 * pthread_create allocates its stack with mmap and a small DTV in the main arena.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { W_MAGIC, W_VERSION, W_PID, W_PERIOD, W_RESET_REQ, W_RESET_SEEN, W_MAX_GAP, W_WAKEUPS, W_LAST,
       W_MAX_AT, W_COUNT };

#define PROBE_MAGIC 0x45424f52505a5246ULL
#define PERIOD_NS 1000000ULL
#define NSEC 1000000000ULL

static uint64_t *words;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
}

static void put(int w, uint64_t v) { __atomic_store_n(&words[w], v, __ATOMIC_RELEASE); }

static void *probe_main(void *arg) {
    (void)arg;
    uint64_t last = now_ns(), max_gap = 0, wakeups = 0, seen = 0;
    uint64_t next = last + PERIOD_NS;
    put(W_LAST, last);
    for (;;) {
        struct timespec ts = {.tv_sec = (time_t)(next / NSEC), .tv_nsec = (long)(next % NSEC)};
        if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) continue;
        uint64_t now = now_ns(), gap = now - last;
        uint64_t req = __atomic_load_n(&words[W_RESET_REQ], __ATOMIC_ACQUIRE);
        if (req != seen) {
            /* The gap that ends now started before the reset: it does not count. */
            seen = req;
            max_gap = 0;
            wakeups = 0;
            put(W_MAX_GAP, 0);
            put(W_WAKEUPS, 0);
            put(W_RESET_SEEN, seen);
        } else {
            wakeups++;
            if (gap > max_gap) {
                max_gap = gap;
                put(W_MAX_GAP, max_gap);
                put(W_MAX_AT, now);
            }
            put(W_WAKEUPS, wakeups);
        }
        put(W_LAST, now);
        last = now;
        next += PERIOD_NS;
        if (next <= now) next = now + PERIOD_NS - (now - next) % PERIOD_NS;
    }
    return NULL;
}

__attribute__((constructor)) static void probe_start(void) {
    const char *path = getenv("HEAPWALK_FREEZEPROBE");
    if (!path || !*path) return;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (ftruncate(fd, 4096) != 0) {
        close(fd);
        return;
    }
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return;
    words = m;
    put(W_VERSION, 1);
    put(W_PID, (uint64_t)getpid());
    put(W_PERIOD, PERIOD_NS);
    put(W_RESET_REQ, 0);
    put(W_RESET_SEEN, 0);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t th;
    int rc = pthread_create(&th, &attr, probe_main, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) {
        pthread_detach(th);
        put(W_MAGIC, PROBE_MAGIC); /* last: a reader that sees the magic sees a running probe */
    }
}
