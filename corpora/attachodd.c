/* attachodd — processes that are awkward to stop (issue 14 item 11).
 *
 *   attachodd MODE OUTDIR READY_FD
 *
 * Every mode first mallocs 1000 blocks of 100 bytes in the main arena and writes
 * OUTDIR/truth.json ({"blocks": 1000, "size": 100}), then:
 *   vfork   vforks a child that stops itself (SIGSTOP) before it execs: the parent stays in
 *           vfork, in uninterruptible sleep (state D), until the child goes on or is killed;
 *           the ready byte is written just before the vfork (the test waits for state D)
 *   zombie  starts two threads that park, then the main thread calls pthread_exit: the
 *           thread-group leader is a zombie whose threads run on (and own the memory)
 *   churn   starts and joins a short-lived thread every 100 microseconds, forever
 * One byte goes to READY_FD when the state is reached; the process never exits by itself.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ready_fd;

static void ready(void) {
    if (write(ready_fd, "r", 1) != 1) abort();
}

static void *park(void *arg) {
    if (arg) ready();
    for (;;) pause();
    return NULL;
}

static void *brief(void *arg) { return arg; }

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: attachodd vfork|zombie|churn OUTDIR READY_FD\n");
        return 2;
    }
    const char *mode = argv[1];
    ready_fd = atoi(argv[3]);
    static void *keep[1000];
    for (int i = 0; i < 1000; i++) {
        keep[i] = malloc(100);
        memset(keep[i], 'k', 100);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/truth.json", argv[2]);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fprintf(f, "{\"blocks\": 1000, \"size\": 100}\n");
    fclose(f);
    if (strcmp(mode, "vfork") == 0) {
        ready(); /* the parent is about to enter vfork: the test waits for state D itself */
        pid_t child = vfork();
        if (child == 0) {
            raise(SIGSTOP); /* the parent stays in vfork until this child goes on */
            _exit(0);
        }
        for (;;) pause();
    } else if (strcmp(mode, "zombie") == 0) {
        pthread_t a, b;
        pthread_create(&a, NULL, park, NULL);
        pthread_create(&b, NULL, park, (void *)1); /* it says ready */
        pthread_exit(NULL);
    } else if (strcmp(mode, "churn") == 0) {
        int told = 0;
        for (;;) {
            pthread_t t;
            if (pthread_create(&t, NULL, brief, NULL) == 0) pthread_join(t, NULL);
            if (!told) {
                ready();
                told = 1;
            }
            usleep(100);
        }
    }
    return 2;
}
