package io.weightloader.examples;

import com.typesafe.config.Config;
import io.weightloader.memory.TensorArena;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoader;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.seed.SeedService;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.BackendRegistry;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader seed}: checks everything it needs (settings, the backends it serves, its port), loads a
 * checkpoint (with any backend the settings select) for each of its tensor-parallel ranks onto that rank's device,
 * and serves them behind one control plane until the process is stopped.
 */
@Command(name = "seed", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Load a checkpoint, hold it in memory and serve it to clients (remote_instance loads).")
final class SeedCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Mixin
    SharedOptions shared;

    @Option(names = {"--bind", "--host"}, paramLabel = "ADDR", description = "Control-plane address, SGLang's --host "
            + "(weight-loader.seed.bind-address).")
    String bind;

    @Option(names = "--port", paramLabel = "PORT", description = "Control-plane port, 0 = any, SGLang's --port "
            + "(weight-loader.seed.service-port).")
    Integer port;

    @Option(names = "--serve", paramLabel = "BACKENDS", description = "Clients to serve: transfer_engine, nccl, or "
            + "both comma-separated (weight-loader.seed.serve; default transfer_engine).")
    String serve;

    @Option(names = "--serve-nccl", description = "Serve nccl clients too: --serve transfer_engine,nccl.")
    boolean serveNccl;

    @Option(names = "--hostname", paramLabel = "HOST", description = "Host name clients dial to reach the engine "
            + "(weight-loader.backends.transfer_engine.hostname).")
    String hostname;

    @Option(names = "--engine-port", paramLabel = "PORT", description = "Built-in engine port, 0 = any; rank r "
            + "uses PORT + r (weight-loader.backends.transfer_engine.builtin.port).")
    Integer enginePort;

    @Option(names = "--remote-instance-weight-loader-send-weights-group-ports", paramLabel = "PORTS",
            description = "nccl: the seed's NCCL bootstrap port per tp rank, '[29601,29602]' or comma-separated "
                    + "(weight-loader.remote-instance.send-weights-group-ports).")
    String groupPorts;

    @Option(names = "--allow-plain-token", description = "Beyond loopback without TLS, send the token in clear: only "
            + "where the seed's traffic cannot be read (weight-loader.seed.allow-plain-token).")
    Boolean allowPlainToken;

    @Option(names = "--start-when", paramLabel = "FILE", description = "A relay: once it serves and is registered "
            + "with its root, wait until FILE exists before loading (an orchestrator releasing a wave of instances at "
            + "once); with --ready-file, READY_FILE.armed says it is waiting.")
    Path startWhen;

    @Option(names = "--ready-file", paramLabel = "FILE",
            description = "Write the control-plane port to FILE once serving (for scripts).")
    Path readyFile;

    Config config() {
        Map<String, Object> m = new LinkedHashMap<>();
        String root = "weight-loader.";
        String te = root + "backends.transfer_engine.";
        SharedOptions.put(m, root + "seed.bind-address", bind);
        SharedOptions.put(m, root + "seed.service-port", port);
        if (serve != null) {
            m.put(root + "seed.serve", serve);
        } else if (serveNccl) {
            m.put(root + "seed.serve", "transfer_engine,nccl");
        }
        SharedOptions.put(m, root + "remote-instance.send-weights-group-ports", groupPorts);
        SharedOptions.put(m, root + "seed.allow-plain-token", allowPlainToken);
        SharedOptions.put(m, te + "hostname", hostname);
        SharedOptions.put(m, te + "builtin.port", enginePort);
        return shared.layered(spec, m);
    }

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        Config config = config();
        WeightLoaderSettings settings = WeightLoaderSettings.from(config);
        if (settings.loadFormat() == io.weightloader.api.config.LoadFormat.REMOTE_INSTANCE) {
            config = Relay.withRootTransport(config, settings);
            settings = WeightLoaderSettings.from(config);
        }
        Ranks ranks = Ranks.of(config, shared);
        BackendRegistry registry = BackendRegistry.discover();
        // Everything is checked, and the port bound, before a byte of the checkpoint is read.
        BackendContext context = new BackendContext(settings, config);
        registry.validateSettings(context, settings.backend());
        SeedService service = SeedService.bind(context, registry,
                ranks.ranks().stream().map(Ranks.Rank::device).distinct().toList());
        List<TensorArena> arenas = new ArrayList<>();
        Map<RankKey, List<TensorDestination>> held = new LinkedHashMap<>();
        Relay relay = null;
        try {
            if (settings.loadFormat() == io.weightloader.api.config.LoadFormat.REMOTE_INSTANCE) {
                // a relay: loads from its root seed, then serves what it holds (while loading, for a chain)
                relay = Relay.start(settings, ranks, service, out, this::awaitStart);
                held.putAll(relay.held());
            }
            List<Loaded> loaded = relay != null ? List.of() : ranks.parallel(SeedCommand::load, l -> l.arena().close());
            for (int i = 0; i < loaded.size(); i++) {
                Loaded l = loaded.get(i);
                arenas.add(l.arena());
                held.put(ranks.ranks().get(i).key(), l.held());
                out.println((ranks.single() ? "" : "rank " + ranks.ranks().get(i).key() + ": ") + l.report().summary());
            }
            if (relay == null) {
                service.publish(held);
                service.start();
            }
        } catch (Exception | Error e) {
            service.close();
            arenas.forEach(TensorArena::close);
            throw e;
        }
        Relay started = relay;
        CountDownLatch stopped = new CountDownLatch(1);
        java.time.Duration grace = settings.seed().shutdownGrace();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(SeedCommand.class);
            long t0 = System.nanoTime();
            log.info("seed stopping: no new loads; waiting up to {} for loads in flight", Sizes.human(grace));
            if (started != null) {
                started.close(); // out of the root's directory first: no new client is sent here
            }
            boolean quiet = service.drain(grace);
            String took = Sizes.human(java.time.Duration.ofNanos(System.nanoTime() - t0));
            if (quiet) {
                log.info("seed stopped after {} (no load in flight)", took);
            } else {
                log.warn("seed stopped after {}: weight-loader.seed.shutdown-grace ({}) is over, loads still in flight"
                        + " were cut off", took, Sizes.human(grace));
            }
            service.close();
            arenas.forEach(TensorArena::close);
            if (started != null) {
                started.freeMemory();
            }
            stopped.countDown();
        }, "weightloader-seed-shutdown"));
        long bytes = 0;
        for (List<TensorDestination> h : held.values()) {
            for (TensorDestination t : h) {
                bytes += t.byteSize();
            }
        }
        for (Ranks.Rank r : ranks.ranks()) {
            var manifest = service.manifest(r.key()).orElseThrow();
            out.printf("seed ready: control plane %s:%d, rank %s on %s, serving %s, %d tensors%n",
                    settings.seed().bindAddress(), service.port(), r.key(), r.device(), manifest.serves(),
                    manifest.tensors().size());
        }
        out.printf("%d rank(s), %s in all%s%n", ranks.ranks().size(), Sizes.human(bytes),
                started == null ? "" : "; relay " + started.address() + " of root "
                        + settings.remote().seedIp().orElse("") + ":" + settings.remote().seedPort()
                        + " (same generation and checksums)");
        String backend = settings.seed().serve().get(0);
        out.printf("load from it with: weightloader load --load-format remote_instance"
                        + " --remote-instance-weight-loader-seed-instance-ip %s"
                        + " --remote-instance-weight-loader-seed-instance-service-port %d"
                        + " --remote-instance-weight-loader-backend %s%s%s%n",
                dialAddress(config, settings), service.port(), backend,
                (ranks.single() ? "" : " --tp-size " + settings.tpSize())
                        + (settings.tpLayout().isNone() ? "" : " --tp-layout " + settings.tpLayout().name()),
                (settings.remote().token().isPresent() ? " --token ..." : "")
                        + (settings.tls().serves() ? " --tls-ca CA.pem" : ""));
        out.flush();
        if (readyFile != null) {
            // written whole under another name, then renamed: a watcher never reads a half-written file
            Path tmp = readyFile.resolveSibling(readyFile.getFileName() + ".tmp");
            Files.writeString(tmp, Integer.toString(service.port()));
            Files.move(tmp, readyFile, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                    java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        }
        stopped.await();
        return 0;
    }

    /** What clients dial: the bind address, or, when that is a wildcard, the engine's host name (set by then). */
    private static String dialAddress(Config config, WeightLoaderSettings settings) {
        String bind = settings.seed().bindAddress();
        String key = "weight-loader.backends.transfer_engine.hostname";
        String hostname = config.hasPath(key) ? config.getString(key).trim() : "";
        boolean wildcard = bind.equals("0.0.0.0") || bind.equals("::") || bind.equals("[::]");
        return wildcard ? (hostname.isEmpty() ? "ADDRESS" : hostname) : bind;
    }

    /** {@code --start-when}: says it is waiting ({@code READY_FILE.armed}), then waits for the file, bounded. */
    private void awaitStart() {
        if (startWhen == null) {
            return;
        }
        try {
            if (readyFile != null) {
                Files.writeString(readyFile.resolveSibling(readyFile.getFileName() + ".armed"), "");
            }
            long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.HOURS.toNanos(1);
            while (!Files.exists(startWhen)) {
                if (System.nanoTime() > deadline) {
                    throw new io.weightloader.api.WeightLoaderException("--start-when " + startWhen
                            + " did not appear within an hour");
                }
                Thread.sleep(10);
            }
        } catch (java.io.IOException e) {
            throw new io.weightloader.api.WeightLoaderException("--start-when: " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new io.weightloader.api.WeightLoaderException("interrupted while waiting for " + startWhen, e);
        }
    }

    /** One rank's weights, loaded and held. */
    private record Loaded(TensorArena arena, List<TensorDestination> held, LoadReport report) {
    }

    private static Loaded load(Ranks.Rank rank) {
        try (WeightLoader loader = WeightLoader.open(rank.config())) {
            List<TensorSpec> specs = loader.available();
            Ranks.Held held = Ranks.allocate(rank, specs);
            try {
                LoadReport report = loader.load(LoadRequest.of(held.destinations()));
                return new Loaded(held.arena(), held.destinations(), report);
            } catch (RuntimeException | Error e) {
                held.close();
                throw e;
            }
        }
    }
}
