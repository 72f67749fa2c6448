// Seeds corpus for `heapwalk diff` and the verdict: a server that leaks Inflaters over many
// threads and whose per-connection native memory grows between two snapshots.
//
//   java -XX:NativeMemoryTracking=summary -XX:MaxDirectMemorySize=256m -cp DIR ConnGrowth \
//        OUTDIR READY_FIFO [inflaters=N] [threads=T] [conns=K] [more=K2] [buffer=S] [session=U]
//
// Phase 1: `inflaters` Inflaters (each has inflated part of a stream, so zlib holds its 32 KiB
// window) are leaked over `threads` threads (never end()ed, kept reachable: untracked by NMT),
// and `conns` "connections" are opened: each holds one direct ByteBuffer of `buffer` bytes and
// one Unsafe block of `session` bytes (both Unsafe.allocateMemory: NMT category "Other"; with
// buffer=0 only the Unsafe block, netty-socketio's 256 B per disconnect of seeds/004).
// Then OUTDIR/truth-1.json is written and one byte goes to READY_FIFO.  The program waits for a
// line on stdin, opens `more` connections (phase 2), writes OUTDIR/truth-2.json and another byte
// to READY_FIFO, and parks for good (the tests run it with -Xint and SerialGC so nothing moves).
import java.io.BufferedReader;
import java.io.File;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.zip.Deflater;
import java.util.zip.Inflater;

public class ConnGrowth {
    static final List<Object> KEEP = Collections.synchronizedList(new ArrayList<>());
    static final CountDownLatch NEVER = new CountDownLatch(1);

    static int arg(String[] args, String key, int dflt) {
        for (String a : args) if (a.startsWith(key + "=")) return Integer.parseInt(a.substring(key.length() + 1));
        return dflt;
    }

    static sun.misc.Unsafe unsafe() throws Exception {
        Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
        f.setAccessible(true);
        return (sun.misc.Unsafe) f.get(null);
    }

    static void leakInflaters(int n) {
        byte[] input = new byte[64 * 1024];
        for (int i = 0; i < input.length; i++) input[i] = (byte) ((i * 31) ^ (i >> 7));
        byte[] packed = new byte[input.length + 1024];
        Deflater once = new Deflater();
        once.setInput(input);
        once.finish();
        int plen = once.deflate(packed);
        once.end();
        byte[] out = new byte[input.length];
        for (int i = 0; i < n; i++) {
            Inflater inf = new Inflater();
            inf.setInput(packed, 0, plen);
            try {
                inf.inflate(out, 0, out.length / 2);  // stream stays open: window allocated
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
            KEEP.add(inf);
        }
    }

    static void connect(sun.misc.Unsafe u, int n, int buffer, int session) {
        for (int i = 0; i < n; i++) {
            if (buffer > 0) {  // buffer=0: the session block only (seeds/004: 256 B each)
                ByteBuffer b = ByteBuffer.allocateDirect(buffer);
                b.put(0, (byte) 1);
                KEEP.add(b);
            }
            long p = u.allocateMemory(session);
            u.setMemory(p, session, (byte) 0x33);
            KEEP.add(p);
        }
    }

    static void ready(File outdir, String fifo, int phase, String truth) throws Exception {
        Files.write(new File(outdir, "truth-" + phase + ".json").toPath(), truth.getBytes(StandardCharsets.UTF_8));
        try (OutputStream o = new FileOutputStream(fifo)) {
            o.write('0' + phase);
        }
    }

    public static void main(String[] args) throws Exception {
        File outdir = new File(args[0]);
        String fifo = args[1];
        int inflaters = arg(args, "inflaters", 0);
        int threads = Math.max(1, arg(args, "threads", 1));
        int conns = arg(args, "conns", 0);
        int more = arg(args, "more", 0);
        int buffer = arg(args, "buffer", 8192);
        int session = arg(args, "session", 3000);

        CountDownLatch done = new CountDownLatch(threads);
        Throwable[] failure = new Throwable[1];
        for (int t = 0; t < threads; t++) {
            final int n = inflaters / threads + (t < inflaters % threads ? 1 : 0);
            Thread th = new Thread(() -> {
                try {
                    leakInflaters(n);
                } catch (Throwable e) {
                    failure[0] = e;
                }
                done.countDown();
                try {
                    NEVER.await();
                } catch (InterruptedException e) {
                    // exit
                }
            }, "worker-" + t);
            th.setDaemon(true);
            th.start();
        }
        done.await();
        if (failure[0] != null) throw new RuntimeException(failure[0]);

        sun.misc.Unsafe u = unsafe();
        connect(u, conns, buffer, session);
        long pid = ProcessHandle.current().pid();
        String fmt = "{\"pid\": %d, \"phase\": %d, \"inflaters\": %d, \"threads\": %d, \"connections\": %d, "
            + "\"buffer\": %d, \"session\": %d}\n";
        ready(outdir, fifo, 1, String.format(fmt, pid, 1, inflaters, threads, conns, buffer, session));

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        if (in.readLine() == null) return;
        connect(u, more, buffer, session);
        ready(outdir, fifo, 2, String.format(fmt, pid, 2, inflaters, threads, conns + more, buffer, session));
        NEVER.await();
    }
}
