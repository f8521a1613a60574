package io.weightloader.examples;

import io.weightloader.cli.Sizes;
import io.weightloader.api.ProgressListener;
import java.io.PrintWriter;
import java.util.Locale;

/**
 * A one-line progress bar on stderr, redrawn in place with {@code \r} at most ten times a second, and only
 * once the load has run for a moment (quick loads print nothing).
 */
final class ProgressBar implements ProgressListener {
    private static final long START_AFTER_NANOS = 300_000_000L;
    private static final long REDRAW_NANOS = 100_000_000L;
    private static final int WIDTH = 30;

    private final PrintWriter err;
    private final long start = System.nanoTime();
    private long lastDraw;
    private boolean drawn;
    private long bytesDone;
    private long bytesTotal;
    private int tensorsDone;
    private int tensorsTotal;

    ProgressBar(PrintWriter err) {
        this.err = err;
    }

    @Override
    public synchronized void onProgress(long bytesDone, long bytesTotal, int tensorsDone, int tensorsTotal) {
        // callbacks from several threads may arrive out of order: keep the furthest
        this.bytesDone = Math.max(this.bytesDone, bytesDone);
        this.tensorsDone = Math.max(this.tensorsDone, tensorsDone);
        this.bytesTotal = bytesTotal;
        this.tensorsTotal = tensorsTotal;
        long now = System.nanoTime();
        if (now - start < START_AFTER_NANOS || (drawn && now - lastDraw < REDRAW_NANOS)) {
            return;
        }
        draw(now);
    }

    /** Draws the final state and ends the line, if anything was drawn. */
    synchronized void finish() {
        if (drawn) {
            draw(System.nanoTime());
            err.println();
            err.flush();
        }
    }

    private void draw(long now) {
        double fraction = bytesTotal <= 0 ? 1 : (double) bytesDone / bytesTotal;
        int filled = (int) Math.round(fraction * WIDTH);
        double secs = (now - start) / 1e9;
        err.print(String.format(Locale.ROOT, "\r[%s%s] %3d%%  %s / %s  %.2f GB/s  %d/%d tensors ",
                "#".repeat(filled), ".".repeat(WIDTH - filled), Math.round(fraction * 100),
                Sizes.human(bytesDone), Sizes.human(bytesTotal), secs > 0 ? bytesDone / secs / 1e9 : 0.0,
                tensorsDone, tensorsTotal));
        err.flush();
        drawn = true;
        lastDraw = now;
    }
}
