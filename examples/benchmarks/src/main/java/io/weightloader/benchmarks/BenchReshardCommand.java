package io.weightloader.benchmarks;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.SliceCopy;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.TpLayout;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.backend.local.SafetensorsCheckpoint;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.backend.te.builtin.BuiltinEngine;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.RawReads;
import io.weightloader.backend.te.engine.RegionMerger;
import io.weightloader.backend.te.mooncake.MooncakeEngine;
import io.weightloader.backend.te.mooncake.MooncakeLibrary;
import io.weightloader.cli.CliJson;
import io.weightloader.cli.CliSubcommand;
import io.weightloader.cli.Sizes;
import io.weightloader.cli.SyntheticLlama;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.TensorArena;
import io.weightloader.memory.Threads;
import io.weightloader.memory.cuda.DeviceCopies;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedService;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader bench-reshard}: tensor-parallel layouts against their baselines, in one run. A seed of
 * {@code --seed-tp} ranks (llama layout) holds a synthetic Llama; then, best of N each: (a) the same-tp load (every
 * client rank at once, rank to rank), (b) the engine's raw read of the same bytes (each seed rank's held memory read
 * whole, all ranks at once), and (c) for each {@code --client-tp}, a resharded load of every client rank at once; the
 * ratios (c)/(a) and (c)/(b). With {@code --local-dir}, also one rank's sliced load from disk against a raw
 * {@code pread} of exactly the same byte ranges, and of as many contiguous bytes.
 */
@Command(name = "bench-reshard", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Benchmark tensor-parallel resharding (remote) and sliced local loads against same-run baselines.")
public final class BenchReshardCommand implements CliSubcommand {
    private static final String TOKEN = "bench-token";

    @Spec
    CommandSpec spec;

    @Option(names = "--size", paramLabel = "SIZE", converter = Sizes.Converter.class, defaultValue = "1GiB",
            description = "Bytes of weights (default: ${DEFAULT-VALUE}).")
    long size;

    @Option(names = "--seed-tp", paramLabel = "N", defaultValue = "2", description = "Seed tp size (default: 2).")
    int seedTp;

    @Option(names = "--client-tp", paramLabel = "LIST", split = ",", defaultValue = "1,4",
            description = "Client tp sizes to reshard into (default: ${DEFAULT-VALUE}).")
    List<Integer> clientTps;

    @Option(names = "--engine", paramLabel = "NAME", defaultValue = "builtin", description = "builtin | mooncake.")
    String engine;

    @Option(names = "--protocol", paramLabel = "PROTO", defaultValue = "tcp", description = "Mooncake transport.")
    String protocol;

    @Option(names = "--seed-device", paramLabel = "LIST", defaultValue = "cpu",
            description = "Seed rank devices: one for all, or one per rank (cuda:0,cuda:1).")
    String seedDevice;

    @Option(names = "--client-device", paramLabel = "LIST", defaultValue = "cpu",
            description = "Client rank devices: one for all, or one per rank; rank r uses entry r mod the list.")
    String clientDevice;

    @Option(names = "--mooncake-library", paramLabel = "PATH", description = "libtransfer_engine.so.")
    String mooncakeLibrary;

    @Option(names = "--repeat", paramLabel = "N", defaultValue = "3", description = "Best of N (default: 3).")
    int repeat;

    @Option(names = "--local-dir", paramLabel = "DIR", description = "Also benchmark a sliced local load: the "
            + "checkpoint is written here (once).")
    Path localDir;

    @Option(names = "--local-tp", paramLabel = "N", defaultValue = "4", description = "Local: tp size (default: 4).")
    int localTp;

    @Option(names = "--local-rank", paramLabel = "R", defaultValue = "3", description = "Local: rank (default: 3).")
    int localRank;

    @Option(names = "--seed", paramLabel = "HOST:PORT", description = "Use a running seed (tp --seed-tp, llama layout, "
            + "holding a checkpoint generated with the same --size) instead of one in this process: Mooncake's "
            + "nvlink_intra cannot read GPU memory of its own process.")
    String externalSeed;

    @Option(names = "--remote", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "Run the remote part (seed and clients); --no-remote for the local part only.")
    boolean remote;

    @Option(names = "--json", paramLabel = "FILE", description = "Write the results as JSON.")
    Path json;

    private static List<Device> devices(String list) {
        List<Device> out = new ArrayList<>();
        for (String p : list.split(",")) {
            out.add(Device.parse(p.trim()));
        }
        return out;
    }

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        SyntheticLlama model = SyntheticLlama.forSize(size);
        List<SafetensorsWriter.Tensor> tensors = model.tensors(5);
        List<TensorSpec> specs = tensors.stream().map(SafetensorsWriter.Tensor::spec).toList();
        long total = specs.stream().mapToLong(TensorSpec::byteSize).sum();
        Map<String, Object> results = new LinkedHashMap<>();
        results.put("date", java.time.ZonedDateTime.now().toString());
        results.put("cores", Runtime.getRuntime().availableProcessors());
        results.put("bytes", total);
        results.put("tensors", specs.size());
        out.printf("bench-reshard: %d tensors, %s, llama layout, seed tp %d on %s, engine %s%s, %d cores, best of %d%n",
                specs.size(), Sizes.human(total), seedTp, seedDevice, engine,
                engine.equals("mooncake") ? "-" + protocol : "", Runtime.getRuntime().availableProcessors(), repeat);
        if (remote && externalSeed != null) {
            measure(out, seedClient(externalSeed), Integer.parseInt(externalSeed.substring(
                    externalSeed.lastIndexOf(':') + 1)), results);
        } else if (remote) {
            remote(out, tensors, results);
        }
        if (localDir != null) {
            local(out, tensors, results);
        }
        if (json != null) {
            CliJson.MAPPER.writeValue(json.toFile(), results);
            out.println("results written to " + json);
        }
        out.flush();
        return 0;
    }

    /** A seed in this process holding every rank's slices of the model, then the measurements against it. */
    private void remote(PrintWriter out, List<SafetensorsWriter.Tensor> tensors, Map<String, Object> results)
            throws Exception {
        List<TensorSpec> specs = tensors.stream().map(SafetensorsWriter.Tensor::spec).toList();
        List<Device> seedDevices = devices(seedDevice);
        List<TensorArena> seedArenas = new ArrayList<>();
        Map<RankKey, List<TensorDestination>> held = new LinkedHashMap<>();
        try (TensorArena wholeArena = TensorArena.allocate(Device.CPU, specs)) {
            List<TensorDestination> whole = wholeArena.destinations();
            for (int i = 0; i < tensors.size(); i++) {
                fill(tensors.get(i), whole.get(i).region());
            }
            for (int r = 0; r < seedTp; r++) {
                Device dev = seedDevices.get(r % seedDevices.size());
                Map<String, TensorSlice> slices = TpLayout.LLAMA.plan(specs, seedTp, r);
                TensorArena arena = TensorArena.allocate(dev, TpLayout.heldSpecs(specs, slices));
                seedArenas.add(arena);
                List<TensorDestination> h = new ArrayList<>();
                for (int i = 0; i < specs.size(); i++) {
                    TensorDestination d = new TensorDestination(specs.get(i), arena.destinations().get(i).region(),
                            slices.get(specs.get(i).name()));
                    copySlice(whole.get(i), d);
                    h.add(d);
                }
                held.put(new RankKey(r, 0), h);
            }
            Config seedConfig = config(Map.of("weight-loader.rank.tp-size", seedTp,
                    "weight-loader.tp-layout", "llama",
                    "weight-loader.remote-instance.start-seed-via-transfer-engine", true,
                    "weight-loader.seed.bind-address", "127.0.0.1",
                    "weight-loader.seed.publish-checksums", false));
            try (SeedService seed = Seeds.start(new BackendContext(WeightLoaderSettings.from(seedConfig),
                    seedConfig), BackendRegistry.discover(), held)) {
                measure(out, null, seed.port(), results);
            }
        } finally {
            seedArenas.forEach(TensorArena::close);
        }
    }

    private io.weightloader.seed.SeedClient seedClient(String address) {
        return new io.weightloader.seed.SeedClient("127.0.0.1", 1, java.util.Optional.of(TOKEN), Duration.ofSeconds(5),
                Duration.ofSeconds(30), 3).at(address);
    }

    /** The raw read, the same-tp load and each resharded load, against the seed at {@code port}. */
    private void measure(PrintWriter out, io.weightloader.seed.SeedClient external, int port,
                         Map<String, Object> results) throws Exception {
        List<Manifest> manifests = new ArrayList<>();
        io.weightloader.seed.SeedClient client = external != null ? external : seedClient("127.0.0.1:" + port);
        for (int r = 0; r < seedTp; r++) {
            manifests.add(client.manifest(new RankKey(r, 0)));
        }
        double raw = rawRead(manifests);
        double same = clientLoads(port, seedTp);
        out.printf("  raw engine read of every seed rank's memory, all ranks at once   %8.2f GB/s%n", raw / 1e9);
        out.printf("  same tp (%d -> %d), every client rank at once                     %8.2f GB/s   %.3f of raw%n",
                seedTp, seedTp, same / 1e9, same / raw);
        results.put("rawReadGBps", raw / 1e9);
        results.put("sameTpGBps", same / 1e9);
        Map<String, Object> reshard = new LinkedHashMap<>();
        for (int c : clientTps) {
            double r = clientLoads(port, c);
            out.printf("  resharded (%d -> %d), every client rank at once                   %8.2f GB/s   %.3f of same tp, %.3f of raw%n",
                    seedTp, c, r / 1e9, r / same, r / raw);
            reshard.put(Integer.toString(c), Map.of("GBps", r / 1e9, "ofSameTp", r / same, "ofRaw", r / raw));
        }
        results.put("resharded", reshard);
    }

    /** Every client rank of tp {@code c} at once, each with its own loader and memory; best of N, bytes per second. */
    private double clientLoads(int port, int c) throws Exception {
        List<Device> devs = devices(clientDevice);
        List<WeightLoader> loaders = new ArrayList<>();
        List<TensorArena> arenas = new ArrayList<>();
        List<LoadRequest> requests = new ArrayList<>();
        ExecutorService pool = Executors.newFixedThreadPool(c, Threads.daemon("bench-client"));
        try {
            for (int r = 0; r < c; r++) {
                Device dev = devs.get(r % devs.size());
                WeightLoader l = WeightLoader.open(config(Map.of("weight-loader.load-format", "remote_instance",
                        "weight-loader.remote-instance.seed-instance-ip", "127.0.0.1",
                        "weight-loader.remote-instance.seed-instance-service-port", port,
                        "weight-loader.rank.tp-size", c, "weight-loader.rank.tp", r,
                        "weight-loader.tp-layout", "llama", "weight-loader.device", dev.toString())));
                loaders.add(l);
                List<TensorSpec> specs = l.available();
                Map<String, TensorSlice> slices = TpLayout.LLAMA.plan(specs, c, r);
                TensorArena a = TensorArena.allocate(dev, TpLayout.heldSpecs(specs, slices));
                if (a.region() instanceof HostMemory h) {
                    h.zero(); // fault the pages in before timing
                }
                arenas.add(a);
                requests.add(LoadRequest.of(TpLayout.destinations(specs, a.destinations(), slices)));
            }
            double best = 0;
            for (int k = 0; k < repeat; k++) {
                long t0 = System.nanoTime();
                List<Future<LoadReport>> f = new ArrayList<>();
                for (int r = 0; r < c; r++) {
                    int rank = r;
                    f.add(pool.submit(() -> loaders.get(rank).load(requests.get(rank))));
                }
                long bytes = 0;
                for (Future<LoadReport> x : f) {
                    bytes += x.get().totalBytes();
                }
                best = Math.max(best, bytes / ((System.nanoTime() - t0) / 1e9));
            }
            return best;
        } finally {
            pool.shutdownNow();
            loaders.forEach(WeightLoader::close);
            arenas.forEach(TensorArena::close);
        }
    }

    /** The engine alone: each seed rank's held memory read whole into one client buffer, all ranks at once. */
    private double rawRead(List<Manifest> manifests) throws Exception {
        Device dev = devices(clientDevice).get(0);
        long bytes = 0;
        List<List<OneSidedEngine.ReadOp>> ops = new ArrayList<>();
        List<Long> perRank = new ArrayList<>();
        for (Manifest m : manifests) {
            long n = m.tensors().stream().mapToLong(Manifest.Entry::bytes).sum();
            perRank.add(n);
            bytes += n;
        }
        try (TensorArena dst = TensorArena.allocate(dev, List.of(TensorSpec.of("raw", io.weightloader.api.DType.U8, bytes)));
             OneSidedEngine e = engine.equals("builtin") ? BuiltinEngine.client(TOKEN, 4, Duration.ofSeconds(5))
                     : MooncakeEngine.create(MooncakeLibrary.load(mooncakeLibrary), "127.0.0.1", protocol, null)) {
            if (dst.region() instanceof HostMemory h) {
                h.zero();
            }
            long at = dst.region().address();
            for (Manifest m : manifests) {
                List<OneSidedEngine.ReadOp> rank = new ArrayList<>();
                List<MemoryRegion> remote = RegionMerger.merge(m.tensors().stream().filter(x -> x.bytes() > 0)
                        .map(x -> MemoryRegion.of(x.address(), x.bytes(), Device.CPU)).toList());
                for (MemoryRegion r : remote) {
                    for (long off = 0; off < r.length(); off += 64L << 20) {
                        long len = Math.min(64L << 20, r.length() - off);
                        rank.add(new OneSidedEngine.ReadOp(at, r.address() + off, len));
                        at += len;
                    }
                }
                ops.add(rank);
            }
            List<MemoryRegion> local = List.of(dst.region());
            e.registerLocal(local);
            List<OneSidedEngine.Peer> peers = new ArrayList<>();
            ExecutorService pool = Executors.newFixedThreadPool(manifests.size(), Threads.daemon("bench-raw"));
            try {
                for (Manifest m : manifests) {
                    peers.add(e.open(m.session()));
                }
                double best = 0;
                for (int k = 0; k < repeat; k++) {
                    long t0 = System.nanoTime();
                    List<Future<?>> f = new ArrayList<>();
                    for (int r = 0; r < manifests.size(); r++) {
                        int rank = r;
                        f.add(pool.submit(() -> {
                            if (!dev.isHost()) {
                                io.weightloader.memory.cuda.Cuda.use(dev); // Mooncake opens handles on this thread
                            }
                            RawReads.readAll(peers.get(rank), ops.get(rank), 64);
                        }));
                    }
                    for (Future<?> x : f) {
                        x.get();
                    }
                    best = Math.max(best, bytes / ((System.nanoTime() - t0) / 1e9));
                }
                return best;
            } finally {
                pool.shutdownNow();
                peers.forEach(OneSidedEngine.Peer::close);
                e.unregisterLocal(local);
            }
        }
    }

    /** One rank's sliced load from disk against a raw pread of the same byte ranges, and of as many contiguous bytes. */
    private void local(PrintWriter out, List<SafetensorsWriter.Tensor> tensors, Map<String, Object> results)
            throws Exception {
        Path file = localDir.resolve("model.safetensors");
        Files.createDirectories(localDir);
        if (!Files.exists(file)) {
            SafetensorsWriter.write(file, tensors, Map.of());
        }
        SafetensorsCheckpoint ckpt = SafetensorsCheckpoint.open(localDir);
        List<TensorSpec> specs = ckpt.specs();
        Map<String, TensorSlice> slices = TpLayout.LLAMA.plan(specs, localTp, localRank);
        Config c = config(Map.of("weight-loader.model-path", localDir.toString(), "weight-loader.rank.tp-size", localTp,
                "weight-loader.rank.tp", localRank, "weight-loader.tp-layout", "llama"));
        // the rows of the slice, as the loader reads them: (file position, length)
        List<long[]> runs = new ArrayList<>();
        long bytes = 0;
        for (TensorSpec s : specs) {
            SafetensorsCheckpoint.Located l = ckpt.tensors().get(s.name());
            for (SliceCopy cp : SliceCopy.plan(s, null, slices.get(s.name()))) {
                for (long i = 0; i < cp.count(); i++) {
                    runs.add(new long[]{l.fileOffset() + cp.srcOffset() + i * cp.srcStride(), cp.length()});
                    bytes += cp.length();
                }
            }
        }
        int threads;
        double loader = 0;
        double rawRuns = 0;
        double rawContiguous = 0;
        try (WeightLoader l = WeightLoader.open(c);
             TensorArena a = TensorArena.allocate(Device.CPU, TpLayout.heldSpecs(specs, slices));
             HostMemory raw = HostMemory.allocate(bytes);
             FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ((HostMemory) a.region()).zero();
            raw.zero();
            String engineName = l.backend().engine();
            threads = engineName.startsWith("pread x") ? Integer.parseInt(engineName.substring(7).split(" ")[0]) : 1;
            LoadRequest req = LoadRequest.of(TpLayout.destinations(specs, a.destinations(), slices));
            l.load(req); // warms the page cache
            for (int k = 0; k < repeat; k++) {
                LoadReport r = l.load(req);
                loader = Math.max(loader, r.totalBytes() / r.seconds());
                rawRuns = Math.max(rawRuns, preadAll(ch, file, runs, raw, threads, bytes));
                List<long[]> contiguous = List.of(new long[]{ckpt.files().get(0).dataStart(), bytes});
                rawContiguous = Math.max(rawContiguous, preadAll(ch, file, contiguous, raw, threads, bytes));
            }
        }
        out.printf("  local rank %d of tp %d from disk (%s of %s, %d rows, %d threads, page cache warm):%n", localRank,
                localTp, Sizes.human(bytes), Sizes.human(Files.size(file)), runs.size(), threads);
        out.printf("    loader %.2f GB/s   raw pread of the same ranges %.2f GB/s (%.3f)   raw contiguous pread of as"
                + " many bytes %.2f GB/s (%.3f)%n", loader / 1e9, rawRuns / 1e9, loader / rawRuns, rawContiguous / 1e9,
                loader / rawContiguous);
        results.put("local", Map.of("tpSize", localTp, "rank", localRank, "bytes", bytes, "rows", runs.size(),
                "threads", threads, "loaderGBps", loader / 1e9, "rawSameRangesGBps", rawRuns / 1e9,
                "rawContiguousGBps", rawContiguous / 1e9, "ofRawSameRanges", loader / rawRuns,
                "ofRawContiguous", loader / rawContiguous));
    }

    /** {@code runs} (cut into 16 MiB pieces, packed like the loader's) read by {@code threads} threads; bytes/s. */
    private static double preadAll(FileChannel ch, Path file, List<long[]> runs, HostMemory dst, int threads,
                                   long bytes) throws Exception {
        long piece = 16L << 20;
        List<List<long[]>> pieces = new ArrayList<>();
        List<long[]> cur = new ArrayList<>();
        long curBytes = 0;
        long at = 0;
        for (long[] r : runs) {
            for (long off = 0; off < r[1]; off += piece) {
                long n = Math.min(piece, r[1] - off);
                if (curBytes + n > piece) {
                    pieces.add(cur);
                    cur = new ArrayList<>();
                    curBytes = 0;
                }
                cur.add(new long[]{r[0] + off, n, at});
                curBytes += n;
                at += n;
            }
        }
        pieces.add(cur);
        ExecutorService pool = Executors.newFixedThreadPool(threads, Threads.daemon("bench-pread"));
        try {
            long t0 = System.nanoTime();
            List<Future<?>> f = new ArrayList<>();
            for (List<long[]> p : pieces) {
                f.add(pool.submit(() -> {
                    for (long[] r : p) {
                        java.nio.ByteBuffer b = dst.byteBuffer(r[2], (int) r[1]);
                        while (b.hasRemaining()) {
                            if (ch.read(b, r[0] + b.position()) < 0) {
                                throw new java.io.EOFException(file + " ends before " + (r[0] + b.position()));
                            }
                        }
                    }
                    return null;
                }));
            }
            for (Future<?> x : f) {
                x.get();
            }
            return bytes / ((System.nanoTime() - t0) / 1e9);
        } finally {
            pool.shutdownNow();
        }
    }

    private Config config(Map<String, Object> extra) {
        Map<String, Object> m = new LinkedHashMap<>(extra);
        m.put("weight-loader.remote-instance.token", TOKEN);
        m.put("weight-loader.backends.transfer_engine.engine", engine);
        if (engine.equals("mooncake")) {
            m.put("weight-loader.backends.transfer_engine.protocol", protocol);
        }
        if (mooncakeLibrary != null) {
            m.put("weight-loader.backends.transfer_engine.mooncake.library", mooncakeLibrary);
        }
        return ConfigFactory.parseMap(m).withFallback(ConfigFactory.load()).resolve();
    }

    /** Copies the slice {@code d} holds out of the whole tensor in host memory, row by row (a 2-D copy). */
    private static void copySlice(TensorDestination whole, TensorDestination d) {
        for (SliceCopy c : SliceCopy.plan(whole.spec(), null, d.slice())) {
            DeviceCopies.copy2D(d.region(), c.dstOffset(), c.dstStride(), whole.region(), c.srcOffset(), c.srcStride(),
                    c.length(), c.count());
        }
    }

    private static void fill(SafetensorsWriter.Tensor t, MemoryRegion region) throws IOException {
        long n = t.spec().byteSize();
        for (long off = 0; off < n; off += 64L << 20) {
            t.source().fill(off, region.byteBuffer(off, (int) Math.min(64L << 20, n - off)));
        }
    }
}
