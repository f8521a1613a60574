package io.weightloader.backend.te;

import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.SourceReport;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.backend.te.Segments.Segment;
import io.weightloader.backend.te.Segments.Unit;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.RegionMerger;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.Threads;
import io.weightloader.seed.Directory;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedClient;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One load from several sources at once ({@code sources} other than 1; issue 23). The load is cut into segments
 * ({@link Segments}); up to {@code sources} ready sources of the root's weights ({@link SourceList}: the root and its
 * ready relays) each get a reader ({@link SourceWorker}) that pulls segments as it finishes them, so a faster source
 * takes more. Every unit (a block of a tensor) is checked against the root's checksum as soon as it arrived whole
 * ({@code verify-relays}, on by default); a unit that does not match is read again from another source and its source
 * is reported (no one's source again) and dropped. A source that dies or stalls is dropped, and what it had not
 * delivered whole goes back to the queue for the others; a unit that arrived and matched is never read again. When a
 * source is dropped and work is left, another ready source is asked for. The load ends when every unit arrived and
 * matched, then checks that the root still has the generation it started from. Over a registry
 * ({@link RegistrySourceList}) there is no root: the reference manifest is the first source's whose manifest matched
 * the registry's fingerprint, every source's manifest must match it too, and every unit is checked whatever
 * {@code verify-relays} says.
 *
 * <p>Leases: each source is held (a directory assignment, renewed every second) only while its reader has work from it;
 * a reader with nothing left to take releases its source at once.
 */
final class MultiSourceLoad {
    private static final Logger LOG = LoggerFactory.getLogger(MultiSourceLoad.class);
    /** How often, at most, the coordinator asks for more sources when it holds fewer than it wants. */
    private static final long ASK_AGAIN_NANOS = Directory.HEARTBEAT_MILLIS * 1_000_000L;
    /** Longest a reader may take to end after the load asked it to stop. */
    private static final long STOP_WAIT_MILLIS = 15_000;

    private final SeedReads backend;
    private final TransferEngineSettings settings;
    private final SeedClient root;
    private final LoadRequest request;
    private final Manifest rootManifest;
    private final String strategy;
    private final long t0;
    private final long deadline;
    private final Map<String, Double> phases;
    private final RankKey rank;
    private final Map<String, SourceTally> tallies = new LinkedHashMap<>();
    private final Set<String> dropped = new LinkedHashSet<>();
    private final List<SourceWorker> active = new ArrayList<>();
    private final Set<String> held = ConcurrentHashMap.newKeySet();
    /** Each whole tensor's SHA-256, computed as it became whole (when the request asks for checksums). */
    private final Map<TensorDestination, CompletableFuture<String>> tensorSums =
            java.util.Collections.synchronizedMap(new java.util.IdentityHashMap<>());
    /** How many sources read now ({@code active}'s size, for the readers' threads). */
    private volatile int reading;
    private SourceList sources;
    private SegmentLedger ledger;
    private SourceWorker.Context cx;
    private ExecutorService readers;
    private ExecutorService checks;

    MultiSourceLoad(SeedReads backend, TransferEngineSettings settings, SeedClient root, LoadRequest request,
                    Manifest rootManifest, String strategy, long t0, long deadline, Map<String, Double> phases) {
        this(backend, settings, root, request, rootManifest, strategy, t0, deadline, phases, null);
    }

    /**
     * @param rootManifest the reference manifest: every unit is checked against its checksums
     * @param given        where the sources are found ({@link RegistrySourceList}), or null for the root's directory
     */
    MultiSourceLoad(SeedReads backend, TransferEngineSettings settings, SeedClient root, LoadRequest request,
                    Manifest rootManifest, String strategy, long t0, long deadline, Map<String, Double> phases,
                    SourceList given) {
        this.sources = given;
        this.backend = backend;
        this.settings = settings;
        this.root = root;
        this.request = request;
        this.rootManifest = rootManifest;
        this.strategy = strategy;
        this.t0 = t0;
        this.deadline = deadline;
        this.phases = phases;
        this.rank = new RankKey(rootManifest.tp(), rootManifest.pp());
    }

    LoadReport run() {
        long tPrepare = System.nanoTime();
        String transport = backend.transport(rootManifest);
        backend.checkDestinations(request, transport);
        OneSidedEngine engine = backend.engineFor(transport);
        String client = settings.clientId().orElseGet(() -> "client-" + UUID.randomUUID());
        if (sources == null) {
            sources = new DirectorySources(backend, root, rank, client, strategy, rootManifest, request);
        }
        MultiSourceSettings ms = settings.multiSource();
        List<Segment> plan = Segments.plan(request.tensors(), rootManifest.entriesByName(), ms.segmentSize());
        ledger = new SegmentLedger(plan);
        Progress progress = new Progress(request);
        // bytes count as arrived (and a unit as whole) per completed read: reads of 1/16 of a segment (1 MiB at least)
        // lose at most a read per connection when their source dies, where whole-segment reads lost the segment
        long readSize = Math.min(backend.sliceSize(transport), Math.max(1L << 20, ms.segmentSize() / 16));
        cx = new SourceWorker.Context(ledger, progress, this::arrived, backend.peers(), engine, readSize,
                settings.batchesInFlight(), settings.batchSize(), ms.stallTimeout(), deadline, t0,
                new Pacer(settings.bandwidthLimit()), () -> reading);
        boolean verify = verifies();
        if (!verify) {
            LOG.warn("{}: bytes read from relays are not checked by this load ({}.verify-relays = false: only for a"
                    + " caller that checks every byte against the root's checksums itself)", backend.source(),
                    TransferEngineSettings.PATH);
        }
        List<MemoryRegion> local = RegionMerger.merge(request.tensors().stream().map(TensorDestination::bytes).toList());
        engine.registerLocal(local);
        phases.put("prepare", (System.nanoTime() - tPrepare) / 1e9);
        readers = Executors.newCachedThreadPool(Threads.daemon("weightloader-source"));
        checks = Executors.newFixedThreadPool(Math.max(1, Math.min(4, Checksums.defaultThreads())),
                Threads.daemon("weightloader-source-check"));
        ScheduledExecutorService leases = Executors.newSingleThreadScheduledExecutor(
                Threads.daemon("weightloader-source-lease"));
        leases.scheduleWithFixedDelay(() -> held.forEach(sources::renew), Directory.HEARTBEAT_MILLIS,
                Directory.HEARTBEAT_MILLIS, TimeUnit.MILLISECONDS);
        List<TensorReport> reports;
        long tVerify;
        try {
            long tTransfer = System.nanoTime();
            LOG.info("{}: reading from up to {} sources at once ({}.sources = {}): {} segment(s) of up to {} bytes,"
                    + " reads of up to {} bytes", backend.source(), ms.target(), TransferEngineSettings.PATH,
                    ms.describe(), plan.size(), ms.segmentSize(), readSize);
            transfer(progress);
            progress.report();
            tVerify = System.nanoTime();
            phases.put("transfer", (tVerify - tTransfer) / 1e9);
            reports = finalChecks();
        } catch (RuntimeException | Error e) {
            stopAll();
            throw e;
        } finally {
            leases.shutdownNow();
            readers.shutdownNow();
            checks.shutdownNow();
            // a check still hashing (a failed load's) reads the destination: it must end before the caller may free it
            awaitTermination(checks);
            awaitTermination(readers);
            held.forEach(sources::release);
            held.clear();
            engine.unregisterLocal(local);
        }
        long end = System.nanoTime();
        phases.put("verify", (end - tVerify) / 1e9);
        List<SourceReport> per = tallies.values().stream().map(SourceTally::report).toList();
        logSummary(per);
        String device = request.tensors().isEmpty() ? "cpu" : request.tensors().get(0).region().device().toString();
        return LoadReport.builder(backend.name()).engine(engine.name()).source(describe(per)).device(device)
                .tensors(reports).totalBytes(request.totalBytes()).seconds((end - t0) / 1e9).phases(phases)
                .sources(per).build();
    }

    /** Takes sources, starts their readers, and replaces each dropped one while work is left, until every unit is done. */
    private void transfer(Progress progress) {
        int target = settings.multiSource().target();
        startSources(sources.take(target, Set.of()), true);
        if (active.isEmpty() && !ledger.finished()) {
            throw noSourceLeft();
        }
        long lastAsk = System.nanoTime();
        while (true) {
            RuntimeException failure = ledger.failure();
            if (failure != null) {
                throw failure;
            }
            if (ledger.finished()) {
                break;
            }
            if (System.nanoTime() > deadline) {
                throw new WeightLoaderException(backend.source() + ": the load from " + tallies.size() + " source(s)"
                        + " did not finish within transfer-timeout (" + backend.transferTimeout()
                        + ", weight-loader.remote-instance.transfer-timeout): " + ledger.doneBytes() + " of "
                        + request.totalBytes() + " bytes done");
            }
            boolean lost = reap();
            for (SourceTally t : tallies.values()) {
                String wrong = t.takeUnreportedWrong();
                if (wrong != null) {
                    dropped.add(t.source);
                    sources.reportWrongBytes(t.source, wrong);
                }
            }
            long now = System.nanoTime();
            if (ledger.hasQueued() && active.size() < target && (lost || now - lastAsk > ASK_AGAIN_NANOS)) {
                lastAsk = now;
                Set<String> exclude = new LinkedHashSet<>(dropped);
                active.forEach(w -> exclude.add(w.tally().source));
                startSources(sources.take(target - active.size(), exclude), false);
                if (active.isEmpty()) {
                    throw noSourceLeft();
                }
            }
            progress.report();
            try {
                ledger.awaitChange(100_000_000L);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new WeightLoaderException(backend.source() + ": load interrupted", e);
            }
        }
        // every unit is done: the readers end as they find nothing more to take
        for (SourceWorker w : active) {
            w.stop();
        }
        awaitReaders();
        reap();
    }

    /** Ends the readers that finished or were dropped, releasing their sources; true when one was dropped. */
    private boolean reap() {
        boolean lost = false;
        for (int i = 0; i < active.size(); i++) {
            SourceWorker w = active.get(i);
            if (w.outcome() == SourceWorker.Outcome.RUNNING) {
                continue;
            }
            active.remove(i--);
            reading = active.size();
            held.remove(w.tally().source);
            sources.release(w.tally().source);
            if (w.outcome() == SourceWorker.Outcome.DROPPED) {
                dropped.add(w.tally().source);
                lost = true;
            }
        }
        return lost;
    }

    /**
     * Opens each source (a relay's manifest fetched and checked, a connection to its engine), all at once; deals each
     * opened one its first segments when {@code deal}, then starts its reader. A source that cannot be opened is
     * dropped and released.
     */
    private void startSources(List<String> taken, boolean deal) {
        if (taken.isEmpty()) {
            return;
        }
        held.addAll(taken);
        List<CompletableFuture<SourceWorker>> opening = new ArrayList<>();
        for (String s : taken) {
            SourceTally tally = tallies.computeIfAbsent(s, k -> new SourceTally(k, sources.name(k)));
            opening.add(CompletableFuture.supplyAsync(() -> open(tally), readers));
        }
        List<SourceWorker> opened = new ArrayList<>();
        for (int i = 0; i < taken.size(); i++) {
            SourceWorker w = opening.get(i).join();
            if (w == null) {
                held.remove(taken.get(i));
                sources.release(taken.get(i));
                dropped.add(taken.get(i));
            } else {
                opened.add(w);
            }
        }
        if (deal) {
            // every source starts with work, a segment each in turn, before any can pull more
            for (int round = 0; round < cx.depth(); round++) {
                for (SourceWorker w : opened) {
                    Segment s = ledger.take(opened.size());
                    if (s != null) {
                        w.deal(s);
                    }
                }
            }
        }
        for (SourceWorker w : opened) {
            active.add(w);
            reading = active.size();
            readers.execute(w);
        }
        if (opened.isEmpty()) {
            return;
        }
        LOG.info("{}: reading from {} (taken from {})", backend.source(),
                String.join(", ", opened.stream().map(w -> w.tally().name).toList()), sources.describe());
    }

    /** A reader of the source {@code tally} names, ready to start; null (and the source dropped) when it fails. */
    private SourceWorker open(SourceTally tally) {
        try {
            Manifest m = sources.manifest(tally.source);
            OneSidedEngine.Peer peer = backend.peers().get(cx.engine(), m.session());
            return new SourceWorker(cx, tally, m, peer, List.of());
        } catch (RuntimeException e) {
            tally.dropped("failed: " + e.getMessage(), (System.nanoTime() - t0) / 1e9, 0);
            LOG.warn("{}: {} could not be read from ({}); going on without it", backend.source(), tally.name,
                    e.getMessage());
            return null;
        }
    }

    /**
     * A unit arrived whole from {@code from}: checked against the root's checksum on the checking threads (accepted, or
     * read again elsewhere and {@code from} dropped); accepted at once when relays are not checked.
     */
    private void arrived(Unit u, int segment, SourceTally from) {
        if (!verifies() || u.sha256() == null && from.isRoot()) {
            from.kept(u.length());
            accept(u);
            return;
        }
        checks.execute(() -> {
            try {
                MemoryRegion bytes = u.dest().region().slice(u.offset(), u.length());
                String got = Checksums.sha256(bytes, u.length());
                if (got.equals(u.sha256())) {
                    from.kept(u.length());
                    accept(u);
                    return;
                }
                String why = u.what() + " has SHA-256 " + got + ", the root published " + u.sha256();
                if (from.isRoot()) {
                    ledger.fail(new WeightLoaderException(u.what() + " read from " + from.name + " has SHA-256 " + got
                            + " but the root published " + u.sha256() + ": the root's own bytes differ from its"
                            + " checksums; nothing was loaded"));
                    return;
                }
                if (from.wrong("did not match the root's checksums, e.g. " + why, (System.nanoTime() - t0) / 1e9)) {
                    LOG.warn("{}: {} sent wrong bytes: {}; dropping it, reporting it to {} and reading what it sent"
                            + " again from other sources", backend.source(), from.name, why, sources.describe());
                } else {
                    LOG.debug("{}: {} sent wrong bytes: {}", backend.source(), from.name, why);
                }
                cx.progress().retract(u.dest(), u.length());
                from.moved(segment);
                ledger.putBack(new Segment(segment, List.of(u), 1));
            } catch (RuntimeException e) {
                ledger.fail(new WeightLoaderException("checking " + u.what() + " failed: " + e.getMessage(), e));
            }
        });
    }

    /**
     * {@code u} is done; when that makes its tensor whole and the request asks for checksums, the tensor's SHA-256 is
     * computed now, on the checking threads, while the other tensors still arrive (not in a pass after the transfer).
     */
    private void accept(Unit u) {
        if (ledger.accepted(u) && request.checksum()) {
            TensorDestination d = u.dest();
            tensorSums.put(d, CompletableFuture.supplyAsync(() -> Checksums.sha256(d.region(), d.byteSize()), checks));
        }
    }

    /** The root still has the generation the load started from; then each tensor's SHA-256 when asked for. */
    private List<TensorReport> finalChecks() {
        sources.finished();
        List<TensorDestination> tensors = request.tensors();
        Map<String, Manifest.Entry> published = rootManifest.entriesByName();
        List<TensorReport> reports = new ArrayList<>(tensors.size());
        for (int i = 0; i < tensors.size(); i++) {
            TensorDestination d = tensors.get(i);
            String sha = null;
            if (request.checksum()) {
                CompletableFuture<String> f = tensorSums.get(d);
                try {
                    sha = f != null ? f.join() : Checksums.sha256(d.region(), d.byteSize());
                } catch (java.util.concurrent.CompletionException e) {
                    throw new WeightLoaderException("hashing tensor '" + d.spec().name() + "' failed: "
                            + e.getCause().getMessage(), e.getCause());
                }
            }
            String theirs = published.get(d.spec().name()).sha256();
            if (sha != null && theirs != null && !theirs.equals(sha)) {
                throw new WeightLoaderException("tensor '" + d.spec().name() + "' loaded from " + tallies.size()
                        + " source(s) has SHA-256 " + sha + " but the root published " + theirs + "; nothing was loaded");
            }
            reports.add(TensorReport.of(d, sha));
        }
        return reports;
    }

    /** Whether units are checked as they arrive: verify-relays, or always when the sources ask for it (a registry). */
    private boolean verifies() {
        return settings.verifyRelays() || sources.checksEveryUnit();
    }

    private void stopAll() {
        for (SourceWorker w : active) {
            w.stop();
        }
        awaitReaders();
    }

    /** Waits (bounded) until every reader has ended, so none still writes into the destination. */
    private void awaitReaders() {
        long until = System.nanoTime() + STOP_WAIT_MILLIS * 1_000_000L;
        for (SourceWorker w : active) {
            while (w.outcome() == SourceWorker.Outcome.RUNNING && System.nanoTime() < until) {
                try {
                    ledger.awaitChange(10_000_000L);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
    }

    private static void awaitTermination(ExecutorService pool) {
        try {
            if (!pool.awaitTermination(STOP_WAIT_MILLIS, TimeUnit.MILLISECONDS)) {
                LOG.warn("threads of a load from several sources still run {} s after it ended", STOP_WAIT_MILLIS / 1000);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private WeightLoaderException noSourceLeft() {
        StringBuilder why = new StringBuilder();
        for (SourceTally t : tallies.values()) {
            SourceReport r = t.report();
            if (r.failure() != null) {
                why.append("; ").append(t.name).append(": ").append(r.failure());
            }
        }
        return new WeightLoaderException(backend.source() + ": no source left to read " + ledger.queuedBytes()
                + " byte(s) from (" + sources.describe() + " has no other ready source)" + why);
    }

    /** The report's source line: the root seed, then each source's bytes, and every failover. */
    private String describe(List<SourceReport> per) {
        StringBuilder sb = new StringBuilder(backend.source()).append(" (").append(per.size()).append(" sources:");
        String sep = " ";
        for (SourceReport r : per) {
            sb.append(sep).append(r.source()).append(' ').append(r.bytes()).append(" B");
            if (r.failure() != null) {
                sb.append(" [dropped: ").append(r.failure().split(":")[0]).append(r.moved().isEmpty() ? ""
                        : ", segment(s) " + r.moved() + " moved").append(']');
            }
            sep = ", ";
        }
        return sb.append(')').toString();
    }

    private void logSummary(List<SourceReport> per) {
        for (SourceReport r : per) {
            LOG.info("{}: source {}: {} byte(s) kept of {} read, {} segment(s), its reader ended after {} s{}",
                    backend.source(), r.source(), r.bytes(), r.bytesRead(), r.segments(),
                    String.format("%.3f", tallies.get(r.source()).endedAfter()), r.failure() == null ? ""
                            : "; dropped after " + String.format("%.2f", r.failedAfter()) + " s (" + r.failure()
                            + "), segment(s) " + r.moved() + " moved");
        }
    }
}
