package io.weightloader.examples;

import io.weightloader.cli.Sizes;
import io.weightloader.host.HostRanks;
import io.weightloader.host.SeedHost;
import com.typesafe.config.Config;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.seed.SeedService;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
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

    @Option(names = "--enable-memory-saver", description = "SGLang's flag: the seed's weights can be released and "
            + "resumed (POST /release_memory_occupation, /resume_memory_occupation; host memory, builtin engine) "
            + "(weight-loader.enable-memory-saver).")
    Boolean enableMemorySaver;

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
        SharedOptions.put(m, root + "enable-memory-saver", enableMemorySaver);
        SharedOptions.put(m, te + "hostname", hostname);
        SharedOptions.put(m, te + "builtin.port", enginePort);
        return shared.layered(spec, m);
    }

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        Config config = config();
        SeedHost host = SeedHost.start(config, shared.device, this::awaitStart);
        WeightLoaderSettings settings = WeightLoaderSettings.from(config);
        HostRanks ranks = host.ranks();
        for (int i = 0; i < host.reports().size(); i++) {
            out.println((ranks.single() ? "" : "rank " + ranks.ranks().get(i).key() + ": ")
                    + host.reports().get(i).summary());
        }
        CountDownLatch stopped = new CountDownLatch(1);
        java.time.Duration grace = settings.seed().shutdownGrace();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(SeedCommand.class);
            long t0 = System.nanoTime();
            log.info("seed stopping: no new loads; waiting up to {} for loads in flight", Sizes.human(grace));
            boolean quiet = host.stop(grace);
            String took = Sizes.human(java.time.Duration.ofNanos(System.nanoTime() - t0));
            if (quiet) {
                log.info("seed stopped after {} (no load in flight)", took);
            } else {
                log.warn("seed stopped after {}: weight-loader.seed.shutdown-grace ({}) is over, loads still in flight"
                        + " were cut off", took, Sizes.human(grace));
            }
            stopped.countDown();
        }, "weightloader-seed-shutdown"));
        SeedService service = host.service();
        for (HostRanks.Rank r : ranks.ranks()) {
            var manifest = service.manifest(r.key()).orElseThrow();
            out.printf("seed ready: control plane %s:%d, rank %s on %s, serving %s, %d tensors%n",
                    settings.seed().bindAddress(), service.port(), r.key(), r.device(), manifest.serves(),
                    manifest.tensors().size());
        }
        out.printf("%d rank(s), %s in all%s%s%n", ranks.ranks().size(), Sizes.human(host.bytes()),
                host.relayAddress().map(a -> "; relay " + a + (host.registry().isPresent() ? ""
                        : " of root " + settings.remote().seedIp().orElse("") + ":" + settings.remote().seedPort())
                        + " (same generation and checksums)").orElse(""),
                host.registry().map(r -> "; listed in " + r).orElse(""));
        String backend = settings.seed().serve().get(0);
        out.printf("load from it with: weightloader load --load-format remote_instance"
                        + " --remote-instance-weight-loader-seed-instance-ip %s"
                        + " --remote-instance-weight-loader-seed-instance-service-port %d"
                        + " --remote-instance-weight-loader-backend %s%s%s%n",
                host.dialAddress(), service.port(), backend,
                (ranks.single() ? "" : " --tp-size " + settings.tpSize())
                        + (settings.tpLayout().isNone() ? "" : " --tp-layout " + settings.tpLayout().name()),
                (settings.remote().token().isPresent() ? " --token ..." : "")
                        + (settings.tls().serves() ? " --tls-ca CA.pem" : ""));
        if (host.registry().isPresent()) {
            var registry = io.weightloader.seed.registry.Registries.settings(config);
            out.printf("or from any source of the registry: weightloader load --load-format remote_instance"
                    + " --directory %s --model-id %s%s%n", registry.directory(), registry.modelId().orElseThrow(),
                    (ranks.single() ? "" : " --tp-size " + settings.tpSize())
                            + (settings.tpLayout().isNone() ? "" : " --tp-layout " + settings.tpLayout().name()));
        }
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
}
