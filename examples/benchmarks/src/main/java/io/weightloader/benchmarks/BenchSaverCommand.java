package io.weightloader.benchmarks;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadRequest;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.cli.CliJson;
import io.weightloader.cli.CliSubcommand;
import io.weightloader.cli.Sizes;
import io.weightloader.cli.SyntheticLlama;
import io.weightloader.cli.Trees;
import io.weightloader.host.SeedHost;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.TensorArena;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
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
 * {@code weightloader bench-saver}: the memory saver on a host-memory seed (built-in engine), in one process against
 * same-run baselines: the seed's resident memory before and after each release (against the weights' bytes), release
 * time, resume time split into map, refill and re-register (against the seed's first load from the same
 * checkpoint), and a client's load right after resume against one before the first release.
 */
@Command(name = "bench-saver", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Benchmark the memory saver: release/resume of a host-memory seed against same-run baselines.")
public final class BenchSaverCommand implements CliSubcommand {
    @Spec
    CommandSpec spec;

    @Option(names = "--size", paramLabel = "SIZE", converter = Sizes.Converter.class, defaultValue = "1GiB",
            description = "Bytes of weights (default: ${DEFAULT-VALUE}).")
    long size;

    @Option(names = "--rounds", paramLabel = "N", defaultValue = "3",
            description = "Release/resume rounds from the checkpoint, then as many from a host copy (default: ${DEFAULT-VALUE}).")
    int rounds;

    @Option(names = "--dir", paramLabel = "DIR", description = "Where to write the checkpoint (default: a temporary "
            + "directory, removed after).")
    Path dir;

    @Option(names = "--report", paramLabel = "FILE", description = "Write the figures as JSON.")
    Path report;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        boolean temp = dir == null;
        Path root = temp ? Files.createTempDirectory("bench-saver") : dir;
        Path ckpt = root.resolve("ckpt");
        try {
            List<SafetensorsWriter.Tensor> tensors = SyntheticLlama.forSize(size).tensors(7);
            SafetensorsWriter.writeSharded(ckpt, SafetensorsWriter.split(tensors, 4), Map.of());
            tensors = null;
            return run(out, ckpt);
        } finally {
            if (temp) {
                Trees.deleteTree(root);
            }
        }
    }

    private int run(PrintWriter out, Path ckpt) throws Exception {
        Config config = ConfigFactory.parseMap(Map.of("weight-loader.model-path", ckpt.toString(),
                "weight-loader.enable-memory-saver", true, "weight-loader.remote-instance.token", "bench-token"))
                .withFallback(ConfigFactory.load()).resolve();
        Map<String, Object> json = new LinkedHashMap<>();
        List<Map<String, Object>> rows = new ArrayList<>();
        try (SeedHost seed = SeedHost.start(config)) {
            long weights = seed.bytes();
            double firstLoad = seed.reports().get(0).seconds();
            Config client = ConfigFactory.parseMap(Map.of("weight-loader.load-format", "remote_instance",
                    "weight-loader.remote-instance.seed-instance-ip", "127.0.0.1",
                    "weight-loader.remote-instance.seed-instance-service-port", seed.service().port(),
                    "weight-loader.remote-instance.token", "bench-token")).withFallback(ConfigFactory.load()).resolve();
            try (WeightLoader first = WeightLoader.open(client);
                 TensorArena arena = TensorArena.allocate(Device.CPU, first.available())) {
                LoadRequest request = LoadRequest.of(arena.destinations());
                first.load(request); // the client's arena is resident from here on: RSS changes are the seed's
                double before = Math.min(freshLoad(client, request), freshLoad(client, request));
                out.printf("weights %.1f MiB; seed's first load from the checkpoint %.3f s; a new client's load before any"
                        + " release %.3f s (best of 2)%n", weights / 1048576.0, firstLoad, before);
                out.printf("%-10s %6s %10s %10s %8s %8s %8s %8s %8s %10s %8s%n", "source", "round", "freed MiB",
                        "freed %", "release", "map", "refill", "re-reg", "(sha256)", "load after", "ratio");
                for (int i = 0; i < 2 * rounds; i++) {
                    boolean copy = i >= rounds;
                    System.gc();
                    long rss0 = rssBytes();
                    SeedHost.MemoryReport rel = seed.releaseMemory(Duration.ofSeconds(1), copy);
                    long rss1 = rssBytes();
                    SeedHost.MemoryReport res = seed.resumeMemory();
                    double after = freshLoad(client, request);
                    long freed = rss0 - rss1;
                    Map<String, Object> row = new LinkedHashMap<>();
                    row.put("source", res.source());
                    row.put("round", i % rounds + 1);
                    row.put("rssBeforeBytes", rss0);
                    row.put("rssAfterReleaseBytes", rss1);
                    row.put("freedBytes", freed);
                    row.put("freedOfWeights", (double) freed / weights);
                    row.put("releaseSeconds", rel.seconds());
                    row.put("mapSeconds", res.mapSeconds());
                    row.put("refillSeconds", res.refillSeconds());
                    row.put("reregisterSeconds", res.registerSeconds());
                    row.put("checksumSeconds", res.checksumSeconds());
                    row.put("loadAfterResumeSeconds", after);
                    row.put("loadAfterOverBefore", after / before);
                    rows.add(row);
                    out.printf("%-10s %6d %10.1f %9.1f%% %8.3f %8.3f %8.3f %8.3f %8.3f %10.3f %8.2f%n", res.source(),
                            i % rounds + 1, freed / 1048576.0, 100.0 * freed / weights, rel.seconds(),
                            res.mapSeconds(), res.refillSeconds(), res.registerSeconds(), res.checksumSeconds(), after,
                            after / before);
                }
                json.put("weightsBytes", weights);
                json.put("seedFirstLoadSeconds", firstLoad);
                json.put("clientLoadBeforeReleaseSeconds", before);
                json.put("rounds", rows);
            }
        }
        out.println("release: 503 to new loads, engines quiet (200 ms) or 1 s grace, unregister, madvise(DONTNEED);"
                + " re-reg includes the new manifest's checksums (sha256 column). A host copy keeps the bytes resident.");
        if (report != null) {
            CliJson.MAPPER.writerWithDefaultPrettyPrinter().writeValue(report.toFile(), json);
        }
        out.flush();
        return 0;
    }

    /** A new client's load (its manifest fetched, its engine connected), as a new instance would do it. */
    private static double freshLoad(Config client, LoadRequest request) {
        try (WeightLoader loader = WeightLoader.open(client)) {
            return loader.load(request).seconds();
        }
    }

    /** VmRSS of this process, from /proc/self/status. */
    static long rssBytes() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
        }
        throw new IOException("no VmRSS in /proc/self/status");
    }
}
