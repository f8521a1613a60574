package io.weightloader.backend.te;

import io.weightloader.backend.te.Segments.Segment;
import io.weightloader.backend.te.Segments.Unit;
import io.weightloader.api.TensorDestination;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;

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
    /** The number the next segment cut from another gets (after the plan's). */
    private int nextId;
    /** Units not yet done, per tensor. */
    private final Map<TensorDestination, Integer> left = new IdentityHashMap<>();

    SegmentLedger(List<Segment> segments) {
        int n = 0;
        for (Segment s : segments) {
            n += s.units().size();
            queue.add(s);
            nextId = Math.max(nextId, s.id() + 1);
            for (Unit u : s.units()) {
                left.merge(u.dest(), 1, Integer::sum);
            }
        }
        units = n;
        done = new boolean[n];
    }

    /**
     * The next segment waiting for a source, now the caller's; null when none waits. Toward the end of the load (less
     * queued than two segments for each of {@code takers} sources) a segment is cut: the caller takes its leading units
     * up to its share of what is queued (at least one unit), and the rest, numbered anew, stays first in the queue; so
     * the last bytes are spread over every source instead of waiting for one.
     *
     * @param takers sources reading now (their share of what is left)
     */
    synchronized Segment take(int takers) {
        if (failure != null || queue.isEmpty()) {
            return null;
        }
        Segment head = queue.poll();
        long share = queuedBytesLocked(head) / (2L * Math.max(1, takers));
        if (head.units().size() < 2 || head.bytes() <= share) {
            return head;
        }
        List<Unit> units = head.units();
        int cut = 1;
        long bytes = units.get(0).length();
        while (cut < units.size() - 1 && bytes + units.get(cut).length() <= share) {
            bytes += units.get(cut).length();
            cut++;
        }
        if (cut < units.size()) {
            queue.addFirst(new Segment(nextId++, List.copyOf(units.subList(cut, units.size())), head.moved()));
            return new Segment(head.id(), List.copyOf(units.subList(0, cut)), head.moved());
        }
        return head;
    }

    private long queuedBytesLocked(Segment head) {
        long n = head.bytes();
        for (Segment s : queue) {
            n += s.bytes();
        }
        return n;
    }

    /** {@code s} goes back to the queue, first: its source was dropped (or it was read wrong), so it is late. */
    synchronized void putBack(Segment s) {
        if (!s.units().isEmpty()) {
            queue.addFirst(s);
            notifyAll();
        }
    }

    /**
     * {@code u} arrived whole and, where checked, matched: it is never read again.
     *
     * @return whether that made its tensor whole (every unit of it done)
     */
    synchronized boolean accepted(Unit u) {
        if (done[u.index()]) {
            return false;
        }
        done[u.index()] = true;
        doneUnits++;
        doneBytes += u.length();
        notifyAll();
        return left.merge(u.dest(), -1, Integer::sum) == 0;
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
