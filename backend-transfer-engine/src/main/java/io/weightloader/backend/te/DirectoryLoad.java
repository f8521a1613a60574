package io.weightloader.backend.te;

import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMatcher;
import io.weightloader.api.TensorReport;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.RegionMerger;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.Threads;
import io.weightloader.seed.Directory;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.RemoteLoads;
import io.weightloader.seed.SeedChangedException;
import io.weightloader.seed.SeedClient;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One load from the source a root seed's directory picks ({@code tree}, {@code chain}). The root's manifest gives the
 * generation and the checksums, a relay's manifest its addresses (it must serve the root's generation). The client
 * holds a lease on its source while it reads (renewed every {@link Directory#HEARTBEAT_MILLIS}), so a client that dies
 * frees its source within {@link Directory#LEASE_NANOS}. A relay is a third party: what it sent is checked against the
 * root's checksums, and tensors that do not match are reported to the root's directory (which assigns that relay to no
 * one again) and read again from the root. A relay that fails is tried once, then the client asks for another ready
 * source (the root included). A root that publishes no checksums is read from directly: its relays' bytes could not be
 * checked. A request whose slices differ from the root's is resharded from the root itself.
 */
final class DirectoryLoad {
    private static final Logger LOG = LoggerFactory.getLogger(DirectoryLoad.class);
    /** Largest read from a relay that is still loading: it serves each read as soon as its bytes are in. */
    static final long PIPELINED_SLICE = 512L << 10;
    /** Most sources one load tries before it gives up. */
    private static final int MAX_SOURCES = 256;
    /** How often a waiting client says what it waits for. */
    private static final long WAIT_LOG_NANOS = 10_000_000_000L;

    private final SeedReads backend;
    private final TransferEngineSettings settings;
    private final LoadRequest request;
    private final String strategy;
    private final long t0;
    private final long deadline;
    private final SeedClient root;
    private final Map<String, Double> phases = new LinkedHashMap<>();
    /** Tensor name -> the source whose bytes completed it ({@link Directory#ROOT} or a relay's address). */
    private final Map<String, String> sourceOf = new HashMap<>();
    /** The sources read from, in order, for the report. */
    private final List<String> used = new ArrayList<>();

    DirectoryLoad(SeedReads backend, TransferEngineSettings settings, SeedClient seed, LoadRequest request,
                  String strategy, long t0, long transferTimeoutNanos) {
        this.backend = backend;
        this.settings = settings;
        this.request = request;
        this.strategy = strategy;
        this.t0 = t0;
        this.deadline = t0 + transferTimeoutNanos;
        this.root = seed.until(deadline + seed.requestTimeout().toNanos());
    }

    LoadReport run() {
        Manifest rootManifest = backend.checkedManifest(root);
        backend.remember(rootManifest);
        phases.put("manifest", (System.nanoTime() - t0) / 1e9);
        String source = backend.source();
        TensorMatcher.check(source, rootManifest.specs(), request.specs(), request.ignoreExtraTensors());
        Map<String, Manifest.Entry> published = rootManifest.entriesByName();
        for (TensorDestination d : request.tensors()) {
            if (!d.holdsSameAs(published.get(d.spec().name()).slice())) {
                LOG.info("{}: this client's slices differ from the seed rank's; resharding from the root seed itself"
                        + " (source-strategy {} picks among instances holding the root's slices)", source, strategy);
                return backend.loadWith(root, rootManifest, request, t0, phases);
            }
        }
        if (!rootManifest.publishesChecksums()) {
            LOG.warn("{}: the root publishes no checksums (weight-loader.seed.publish-checksums = false on the root), so"
                    + " what a relay sends could not be checked; reading from the root itself (source-strategy {} not"
                    + " used)", source, strategy);
            return backend.loadWith(root, rootManifest, request, t0, phases);
        }
        if (settings.multiSource().several()) { // issue 23: several sources at once, segments moved on failure
            return new MultiSourceLoad(backend, settings, root, request, rootManifest, strategy, t0, deadline, phases)
                    .run();
        }
        long tPrepare = System.nanoTime();
        String transport = backend.transport(rootManifest);
        backend.checkDestinations(request, transport);
        OneSidedEngine engine = backend.engineFor(transport);
        RankKey rk = new RankKey(rootManifest.tp(), rootManifest.pp());
        String client = settings.clientId().orElseGet(() -> "client-" + UUID.randomUUID());
        Progress progress = new Progress(request);
        List<MemoryRegion> local = RegionMerger.merge(request.tensors().stream().map(TensorDestination::bytes).toList());
        engine.registerLocal(local);
        phases.put("prepare", (System.nanoTime() - tPrepare) / 1e9);
        ScheduledExecutorService leases = Executors.newSingleThreadScheduledExecutor(
                Threads.daemon("weightloader-source-lease"));
        List<TensorReport> reports;
        long tVerify;
        try {
            long tTransfer = System.nanoTime();
            readFromSources(engine, rootManifest, rk, client, progress, leases);
            progress.report();
            tVerify = System.nanoTime();
            phases.put("transfer", (tVerify - tTransfer) / 1e9);
            reports = verify(engine, rootManifest, rk, client, progress);
        } finally {
            leases.shutdownNow();
            engine.unregisterLocal(local);
        }
        long end = System.nanoTime();
        phases.put("verify", (end - tVerify) / 1e9);
        String device = request.tensors().isEmpty() ? "cpu" : request.tensors().get(0).region().device().toString();
        String via = used.size() == 1 && used.get(0).equals(Directory.ROOT) ? "" : " via " + String.join(", then ", used);
        return LoadReport.builder(backend.name()).engine(engine.name()).source(source + " (" + strategy + ")" + via)
                .device(device).tensors(reports).totalBytes(request.totalBytes()).seconds((end - t0) / 1e9)
                .phases(phases).build();
    }

    /** Reads every tensor from the sources the directory gives, moving on from each that fails. */
    private void readFromSources(OneSidedEngine engine, Manifest rootManifest, RankKey rk, String client,
                                 Progress progress, ScheduledExecutorService leases) {
        long cap = settings.bandwidthLimit();
        long sliceSize = backend.sliceSize(backend.transport(rootManifest));
        Set<String> exclude = new LinkedHashSet<>();
        boolean failover = false;
        while (true) {
            SeedClient.SourceChoice choice = ask(rk, client, exclude, failover);
            if (!choice.generation().equals(rootManifest.generation())) {
                throw SeedChangedException.during(backend.source(), rootManifest.generation(), choice.generation());
            }
            String peerName = choice.isRoot() ? backend.source() : "relay " + choice.address();
            ScheduledFuture<?> lease = leases.scheduleWithFixedDelay(
                    () -> root.renewSource(rk, choice.address(), client), Directory.HEARTBEAT_MILLIS,
                    Directory.HEARTBEAT_MILLIS, TimeUnit.MILLISECONDS);
            Set<String> before = progress.complete();
            Manifest m = null;
            try {
                // a relay is tried once (no retries) before the client moves on
                SeedClient from = choice.isRoot() ? root : root.at(choice.address()).withRetries(0);
                m = choice.isRoot() ? rootManifest : RelayManifests.checked(backend, from, rk, rootManifest, request);
                used.add(choice.ready() ? choice.address() : choice.address() + " (while it loaded)");
                List<TensorDestination> todo = progress.incomplete();
                if (!todo.isEmpty()) {
                    long slice = choice.ready() ? sliceSize : Math.min(sliceSize, PIPELINED_SLICE);
                    backend.transfers().run(engine, backend.peers().get(engine, m.session()),
                            new ArrayDeque<>(ReadPlan.plan(todo, m, slice)), progress, slice, cap, deadline, peerName);
                }
                if (!choice.isRoot()) {
                    String now = from.generation(rk);
                    if (!now.equals(rootManifest.generation())) {
                        throw new WeightLoaderException("relay " + choice.address() + " now serves generation " + now
                                + ", not the root's " + rootManifest.generation());
                    }
                }
                attribute(progress, before, choice.address());
                return;
            } catch (WeightLoaderException e) {
                attribute(progress, before, choice.address()); // what it completed before failing is checked too
                if (m != null) {
                    backend.peers().drop(m.session());
                }
                if (choice.isRoot() || e instanceof SeedChangedException || System.nanoTime() > deadline
                        || exclude.size() >= MAX_SOURCES) {
                    throw e;
                }
                LOG.warn("{}: relay {} failed ({}); asking the root's directory for another ready source for the"
                        + " tensors not complete", backend.source(), choice.address(), e.getMessage());
                exclude.add(choice.address());
                failover = true; // any ready source at once, the root included: no waiting for a free one
            } finally {
                lease.cancel(false);
                root.sourceDone(rk, choice.address(), client);
            }
        }
    }

    /** Asks the root's directory for a source until it gives one, saying now and then what it waits for. */
    private SeedClient.SourceChoice ask(RankKey rk, String client, Set<String> exclude, boolean failover) {
        long wait = Math.max(0, Math.min(5000, root.requestTimeout().toMillis() - 1000));
        long nextLog = System.nanoTime();
        String busy = null;
        while (true) {
            if (System.nanoTime() > deadline) {
                throw new WeightLoaderException(backend.source() + ": no source became free within transfer-timeout ("
                        + backend.transferTimeout() + ", weight-loader.remote-instance.transfer-timeout), strategy "
                        + strategy + (busy == null ? "" : "; last answer: " + busy));
            }
            SeedClient.SourceChoice c = root.source(rk, strategy, client, exclude, failover, wait);
            if (!c.waits()) {
                return c;
            }
            busy = c.busy();
            long now = System.nanoTime();
            if (now >= nextLog) {
                LOG.info("{}: waiting for a free source (source-strategy {}): {}; {} s left of transfer-timeout",
                        backend.source(), strategy, busy, Math.max(0, (deadline - now) / 1_000_000_000L));
                nextLog = now + WAIT_LOG_NANOS;
            }
        }
    }

    /** The tensors {@code source} completed since {@code before}. */
    private void attribute(Progress progress, Set<String> before, String source) {
        for (String name : progress.complete()) {
            if (!before.contains(name)) {
                sourceOf.put(name, source);
            }
        }
    }

    /**
     * Checks what arrived: every tensor a relay sent against the root's checksums (all of them when the request asks
     * for checksums); a relay's tensors that differ are reported and read again from the root, a difference in the
     * root's own bytes fails the load. Then the root must still have the generation the load started from.
     */
    private List<TensorReport> verify(OneSidedEngine engine, Manifest rootManifest, RankKey rk, String client,
                                      Progress progress) {
        boolean fromRelay = sourceOf.values().stream().anyMatch(a -> !a.equals(Directory.ROOT));
        boolean check = request.checksum() || fromRelay && settings.verifyRelays();
        if (fromRelay && !settings.verifyRelays()) {
            LOG.warn("{}: bytes read from relays are not checked by this load"
                    + " (weight-loader.backends.transfer_engine.verify-relays = false: only for a caller that checks every byte"
                    + " against the root's checksums itself, as a pipelined relay's gate does)", backend.source());
        }
        List<TensorDestination> tensors = request.tensors();
        List<String> sums = check ? new ArrayList<>(Checksums.sha256Held(tensors, Checksums.defaultThreads())) : null;
        if (check) {
            Map<String, Manifest.Entry> published = rootManifest.entriesByName();
            Map<String, List<Integer>> wrongBySource = new LinkedHashMap<>();
            for (int i = 0; i < tensors.size(); i++) {
                String theirs = published.get(tensors.get(i).spec().name()).sha256();
                if (theirs != null && !theirs.equals(sums.get(i))) {
                    String from = sourceOf.getOrDefault(tensors.get(i).spec().name(), Directory.ROOT);
                    wrongBySource.computeIfAbsent(from, k -> new ArrayList<>()).add(i);
                }
            }
            List<Integer> rootWrong = wrongBySource.remove(Directory.ROOT);
            if (rootWrong != null) {
                throw mismatch(tensors.get(rootWrong.get(0)), sums.get(rootWrong.get(0)), rootManifest,
                        backend.source(), rootWrong.size());
            }
            if (!wrongBySource.isEmpty()) {
                rereadFromRoot(engine, rootManifest, rk, client, progress, wrongBySource, sums);
            }
        }
        RemoteLoads.checkGeneration(root, rk, rootManifest.generation(), backend.source());
        List<TensorReport> reports = new ArrayList<>(tensors.size());
        for (int i = 0; i < tensors.size(); i++) {
            reports.add(TensorReport.of(tensors.get(i), request.checksum() ? sums.get(i) : null));
        }
        return reports;
    }

    /** Reports each relay whose tensors did not match the root's checksums, and reads those tensors from the root. */
    private void rereadFromRoot(OneSidedEngine engine, Manifest rootManifest, RankKey rk, String client,
                                Progress progress, Map<String, List<Integer>> wrongBySource, List<String> sums) {
        List<TensorDestination> tensors = request.tensors();
        Map<String, Manifest.Entry> published = rootManifest.entriesByName();
        List<Integer> again = new ArrayList<>();
        for (Map.Entry<String, List<Integer>> e : wrongBySource.entrySet()) {
            TensorDestination first = tensors.get(e.getValue().get(0));
            String reason = e.getValue().size() + " tensor(s) did not match the root's checksums, e.g. '"
                    + first.spec().name() + "': SHA-256 " + sums.get(e.getValue().get(0)) + ", the root published "
                    + published.get(first.spec().name()).sha256();
            LOG.warn("{}: relay {} sent wrong bytes: {}; reporting it to the root's directory and reading them again"
                    + " from the root", backend.source(), e.getKey(), reason);
            root.reportRelay(rk, e.getKey(), client, reason);
            used.add("root (again, for " + e.getValue().size() + " tensor(s) relay " + e.getKey() + " sent wrong)");
            again.addAll(e.getValue());
        }
        List<TensorDestination> dests = again.stream().map(tensors::get).toList();
        progress.reset(dests);
        long sliceSize = backend.sliceSize(backend.transport(rootManifest));
        backend.transfers().run(engine, backend.peers().get(engine, rootManifest.session()),
                new ArrayDeque<>(ReadPlan.plan(dests, rootManifest, sliceSize)), progress, sliceSize,
                settings.bandwidthLimit(), deadline, backend.source());
        List<String> resums = Checksums.sha256Held(dests, Checksums.defaultThreads());
        for (int k = 0; k < dests.size(); k++) {
            TensorDestination d = dests.get(k);
            if (!published.get(d.spec().name()).sha256().equals(resums.get(k))) {
                throw mismatch(d, resums.get(k), rootManifest, backend.source() + " (read again after relay "
                        + sourceOf.get(d.spec().name()) + " sent wrong bytes)", 1);
            }
            sums.set(again.get(k), resums.get(k));
            sourceOf.put(d.spec().name(), Directory.ROOT);
        }
    }

    private static WeightLoaderException mismatch(TensorDestination d, String sha, Manifest rootManifest, String from,
                                                  int count) {
        return new WeightLoaderException("tensor '" + d.spec().name() + "' loaded from " + from + " has SHA-256 " + sha
                + " but the root published " + rootManifest.entriesByName().get(d.spec().name()).sha256()
                + (count > 1 ? " (and " + (count - 1) + " more tensor(s) differ)" : "") + "; nothing was loaded");
    }
}
