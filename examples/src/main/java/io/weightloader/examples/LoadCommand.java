package io.weightloader.examples;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigParseOptions;
import io.weightloader.api.TensorArena;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoader;
import io.weightloader.api.spi.ZeroCopyLoader;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader load}: opens the backend the settings select and loads every tensor it offers into one
 * arena on {@code weight-loader.device} (host or GPU) (or maps them, with {@code --zero-copy}), then prints the report.
 *
 * <p>Settings come from, highest first: the flags (named like SGLang's, each mapped to one
 * {@code weight-loader.*} key), {@code --config FILE}, then {@code application.conf}, system properties and
 * every module's {@code reference.conf}.
 */
@Command(name = "load", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Load every tensor of a checkpoint or seed into host memory and report what was loaded.")
final class LoadCommand implements Callable<Integer> {
    private static final int SHORT_TABLE_ROWS = 20;

    @Spec
    CommandSpec spec;

    @Option(names = "--config", paramLabel = "FILE", description = "HOCON file of weight-loader settings.")
    Path configFile;

    @Option(names = "--load-format", paramLabel = "FORMAT",
            description = "auto | safetensors | remote_instance (weight-loader.load-format).")
    String loadFormat;

    @Option(names = "--model-path", paramLabel = "PATH",
            description = "Checkpoint file or directory (weight-loader.model-path).")
    String modelPath;

    @Option(names = "--remote-instance-weight-loader-seed-instance-ip", paramLabel = "HOST",
            description = "The seed's address (weight-loader.remote-instance.seed-instance-ip).")
    String seedIp;

    @Option(names = "--remote-instance-weight-loader-seed-instance-service-port", paramLabel = "PORT",
            description = "The seed's control-plane port (weight-loader.remote-instance.seed-instance-service-port).")
    Integer seedPort;

    @Option(names = "--remote-instance-weight-loader-send-weights-group-ports", paramLabel = "PORTS", split = ",",
            description = "NCCL group ports, comma-separated, index = tp rank "
                    + "(weight-loader.remote-instance.send-weights-group-ports).")
    List<Integer> groupPorts;

    @Option(names = "--remote-instance-weight-loader-backend", paramLabel = "NAME",
            description = "transfer_engine | nccl (weight-loader.remote-instance.backend).")
    String remoteBackend;

    @Option(names = {"--remote-instance-weight-loader-start-seed-via-transfer-engine",
            "--remote-instance-weight-loader-support-transfer-engine"},
            description = "Seed: register weights with the transfer engine "
                    + "(weight-loader.remote-instance.start-seed-via-transfer-engine).")
    Boolean startSeedViaTransferEngine;

    @Option(names = "--enable-memory-saver", description = "weight-loader.enable-memory-saver.")
    Boolean enableMemorySaver;

    @Option(names = "--backend", paramLabel = "NAME", description = "Backend by provider name (weight-loader.backend).")
    String backend;

    @Option(names = "--device", paramLabel = "DEVICE", description = "cpu | cuda:N (weight-loader.device).")
    String device;

    @Option(names = "--tp-rank", paramLabel = "N", description = "weight-loader.rank.tp.")
    Integer tpRank;

    @Option(names = "--pp-rank", paramLabel = "N", description = "weight-loader.rank.pp.")
    Integer ppRank;

    @Option(names = "--token", paramLabel = "TOKEN", description = "weight-loader.remote-instance.token.")
    String token;

    @Option(names = "--engine", paramLabel = "NAME", description = "transfer_engine's engine: builtin | mooncake "
            + "(weight-loader.backends.transfer_engine.engine).")
    String engine;

    @Option(names = "--mooncake-library", paramLabel = "PATH",
            description = "libtransfer_engine.so (weight-loader.backends.transfer_engine.mooncake.library).")
    String mooncakeLibrary;

    @Option(names = "--bandwidth-limit", paramLabel = "SIZE", description = "Cap on the remote read rate per "
            + "second, e.g. 2GiB (weight-loader.backends.transfer_engine.bandwidth-limit).")
    String bandwidthLimit;

    @Option(names = "--fallback", paramLabel = "MODE", description = "none | local (weight-loader.fallback).")
    String fallback;

    @Option(names = "--checksum", paramLabel = "ALGO", description = "none | sha256 (weight-loader.checksum).")
    String checksum;

    @Option(names = "--report", paramLabel = "FILE", description = "Write the load report as JSON to FILE.")
    Path reportFile;

    @Option(names = "--zero-copy", description = "Map the tensors instead of copying them, when the backend "
            + "can (weight-loader.backends.local.zero-copy).")
    boolean zeroCopy;

    @Option(names = "--progress", negatable = true, description = "Progress bar on stderr for long loads "
            + "(default: on when the console is interactive).")
    Boolean progress;

    /** The flags as config keys: only those given, so that everything else comes from the lower layers. */
    Config flagsConfig() {
        Map<String, Object> m = new LinkedHashMap<>();
        String root = "weight-loader.";
        String ri = root + "remote-instance.";
        put(m, root + "load-format", loadFormat);
        put(m, root + "model-path", modelPath);
        put(m, ri + "seed-instance-ip", seedIp);
        put(m, ri + "seed-instance-service-port", seedPort);
        put(m, ri + "send-weights-group-ports", groupPorts);
        put(m, ri + "backend", remoteBackend);
        put(m, ri + "start-seed-via-transfer-engine", startSeedViaTransferEngine);
        put(m, ri + "token", token);
        put(m, root + "enable-memory-saver", enableMemorySaver);
        put(m, root + "backend", backend);
        put(m, root + "device", device);
        put(m, root + "rank.tp", tpRank);
        put(m, root + "rank.pp", ppRank);
        put(m, root + "fallback", fallback);
        put(m, root + "checksum", checksum);
        put(m, root + "backends.transfer_engine.engine", engine);
        put(m, root + "backends.transfer_engine.mooncake.library", mooncakeLibrary);
        put(m, root + "backends.transfer_engine.bandwidth-limit", bandwidthLimit);
        if (zeroCopy) {
            put(m, root + "backends.local.zero-copy", true);
        }
        return ConfigFactory.parseMap(m, "command-line flags");
    }

    private static void put(Map<String, Object> m, String key, Object value) {
        if (value != null) {
            m.put(key, value);
        }
    }

    /** flags over {@code --config FILE} over application.conf / system properties / reference.conf. */
    Config config() {
        return layered(spec, flagsConfig(), configFile);
    }

    /** {@code flags} over the HOCON file (when given) over {@link ConfigFactory#load()}. */
    static Config layered(CommandSpec spec, Config flags, Path configFile) {
        Config file = ConfigFactory.empty();
        if (configFile != null) {
            if (!Files.isRegularFile(configFile)) {
                throw new ParameterException(spec.commandLine(), "--config: no such file: " + configFile);
            }
            file = ConfigFactory.parseFile(configFile.toFile(), ConfigParseOptions.defaults().setAllowMissing(false));
        }
        return flags.withFallback(file).withFallback(ConfigFactory.load()).resolve();
    }

    @Override
    public Integer call() throws IOException {
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        Config config = config();
        LoadReport report;
        try (WeightLoader loader = WeightLoader.open(config)) {
            List<TensorSpec> specs = loader.available();
            if (zeroCopy && loader.backend() instanceof ZeroCopyLoader z) {
                try (MappedWeights mapped = z.map(specs, loader.settings().checksum())) {
                    report = mapped.report();
                }
            } else {
                if (zeroCopy) {
                    err.println("weightloader: note: backend '" + loader.backend().name()
                            + "' cannot hand out zero-copy views; copying instead");
                }
                report = copy(loader, specs, err);
            }
        }
        if (reportFile != null) {
            WeightLoaderCli.JSON.writeValue(reportFile.toFile(), report);
        }
        out.println(report.summary());
        printTable(out, report);
        if (reportFile != null) {
            out.println("report written to " + reportFile);
        }
        out.flush();
        return 0;
    }

    private LoadReport copy(WeightLoader loader, List<TensorSpec> specs, PrintWriter err) {
        boolean showProgress = progress != null ? progress : System.console() != null;
        try (TensorArena arena = TensorArena.allocate(loader.settings().device(), specs)) {
            LoadRequest request = LoadRequest.of(arena.destinations());
            if (!showProgress) {
                return loader.load(request);
            }
            ProgressBar bar = new ProgressBar(err);
            try {
                return loader.load(request.withProgress(bar));
            } finally {
                bar.finish();
            }
        }
    }

    private void printTable(PrintWriter out, LoadReport report) {
        boolean all = WeightLoaderCli.verbose(spec);
        boolean sums = report.tensors().stream().anyMatch(t -> t.sha256() != null);
        Table table = sums ? new Table("NAME", "DTYPE", "SHAPE", ">BYTES", "SHA256")
                : new Table("NAME", "DTYPE", "SHAPE", ">BYTES");
        List<TensorReport> tensors = report.tensors();
        int shown = all ? tensors.size() : Math.min(SHORT_TABLE_ROWS, tensors.size());
        for (TensorReport t : tensors.subList(0, shown)) {
            table.row(t.name(), t.dtype(), t.shape(), t.bytes(), t.sha256());
        }
        table.print(out);
        if (shown < tensors.size()) {
            out.println("... and " + (tensors.size() - shown) + " more (--verbose lists all"
                    + (reportFile == null ? ", --report FILE writes them as JSON" : "") + ")");
        }
    }
}
