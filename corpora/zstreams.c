/* zstreams — zlib streams left open, and ZIP bytes left in freed buffers, for the classifier.
 *
 *   zstreams OUTDIR READY_FD
 *
 * Main thread: opens N_INF inflate streams that never saw data (no window yet), N_INFW inflate
 * streams that inflated data (window allocated), N_DEF deflate streams that compressed data;
 * it also opens and properly ends N_END streams of each kind (those must not be counted).
 * Every z_stream is malloc'd on its own, as Java's Inflater/Deflater do.
 * A worker thread (its own arena) copies ZIP archive bytes into N_ZIP malloc'd 8 KiB buffers,
 * separated by live guards so they cannot coalesce, and frees them: the ZIP data stays in free
 * chunks of the worker's arena. truth.json records the counts and the worker's LWP; then
 * READY_FD gets one byte and the program pauses.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define N_INF 40
#define N_INFW 25
#define N_DEF 15
#define N_END 5
#define N_ZIP 12
#define ZIP_BUF 8192

/* Globals with external linkage and volatile slots: the compiler must not elide these mallocs. */
z_stream *volatile keep[N_INF + N_INFW + N_DEF];
void *volatile guards[N_ZIP + 1];
void *volatile zip_bufs[N_ZIP];
static pid_t worker_lwp;
static pthread_barrier_t done;

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* A small but real ZIP archive: a local file header, data, a central directory entry and the
   end record; repeated to fill a buffer the way a JAR's bytes would. */
static size_t make_zip(unsigned char *out, size_t cap) {
    size_t n = 0;
    while (n + 200 < cap) {
        static const unsigned char local[] = {'P', 'K', 3, 4, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                              0, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0};
        memcpy(out + n, local, sizeof local);
        n += sizeof local;
        memcpy(out + n, "a.txthello", 10);
        n += 10;
        static const unsigned char central[] = {'P', 'K', 1, 2, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                0, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0,
                                                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        memcpy(out + n, central, sizeof central);
        n += sizeof central;
        memcpy(out + n, "a.txt", 5);
        n += 5;
    }
    return n;
}

static void *worker(void *arg) {
    (void)arg;
    worker_lwp = gettid();
    static unsigned char zip[ZIP_BUF];
    size_t n = make_zip(zip, sizeof zip);
    for (int i = 0; i < N_ZIP; ++i) {
        guards[i] = malloc(64);
        zip_bufs[i] = malloc(ZIP_BUF);
        memcpy(zip_bufs[i], zip, n);
    }
    guards[N_ZIP] = malloc(64);
    for (int i = 0; i < N_ZIP; ++i) free(zip_bufs[i]);  /* 8 KiB: beyond the tcache, into unsorted */
    pthread_barrier_wait(&done);
    for (;;) pause();
    return NULL;
}

static z_stream *new_stream(void) {
    z_stream *s = calloc(1, sizeof *s);
    if (!s) die("calloc");
    return s;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: zstreams OUTDIR READY_FD\n");
        return 2;
    }
    static unsigned char plain[65536], packed[70000], out[65536];
    for (size_t i = 0; i < sizeof plain; ++i) plain[i] = (unsigned char)("heapwalk"[i % 8] + i / 4096);
    uLongf packed_len = sizeof packed;
    if (compress(packed, &packed_len, plain, sizeof plain) != Z_OK) die("compress");
    int k = 0;
    for (int i = 0; i < N_INF + N_END; ++i) {
        z_stream *s = new_stream();
        if (inflateInit(s) != Z_OK) die("inflateInit");
        if (i < N_INF) keep[k++] = s; else { inflateEnd(s); free(s); }
    }
    for (int i = 0; i < N_INFW + N_END; ++i) {
        z_stream *s = new_stream();
        if (inflateInit(s) != Z_OK) die("inflateInit");
        s->next_in = packed;
        s->avail_in = 100;  /* part of the input: the stream stays open, its window allocated */
        s->next_out = out;
        s->avail_out = sizeof out;
        int rc = inflate(s, Z_NO_FLUSH);
        if (rc != Z_OK) die("inflate");
        if (i < N_INFW) keep[k++] = s; else { inflateEnd(s); free(s); }
    }
    for (int i = 0; i < N_DEF + N_END; ++i) {
        z_stream *s = new_stream();
        if (deflateInit(s, Z_DEFAULT_COMPRESSION) != Z_OK) die("deflateInit");
        s->next_in = plain;
        s->avail_in = 1000;
        s->next_out = out;
        s->avail_out = sizeof out;
        if (deflate(s, Z_NO_FLUSH) != Z_OK) die("deflate");
        if (i < N_DEF) keep[k++] = s; else { deflateEnd(s); free(s); }
    }
    pthread_barrier_init(&done, NULL, 2);
    pthread_t th;
    if (pthread_create(&th, NULL, worker, NULL) != 0) die("pthread_create");
    pthread_barrier_wait(&done);
    char path[4096];
    snprintf(path, sizeof path, "%s/truth.json", argv[1]);
    FILE *f = fopen(path, "w");
    if (!f) die("fopen");
    fprintf(f, "{\"inflate\": %d, \"inflate_window\": %d, \"deflate\": %d, \"zip_buffers\": %d, "
               "\"zip_buffer_size\": %d, \"worker_lwp\": %d, \"zlib\": \"%s\"}\n",
            N_INF, N_INFW, N_DEF, N_ZIP, ZIP_BUF, (int)worker_lwp, zlibVersion());
    fclose(f);
    if (write(atoi(argv[2]), "R", 1) != 1) die("write");
    for (;;) pause();
}
