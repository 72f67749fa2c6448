// Thread-stack corpus: threads whose stacks are touched to a known depth, then held still.
//
//   java [-XX:NativeMemoryTracking=summary|detail] -cp DIR StackLoad OUTDIR READY_FIFO
//        [threads=N] [depth=FRAMES] [direct=N]
//
// Each of the N threads recurses FRAMES interpreted frames deep (with -Xint every frame lives on
// the thread's stack), so its stack is resident down to that depth, then parks at the bottom.
// `direct=N` keeps N direct ByteBuffers of 1 MiB (anonymous memory NMT calls "Other").  The
// program writes OUTDIR/truth.json (threads started, frames each, its pid), writes one byte to
// READY_FIFO and waits for good: no jcmd has run when it signals, so NMT's image holds only
// the committed parts of the stacks recorded when they were created (the guard zones).
import java.io.File;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;

public class StackLoad {
    static final CountDownLatch NEVER = new CountDownLatch(1);
    static final List<Object> KEEP = new ArrayList<>();

    static int arg(String[] args, String key, int dflt) {
        for (String a : args) if (a.startsWith(key + "=")) return Integer.parseInt(a.substring(key.length() + 1));
        return dflt;
    }

    /** Recurse `n` frames, with a few locals per frame, then run `atBottom`. */
    static long dive(int n, long a, long b, long c, CountDownLatch atBottom) throws InterruptedException {
        long x = a + 1, y = b ^ x, z = c + y;
        if (n == 0) {
            atBottom.countDown();
            NEVER.await();
            return x + y + z;
        }
        return dive(n - 1, x, y, z, atBottom) + 1;
    }

    public static void main(String[] args) throws Exception {
        String outdir = args[0];
        String fifo = args[1];
        int threads = arg(args, "threads", 16);
        int depth = arg(args, "depth", 2000);
        int direct = arg(args, "direct", 0);
        for (int i = 0; i < direct; i++) KEEP.add(ByteBuffer.allocateDirect(1 << 20));
        CountDownLatch ready = new CountDownLatch(threads);
        for (int i = 0; i < threads; i++) {
            Thread t = new Thread(() -> {
                try {
                    dive(depth, 1, 2, 3, ready);
                } catch (InterruptedException e) {
                    // exit
                }
            }, "diver-" + i);
            t.setDaemon(true);
            t.start();
        }
        ready.await();
        String truth = String.format("{\"threads\": %d, \"depth\": %d, \"direct\": %d, \"pid\": %d}\n", threads, depth,
                direct, ProcessHandle.current().pid());
        Files.write(new File(outdir, "truth.json").toPath(), truth.getBytes(StandardCharsets.UTF_8));
        try (OutputStream o = new FileOutputStream(fifo)) {
            o.write('R');
        }
        NEVER.await();
    }
}
