package io.weightloader.benchmarks;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.config.RankKey;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.cli.CliJson;
import io.weightloader.cli.CliSubcommand;
import io.weightloader.cli.Sizes;
import io.weightloader.cli.SyntheticLlama;
import io.weightloader.cli.Trees;
import io.weightloader.host.SeedHost;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.TensorArena;
import io.weightloader.memory.cuda.Cuda;
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
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader bench-saver}: the memory saver in one process against same-run baselines. On the host
 * ({@code --device cpu}, built-in engine): the process's resident memory before and after each release. On a GPU
 * ({@code --device cuda:N}, the seed serving nccl): the GPU's free memory ({@code cudaMemGetInfo}) before and after each
 * release. Both against the weights' bytes; release time; resume time split into map, refill (against the seed's first
 * load from the same checkpoint) and re-register (the engines' own part per GB against the first registration's); and
 * a new client's load right after resume against one before the first release (on a GPU, a client on another GPU over
 * nccl, which cannot put both ranks on one GPU: skipped, saying so, on a machine with one).
 */
@Command(name = "bench-saver", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Benchmark the memory saver: release/resume of a seed (host memory or a GPU) against same-run baselines.")
public final class BenchSaverCommand implements CliSubcommand {
    private static final RankKey RANK = new RankKey(0, 0);

    @Spec
    CommandSpec spec;

    @Option(names = "--size", paramLabel = "SIZE", converter = Sizes.Converter.class, defaultValue = "1GiB",
            description = "Bytes of weights (default: ${DEFAULT-VALUE}).")
    long size;

    @Option(names = "--rounds", paramLabel = "N", defaultValue = "3",
            description = "Release/resume rounds from the checkpoint, then as many from a host copy (default: ${DEFAULT-VALUE}).")
    int rounds;

    @Option(names = "--device", paramLabel = "DEVICE", defaultValue = "cpu",
            description = "Where the seed holds its weights: cpu (built-in engine; resident memory measured) or cuda:N"
                    + " (served over nccl; the GPU's free memory measured) (default: ${DEFAULT-VALUE}).")
    String deviceText;

    @Option(names = "--client-device", paramLabel = "DEVICE",
            description = "With --device cuda:N: the GPU the clients load into over nccl, or none (default: cuda:N+1"
                    + " when the machine has it, else none).")
    String clientDeviceText;

    @Option(names = "--dir", paramLabel = "DIR", description = "Where to write the checkpoint (default: a temporary "
            + "directory, removed after).")
    Path dir;

    @Option(names = "--report", paramLabel = "FILE", description = "Write the figures as JSON.")
    Path report;

    @Override
    public Integer call() throws Exception {
        if (rounds < 1) {
            throw new ParameterException(spec.commandLine(), "--rounds must be at least 1, got " + rounds);
        }
        Device device = parse("--device", deviceText);
        Device client = device.isHost() ? Device.CPU : clientDevice(device);
        PrintWriter out = spec.commandLine().getOut();
        boolean temp = dir == null;
        Path root = temp ? Files.createTempDirectory("bench-saver") : dir;
        Path ckpt = root.resolve("ckpt");
        try {
            List<SafetensorsWriter.Tensor> tensors = SyntheticLlama.forSize(size).tensors(7);
            SafetensorsWriter.writeSharded(ckpt, SafetensorsWriter.split(tensors, 4), Map.of());
            tensors = null;
            return run(out, ckpt, device, client);
        } finally {
            if (temp) {
                Trees.deleteTree(root);
            }
        }
    }

    private Device parse(String option, String text) {
        try {
            return Device.parse(text);
        } catch (IllegalArgumentException e) {
            throw new ParameterException(spec.commandLine(), option + ": " + e.getMessage());
        }
    }

    /** The GPU clients load into, or null for none. */
    private Device clientDevice(Device seed) {
        if (clientDeviceText != null) {
            if (clientDeviceText.equals("none")) {
                return null;
            }
            Device d = parse("--client-device", clientDeviceText);
            if (d.isHost() || d.equals(seed)) {
                throw new ParameterException(spec.commandLine(), "--client-device must be a GPU other than the seed's "
                        + seed + " (nccl clients load into GPU memory, and NCCL refuses two ranks on one GPU), or none");
            }
            return d;
        }
        return Cuda.deviceCount() > seed.index() + 1 ? Device.cuda(seed.index() + 1) : null;
    }

    private int run(PrintWriter out, Path ckpt, Device device, Device clientDevice) throws Exception {
        boolean gpu = !device.isHost();
        Map<String, Object> seedKeys = new LinkedHashMap<>(Map.of("weight-loader.model-path", ckpt.toString(),
                "weight-loader.enable-memory-saver", true, "weight-loader.remote-instance.token", "bench-token",
                "weight-loader.device", device.toString()));
        if (gpu) {
            seedKeys.put("weight-loader.seed.serve", List.of("nccl"));
        }
        Config config = ConfigFactory.parseMap(seedKeys).withFallback(ConfigFactory.load()).resolve();
        Map<String, Object> json = new LinkedHashMap<>();
        List<Map<String, Object>> rows = new ArrayList<>();
        String measure = gpu ? "cudaMemGetInfo free memory of " + device : "VmRSS of this process";
        try (SeedHost seed = SeedHost.start(config)) {
            long weights = seed.bytes();
            double firstLoad = seed.reports().get(0).seconds();
            double firstRegistration = seed.service().registrationSeconds(RANK);
            Map<String, String> serves = seed.service().manifest(RANK).orElseThrow().serves();
            String engines = serves == null ? "?" : String.join("+", serves.keySet());
            Config client = null;
            if (clientDevice != null) {
                Map<String, Object> keys = new LinkedHashMap<>(Map.of("weight-loader.load-format", "remote_instance",
                        "weight-loader.remote-instance.seed-instance-ip", "127.0.0.1",
                        "weight-loader.remote-instance.seed-instance-service-port", seed.service().port(),
                        "weight-loader.remote-instance.token", "bench-token",
                        "weight-loader.device", clientDevice.toString()));
                if (gpu) {
                    keys.put("weight-loader.remote-instance.backend", "nccl");
                }
                client = ConfigFactory.parseMap(keys).withFallback(ConfigFactory.load()).resolve();
            }
            try (WeightLoader first = client == null ? null : WeightLoader.open(client);
                 TensorArena arena = client == null ? null : TensorArena.allocate(clientDevice, first.available())) {
                LoadRequest request = arena == null ? null : LoadRequest.of(arena.destinations());
                double before = Double.NaN;
                if (request != null) {
                    first.load(request); // the client's arena is resident from here on: changes measured are the seed's
                    before = Math.min(freshLoad(client, request), freshLoad(client, request));
                }
                out.printf("seed on %s serving %s; weights %.1f MiB; seed's first load from the checkpoint %.3f s; its first"
                        + " registration %.4f s (%.4f s/GB)%n", device, engines, weights / 1048576.0, firstLoad,
                        firstRegistration, firstRegistration / (weights / 1e9));
                out.println(request == null ? "client loads: none (nccl clients need a GPU other than the seed's: NCCL"
                        + " refuses two ranks on one GPU; this machine has " + Cuda.deviceCount() + ")"
                        : String.format("a new client's load into %s before any release %.3f s (best of 2)",
                        clientDevice, before));
                out.printf("%-10s %6s %10s %8s %8s %8s %8s %8s %8s %9s %10s %8s%n", "source", "round", "freed MiB",
                        "freed %", "release", "map", "refill", "re-reg", "(sha256)", "reg s/GB", "load after", "ratio");
                for (int i = 0; i < 2 * rounds; i++) {
                    boolean copy = i >= rounds;
                    if (!gpu) {
                        System.gc();
                    }
                    // GPU: its free memory; host: this process's resident memory
                    long m0 = gpu ? Cuda.memoryInfo(device).free() : rssBytes();
                    SeedHost.MemoryReport rel = seed.releaseMemory(Duration.ofSeconds(1), copy);
                    long m1 = gpu ? Cuda.memoryInfo(device).free() : rssBytes();
                    SeedHost.MemoryReport res = seed.resumeMemory();
                    double registration = seed.service().registrationSeconds(RANK);
                    double after = request == null ? Double.NaN : freshLoad(client, request);
                    long freed = gpu ? m1 - m0 : m0 - m1;
                    Map<String, Object> row = new LinkedHashMap<>();
                    row.put("source", res.source());
                    row.put("round", i % rounds + 1);
                    row.put(gpu ? "gpuFreeBeforeBytes" : "rssBeforeBytes", m0);
                    row.put(gpu ? "gpuFreeAfterReleaseBytes" : "rssAfterReleaseBytes", m1);
                    row.put("freedBytes", freed);
                    row.put("freedOfWeights", (double) freed / weights);
                    row.put("releaseSeconds", rel.seconds());
                    row.put("mapSeconds", res.mapSeconds());
                    row.put("refillSeconds", res.refillSeconds());
                    row.put("reregisterSeconds", res.registerSeconds());
                    row.put("checksumSeconds", res.checksumSeconds());
                    row.put("registrationSeconds", registration);
                    if (request != null) {
                        row.put("loadAfterResumeSeconds", after);
                        row.put("loadAfterOverBefore", after / before);
                    }
                    rows.add(row);
                    out.printf("%-10s %6d %10.1f %7.1f%% %8.3f %8.3f %8.3f %8.3f %8.3f %9.4f %10s %8s%n", res.source(),
                            i % rounds + 1, freed / 1048576.0, 100.0 * freed / weights, rel.seconds(),
                            res.mapSeconds(), res.refillSeconds(), res.registerSeconds(), res.checksumSeconds(),
                            registration / (weights / 1e9), request == null ? "-" : String.format("%.3f", after),
                            request == null ? "-" : String.format("%.2f", after / before));
                }
                json.put("device", device.toString());
                json.put("serves", engines);
                json.put("freedMeasuredBy", measure);
                json.put("weightsBytes", weights);
                json.put("seedFirstLoadSeconds", firstLoad);
                json.put("firstRegistrationSeconds", firstRegistration);
                if (request != null) {
                    json.put("clientDevice", clientDevice.toString());
                    json.put("clientLoadBeforeReleaseSeconds", before);
                }
                json.put("rounds", rows);
            }
        }
        out.println(gpu
                ? "release: 503 to new loads, engines quiet (200 ms) or 1 s grace, publishers closed, cudaDeviceSynchronize,"
                        + " cuMemUnmap + cuMemRelease (the address range stays reserved); map: cuMemCreate + cuMemMap +"
                        + " cuMemSetAccess + zeroing; freed: " + measure + ". re-reg includes the new manifest's"
                        + " checksums (sha256 column); reg s/GB: the engines' own registration (nccl registers nothing)."
                : "release: 503 to new loads, engines quiet (200 ms) or 1 s grace, unregister, madvise(DONTNEED);"
                        + " re-reg includes the new manifest's checksums (sha256 column); reg s/GB: the engines' own"
                        + " registration. A host copy keeps the bytes resident.");
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
