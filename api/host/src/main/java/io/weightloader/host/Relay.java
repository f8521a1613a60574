package io.weightloader.host;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.ProgressListener;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.memory.Threads;
import io.weightloader.seed.Directory;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.ReadyGate;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.SeedRefusedException;
import io.weightloader.seed.SeedService;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A seed that loads from another seed (its root) and then serves what it loaded ({@code seed --load-format
 * remote_instance}): it publishes the root's generation and checksums, registers with the root's directory (with a
 * heartbeat), and, with {@code source-strategy = chain} and the built-in engine, serves while it loads (each block
 * once it arrived and matched the root's checksum). It leaves the directory when it stops.
 *
 * <p>With a registry ({@link RegistryListing}) it needs no root: it takes the manifest it will serve from a source the
 * registry lists (checked against its entry), loads through a loader that finds its sources there too (every byte
 * checked), checks that every tensor it loaded has that manifest's SHA-256, and is then listed in the registry by its
 * {@link SeedHost}. With {@code source-strategy = chain} (built-in engine, host memory) it serves while it loads, as
 * with a root: once released ({@code beforeLoading}) it is listed not ready and joins the end of the rank's chain in
 * the registry, its loader reads from the link before it, and its gate checks every block against the manifest it
 * serves.
 */
final class Relay implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Relay.class);
    private static final ObjectMapper JSON = new ObjectMapper();
    /** The transfer_engine backend's settings, where a relay's source strategy, client id and checks live. */
    private static final String TE = "weight-loader.backends.transfer_engine.";

    /** One rank: its loader, memory, the root's manifest and the gate of a pipelined relay. */
    private record Held(HostRanks.Rank rank, WeightLoader loader, HostRanks.Held memory, Manifest root, ReadyGate gate,
                        boolean pipelined) {
    }

    private final String address;
    /** The root seed, or null for a relay that finds its sources in a registry. */
    private final SeedClient root;
    /** The registry a relay without a root finds its sources in, or null. */
    private final RegistryListing registry;
    private final List<Held> held = new ArrayList<>();
    private final ScheduledExecutorService heartbeat = Executors.newSingleThreadScheduledExecutor(
            Threads.daemon("weightloader-relay-heartbeat"));
    private volatile boolean ready;
    /** The load of each rank, in rank order. */
    private List<LoadReport> reports = List.of();
    private volatile boolean left;
    /** Its memory is released (the memory saver): out of the root's directory, no heartbeat announces it. */
    private volatile boolean suspended;

    private Relay(String address, SeedClient root, RegistryListing registry) {
        this.address = address;
        this.root = root;
        this.registry = registry;
    }

    /**
     * A relay serves with the transport its root serves (Mooncake's {@code nvlink_intra} from a GPU root, say) unless
     * {@code backends.transfer_engine.protocol} says otherwise: its clients were sent by the root and expect it.
     */
    static com.typesafe.config.Config withRootTransport(com.typesafe.config.Config config, WeightLoaderSettings s,
                                                        RegistryListing registry) {
        String key = "weight-loader.backends.transfer_engine.protocol";
        if (!config.hasPath(key) || !config.getString(key).isEmpty()
                || !"mooncake".equals(config.getString("weight-loader.backends.transfer_engine.engine"))) {
            return config;
        }
        RankKey first = new RankKey(0, s.rank().pp());
        Manifest m = registry != null ? registry.manifest(first, null).getValue()
                : SeedClient.forSeedOf(s, "relay").manifest(first);
        String served = m.serves() == null ? m.engine() : m.serves().getOrDefault("transfer_engine", "");
        if (!served.startsWith("mooncake-")) {
            return config;
        }
        String protocol = served.substring("mooncake-".length());
        LOG.info("relay: serving with its root's transport {} ({} is not set)", protocol, key);
        return ConfigFactory.parseMap(Map.of(key, protocol), "the root's transport").withFallback(config);
    }

    /** The configured {@code source-strategy} ({@code star} where transfer_engine's settings are not installed). */
    static String sourceStrategy(com.typesafe.config.Config config) {
        return config.hasPath(TE + "source-strategy") ? config.getString(TE + "source-strategy") : "star";
    }

    /** Where clients reach this relay's control plane: its bind address, or the engine's host name. */
    static String advertised(WeightLoaderSettings s, int port) {
        String host = s.seed().bindAddress();
        if (host.equals("0.0.0.0") || host.equals("::") || host.equals("[::]")) {
            throw new WeightLoaderConfigException("weight-loader.seed.bind-address", "a relay bound to " + host
                    + " cannot tell its root's clients where to reach it: bind it to its address (--host)");
        }
        return (host.contains(":") ? "[" + host + "]" : host) + ":" + port;
    }

    /**
     * Publishes every rank's memory (before loading when it serves while loading), starts the control plane,
     * registers with the root, loads, checks, and announces itself ready.
     */
    static Relay start(WeightLoaderSettings settings, HostRanks ranks, SeedService service, Runnable beforeLoading,
                       RegistryListing registry) throws Exception {
        String address = advertised(settings, service.port());
        Relay relay = new Relay(address, registry != null ? null : SeedClient.forSeedOf(settings, "relay"), registry);
        try {
            String strategy = sourceStrategy(ranks.ranks().get(0).config());
            for (HostRanks.Rank r : ranks.ranks()) {
                // serves while it loads: each block once it arrived and matched the checksums of what it serves
                boolean gateable = strategy.equals("chain") && r.device().isHost()
                        && r.settings().backend().equals("transfer_engine");
                Map<String, Object> id = new LinkedHashMap<>();
                id.put(TE + "client-id", address);
                if (registry != null) {
                    // its loader checks every byte (a registry's sources are checked whatever this says) and
                    // reports each tensor's SHA-256, which must be the manifest's it will serve
                    id.put("weight-loader.checksum", "sha256");
                } else if (!r.config().getString("weight-loader.directory").isBlank()) {
                    // the registry could not be reached (said loudly): its loaders go to the root at once rather
                    // than each try the registry again
                    id.put("weight-loader.directory", "");
                }
                if (gateable) {
                    // the gate checks every block against the root's checksums as it arrives: no second pass
                    id.put("weight-loader.checksum", "none");
                    id.put(TE + "verify-relays", false);
                    // and small reads, reported as each completes: what it serves onwards trails what it received
                    // by about one read per connection, not by a 64 MiB slice
                    id.put("weight-loader.backends.transfer_engine.slice-size", "512 KiB");
                    // one connection: reads arrive one after the other at the link's full rate (with four, each
                    // read takes four times as long, and so does the lag of every relay behind this one)
                    id.put("weight-loader.backends.transfer_engine.builtin.connections", 1);
                }
                WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(id).withFallback(r.config()));
                HostRanks.Held memory = null;
                try {
                    memory = HostRanks.allocate(r, loader.available());
                    Manifest rootManifest = registry != null ? registry.manifest(r.key(), address).getValue()
                            : relay.root.manifest(r.key());
                    if (!rootManifest.publishesChecksums()) {
                        throw new WeightLoaderException("root seed " + relay.root.peer() + " publishes no checksums"
                                + " (its weight-loader.seed.publish-checksums = false): clients could not check what a"
                                + " relay sends, so it takes no relays; load from it as a client (load --load-format"
                                + " remote_instance), or start the root with checksums");
                    }
                    ReadyGate gate = gateable ? ReadyGate.of(memory.destinations(), rootManifest.entriesByName()) : null;
                    boolean pipelined = service.publishRelay(r.key(), memory.destinations(), rootManifest, gate)
                            && gate != null;
                    relay.held.add(new Held(r, loader, memory, rootManifest, gate, pipelined));
                } catch (RuntimeException | Error e) {
                    if (memory != null) {
                        memory.close();
                    }
                    loader.close();
                    throw e;
                }
            }
            service.start();
            if (relay.root != null) {
                relay.register(); // a pipelined relay must be in the directory before it asks for its own source
                relay.heartbeat.scheduleWithFixedDelay(relay::registerQuietly, Directory.HEARTBEAT_MILLIS,
                        Directory.HEARTBEAT_MILLIS, TimeUnit.MILLISECONDS);
            }
            beforeLoading.run();
            if (registry != null) {
                for (Held h : relay.held) {
                    if (h.pipelined()) {
                        // listed not ready, at the end of the chain: its loader reads from the link before it
                        registry.joinChain(address, h.rank().key(), h.root());
                    }
                }
            }
            relay.reports = ranks.parallel(r -> relay.load(relay.held.get(ranks.ranks().indexOf(r)), settings));
            if (registry != null) {
                for (int i = 0; i < relay.held.size(); i++) {
                    if (relay.held.get(i).gate() == null) { // a gate checked every block against what it serves
                        checkAgainstServed(relay.held.get(i), relay.reports.get(i));
                    }
                }
            }
            relay.ready = true;
            if (relay.root != null) {
                relay.register();
            }
            return relay;
        } catch (Exception | Error e) {
            for (Held h : relay.held) {
                if (h.gate() != null) {
                    h.gate().fail("the relay's load failed: " + e.getMessage());
                }
            }
            relay.close();
            throw e;
        }
    }

    /** One rank's load; a pipelined relay feeds its gate as bytes arrive and waits until every block is checked. */
    private LoadReport load(Held h, WeightLoaderSettings settings) {
        ProgressListener feed = h.gate() == null ? ProgressListener.NONE : new ProgressListener() {
            @Override
            public void onProgress(long bytesDone, long bytesTotal, int tensorsDone, int tensorsTotal) {
            }

            @Override
            public void onArrived(TensorDestination dest, long offset, long length) {
                h.gate().arrived(dest.region().address() + offset, length);
            }
        };
        LoadReport report = h.loader().load(LoadRequest.of(h.memory().destinations()).withProgress(feed));
        if (h.gate() != null) {
            try {
                h.gate().awaitAll(System.nanoTime() + settings.remote().transferTimeout().toNanos());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new WeightLoaderException("interrupted while checking the relay's bytes", e);
            }
        }
        return report;
    }

    /**
     * A relay of a registry took the manifest it serves from one source and its bytes through its loader, which may
     * have read from another: every tensor loaded must have the SHA-256 that manifest publishes (its loader checked
     * the bytes against the checksums of the source it read from), or the relay would serve one version's bytes under
     * another's checksums.
     */
    private static void checkAgainstServed(Held h, LoadReport report) {
        Map<String, Manifest.Entry> served = h.root().entriesByName();
        for (TensorReport t : report.tensors()) {
            String want = served.get(t.name()).sha256();
            if (want != null && !want.equals(t.sha256())) {
                throw new WeightLoaderException("relay rank " + h.rank().key() + ": tensor '" + t.name() + "' loaded"
                        + " with SHA-256 " + t.sha256() + ", but the manifest it would serve (generation "
                        + h.root().generation() + ") publishes " + want + ": the registry's sources changed while it"
                        + " loaded; start it again");
            }
        }
    }

    private void register() {
        if (suspended) {
            return;
        }
        for (Held h : held) {
            if (!ready && !h.pipelined()) {
                continue; // announced only once it holds every byte
            }
            Map<String, Object> body = new LinkedHashMap<>();
            body.put("address", address);
            body.put("generation", h.root().generation());
            body.put("ready", ready);
            body.put("pipelined", h.pipelined());
            try {
                root.post("/v1/relays?tp=" + h.rank().key().tp() + "&pp=" + h.rank().key().pp(),
                        JSON.writeValueAsBytes(body), Set.of());
            } catch (SeedRefusedException e) {
                throw new WeightLoaderException("root seed " + root.peer() + " refused relay " + address + ": "
                        + e.getMessage(), e);
            } catch (java.io.IOException e) {
                throw new IllegalStateException(e);
            }
        }
    }

    private void registerQuietly() {
        if (left) {
            return;
        }
        try {
            register();
        } catch (RuntimeException e) {
            LOG.warn("relay {}: heartbeat to root {} failed: {}", address, root.peer(), e.getMessage());
        }
    }

    String address() {
        return address;
    }

    /** Each rank's load from the root, in rank order. */
    List<LoadReport> reports() {
        return reports;
    }

    @Override
    public void close() {
        left = true;
        heartbeat.shutdownNow();
        leave();
        for (Held h : held) {
            if (h.gate() != null) {
                h.gate().close();
            }
            h.loader().close();
        }
    }

    private void leave() {
        for (Held h : root == null ? List.<Held>of() : held) {
            try {
                root.post("/v1/relays/leave?tp=" + h.rank().key().tp() + "&pp=" + h.rank().key().pp(),
                        JSON.writeValueAsBytes(Map.of("address", address)), Set.of());
            } catch (java.io.IOException | RuntimeException e) {
                LOG.debug("relay {}: leaving root {}'s directory failed", address, root.peer(), e);
            }
        }
    }

    /**
     * Before its memory is released: leaves the root's directory, and its heartbeat announces it no more, so the
     * root sends no client to it until {@link #rejoin()}.
     */
    void suspend() {
        suspended = true;
        leave();
        if (root != null) {
            LOG.info("relay {}: left root {}'s directory while its weights are released", address, root.peer());
        }
    }

    /**
     * Loads rank {@code i}'s memory again from its sources (the root, or whichever seed its source strategy assigns),
     * checked against the root's checksums as the first load was, and returns the root's manifest it now holds.
     * A root whose generation changed during the load fails it (the load's final check) or here: nothing is
     * published with checksums of other weights.
     */
    Manifest refill(int i) {
        Held h = held.get(i);
        Manifest before = served(h.rank().key());
        Map<String, Object> id = new LinkedHashMap<>();
        id.put(TE + "client-id", address);
        if (root == null) {
            id.put("weight-loader.checksum", "sha256"); // compared below with the manifest it will serve
        }
        LoadReport report;
        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(id).withFallback(h.rank().config()))) {
            report = loader.load(LoadRequest.of(h.memory().destinations()));
        }
        Held refilled = new Held(h.rank(), h.loader(), h.memory(), before, null, false);
        if (root == null) {
            checkAgainstServed(refilled, report); // its sources may have changed while it loaded
        } else {
            Manifest after = root.manifest(h.rank().key());
            if (!after.generation().equals(before.generation())) {
                throw new WeightLoaderException("relay " + address + ": root " + root.peer() + " changed its weights"
                        + " (generation " + before.generation() + " -> " + after.generation() + ") while the relay"
                        + " refilled rank " + h.rank().key() + "; resume again");
            }
        }
        held.set(i, refilled);
        return before;
    }

    /** The manifest a relay of {@code rank} would serve now: its root's, or one its registry's sources agree on. */
    private Manifest served(RankKey rank) {
        return root != null ? root.manifest(rank) : registry.manifest(rank, address).getValue();
    }

    /** Whether the root still holds the weights rank {@code i}'s memory held (its generation is the same). */
    boolean rootUnchanged(int i) {
        Held h = held.get(i);
        return served(h.rank().key()).generation().equals(h.root().generation());
    }

    /** Where a resume refills from: {@code root seed}, or {@code registry} for a relay without a root. */
    String sourceName() {
        return root != null ? "root seed" : "registry";
    }

    /** The root's manifest that rank {@code i}'s memory holds. */
    Manifest rootManifest(int i) {
        return held.get(i).root();
    }

    /** After a resume published every rank again: back in the root's directory, ready. */
    void rejoin() {
        suspended = false;
        if (root != null) {
            register();
            LOG.info("relay {}: back in root {}'s directory", address, root.peer());
        }
    }

    /** Each rank's memory, in rank order. */
    List<HostRanks.Held> memories() {
        return held.stream().map(Held::memory).toList();
    }

    /** The memory to free once the seed's engines no longer serve it. */
    void freeMemory() {
        held.forEach(h -> h.memory().close());
    }

    /** What the seed holds per rank, for the summary. */
    Map<RankKey, List<TensorDestination>> held() {
        Map<RankKey, List<TensorDestination>> out = new LinkedHashMap<>();
        held.forEach(h -> out.put(h.rank().key(), h.memory().destinations()));
        return out;
    }
}
