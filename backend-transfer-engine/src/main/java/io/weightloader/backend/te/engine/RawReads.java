package io.weightloader.backend.te.engine;

import java.util.List;
import java.util.concurrent.locks.LockSupport;

/** An engine's raw read, for the benchmarks' baselines: no plan, no retries, no deadline, no report. */
public final class RawReads {
    private RawReads() {
    }

    /**
     * Reads {@code ops} in order, {@code batchSize} at a time, polling every op to a final state (parking 20 us
     * between polls, to leave the cores to the engine's own threads).
     *
     * @throws IllegalStateException on the first read that did not complete
     */
    public static void readAll(OneSidedEngine.Peer peer, List<OneSidedEngine.ReadOp> ops, int batchSize) {
        for (int from = 0; from < ops.size(); from += batchSize) {
            try (OneSidedEngine.Batch b = peer.submit(ops.subList(from, Math.min(ops.size(), from + batchSize)))) {
                for (int i = 0; i < b.size(); i++) {
                    OneSidedEngine.OpStatus s;
                    while (!(s = b.status(i)).isFinal()) {
                        LockSupport.parkNanos(20_000);
                    }
                    if (s.state() != OneSidedEngine.OpState.COMPLETED) {
                        throw new IllegalStateException("raw read " + (from + i) + " failed: " + s.detail());
                    }
                }
            }
        }
    }
}
