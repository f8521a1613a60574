package io.weightloader.backend.te;

import io.weightloader.backend.te.Segments.Segment;
import io.weightloader.backend.te.Segments.Unit;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.List;

/**
 * The work of a load from several sources and where it stands: segments waiting for a source (a queue each source pulls
 * from as it finishes one, so a faster source takes more), and which units are done (arrived whole and, where checked,
 * matched the root's checksums). Every unit is at any time in exactly one place: queued, being read by one source,
 * being checked, or done; a done unit is never read again. Thread-safe; {@link #awaitChange} wakes on every change.
 */
final class SegmentLedger {
    private final Deque<Segment> queue = new ArrayDeque<>();
    private final boolean[] done;
    private final int units;
    private int doneUnits;
    private long doneBytes;
    private RuntimeException failure;

    SegmentLedger(List<Segment> segments) {
        int n = 0;
        for (Segment s : segments) {
            n += s.units().size();
            queue.add(s);
        }
        units = n;
        done = new boolean[n];
    }

    /** The next segment waiting for a source, now the caller's; null when none waits. */
    synchronized Segment take() {
        return failure == null ? queue.poll() : null;
    }

    /** {@code s} goes back to the queue, first: its source was dropped (or it was read wrong), so it is late. */
    synchronized void putBack(Segment s) {
        if (!s.units().isEmpty()) {
            queue.addFirst(s);
            notifyAll();
        }
    }

    /** {@code u} arrived whole and, where checked, matched: it is never read again. */
    synchronized void accepted(Unit u) {
        if (!done[u.index()]) {
            done[u.index()] = true;
            doneUnits++;
            doneBytes += u.length();
            notifyAll();
        }
    }

    /** Whether {@code u} is done. */
    synchronized boolean isDone(Unit u) {
        return done[u.index()];
    }

    synchronized boolean finished() {
        return doneUnits == units;
    }

    synchronized boolean hasQueued() {
        return !queue.isEmpty();
    }

    /** Bytes of the queued segments. */
    synchronized long queuedBytes() {
        long n = 0;
        for (Segment s : queue) {
            n += s.bytes();
        }
        return n;
    }

    synchronized long doneBytes() {
        return doneBytes;
    }

    /** The load cannot succeed (the root's own bytes differ, the deadline passed, ...): the first reason is kept. */
    synchronized void fail(RuntimeException e) {
        if (failure == null) {
            failure = e;
        }
        notifyAll();
    }

    synchronized RuntimeException failure() {
        return failure;
    }

    /** Something changed (a source ended, say) that the load's coordinator should look at. */
    synchronized void changed() {
        notifyAll();
    }

    /** Waits for a change, at most {@code nanos}. */
    synchronized void awaitChange(long nanos) throws InterruptedException {
        if (nanos > 0) {
            wait(Math.max(1, nanos / 1_000_000));
        }
    }
}
