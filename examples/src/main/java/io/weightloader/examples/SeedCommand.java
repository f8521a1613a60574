package io.weightloader.examples;

import com.typesafe.config.Config;
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
import picocli.CommandLine.Mixin;
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

    @Mixin
    SharedOptions shared;

    @Option(names = "--bind", paramLabel = "ADDR", description = "Control-plane address (weight-loader.seed.bind-address).")
    String bind;

    @Option(names = "--port", paramLabel = "PORT", description = "Control-plane port, 0 = any "
            + "(weight-loader.seed.service-port).")
    Integer port;

    @Option(names = "--protocol", paramLabel = "PROTO", description = "Mooncake transport: tcp | rdma | nvlink_intra "
            + "(weight-loader.backends.transfer_engine.protocol).")
    String protocol;

    @Option(names = "--hostname", paramLabel = "HOST", description = "Host name clients dial to reach the engine "
            + "(weight-loader.backends.transfer_engine.hostname).")
    String hostname;

    @Option(names = "--engine-port", paramLabel = "PORT", description = "Built-in engine port, 0 = any "
            + "(weight-loader.backends.transfer_engine.builtin.port).")
    Integer enginePort;

    @Option(names = "--serve-nccl", description = "Also serve nccl clients (weight-loader.seed.serve-nccl; GPU memory).")
    Boolean serveNccl;

    @Option(names = "--ready-file", paramLabel = "FILE",
            description = "Write the control-plane port to FILE once serving (for scripts).")
    Path readyFile;

    Config config() {
        Map<String, Object> m = new LinkedHashMap<>();
        String root = "weight-loader.";
        String te = root + "backends.transfer_engine.";
        m.put(root + "remote-instance.start-seed-via-transfer-engine", true);
        SharedOptions.put(m, root + "seed.bind-address", bind);
        SharedOptions.put(m, root + "seed.service-port", port);
        SharedOptions.put(m, root + "seed.serve-nccl", serveNccl);
        SharedOptions.put(m, te + "protocol", protocol);
        SharedOptions.put(m, te + "hostname", hostname);
        SharedOptions.put(m, te + "builtin.port", enginePort);
        return shared.layered(spec, m);
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
