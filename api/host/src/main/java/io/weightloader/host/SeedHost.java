package io.weightloader.host;

import com.typesafe.config.Config;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.LoadFormat;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.memory.HostMemory;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.MemoryControl;
import io.weightloader.seed.SeedService;
import io.weightloader.seed.registry.Registries;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A seed in a host process: every rank {@code config} gives this process ({@link HostRanks}) is loaded and published on
 * one control plane. With {@code load-format = local} each rank loads its slices from the checkpoint; with
 * {@code load-format = remote_instance} the process is a relay: it loads from its root seed (by the configured
 * {@code source-strategy}), checks what it loaded against the root's checksums, serves it with the root's generation,
 * and keeps its place in the root's directory (a heartbeat) until it stops. Every setting is checked, every backend's
 * settings too, and the port bound, before a byte is read. {@link #stop(Duration)} (or {@link #close()}) takes no new
 * loads, lets those in flight finish within the grace, leaves the directory and frees the memory.
 *
 * <p>With a registry ({@code weight-loader.directory = "etcd://..."} and {@code weight-loader.model-id}), every rank
 * is listed there once it serves (a relay: once it holds every byte, checked) with the fingerprint of what it
 * publishes, on a lease the registry renews, and withdrawn when it stops or its weights change; a relay then needs no
 * root address: it finds its sources in the registry (docs/PROTOCOL.md, "Registry").
 */
public final class SeedHost implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(SeedHost.class);

    private final WeightLoaderSettings settings;
    private final HostRanks ranks;
    private final SeedService service;
    private final Relay relay;
    private final List<HostRanks.Loaded> loaded;
    private final Map<RankKey, List<TensorDestination>> held;
    private final List<LoadReport> reports;
    private final String dialAddress;
    /** This seed's entries in the registry, or null (the in-process directory). */
    private final RegistryListing listing;
    private boolean stopped;
    /** Released with the memory saver: each rank's host copy when one was kept (else nothing), in rank order. */
    private List<HostMemory> releasedCopies;

    private SeedHost(WeightLoaderSettings settings, HostRanks ranks, SeedService service, Relay relay,
                     List<HostRanks.Loaded> loaded, Map<RankKey, List<TensorDestination>> held,
                     List<LoadReport> reports, String dialAddress, RegistryListing listing) {
        this.settings = settings;
        this.listing = listing;
        this.dialAddress = dialAddress;
        this.ranks = ranks;
        this.service = service;
        this.relay = relay;
        this.loaded = loaded;
        this.held = held;
        this.reports = reports;
    }

    /** A seed of the ranks {@code config} gives this process, each on the configured device. */
    public static SeedHost start(Config config) throws Exception {
        return start(config, null, () -> { });
    }

    /**
     * A seed of the ranks {@code config} gives this process.
     *
     * @param devices       null for the configured device, else as {@link HostRanks#of(Config, String)}
     * @param beforeLoading run once the control plane is up and before the first byte is loaded (a relay is already
     *                      in its root's directory by then)
     */
    public static SeedHost start(Config config, String devices, Runnable beforeLoading) throws Exception {
        WeightLoaderSettings settings = WeightLoaderSettings.from(config);
        boolean isRelay = settings.loadFormat() == LoadFormat.REMOTE_INSTANCE;
        String registeredHost = isRelay ? null : registeredHost(config, settings); // checked before connecting
        // a registry (weight-loader.directory) is checked and reached before anything is bound or loaded
        RegistryListing listing = RegistryListing.open(config, settings, isRelay).orElse(null);
        SeedService service = null;
        List<HostRanks.Loaded> loaded = new ArrayList<>();
        Relay relay = null;
        try {
            if (isRelay) {
                config = Relay.withRootTransport(config, settings, listing);
                settings = WeightLoaderSettings.from(config);
            }
            HostRanks ranks = HostRanks.of(config, devices);
            BackendRegistry registry = BackendRegistry.discover();
            BackendContext context = new BackendContext(settings, config);
            registry.validateSettings(context, settings.backend());
            service = Seeds.bind(context, registry,
                    ranks.ranks().stream().map(HostRanks.Rank::device).distinct().toList());
            Map<RankKey, List<TensorDestination>> held = new LinkedHashMap<>();
            List<LoadReport> reports;
            String address;
            if (isRelay) {
                relay = Relay.start(settings, ranks, service, beforeLoading, listing);
                held.putAll(relay.held());
                reports = relay.reports();
                address = relay.address();
            } else {
                beforeLoading.run();
                loaded.addAll(ranks.parallel(HostRanks::load, HostRanks.Loaded::close));
                for (int i = 0; i < loaded.size(); i++) {
                    held.put(ranks.ranks().get(i).key(), loaded.get(i).held().destinations());
                }
                reports = loaded.stream().map(HostRanks.Loaded::report).toList();
                service.publish(held);
                service.start();
                address = registeredHost + ":" + service.port();
            }
            if (listing != null) {
                // a root once it serves, a relay once it holds every byte, checked against what the registry listed
                for (RankKey rank : held.keySet()) {
                    listing.register(address, rank, service.manifest(rank).orElseThrow());
                }
                RegistryListing l = listing;
                service.onWeightsChanging(rank -> {
                    LOG.warn("rank {}'s weights change or are released: its entry in registry {} is withdrawn", rank,
                            l.describe());
                    l.withdraw(rank);
                });
            }
            SeedHost host = new SeedHost(settings, ranks, service, relay, loaded, Collections.unmodifiableMap(held),
                    reports, dialAddress(config, settings), listing);
            host.installMemoryControl();
            return host;
        } catch (Exception | Error e) {
            if (listing != null) {
                listing.close();
            }
            if (relay != null) {
                relay.close();
            }
            if (service != null) {
                service.close();
            }
            loaded.forEach(HostRanks.Loaded::close);
            if (relay != null) {
                relay.freeMemory();
            }
            throw e;
        }
    }

    private void installMemoryControl() {
        SeedHost host = this;
        if (settings.enableMemorySaver()) {
            service.memoryControl(new MemoryControl() {
                @Override
                public Map<String, Object> release(boolean keepHostCopy) {
                    return host.releaseMemory(host.settings.seed().shutdownGrace(), keepHostCopy).toMap();
                }

                @Override
                public Map<String, Object> resume() {
                    return host.resumeMemory().toMap();
                }
            });
        }
    }

    /**
     * The host a root seed registers under: its bind address, or, bound to a wildcard, the engine's host name
     * ({@code backends.transfer_engine.hostname}); only needed with a registry.
     */
    private static String registeredHost(Config config, WeightLoaderSettings settings) {
        String host = dialAddress(config, settings);
        if (host.equals("ADDRESS") && Registries.settings(config).directory().length() > 0) {
            throw new WeightLoaderConfigException("weight-loader.backends.transfer_engine.hostname", "is not set, and"
                    + " this seed is bound to the wildcard " + settings.seed().bindAddress() + " (weight-loader.seed"
                    + ".bind-address): set the host name or address clients dial, which it registers in "
                    + Registries.settings(config).directory() + " (weight-loader.directory)");
        }
        return host.contains(":") && !host.startsWith("[") ? "[" + host + "]" : host;
    }

    /**
     * What a release or resume did: bytes of weight memory given back (release) or refilled (resume), the seconds of
     * each step, and where a resume refilled from.
     *
     * @param quiet          release: whether reads in flight ended within the grace (false: they were cut)
     * @param mapSeconds     resume: faulting the pages in again
     * @param refillSeconds  resume: loading the weights into them
     * @param registerSeconds resume: re-registering with the engines and publishing (checksums included)
     * @param checksumSeconds resume: of which hashing the weights for the new manifest
     * @param source         resume: {@code checkpoint} or {@code host copy}
     * @param generations    each rank's generation after a resume
     */
    public record MemoryReport(String action, long bytes, double seconds, boolean quiet, double mapSeconds,
                               double refillSeconds, double registerSeconds, double checksumSeconds, String source,
                               Map<String, String> generations) {
        Map<String, Object> toMap() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("message", action);
            m.put("bytes", bytes);
            m.put("seconds", seconds);
            if (action.startsWith("released")) {
                m.put("quiet", quiet);
            } else if (action.startsWith("resumed")) {
                m.put("map_seconds", mapSeconds);
                m.put("refill_seconds", refillSeconds);
                m.put("register_seconds", registerSeconds);
                m.put("checksum_seconds", checksumSeconds);
                m.put("source", source);
                m.put("generations", generations);
            }
            return m;
        }
    }

    /** Whether the weights' memory is released ({@link #releaseMemory}) and not yet resumed. */
    public synchronized boolean released() {
        return releasedCopies != null;
    }

    /** {@link #releaseMemory(Duration, boolean)} with {@code weight-loader.seed.shutdown-grace}, no host copy. */
    public MemoryReport releaseMemory() {
        return releaseMemory(settings.seed().shutdownGrace(), false);
    }

    /**
     * Releases the weights' memory (SGLang's {@code release_memory_occupation}, tag {@code weights}): the control
     * plane takes no new load (503 "weights released"), loads in flight may finish within {@code grace} and are
     * then cut, every rank's memory is unregistered from its engines under a new generation (so a load that
     * overlapped fails its final check), and the memory goes back: host pages to the kernel (the process's resident
     * memory drops by the weights), GPU memory to the driver once the device's queued work is done (unmapped and
     * released: the GPU's free memory rises by the weights). The addresses stay: {@link #held()} stays valid, and
     * {@link #resumeMemory()} maps memory there again. Until then host memory reads zeros, and GPU memory must not be
     * touched (it is not mapped: a kernel or copy that reads it faults).
     *
     * @param keepHostCopy first copy each rank's weights into host memory, to resume from instead of the checkpoint
     *                     (torch_memory_saver's CPU backup; on a host-memory seed it keeps the bytes' worth resident)
     * @throws io.weightloader.api.config.WeightLoaderConfigException without {@code weight-loader.enable-memory-saver}
     * A relay first leaves its root's directory (no client is sent to it while released; see {@link #resumeMemory()}).
     *
     * @throws IllegalStateException for a stopped seed, or memory not allocated releasable
     */
    public synchronized MemoryReport releaseMemory(Duration grace, boolean keepHostCopy) {
        checkCanRelease();
        if (releasedCopies != null) {
            return new MemoryReport("already released", 0, 0, true, 0, 0, 0, 0, "", Map.of());
        }
        long t0 = System.nanoTime();
        List<HostMemory> copies = new ArrayList<>();
        boolean quiet;
        try {
            if (keepHostCopy) {
                for (HostRanks.Held m : memories()) {
                    copies.add(m.arena().copyToHost());
                }
            }
        } catch (RuntimeException | Error e) {
            copies.forEach(HostMemory::close);
            throw e;
        }
        if (relay != null) {
            relay.suspend(); // no client is sent here while released
        }
        quiet = service.releaseWeights(held.keySet(), grace);
        long bytes = 0;
        for (HostRanks.Held m : memories()) {
            m.arena().releasePages();
            bytes += m.arena().releasableBytes();
        }
        releasedCopies = copies;
        double secs = (System.nanoTime() - t0) / 1e9;
        LOG.info("seed released its weights' memory: {} bytes in {} s{}{}", bytes, String.format("%.3f", secs),
                keepHostCopy ? " (a host copy kept)" : "", quiet ? "" : " (reads in flight cut at the grace)");
        return new MemoryReport("released " + bytes + " bytes" + (keepHostCopy ? " (host copy kept)" : ""), bytes,
                secs, quiet, 0, 0, 0, 0, "", Map.of());
    }

    /**
     * Brings the weights back after {@link #releaseMemory}: maps each rank's memory again at the same addresses (host
     * pages faulted in; on a GPU new physical memory mapped into the reserved range), refills it (from the host copy
     * kept on release, else from the checkpoint through the rank's configured source), re-registers it with every
     * served engine and publishes a new generation (with new checksums when the seed publishes them). A rank whose
     * mapping (a GPU out of memory, say: the error names the call and the device) or refill fails stays released and
     * the error is thrown; calling this again retries. A relay refills from another seed: from its host copy only
     * while its root still holds the same weights (same generation), else it loads again through its source strategy
     * (the root, or the seed the root's directory assigns) and checks against the root's checksums; it publishes the
     * root's generation and checksums, then rejoins the root's directory.
     */
    public synchronized MemoryReport resumeMemory() {
        checkCanRelease();
        if (releasedCopies == null) {
            return new MemoryReport("already resumed", 0, 0, true, 0, 0, 0, 0, "", Map.of());
        }
        boolean fromCopy = !releasedCopies.isEmpty();
        long t0 = System.nanoTime();
        long map = 0;
        long refill = 0;
        long register = 0;
        double checksums = 0;
        long bytes = 0;
        Map<String, String> generations = new LinkedHashMap<>();
        List<HostRanks.Held> memories = memories();
        String source = fromCopy ? "host copy" : relay != null ? relay.sourceName() : "checkpoint";
        for (int i = 0; i < memories.size(); i++) {
            HostRanks.Held h = memories.get(i);
            HostRanks.Rank rank = ranks.ranks().get(i);
            long a = System.nanoTime();
            h.arena().populate();
            long b = System.nanoTime();
            Manifest root = null;
            if (relay == null) {
                if (fromCopy) {
                    h.arena().copyFrom(releasedCopies.get(i));
                } else {
                    HostRanks.refill(rank, h);
                }
            } else if (fromCopy && relay.rootUnchanged(i)) {
                h.arena().copyFrom(releasedCopies.get(i));
                root = relay.rootManifest(i);
            } else {
                if (fromCopy) {
                    LOG.warn("relay rank {}: its root's weights changed while released; refilling from the root, not"
                            + " from the host copy", rank.key());
                    source = relay.sourceName() + " (the host copy was stale)";
                }
                root = relay.refill(i); // from another seed: the root, or the seed its source strategy assigns
            }
            long c = System.nanoTime();
            String generation;
            if (root == null) {
                SeedService.Republished p = service.resumeWeights(rank.key(), h.destinations());
                checksums += p.checksumSeconds();
                generation = p.generation();
            } else {
                service.publishRelay(rank.key(), h.destinations(), root, null); // the root's generation, checksums
                generation = root.generation();
            }
            long d = System.nanoTime();
            map += b - a;
            refill += c - b;
            register += d - c;
            bytes += h.arena().releasableBytes();
            generations.put(rank.key().toString(), generation);
            if (listing != null) {
                listing.register(listing.address().orElseThrow(), rank.key(),
                        service.manifest(rank.key()).orElseThrow());
            }
        }
        if (relay != null) {
            relay.rejoin();
        }
        releasedCopies.forEach(HostMemory::close);
        releasedCopies = null;
        double secs = (System.nanoTime() - t0) / 1e9;
        LOG.info("seed resumed its weights: {} bytes from the {} in {} s (map {} s, refill {} s, re-register {} s)",
                bytes, source, String.format("%.3f", secs), String.format("%.3f", map / 1e9),
                String.format("%.3f", refill / 1e9), String.format("%.3f", register / 1e9));
        return new MemoryReport("resumed " + bytes + " bytes from the " + source, bytes, secs, true, map / 1e9,
                refill / 1e9, register / 1e9, checksums, source, generations);
    }

    /** Each rank's weight memory, in rank order: what it loaded, or, for a relay, what it loaded from its root. */
    private List<HostRanks.Held> memories() {
        return relay != null ? relay.memories() : loaded.stream().map(HostRanks.Loaded::held).toList();
    }

    private void checkCanRelease() {
        if (stopped) {
            throw new IllegalStateException("this seed is stopped");
        }
        if (!settings.enableMemorySaver()) {
            throw new WeightLoaderConfigException("weight-loader.enable-memory-saver", "is false: this seed's memory"
                    + " was not allocated to be released; start it with enable-memory-saver = true"
                    + " (--enable-memory-saver) to release and resume its weights");
        }
        for (HostRanks.Held m : memories()) {
            if (!m.arena().releasable()) {
                Device d = m.arena().region().device();
                throw new IllegalStateException("this seed holds its weights on " + d + " in memory that cannot be"
                        + " released and resumed at the same addresses: it was allocated with " + (d.isHost()
                        ? "posix_memalign, not mapped" : "cudaMalloc, not reserved with CUDA's virtual memory management")
                        + " (HostRanks.allocate makes releasable memory when weight-loader.enable-memory-saver is true)");
            }
        }
    }

    /** The control plane (its port, each rank's manifest, weight updates: {@code weightsChanging}/{@code Changed}). */
    /**
     * The address clients dial to reach this seed's control plane: its bind address, or, when that is a wildcard,
     * the engine's configured host name ({@code backends.transfer_engine.hostname}), or {@code ADDRESS} when there
     * is none.
     */
    public String dialAddress() {
        return dialAddress;
    }

    private static String dialAddress(Config config, WeightLoaderSettings settings) {
        String bind = settings.seed().bindAddress();
        String key = "weight-loader.backends.transfer_engine.hostname";
        String hostname = config.hasPath(key) ? config.getString(key).trim() : "";
        boolean wildcard = bind.equals("0.0.0.0") || bind.equals("::") || bind.equals("[::]");
        return wildcard ? (hostname.isEmpty() ? "ADDRESS" : hostname) : bind;
    }

    public SeedService service() {
        return service;
    }

    public HostRanks ranks() {
        return ranks;
    }

    /** What each rank holds, where: the host's pointers into its weights. */
    public Map<RankKey, List<TensorDestination>> held() {
        return held;
    }

    /** Each rank's load, in rank order. */
    public List<LoadReport> reports() {
        return reports;
    }

    /**
     * Where this seed is listed: {@code registry etcd://...: model M as host:port}, or empty when it is in no registry
     * (the in-process directory, or a relay whose registry could not be reached).
     */
    public Optional<String> registry() {
        return listing == null ? Optional.empty() : Optional.of("registry " + listing.describe() + ": model "
                + listing.modelId() + listing.address().map(a -> " as " + a).orElse(""));
    }

    /** The address a relay registered with its root's directory; empty for a seed that loaded from its checkpoint. */
    public Optional<String> relayAddress() {
        return relay == null ? Optional.empty() : Optional.of(relay.address());
    }

    /** Bytes held in all. */
    public long bytes() {
        return held.values().stream().flatMap(List::stream).mapToLong(TensorDestination::byteSize).sum();
    }

    /**
     * Stops: out of the root's directory first (a relay), no new loads, loads in flight finish within {@code grace},
     * then the memory is unregistered and freed.
     *
     * @return whether no load was in flight when it stopped (false: the grace ran out and loads were cut off)
     */
    public synchronized boolean stop(Duration grace) {
        if (stopped) {
            return true;
        }
        stopped = true;
        if (releasedCopies != null) {
            releasedCopies.forEach(HostMemory::close);
            releasedCopies = null;
        }
        if (listing != null) {
            listing.close(); // out of the registry first: no new client finds it there
        }
        if (relay != null) {
            relay.close(); // no new client is sent here
        }
        boolean quiet = service.drain(grace);
        service.close();
        loaded.forEach(HostRanks.Loaded::close);
        if (relay != null) {
            relay.freeMemory();
        }
        return quiet;
    }

    /** {@link #stop(Duration)} with {@code weight-loader.seed.shutdown-grace}. */
    @Override
    public void close() {
        if (!stop(settings.seed().shutdownGrace())) {
            LOG.warn("seed stopped with loads in flight cut off (weight-loader.seed.shutdown-grace = {})",
                    settings.seed().shutdownGrace());
        }
    }
}
