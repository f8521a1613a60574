package io.weightloader.benchmarks;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.RawReads;
import io.weightloader.backend.te.mooncake.MooncakeEngine;
import io.weightloader.backend.te.mooncake.MooncakeLibrary;
import io.weightloader.cli.CliSubcommand;
import io.weightloader.cli.Sizes;
import io.weightloader.cli.SyntheticLlama;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.TensorArena;
import io.weightloader.memory.cuda.DeviceArena;
import io.weightloader.seed.Json;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedClient;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader bench-gpu}: the benchmark that shows why the non-disturbing path matters. A seed JVM holds
 * a Llama-shaped bf16 checkpoint on GPU 0 and runs a stand-in inference load (cuBLAS bf16 GEMMs, throughput every
 * half second); this JVM loads the checkpoint into GPU 1 with each remote backend in turn, repeating loads for
 * a few seconds, and reports load time and GB/s, and the seed's GEMM throughput during the loads as a fraction of
 * its idle throughput; then transfer_engine again, capped at the nccl backend's rate.
 *
 * <p>This class is the driver; the seed JVM's side is {@link GpuBenchSeed}, and the driver watches and steers that JVM
 * through a {@link SeedProcess}.
 */
@Command(name = "bench-gpu", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Seed on one GPU under a GEMM load, client on another: nccl vs transfer_engine (two GPUs).")
public final class GpuBenchCommand implements CliSubcommand {
    private static final String TOKEN = "bench";

    @Spec
    CommandSpec spec;

    @Option(names = "--role", defaultValue = "driver", description = "driver | seed (internal).")
    String role;

    @Option(names = "--size", paramLabel = "SIZE", converter = Sizes.Converter.class, defaultValue = "8GB",
            description = "Checkpoint size (default: ${DEFAULT-VALUE}).")
    long size;

    @Option(names = "--gemm", paramLabel = "N", defaultValue = "8192", description = "GEMM size n (n x n x n).")
    int gemm;

    @Option(names = "--window", paramLabel = "SECONDS", defaultValue = "4",
            description = "Seconds of repeated loads per backend (default: ${DEFAULT-VALUE}).")
    double window;

    @Option(names = "--mooncake-library", paramLabel = "PATH", description = "CUDA build of libtransfer_engine.so "
            + "(default: WEIGHTLOADER_MOONCAKE_LIB).")
    String mooncakeLibrary;

    @Option(names = "--json", paramLabel = "FILE", description = "Write the results as JSON.")
    Path json;

    @Option(names = "--write-specs", paramLabel = "FILE", description = "Only write the checkpoint's tensor names and "
            + "shapes as JSON (for the PyTorch baselines) and exit.")
    Path writeSpecs;

    @Override
    public Integer call() throws Exception {
        if (mooncakeLibrary == null) {
            mooncakeLibrary = System.getenv("WEIGHTLOADER_MOONCAKE_LIB");
        }
        if (writeSpecs != null) {
            List<List<Object>> out = new ArrayList<>();
            for (TensorSpec t : SyntheticLlama.forSize(size).specs()) {
                out.add(List.of(t.name(), t.shape()));
            }
            Json.MAPPER.writeValue(writeSpecs.toFile(), out);
            return 0;
        }
        return role.equals("seed") ? GpuBenchSeed.serve(size, gemm, mooncakeLibrary) : driver();
    }

    private int driver() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        SeedProcess seed = SeedProcess.start(size, gemm, mooncakeLibrary);
        Map<String, Object> results = new LinkedHashMap<>();
        try {
            int port = seed.awaitReady();
            // 1. the seed otherwise idle: transfer speeds alone, comparable with the baselines (run without a load)
            seed.pause();
            Thread.sleep(500);
            Map<String, Object> quiet = new LinkedHashMap<>();
            String ncclSendRecv = "weight-loader.remote-instance.backend = nccl\n";
            String ncclBroadcast = ncclSendRecv + "weight-loader.backends.nccl.primitive = broadcast\n";
            String te = "weight-loader.remote-instance.backend = transfer_engine\n"
                    + "weight-loader.backends.transfer_engine { engine = mooncake, protocol = nvlink_intra, "
                    + "mooncake.library = \"" + mooncakeLibrary + "\" }\n";
            quiet.put("nccl", run(out, "quiet seed: nccl (send-recv)", port, seed, false,
                    ncclSendRecv));
            quiet.put("nccl_broadcast", run(out, "quiet seed: nccl (broadcast)", port, seed, false,
                    ncclBroadcast));
            if (mooncakeLibrary != null) {
                quiet.put("mooncake_from_java", rawEngineRead(out, port));
                quiet.put("transfer_engine", run(out, "quiet seed: transfer_engine", port, seed, false, te));
                quiet.put("transfer_engine_64MiB_slices", run(out, "quiet seed: transfer_engine, 64 MiB slices",
                        port, seed, false, te + "weight-loader.backends.transfer_engine.slice-size = 64 MiB\n"));
                quiet.put("transfer_engine_256MiB_slices", run(out, "quiet seed: transfer_engine, 256 MiB slices",
                        port, seed, false, te + "weight-loader.backends.transfer_engine.slice-size = 256 MiB\n"));
            }
            results.put("quietSeed", quiet);
            // 2. the seed under its GEMM load
            seed.resume();
            Thread.sleep(1500); // GEMM warm-up
            double[] idle = seed.idleWindow();
            out.printf("seed GEMM (bf16, n=%d) idle: %.1f TFLOP/s (%.1f GEMMs/s)%n", gemm, idle[0], idle[1]);
            results.put("gemmIdleTflops", idle[0]);
            results.put("gemmIdlePerSecond", idle[1]);
            Map<String, Object> nccl = run(out, "nccl (send-recv)", port, seed, true,
                    ncclSendRecv);
            results.put("nccl", nccl);
            results.put("nccl_broadcast", run(out, "nccl (broadcast)", port, seed, true,
                    ncclBroadcast));
            if (mooncakeLibrary != null) {
                results.put("transfer_engine", run(out, "transfer_engine", port, seed, true, te));
                long cap = (long) ((double) nccl.get("bytesPerSecond"));
                results.put("transfer_engine_capped", run(out, "transfer_engine capped at nccl's rate", port, seed,
                        true, te + "weight-loader.backends.transfer_engine.bandwidth-limit = " + cap + "\n"));
            } else {
                out.println("transfer_engine: skipped (no CUDA build of Mooncake: set WEIGHTLOADER_MOONCAKE_LIB)");
            }
        } finally {
            seed.stop();
        }
        if (json != null) {
            Json.PRETTY.writeValue(json.toFile(), results);
        }
        out.flush();
        return 0;
    }

    /**
     * Loads the checkpoint with the backend {@code hocon} selects, repeatedly for the window; with {@code gemm},
     * also the seed's GEMM throughput during the loads against idle windows just before and after them.
     */
    private Map<String, Object> run(PrintWriter out, String label, int port, SeedProcess seed, boolean gemm,
                                    String hocon) throws Exception {
        Config c = ConfigFactory.parseString(hocon + """
                weight-loader { load-format = remote_instance, device = "cuda:1"
                  remote-instance { seed-instance-ip = "127.0.0.1", token = bench, transfer-timeout = 120s } }
                weight-loader.remote-instance.seed-instance-service-port = """ + port).withFallback(ConfigFactory.load());
        Map<String, Object> r = new LinkedHashMap<>();
        try (WeightLoader loader = WeightLoader.open(c);
             TensorArena arena = TensorArena.allocate(Device.cuda(1), loader.available())) {
            LoadRequest request = LoadRequest.of(arena.destinations());
            LoadReport first = loader.load(request);
            // warm-up, not measured: the load path compiled by the JIT, the engine's caches filled, as the raw
            // baselines are measured after their own first round
            long warm = System.currentTimeMillis();
            for (int i = 0; i < 3 || System.currentTimeMillis() - warm < window * 1000L / 2; i++) {
                loader.load(request);
            }
            // the seed's idle throughput right before (and, below, right after) this backend's loads: the GPU's
            // clocks drift as it warms, so each backend is compared with its own neighbouring idle windows
            double[] idleBefore = gemm ? seed.idleWindow() : null;
            List<LoadReport> reports = new ArrayList<>();
            long from = System.currentTimeMillis();
            long transferNanos = 0;
            int transferGemms = 0;
            List<long[]> windows = new ArrayList<>();
            while (reports.size() < 3 || System.currentTimeMillis() - from < window * 1000) {
                long start = System.nanoTime();
                LoadReport rep = loader.load(request);
                reports.add(rep);
                // the transfer phase's window: phases are consecutive from the load's start
                long at = start;
                for (Map.Entry<String, Double> ph : rep.phases().entrySet()) {
                    long len = (long) (ph.getValue() * 1e9);
                    if (ph.getKey().equals("transfer")) {
                        transferNanos += len;
                        windows.add(new long[] {at, at + len});
                    }
                    at += len;
                }
            }
            long to = System.currentTimeMillis();
            Thread.sleep(100); // let the seed's last completions arrive
            for (long[] w : windows) {
                transferGemms += seed.completionsIn(w[0], w[1]);
            }
            double[] idleAfter = gemm ? seed.idleWindow() : null;
            double idle = Double.NaN;
            double idleRate = Double.NaN;
            if (gemm) {
                idle = (idleBefore[0] + idleAfter[0]) / 2;
                idleRate = (idleBefore[1] + idleAfter[1]) / 2;
                r.put("gemmIdleBeforeAfterTflops", List.of(idleBefore[0], idleAfter[0]));
            }
            double during = gemm ? seed.meanTflops(from, to) : Double.NaN;
            double duringTransfer = gemm ? transferGemms / (transferNanos / 1e9) / idleRate : Double.NaN;
            double[] secs = reports.stream().mapToDouble(LoadReport::seconds).sorted().toArray();
            double median = secs[secs.length / 2];
            long bytes = first.totalBytes();
            double[] transfer = reports.stream().mapToDouble(x -> x.phases() == null ? x.seconds()
                    : x.phases().getOrDefault("transfer", x.seconds())).sorted().toArray();
            String verified = GpuBenchSeed.verify(arena.destinations());
            r.put("engine", first.engine());
            r.put("bytes", bytes);
            r.put("loads", reports.size());
            r.put("firstLoadSeconds", first.seconds());
            r.put("medianLoadSeconds", median);
            r.put("bestLoadSeconds", secs[0]);
            r.put("bytesPerSecond", bytes / median);
            r.put("medianTransferSeconds", transfer[transfer.length / 2]);
            r.put("transferBytesPerSecond", bytes / transfer[transfer.length / 2]);
            r.put("phasesOfLastLoad", reports.get(reports.size() - 1).phases());
            Map<String, Double> medianPhases = medianPhases(reports);
            r.put("medianPhaseSeconds", medianPhases);
            r.put("gemmIdleTflops", idle);
            r.put("gemmDuringTflops", during);
            r.put("gemmFractionOfIdle", during / idle);
            r.put("gemmFractionOfIdleDuringTransfers", duringTransfer);
            r.put("transferWindowSeconds", transferNanos / 1e9);
            r.put("verified", verified);
            StringBuilder ph = new StringBuilder();
            medianPhases.forEach((k, v) -> ph.append(ph.length() == 0 ? "" : ", ").append(k).append(' ')
                    .append(String.format(Locale.ROOT, "%.2f ms", v * 1e3)));
            out.printf("%-40s median phases: %s%n", label, ph);
            if (!gemm) {
                out.printf("%-40s %s: %d loads of %.2f GB; first %.3f s; median %.3f s = %.1f GB/s (transfer phase %.3f s = "
                                + "%.1f GB/s); %s%n", label, first.engine(), reports.size(), bytes / 1e9, first.seconds(), median,
                        bytes / median / 1e9, transfer[transfer.length / 2], bytes / transfer[transfer.length / 2] / 1e9,
                        verified);
                out.flush();
                return r;
            }
            out.printf("%-40s %s: %d loads of %.2f GB; first %.3f s; median %.3f s = %.1f GB/s (transfer phase %.3f s = "
                            + "%.1f GB/s); seed GEMM over the window %.2f%% of idle, during transfers %.2f%% of idle "
                            + "(%.3f s of transfers); %s%n", label, first.engine(),
                    reports.size(), bytes / 1e9, first.seconds(), median, bytes / median / 1e9, transfer[transfer.length / 2],
                    bytes / transfer[transfer.length / 2] / 1e9, 100 * during / idle, 100 * duringTransfer,
                    transferNanos / 1e9, verified);
            out.flush();
        }
        return r;
    }

    /** Median of each phase over the loads that had it. */
    private static Map<String, Double> medianPhases(List<LoadReport> reports) {
        Map<String, List<Double>> all = new LinkedHashMap<>();
        for (LoadReport rep : reports) {
            if (rep.phases() != null) {
                rep.phases().forEach((k, v) -> all.computeIfAbsent(k, x -> new ArrayList<>()).add(v));
            }
        }
        Map<String, Double> med = new LinkedHashMap<>();
        all.forEach((k, v) -> med.put(k, v.stream().sorted().toList().get(v.size() / 2)));
        return med;
    }

    /**
     * Mooncake's raw read driven from Java, as the C baseline does it: the seed's whole weight span (padding
     * included) in 64 MiB reads, one batch, into one buffer on GPU 1. It separates the cost of the binding from
     * that of the backend (plan, per-tensor reads, control plane).
     */
    private Map<String, Object> rawEngineRead(PrintWriter out, int port) throws Exception {
        SeedClient sc = new SeedClient("127.0.0.1", port, Optional.of("bench"), Duration.ofSeconds(5),
                Duration.ofSeconds(30), 0);
        Manifest m = sc.manifest(new RankKey(0, 0));
        long lo = Long.MAX_VALUE;
        long hi = 0;
        for (Manifest.Entry e : m.tensors()) {
            lo = Math.min(lo, e.address());
            hi = Math.max(hi, e.address() + e.bytes());
        }
        long span = hi - lo;
        long request = 64L << 20;
        List<OneSidedEngine.ReadOp> ops = new ArrayList<>();
        Map<String, Object> r = new LinkedHashMap<>();
        try (MooncakeEngine engine = MooncakeEngine.create(MooncakeLibrary.load(mooncakeLibrary), "127.0.0.1",
                "nvlink_intra", null);
             DeviceArena dst = DeviceArena.allocate(Device.cuda(1), span);
             OneSidedEngine.Peer peer = engine.open(m.session())) {
            MemoryRegion into = dst.take(span);
            for (long off = 0; off < span; off += request) {
                ops.add(new OneSidedEngine.ReadOp(into.address() + off, lo + off, Math.min(request, span - off)));
            }
            List<Double> secs = new ArrayList<>();
            long from = System.currentTimeMillis();
            while (secs.size() < 6 || System.currentTimeMillis() - from < window * 1000L / 2) {
                long t0 = System.nanoTime();
                RawReads.readAll(peer, ops, MooncakeEngine.MAX_BATCH_SIZE);
                secs.add((System.nanoTime() - t0) / 1e9);
            }
            double first = secs.remove(0); // includes cudaIpcOpenMemHandle
            double median = secs.stream().sorted().toList().get(secs.size() / 2);
            r.put("engine", engine.name());
            r.put("bytes", span);
            r.put("reads", ops.size());
            r.put("firstSeconds", first);
            r.put("medianSeconds", median);
            r.put("bytesPerSecond", span / median);
            out.printf("%-40s %s: %d rounds of %.2f GB in %d reads; first %.4f s; median %.4f s = %.1f GB/s%n",
                    "quiet seed: Mooncake raw read from Java", engine.name(), secs.size(), span / 1e9, ops.size(),
                    first, median, span / median / 1e9);
            out.flush();
        }
        return r;
    }

}
