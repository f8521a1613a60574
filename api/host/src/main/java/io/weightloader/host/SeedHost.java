package io.weightloader.host;

import com.typesafe.config.Config;
import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.LoadFormat;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.BackendRegistry;
import io.weightloader.seed.SeedService;
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
    private boolean stopped;

    private SeedHost(WeightLoaderSettings settings, HostRanks ranks, SeedService service, Relay relay,
                     List<HostRanks.Loaded> loaded, Map<RankKey, List<TensorDestination>> held,
                     List<LoadReport> reports) {
        this.settings = settings;
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
        if (settings.loadFormat() == LoadFormat.REMOTE_INSTANCE) {
            config = Relay.withRootTransport(config, settings);
            settings = WeightLoaderSettings.from(config);
        }
        HostRanks ranks = HostRanks.of(config, devices);
        BackendRegistry registry = BackendRegistry.discover();
        BackendContext context = new BackendContext(settings, config);
        registry.validateSettings(context, settings.backend());
        SeedService service = SeedService.bind(context, registry,
                ranks.ranks().stream().map(HostRanks.Rank::device).distinct().toList());
        List<HostRanks.Loaded> loaded = new ArrayList<>();
        Map<RankKey, List<TensorDestination>> held = new LinkedHashMap<>();
        Relay relay = null;
        List<LoadReport> reports;
        try {
            if (settings.loadFormat() == LoadFormat.REMOTE_INSTANCE) {
                relay = Relay.start(settings, ranks, service, beforeLoading);
                held.putAll(relay.held());
                reports = relay.reports();
            } else {
                beforeLoading.run();
                loaded.addAll(ranks.parallel(HostRanks::load, HostRanks.Loaded::close));
                for (int i = 0; i < loaded.size(); i++) {
                    held.put(ranks.ranks().get(i).key(), loaded.get(i).held().destinations());
                }
                reports = loaded.stream().map(HostRanks.Loaded::report).toList();
                service.publish(held);
                service.start();
            }
        } catch (Exception | Error e) {
            service.close();
            loaded.forEach(HostRanks.Loaded::close);
            throw e;
        }
        return new SeedHost(settings, ranks, service, relay, loaded, Collections.unmodifiableMap(held), reports);
    }

    /** The control plane (its port, each rank's manifest, weight updates: {@code weightsChanging}/{@code Changed}). */
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
