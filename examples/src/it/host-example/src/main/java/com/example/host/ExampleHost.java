package com.example.host;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigParseOptions;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.SettingsReader;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.host.SeedHost;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.TensorArena;
import java.io.File;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * An inference host as a team embeds weightloader: at start-up it reads its config and takes its weights, then would
 * serve requests with them (here it prints what it holds). Everything it does with weights is one library call:
 * <ul>
 *   <li>{@code example-host.role = rank}: this process is one tensor-parallel rank; it opens a {@link WeightLoader}
 *       (from disk or from a seed, as {@code weight-loader.load-format} says), allocates what its rank holds
 *       ({@link WeightLoader#rankSpecs()}) and loads its slices ({@link WeightLoader#rankRequest}).</li>
 *   <li>{@code example-host.role = seed}: this process holds every rank {@code weight-loader.rank.tp-size} gives it
 *       and serves them to other hosts ({@link SeedHost#start}); with {@code load-format = remote_instance} it loads
 *       them from another seed first and joins that seed's directory as a relay
 *       ({@code backends.transfer_engine.source-strategy} says where it reads).</li>
 * </ul>
 * The config is {@link ConfigFactory#load()} (application.conf, {@code -D}, every module's reference.conf), under the
 * files named on the command line, under {@code key=value} arguments.
 */
public final class ExampleHost implements AutoCloseable {
    /** The example host's own settings. */
    public static final String PATH = "example-host";

    /** What this process is. */
    public enum Role { RANK, SEED }

    private final Role role;
    private final SeedHost seed;
    private final TensorArena arena;
    private final RankKey rank;
    private final List<TensorDestination> rankWeights;
    private final List<LoadReport> reports;

    private ExampleHost(Role role, SeedHost seed, TensorArena arena, RankKey rank, List<TensorDestination> rankWeights,
                        List<LoadReport> reports) {
        this.role = role;
        this.seed = seed;
        this.arena = arena;
        this.rank = rank;
        this.rankWeights = rankWeights;
        this.reports = reports;
    }

    /**
     * The host's config: {@code key=value} arguments over the files named in {@code args} (later files over earlier
     * ones) over {@link ConfigFactory#load()}.
     */
    public static Config config(String... args) {
        Config flags = ConfigFactory.empty();
        Config files = ConfigFactory.empty();
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq > 0) {
                flags = ConfigFactory.parseMap(Map.of(arg.substring(0, eq).trim(), arg.substring(eq + 1).trim()),
                        "command-line flags").withFallback(flags);
            } else {
                files = ConfigFactory.parseFile(new File(arg), ConfigParseOptions.defaults().setAllowMissing(false))
                        .withFallback(files);
            }
        }
        return flags.withFallback(files).withFallback(ConfigFactory.load()).resolve();
    }

    /** Reads the role and takes this host's weights: loaded (and, for a seed, served) when this returns. */
    public static ExampleHost start(Config config) throws Exception {
        Role role = Role.valueOf(new SettingsReader(config, PATH).oneOf("role", List.of("rank", "seed"))
                .toUpperCase(java.util.Locale.ROOT));
        if (role == Role.SEED) {
            SeedHost seed = SeedHost.start(config); // checks every setting and binds its port before loading
            return new ExampleHost(role, seed, null, null, null, seed.reports());
        }
        try (WeightLoader loader = WeightLoader.open(config)) { // checks every setting before anything starts
            TensorArena arena = TensorArena.allocate(loader.settings().device(), loader.rankSpecs());
            try {
                LoadRequest request = loader.rankRequest(arena.destinations());
                LoadReport report = loader.load(request); // throws unless every byte arrived
                return new ExampleHost(role, null, arena, loader.settings().rank(), request.tensors(),
                        List.of(report));
            } catch (RuntimeException | Error e) {
                arena.close();
                throw e;
            }
        }
    }

    public Role role() {
        return role;
    }

    /** The weights this host holds, per rank: what its model would run on. */
    public Map<RankKey, List<TensorDestination>> weights() {
        return seed != null ? seed.held() : Map.of(rank, rankWeights);
    }

    /** Each rank's load, in rank order. */
    public List<LoadReport> reports() {
        return reports;
    }

    /** A seed's control-plane port: where other hosts load from. */
    public Optional<Integer> seedPort() {
        return seed == null ? Optional.empty() : Optional.of(seed.service().port());
    }

    /** The address a relay registered with its root's directory. */
    public Optional<String> relayAddress() {
        return seed == null ? Optional.empty() : seed.relayAddress();
    }

    /**
     * Stops: a seed takes no new loads, lets those in flight finish within {@code grace}, leaves its root's directory
     * (a relay) and frees its memory; a rank frees its memory.
     *
     * @return whether no load was cut off
     */
    public boolean stop(Duration grace) {
        if (seed != null) {
            return seed.stop(grace);
        }
        arena.close();
        return true;
    }

    @Override
    public void close() {
        if (seed != null) {
            seed.close(); // with weight-loader.seed.shutdown-grace
        } else {
            arena.close();
        }
    }

    /** {@code example-host [FILE.conf ...] [key=value ...]}: a seed serves until the process is stopped. */
    public static void main(String[] args) throws Exception {
        ExampleHost host;
        try {
            host = start(config(args));
        } catch (WeightLoaderConfigException | ConfigException e) {
            System.err.println("example-host: " + e.getMessage()); // the setting, what is allowed, what was given
            System.exit(2);
            return;
        }
        List<String> lines = new ArrayList<>();
        for (LoadReport r : host.reports()) {
            lines.add(String.format("loaded %d bytes in %.2f s from %s (%s)", r.totalBytes(), r.seconds(), r.source(),
                    r.backend()));
        }
        lines.forEach(System.out::println);
        if (host.role() == Role.RANK) {
            // an inference server would serve requests with host.weights() here
            host.close();
            return;
        }
        System.out.println("serving on port " + host.seedPort().orElseThrow()
                + host.relayAddress().map(a -> " as relay " + a).orElse(""));
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            host.close();
            System.out.println("stopped");
        }, "example-host-stop"));
        Thread.currentThread().join(); // until the process is stopped (SIGTERM, Ctrl-C): the hook stops the seed
    }
}
