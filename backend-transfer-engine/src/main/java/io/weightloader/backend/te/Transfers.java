package io.weightloader.backend.te;

import io.weightloader.api.WeightLoaderException;
import io.weightloader.backend.te.ReadPlan.Read;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.OneSidedEngine.Batch;
import io.weightloader.backend.te.engine.OneSidedEngine.OpState;
import io.weightloader.backend.te.engine.OneSidedEngine.OpStatus;
import io.weightloader.memory.cuda.Cuda;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.concurrent.locks.LockSupport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs a queue of reads against one peer in bounded batches: up to {@code batches-in-flight} batches at once, each
 * polled to a final state under the load's deadline, failed reads retried a bounded number of times, the submissions
 * paced to the bandwidth cap.
 */
final class Transfers {
    private static final Logger LOG = LoggerFactory.getLogger(Transfers.class);

    private final int batchSize;
    private final int batchesInFlight;
    private final int retries;
    private final Duration transferTimeout;

    /**
     * @param batchSize       most reads per batch (the engine's limit may be lower)
     * @param batchesInFlight batches submitted at once (one under a bandwidth cap)
     * @param retries         attempts after the first for each failed read
     * @param transferTimeout the load's time limit, in messages
     */
    Transfers(int batchSize, int batchesInFlight, int retries, Duration transferTimeout) {
        this.batchSize = batchSize;
        this.batchesInFlight = batchesInFlight;
        this.retries = retries;
        this.transferTimeout = transferTimeout;
    }

    /** A submitted batch and the reads it holds. */
    private record InFlight(Batch batch, List<Read> reads) {
    }

    /**
     * Runs the reads from the peer called {@code from} in messages (a relay, or a seed rank): up to
     * {@code batches-in-flight} batches at once, so the engine never waits for this thread between batches; each
     * batch is polled to a final state under the deadline, failed reads are retried (first) until their attempts run
     * out, and the submissions are paced to the bandwidth cap.
     */
    void run(OneSidedEngine engine, OneSidedEngine.Peer peer, Deque<Read> queue, Progress progress, long sliceSize,
             long cap, long deadline, String from) {
        // Mooncake's GPU transports open the peer's memory handles on the submitting thread, which needs a current
        // device: the destination's (a pool thread of a resharded load, or a host's own thread, may have none)
        Read head = queue.peek();
        if (head != null && !head.parts().get(0).dest().region().device().isHost()) {
            Cuda.use(head.parts().get(0).dest().region().device());
        }
        int maxBatch = Math.min(batchSize, peer.maxBatchSize());
        long maxBatchBytes = cap > 0 ? Math.max(sliceSize, cap / 10) : Long.MAX_VALUE;
        int depth = cap > 0 ? 1 : batchesInFlight;
        Deque<InFlight> inFlight = new ArrayDeque<>();
        long submitted = 0;
        long tStart = System.nanoTime();
        try {
            while (!queue.isEmpty() || !inFlight.isEmpty()) {
                while (!queue.isEmpty() && inFlight.size() < depth) {
                    List<Read> reads = new ArrayList<>();
                    long batchBytes = 0;
                    int cost = 0;
                    while (!queue.isEmpty() && (reads.isEmpty() || cost + peer.cost(queue.peek().op()) <= maxBatch
                            && batchBytes + queue.peek().bytes() <= maxBatchBytes)) {
                        Read r = queue.poll();
                        reads.add(r);
                        cost += peer.cost(r.op());
                        batchBytes += r.bytes();
                    }
                    if (cap > 0) {
                        throttle(tStart, submitted, cap, deadline);
                    }
                    submitted += batchBytes;
                    inFlight.add(new InFlight(peer.submit(reads.stream().map(Read::op).toList()), reads));
                }
                InFlight f = inFlight.peek();
                List<OpStatus> statuses = new ArrayList<>(f.reads().size());
                awaitFinal(engine, f.batch(), deadline, f.reads(), progress, from);
                for (int i = 0; i < f.reads().size(); i++) {
                    statuses.add(f.batch().status(i));
                }
                inFlight.poll();
                release(engine, f);
                int retried = 0;
                String firstRetry = null;
                for (int i = 0; i < f.reads().size(); i++) {
                    Read r = f.reads().get(i);
                    OpStatus st = statuses.get(i);
                    if (st.state() == OpState.COMPLETED) {
                        continue; // reported as it completed (awaitFinal)
                    } else if (r.attempt() >= retries) {
                        throw new WeightLoaderException("reading " + r.describe() + " from " + from + " via "
                                + engine.name() + " failed after " + (r.attempt() + 1) + " attempt(s): " + st.detail());
                    } else {
                        if (retried++ == 0) {
                            firstRetry = r.describe() + ": " + st.detail();
                        }
                        // retry first, so a persistent failure exhausts its attempts quickly
                        queue.addFirst(r.retry());
                    }
                }
                if (retried > 0) {
                    LOG.warn("retrying {} failed read(s) from {}; first: {}", retried, from, firstRetry);
                    LockSupport.parkNanos(Math.min(deadline - System.nanoTime(), 200_000_000L));
                }
                progress.report();
            }
            if (cap > 0) {
                // the last batch went at full speed: wait so that the whole load averages no more than the cap
                throttle(tStart, submitted, cap, deadline);
            }
        } finally {
            // after a failure: batches still in flight are abandoned as safely as the engine can
            for (InFlight f : inFlight) {
                release(engine, f);
            }
        }
    }

    private static void release(OneSidedEngine engine, InFlight f) {
        if (!f.batch().release()) {
            LOG.warn("engine {} could not release a batch with reads in flight", engine.name());
        }
    }

    /**
     * Polls every read to a final state, in order (reads finish roughly in order), until the deadline; each read that
     * completed is reported at once, not at the batch's end (a relay serves its bytes onwards as they arrive).
     */
    private void awaitFinal(OneSidedEngine engine, Batch batch, long deadline, List<Read> slices, Progress progress,
                            String from) {
        long pause = 20_000;
        int next = 0;
        while (next < batch.size()) {
            OpStatus st = batch.status(next);
            if (st.isFinal()) {
                if (st.state() == OpState.COMPLETED) {
                    progress.completed(slices.get(next));
                }
                next++;
                pause = 20_000;
                continue;
            }
            if (System.nanoTime() > deadline) {
                int pending = 0;
                for (int i = next; i < batch.size(); i++) {
                    if (!batch.status(i).isFinal()) {
                        pending++;
                    }
                }
                throw new WeightLoaderException("transfer from " + from + " via " + engine.name()
                        + " did not finish within " + transferTimeout
                        + " (weight-loader.remote-instance.transfer-timeout): " + progress.done() + " of "
                        + progress.total() + " bytes done, " + pending + " read(s) pending, e.g. "
                        + slices.get(next).describe());
            }
            if (Thread.currentThread().isInterrupted()) {
                // parkNanos returns at once for an interrupted thread: stop instead of spinning to the deadline
                throw new WeightLoaderException("load from " + from + " interrupted");
            }
            LockSupport.parkNanos(pause);
            pause = Math.min(pause * 2, 200_000);
        }
    }

    private static void throttle(long tStart, long submitted, long cap, long deadline) {
        long due = tStart + (long) (submitted * 1e9 / cap);
        long now = System.nanoTime();
        if (due > now) {
            LockSupport.parkNanos(Math.min(due, deadline) - now);
        }
    }
}
