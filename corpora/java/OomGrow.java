// A JVM whose native memory only grows until the kernel's OOM killer ends it (heapwalk watch,
// issue 13): "requests" that each keep one Unsafe.allocateMemory block (NMT category Other,
// never freed: the classic per-request native leak).
//
//   java -XX:NativeMemoryTracking=summary -cp DIR OomGrow OUTDIR READY_FIFO \
//        [threads=T] [size=S] [per_step=K] [step_ms=M]
//
// T threads each allocate K blocks of S bytes (touched, so resident) every M ms. Every M ms the
// main thread appends one line to OUTDIR/progress.jsonl (whole lines: one write each):
//   {"time": UNIX_SECONDS, "requests": N, "size": S, "bytes": N*S}
// the program's own count, the oracle for the growth watch/trend/diff must name. One byte goes
// to READY_FIFO once every thread has done its first step.
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

public class OomGrow {
    static final AtomicLong REQUESTS = new AtomicLong();

    static int arg(String[] args, String key, int dflt) {
        for (String a : args) if (a.startsWith(key + "=")) return Integer.parseInt(a.substring(key.length() + 1));
        return dflt;
    }

    public static void main(String[] args) throws Exception {
        String outdir = args[0];
        String fifo = args[1];
        int threads = arg(args, "threads", 4);
        int size = arg(args, "size", 256);
        int perStep = arg(args, "per_step", 100);
        int stepMs = arg(args, "step_ms", 10);
        Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
        f.setAccessible(true);
        sun.misc.Unsafe unsafe = (sun.misc.Unsafe) f.get(null);
        CountDownLatch started = new CountDownLatch(threads);
        for (int t = 0; t < threads; t++) {
            Thread th = new Thread(() -> {
                boolean first = true;
                while (true) {
                    for (int i = 0; i < perStep; i++) {
                        long p = unsafe.allocateMemory(size);
                        unsafe.setMemory(p, size, (byte) 0x5a);
                    }
                    REQUESTS.addAndGet(perStep);
                    if (first) {
                        started.countDown();
                        first = false;
                    }
                    try {
                        Thread.sleep(stepMs);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            }, "request-" + t);
            th.setDaemon(true);
            th.start();
        }
        started.await();
        try (OutputStream ready = new FileOutputStream(fifo)) {
            ready.write('r');
        }
        try (FileOutputStream progress = new FileOutputStream(outdir + "/progress.jsonl", true)) {
            while (true) {
                long n = REQUESTS.get();
                double now = System.currentTimeMillis() / 1000.0;
                String line = String.format(java.util.Locale.ROOT, "{\"time\": %.3f, \"requests\": %d, \"size\": %d, \"bytes\": %d}%n",
                                            now, n, size, n * size);
                progress.write(line.getBytes(StandardCharsets.US_ASCII));
                Thread.sleep(stepMs);
            }
        }
    }
}
