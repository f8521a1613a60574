package io.weightloader.backend.te;

import java.util.concurrent.locks.LockSupport;

/** {@code bandwidth-limit} shared by the readers of one load: each waits until its bytes fit the cap. Thread-safe. */
final class Pacer {
    private final long cap;
    private final long start = System.nanoTime();
    private long submitted;

    /** @param cap bytes per second; 0: no cap */
    Pacer(long cap) {
        this.cap = cap;
    }

    /** Waits until {@code bytes} more may start (or the deadline). */
    void await(long bytes, long deadline) {
        if (cap <= 0) {
            return;
        }
        long due;
        synchronized (this) {
            due = start + (long) (submitted * 1e9 / cap);
            submitted += bytes;
        }
        long now = System.nanoTime();
        if (due > now) {
            LockSupport.parkNanos(Math.min(due, deadline) - now);
        }
    }
}
