package io.weightloader.backend.te;

import io.weightloader.api.TensorDestination;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.backend.te.ReadPlan.Part;
import io.weightloader.backend.te.ReadPlan.Read;
import io.weightloader.backend.te.Segments.Segment;
import io.weightloader.backend.te.Segments.Unit;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.OneSidedEngine.Batch;
import io.weightloader.backend.te.engine.OneSidedEngine.OpState;
import io.weightloader.backend.te.engine.OneSidedEngine.OpStatus;
import io.weightloader.memory.cuda.Cuda;
import io.weightloader.seed.Manifest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.LockSupport;
import java.util.function.IntSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Reads segments from one source for a load from several (its own thread): keeps up to {@code depth} segments in
 * flight, pulling the next from the {@link SegmentLedger} as one finishes (so a faster source takes more), hands each
 * unit to the load's checks as soon as it arrived whole, and stops when there is nothing left to take. It drops its
 * source, moving every unit not yet arrived whole back to the queue, when a read fails (a broken connection at once),
 * when none of its reads completes for {@code stall-timeout} (stalled), when a unit it sent did not match (wrong bytes),
 * or when the load stops. Before it moves anything it releases its reads in flight, so a dropped source can no longer
 * write into memory another source now fills.
 */
final class SourceWorker implements Runnable {
    private static final Logger LOG = LoggerFactory.getLogger(SourceWorker.class);
    private static final long MAX_PAUSE_NANOS = 1_000_000;

    /** What the load does with a unit that arrived whole: check it against the root's checksum, or accept it. */
    interface Arrivals {
        void arrived(Unit u, int segment, SourceTally from);
    }

    /** How a worker ended. */
    enum Outcome { RUNNING, FINISHED, DROPPED, STOPPED }

    /** The fixed parts of every worker of one load. */
    record Context(SegmentLedger ledger, Progress progress, Arrivals arrivals, Peers peers, OneSidedEngine engine,
                   long readSize, int depth, int batchSize, Duration stallTimeout, long deadline, long t0,
                   Pacer pacer, IntSupplier readers) {
    }

    /** One segment in flight: its batches, what each read completed, and the bytes of each unit arrived so far. */
    private static final class Flight {
        final Segment segment;
        final List<Batch> batches = new ArrayList<>();
        final List<List<Read>> reads = new ArrayList<>();
        final List<boolean[]> seen = new ArrayList<>();
        final long[] arrived;
        final Map<TensorDestination, List<Integer>> unitsOf = new IdentityHashMap<>();
        int pending;

        Flight(Segment segment) {
            this.segment = segment;
            this.arrived = new long[segment.units().size()];
            for (int i = 0; i < segment.units().size(); i++) {
                unitsOf.computeIfAbsent(segment.units().get(i).dest(), k -> new ArrayList<>()).add(i);
            }
        }
    }

    private final Context cx;
    private final SourceTally tally;
    private final String session;
    private final OneSidedEngine.Peer peer;
    private final Map<String, Manifest.Entry> entries;
    /** Segments dealt to it and not yet started; put back should it end first. */
    private final List<Segment> dealt;
    private final List<Flight> flights = new ArrayList<>();
    private volatile boolean stop;
    private volatile Outcome outcome = Outcome.RUNNING;

    /**
     * @param manifest the source's manifest, checked (its addresses are where its bytes are)
     * @param first    segments dealt to it before it starts (every source starts with work)
     */
    SourceWorker(Context cx, SourceTally tally, Manifest manifest, OneSidedEngine.Peer peer, List<Segment> first) {
        this.cx = cx;
        this.tally = tally;
        this.session = manifest.session();
        this.peer = peer;
        this.entries = manifest.entriesByName();
        this.dealt = new ArrayList<>(first);
    }

    /** A segment to start with, before it runs. */
    void deal(Segment s) {
        dealt.add(s);
    }

    SourceTally tally() {
        return tally;
    }

    Outcome outcome() {
        return outcome;
    }

    /** Asks it to stop (the load failed or ended): it releases its reads and ends. */
    void stop() {
        stop = true;
    }

    /** A read that failed: the source is dropped. */
    private static final class SourceFailed extends Exception {
        SourceFailed(String message) {
            super(message, null, false, false);
        }
    }

    @Override
    public void run() {
        try {
            work();
        } catch (RuntimeException | Error e) {
            // an engine that throws on submit, or a bug: drop this source (its units go back); the load goes on
            drop("failed: " + e, 0);
            outcome = Outcome.DROPPED;
        } finally {
            tally.ended((System.nanoTime() - cx.t0()) / 1e9);
            for (int i = dealt.size() - 1; i >= 0; i--) {
                cx.ledger().putBack(dealt.get(i));
            }
            dealt.clear();
            cx.ledger().changed();
        }
    }

    private void work() {
        long lastProgress = System.nanoTime();
        long pause = 20_000;
        boolean deviceSet = false;
        while (true) {
            if (stop) {
                release("the load stopped");
                outcome = Outcome.STOPPED;
                return;
            }
            String wrong = tally.wrongBytes();
            if (wrong != null) {
                drop("sent wrong bytes: " + wrong, 0); // the tally keeps the reason its check gave first
                outcome = Outcome.DROPPED;
                return;
            }
            while (flights.size() < cx.depth()) {
                Segment s = dealt.isEmpty() ? cx.ledger().take(cx.readers().getAsInt()) : dealt.remove(0);
                if (s == null) {
                    break;
                }
                if (!deviceSet && !s.units().get(0).dest().region().device().isHost()) {
                    // Mooncake's GPU transports open the peer's memory handles on the submitting thread
                    Cuda.use(s.units().get(0).dest().region().device());
                    deviceSet = true;
                }
                if (flights.isEmpty()) {
                    lastProgress = System.nanoTime(); // idle until now: the stall clock starts with this segment
                }
                submit(s);
            }
            if (flights.isEmpty()) {
                outcome = Outcome.FINISHED; // nothing left to take
                return;
            }
            boolean progressed;
            try {
                progressed = poll();
            } catch (SourceFailed f) {
                drop(f.getMessage(), 0);
                outcome = Outcome.DROPPED;
                return;
            }
            long now = System.nanoTime();
            if (progressed) {
                lastProgress = now;
                pause = 20_000;
                continue;
            }
            if (now - lastProgress > cx.stallTimeout().toNanos()) {
                double quiet = (now - lastProgress) / 1e9;
                drop(String.format("stalled: none of its %d read(s) in flight completed for %.2f s"
                        + " (stall-timeout %d ms, %s.stall-timeout)", pendingReads(), quiet,
                        cx.stallTimeout().toMillis(), TransferEngineSettings.PATH), quiet);
                outcome = Outcome.DROPPED;
                return;
            }
            if (now > cx.deadline()) {
                cx.ledger().fail(new WeightLoaderException("transfer from " + tally.name + " did not finish within"
                        + " transfer-timeout (weight-loader.remote-instance.transfer-timeout): " + pendingReads()
                        + " read(s) pending"));
                release("the load's deadline passed");
                outcome = Outcome.STOPPED;
                return;
            }
            LockSupport.parkNanos(pause);
            pause = Math.min(pause * 2, MAX_PAUSE_NANOS);
        }
    }

    /** Starts the reads of {@code s}, in batches the engine accepts. */
    private void submit(Segment s) {
        cx.pacer().await(s.bytes(), cx.deadline());
        Flight f = new Flight(s);
        flights.add(f); // first: should a submit fail, what was submitted is released with it
        List<Read> reads = Segments.reads(s.units(), entries, cx.readSize());
        int max = Math.min(cx.batchSize(), peer.maxBatchSize());
        int i = 0;
        while (i < reads.size()) {
            List<Read> group = new ArrayList<>();
            int cost = 0;
            while (i < reads.size() && (group.isEmpty() || cost + peer.cost(reads.get(i).op()) <= max)) {
                cost += peer.cost(reads.get(i).op());
                group.add(reads.get(i++));
            }
            f.batches.add(peer.submit(group.stream().map(Read::op).toList()));
            f.reads.add(group);
            f.seen.add(new boolean[group.size()]);
            f.pending += group.size();
        }
    }

    /** Takes every read that reached a final state; true when one completed. */
    private boolean poll() throws SourceFailed {
        boolean progressed = false;
        for (int k = 0; k < flights.size(); k++) {
            Flight f = flights.get(k);
            for (int b = 0; b < f.batches.size(); b++) {
                Batch batch = f.batches.get(b);
                boolean[] seen = f.seen.get(b);
                for (int i = 0; i < seen.length; i++) {
                    if (seen[i]) {
                        continue;
                    }
                    OpStatus st = batch.status(i);
                    if (!st.isFinal()) {
                        continue;
                    }
                    seen[i] = true;
                    f.pending--;
                    if (st.state() != OpState.COMPLETED) {
                        throw new SourceFailed("failed: reading " + f.reads.get(b).get(i).describe() + " via "
                                + cx.engine().name() + ": " + st.detail());
                    }
                    arrived(f, f.reads.get(b).get(i));
                    progressed = true;
                }
            }
            if (f.pending == 0) {
                for (Batch batch : f.batches) {
                    batch.release();
                }
                flights.remove(k--);
                tally.segmentDone();
            }
        }
        return progressed;
    }

    /** A read completed: its bytes count for their units, and each unit now whole goes to the load's checks. */
    private void arrived(Flight f, Read r) {
        cx.progress().completed(r);
        tally.read(r.bytes());
        for (Part p : r.parts()) {
            for (int pos : f.unitsOf.getOrDefault(p.dest(), List.of())) {
                Unit u = f.segment.units().get(pos);
                long lo = Math.max(u.offset(), p.offset());
                long hi = Math.min(u.offset() + u.length(), p.offset() + p.length());
                if (hi > lo) {
                    f.arrived[pos] += hi - lo;
                    if (f.arrived[pos] == u.length()) {
                        cx.arrivals().arrived(u, f.segment.id(), tally);
                    }
                }
            }
        }
    }

    private int pendingReads() {
        int n = 0;
        for (Flight f : flights) {
            n += f.pending;
        }
        return n;
    }

    /**
     * Drops the source: releases its reads, moves every unit not yet arrived whole back to the queue (a part that had
     * arrived is read again whole), and closes its connections.
     */
    private void drop(String why, double quietSeconds) {
        tally.dropped(why, (System.nanoTime() - cx.t0()) / 1e9, quietSeconds);
        List<Integer> moved = new ArrayList<>();
        long movedBytes = release(why, moved);
        cx.peers().drop(session);
        if (!moved.isEmpty()) {
            LOG.warn("{} dropped from this load ({}); {} byte(s) of segment(s) {} moved to the other sources",
                    tally.name, why, movedBytes, moved);
        } else {
            LOG.warn("{} dropped from this load ({}); nothing of it was in flight", tally.name, why);
        }
    }

    private void release(String why) {
        release(why, new ArrayList<>());
    }

    /**
     * Releases every read in flight (so none can write any more), then puts what did not arrive whole back in the
     * queue. An engine that cannot stop its reads fails the load: bytes they may still write could not be vouched for.
     *
     * @return bytes put back
     */
    private long release(String why, List<Integer> moved) {
        long back = 0;
        for (Flight f : flights) {
            boolean released = true;
            for (Batch b : f.batches) {
                released &= b.release();
            }
            if (!released) {
                cx.ledger().fail(new WeightLoaderException(tally.name + ": engine " + cx.engine().name() + " could not"
                        + " stop its reads in flight when the source was dropped (" + why + "), so they may still"
                        + " write into this client's memory; nothing was loaded"));
            }
            List<Unit> rest = new ArrayList<>();
            for (int pos = 0; pos < f.arrived.length; pos++) {
                Unit u = f.segment.units().get(pos);
                if (f.arrived[pos] < u.length()) {
                    cx.progress().retract(u.dest(), f.arrived[pos]);
                    rest.add(u);
                    back += u.length();
                }
            }
            if (!rest.isEmpty()) {
                cx.ledger().putBack(f.segment.remainder(rest));
                tally.moved(f.segment.id());
                moved.add(f.segment.id());
            }
        }
        flights.clear();
        return back;
    }
}
