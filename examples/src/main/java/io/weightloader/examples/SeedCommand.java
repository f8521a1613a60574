package io.weightloader.examples;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.TensorArena;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoader;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.seed.HeldTensor;
import io.weightloader.api.seed.SeedService;
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
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader seed}: loads a checkpoint (with any backend the settings select), holds it in host memory
 * and serves it: the control plane plus the transfer engine, until the process is stopped.
 */
@Command(name = "seed", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Load a checkpoint, hold it in memory and serve it to clients (remote_instance loads).")
final class SeedCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--config", paramLabel = "FILE", description = "HOCON file of weight-loader settings.")
    Path configFile;

    @Option(names = "--model-path", paramLabel = "PATH", description = "Checkpoint to serve (weight-loader.model-path).")
    String modelPath;

    @Option(names = "--bind", paramLabel = "ADDR", description = "Control-plane address (weight-loader.seed.bind-address).")
    String bind;

    @Option(names = "--port", paramLabel = "PORT", description = "Control-plane port, 0 = any "
            + "(weight-loader.seed.service-port).")
    Integer port;

    @Option(names = "--token", paramLabel = "TOKEN", description = "weight-loader.remote-instance.token.")
    String token;

    @Option(names = "--engine", paramLabel = "NAME", description = "builtin | mooncake "
            + "(weight-loader.backends.transfer_engine.engine).")
    String engine;

    @Option(names = "--protocol", paramLabel = "PROTO", description = "Mooncake transport: tcp | rdma | nvlink_intra "
            + "(weight-loader.backends.transfer_engine.protocol).")
    String protocol;

    @Option(names = "--hostname", paramLabel = "HOST", description = "Host name clients dial to reach the engine "
            + "(weight-loader.backends.transfer_engine.hostname).")
    String hostname;

    @Option(names = "--engine-port", paramLabel = "PORT", description = "Built-in engine port, 0 = any "
            + "(weight-loader.backends.transfer_engine.builtin.port).")
    Integer enginePort;

    @Option(names = "--mooncake-library", paramLabel = "PATH",
            description = "libtransfer_engine.so (weight-loader.backends.transfer_engine.mooncake.library).")
    String mooncakeLibrary;

    @Option(names = "--device", paramLabel = "DEVICE", description = "Where the seed holds its weights: cpu | cuda:N "
            + "(weight-loader.device).")
    String device;

    @Option(names = "--serve-nccl", description = "Also serve nccl clients (weight-loader.seed.serve-nccl; GPU memory).")
    Boolean serveNccl;

    @Option(names = "--tp-rank", paramLabel = "N", description = "weight-loader.rank.tp.")
    Integer tpRank;

    @Option(names = "--pp-rank", paramLabel = "N", description = "weight-loader.rank.pp.")
    Integer ppRank;

    @Option(names = "--ready-file", paramLabel = "FILE",
            description = "Write the control-plane port to FILE once serving (for scripts).")
    Path readyFile;

    Config config() {
        Map<String, Object> m = new LinkedHashMap<>();
        String root = "weight-loader.";
        String te = root + "backends.transfer_engine.";
        m.put(root + "remote-instance.start-seed-via-transfer-engine", true);
        put(m, root + "model-path", modelPath);
        put(m, root + "seed.bind-address", bind);
        put(m, root + "seed.service-port", port);
        put(m, root + "remote-instance.token", token);
        put(m, te + "engine", engine);
        put(m, te + "protocol", protocol);
        put(m, te + "hostname", hostname);
        put(m, te + "builtin.port", enginePort);
        put(m, te + "mooncake.library", mooncakeLibrary);
        put(m, root + "device", device);
        put(m, root + "seed.serve-nccl", serveNccl);
        put(m, root + "rank.tp", tpRank);
        put(m, root + "rank.pp", ppRank);
        return LoadCommand.layered(spec, ConfigFactory.parseMap(m, "command-line flags"), configFile);
    }

    private static void put(Map<String, Object> m, String key, Object value) {
        if (value != null) {
            m.put(key, value);
        }
    }

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        Config config = config();
        WeightLoaderSettings settings = WeightLoaderSettings.from(config);
        TensorArena arena;
        List<HeldTensor> held = new ArrayList<>();
        LoadReport report;
        try (WeightLoader loader = WeightLoader.open(config)) {
            List<TensorSpec> specs = loader.available();
            arena = TensorArena.allocate(settings.device(), specs);
            report = loader.load(LoadRequest.of(arena.destinations()));
            for (TensorDestination d : arena.destinations()) {
                held.add(new HeldTensor(d.spec(), d.region()));
            }
        }
        out.println(report.summary());
        SeedService service = SeedService.start(new BackendContext(settings, config), BackendRegistry.discover(),
                Map.of(settings.rank(), held));
        var manifest = service.manifest(settings.rank()).orElseThrow();
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            service.close();
            arena.close();
            stopped.countDown();
        }, "weightloader-seed-shutdown"));
        out.printf("seed ready: control plane %s:%d, engine %s at %s, rank %s, %d tensors, %s%n",
                settings.seed().bindAddress(), service.port(), manifest.engine(), manifest.session(), settings.rank(),
                held.size(), Sizes.human(report.totalBytes()));
        out.printf("load from it with: weightloader load --load-format remote_instance"
                        + " --remote-instance-weight-loader-seed-instance-ip %s"
                        + " --remote-instance-weight-loader-seed-instance-service-port %d"
                        + " --remote-instance-weight-loader-backend transfer_engine%s%n",
                settings.seed().bindAddress(), service.port(), settings.remote().token().isPresent() ? " --token ..." : "");
        out.flush();
        if (readyFile != null) {
            Files.writeString(readyFile, Integer.toString(service.port()));
        }
        stopped.await();
        return 0;
    }
}
