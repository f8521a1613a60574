package io.weightloader.benchmarks;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.backend.te.TransferEngineProvider;
import io.weightloader.backend.te.builtin.BuiltinEngine;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.RawReads;
import io.weightloader.backend.te.mooncake.MooncakeEngine;
import io.weightloader.backend.te.mooncake.MooncakeLibrary;
import io.weightloader.cli.CliSubcommand;
import io.weightloader.cli.Sizes;
import io.weightloader.cli.SyntheticLlama;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.TensorArena;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedPublisher;
import io.weightloader.seed.SeedService;
import java.io.PrintWriter;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader bench-remote}: the transfer_engine path against its baselines, in one run on loopback.
 * For each engine: a seed holding a synthetic Llama-shaped checkpoint, then (a) the engine's raw batched read
 * of exactly the same bytes (same slices, same destination, no manifest, matching or reports) and (b) the full
 * client load; best of N each, and their ratio. Then seed registration time for many tensors.
 */
@Command(name = "bench-remote", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Benchmark remote loads against the raw engine read of the same bytes (same run).")
public final class BenchRemoteCommand implements CliSubcommand {
    private static final String TOKEN = "bench-token";
    private static final long SLICE = 64L << 20;

    @Spec
    CommandSpec spec;

    @Option(names = "--size", paramLabel = "SIZE", converter = Sizes.Converter.class, defaultValue = "1GiB",
            description = "Bytes of weights (default: ${DEFAULT-VALUE}).")
    long size;

    @Option(names = "--engines", paramLabel = "LIST", split = ",", defaultValue = "builtin",
            description = "builtin, mooncake or both (default: ${DEFAULT-VALUE}).")
    List<String> engines;

    @Option(names = "--mooncake-library", paramLabel = "PATH", description = "libtransfer_engine.so "
            + "(default: WEIGHTLOADER_MOONCAKE_LIB).")
    String mooncakeLibrary;

    @Option(names = "--repeat", paramLabel = "N", defaultValue = "3", description = "Best of N (default: ${DEFAULT-VALUE}).")
    int repeat;

    @Option(names = "--registration-tensors", paramLabel = "N", defaultValue = "10000",
            description = "Tensors for the registration benchmark (default: ${DEFAULT-VALUE}).")
    int registrationTensors;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        SyntheticLlama model = SyntheticLlama.forSize(size);
        List<SafetensorsWriter.Tensor> tensors = model.tensors(3);
        List<TensorSpec> specs = tensors.stream().map(SafetensorsWriter.Tensor::spec).toList();
        long total = specs.stream().mapToLong(TensorSpec::byteSize).sum();
        out.printf("bench-remote: %d tensors, %s, loopback, %d cores, best of %d%n", specs.size(), Sizes.human(total),
                Runtime.getRuntime().availableProcessors(), repeat);
        Map<String, double[]> results = new LinkedHashMap<>();
        try (TensorArena seedMemory = TensorArena.allocate(Device.CPU, specs);
             TensorArena clientMemory = TensorArena.allocate(Device.CPU, specs)) {
            List<TensorDestination> seedDest = seedMemory.destinations();
            for (int i = 0; i < tensors.size(); i++) {
                fill(tensors.get(i), seedDest.get(i).region());
            }
            ((HostMemory) clientMemory.region()).zero(); // fault the pages in before timing
            List<TensorDestination> clientDest = clientMemory.destinations();
            List<TensorDestination> held = seedDest.stream().map(d -> new TensorDestination(d.spec(), d.region())).toList();
            for (String engine : engines) {
                Config config = config(engine);
                WeightLoaderSettings settings = WeightLoaderSettings.from(config);
                try (SeedService seed = Seeds.start(new BackendContext(settings, config), BackendRegistry.discover(),
                        Map.of(settings.rank(), held))) {
                    Manifest m = seed.manifest(settings.rank()).orElseThrow();
                    double raw = 0;
                    double loader = 0;
                    for (int r = 0; r < repeat; r++) {
                        raw = Math.max(raw, rawRead(engine, m, clientDest) / 1e9);
                        loader = Math.max(loader, clientLoad(engine, seed.port(), clientDest) / 1e9);
                    }
                    results.put(engine, new double[] {raw, loader});
                    out.printf("  %-12s raw engine read %7.2f GB/s   client load %7.2f GB/s   load/raw %.3f%n",
                            m.engine(), raw, loader, loader / raw);
                }
            }
        }
        if (results.containsKey("builtin") && results.containsKey("mooncake")) {
            double[] b = results.get("builtin");
            double[] mc = results.get("mooncake");
            out.printf("  builtin-tcp / mooncake-tcp: raw %.3f, client load %.3f%n", b[0] / mc[0], b[1] / mc[1]);
        }
        for (String engine : engines) {
            registration(out, engine);
        }
        out.flush();
        return 0;
    }

    private Config config(String engine) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("weight-loader.remote-instance.start-seed-via-transfer-engine", true);
        m.put("weight-loader.remote-instance.token", TOKEN);
        m.put("weight-loader.seed.bind-address", "127.0.0.1");
        m.put("weight-loader.backends.transfer_engine.engine", engine);
        if (mooncakeLibrary != null) {
            m.put("weight-loader.backends.transfer_engine.mooncake.library", mooncakeLibrary);
        }
        return ConfigFactory.parseMap(m).withFallback(ConfigFactory.load()).resolve();
    }

    private static void fill(SafetensorsWriter.Tensor t, MemoryRegion region) {
        long n = t.spec().byteSize();
        try {
            for (long off = 0; off < n; off += SLICE) {
                t.source().fill(off, region.byteBuffer(off, (int) Math.min(SLICE, n - off)));
            }
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
    }

    private OneSidedEngine clientEngine(String engine) {
        return engine.equals("builtin") ? BuiltinEngine.client(TOKEN, 4, Duration.ofSeconds(5))
                : MooncakeEngine.create(MooncakeLibrary.load(mooncakeLibrary), "127.0.0.1", "tcp", null);
    }

    /** The engine alone: the same slices into the same destination, in batches of 64, polled to completion. */
    private double rawRead(String engine, Manifest m, List<TensorDestination> dest) {
        List<OneSidedEngine.ReadOp> ops = new ArrayList<>();
        long bytes = 0;
        Map<String, Manifest.Entry> published = m.entriesByName();
        for (TensorDestination d : dest) {
            long remote = published.get(d.spec().name()).address();
            long n = d.byteSize();
            for (long off = 0; off < n; off += SLICE) {
                long len = Math.min(SLICE, n - off);
                ops.add(new OneSidedEngine.ReadOp(d.region().address() + off, remote + off, len));
                bytes += len;
            }
        }
        try (OneSidedEngine e = clientEngine(engine)) {
            List<MemoryRegion> local = List.of(MemoryRegion.of(dest.get(0).region().address(),
                    dest.get(dest.size() - 1).region().address() + dest.get(dest.size() - 1).byteSize()
                            - dest.get(0).region().address(), dest.get(0).region().device()));
            e.registerLocal(local);
            try (OneSidedEngine.Peer peer = e.open(m.session())) {
                long t0 = System.nanoTime();
                RawReads.readAll(peer, ops, 64);
                double secs = (System.nanoTime() - t0) / 1e9;
                return bytes / secs;
            } finally {
                e.unregisterLocal(local);
            }
        }
    }

    private double clientLoad(String engine, int port, List<TensorDestination> dest) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("weight-loader.load-format", "remote_instance");
        m.put("weight-loader.remote-instance.seed-instance-ip", "127.0.0.1");
        m.put("weight-loader.remote-instance.seed-instance-service-port", port);
        m.put("weight-loader.remote-instance.token", TOKEN);
        m.put("weight-loader.backends.transfer_engine.engine", engine);
        if (mooncakeLibrary != null) {
            m.put("weight-loader.backends.transfer_engine.mooncake.library", mooncakeLibrary);
        }
        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(m).withFallback(ConfigFactory.load()))) {
            loader.available();
            LoadReport report = loader.load(LoadRequest.of(dest));
            return report.totalBytes() / report.seconds();
        }
    }

    /** Registration of N small adjacent tensors, as a seed sees it (merged), and per tensor for Mooncake. */
    private void registration(PrintWriter out, String engine) {
        int n = registrationTensors;
        List<TensorSpec> specs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            specs.add(TensorSpec.of("t" + i, DType.BF16, 4096));
        }
        try (TensorArena mem = TensorArena.allocate(Device.CPU, specs)) {
            List<TensorDestination> d = mem.destinations();
            List<TensorDestination> held = d.stream().map(x -> new TensorDestination(x.spec(), x.region())).toList();
            Config config = config(engine);
            BackendContext ctx = new BackendContext(WeightLoaderSettings.from(config), config);
            try (SeedPublisher p = new TransferEngineProvider().publish(ctx, new RankKey(0, 0), held)) {
                out.printf("  %-12s registration of %d tensors (merged): %.2f ms%n", p.engine(), n,
                        p.registrationSeconds() * 1e3);
            }
            if (engine.equals("mooncake")) {
                try (MooncakeEngine e = MooncakeEngine.create(MooncakeLibrary.load(mooncakeLibrary), "127.0.0.1", "tcp",
                        null)) {
                    long t0 = System.nanoTime();
                    e.registerRemoteReadable(d.stream().map(TensorDestination::region).toList());
                    out.printf("  %-12s registration of %d tensors (one call each, SGLang v1 style): %.2f ms%n",
                            e.name(), n, (System.nanoTime() - t0) / 1e6);
                }
            }
        }
    }
}
