package io.weightloader.benchmarks;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.spi.ZeroCopyLoader;
import io.weightloader.backend.local.SafetensorsCheckpoint;
import io.weightloader.backend.local.SafetensorsFile;
import io.weightloader.benchmarks.BenchLocalResult.GpuBaselines;
import io.weightloader.benchmarks.BenchLocalResult.Ratio;
import io.weightloader.benchmarks.BenchLocalResult.Result;
import io.weightloader.benchmarks.BenchLocalResult.Timing;
import io.weightloader.benchmarks.BenchLocalResult.ZeroCopy;
import io.weightloader.cli.CliJson;
import io.weightloader.cli.CliSubcommand;
import io.weightloader.cli.Sizes;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.TensorArena;
import io.weightloader.memory.cuda.PinnedMemory;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader bench-local PATH}: the local backend against raw reads of the same files, in the same process,
 * with the page cache warm (or dropped before every measurement, {@code --drop-caches}).
 *
 * <p>Each repeat measures, in turn: (a) raw read, every file read front to back with
 * {@link FileChannel#read(ByteBuffer)} into one reused 64 MiB direct buffer, on one thread; (a') the raw parallel
 * read, the same files in 16 MiB positional reads on as many threads as the loader uses; with {@code --io direct},
 * (a'') the same through {@code O_DIRECT}; (b) the loader, the local backend loading every tensor into one host arena
 * (allocated and pre-faulted once, outside the timing, as the raw buffers are); (c) zero-copy, mapping the files
 * ({@code map}) and then reading one byte per 4 KiB page of every tensor ({@code map + touch}). The best of the
 * repeats is reported, and the loader's first (the process's first load) beside it.
 *
 * <p>With {@code --device cuda:N} the loader loads into an arena on that GPU (through its pinned staging
 * buffers), zero-copy is not measured, and a further baseline is: (d) a raw host-to-device copy of as many bytes
 * as the tensors hold, {@code cudaMemcpy} of one pinned 64 MiB buffer piece after piece. Reading and copying
 * overlap in the loader, so its ideal is the slower of (a') (or (a'') with O_DIRECT) and (d); done one after the
 * other they would take the sum, which is printed too. Every ratio printed names its baseline
 * ({@link BenchLocalResult#ratios}); the raw reads and copies are {@link LocalBaselines}.
 */
@Command(name = "bench-local", mixinStandardHelpOptions = true,
        description = "Benchmark the local backend against a raw FileChannel read of the same files "
                + "(page cache warm; best of N).")
public final class BenchLocalCommand implements CliSubcommand {
    private static final int RAW_BUFFER = 64 << 20;
    /** Where touched bytes go, so that the reads cannot be optimised away. */
    static volatile long blackhole;

    @Spec
    CommandSpec spec;

    @Parameters(index = "0", paramLabel = "PATH", description = "Checkpoint file or directory.")
    Path path;

    @Option(names = "--repeat", paramLabel = "N", defaultValue = "3",
            description = "Repeats; the best is reported (default: ${DEFAULT-VALUE}).")
    int repeat;

    @Option(names = "--threads", paramLabel = "N",
            description = "Reader threads of the local backend (weight-loader.backends.local.threads; "
                    + "default: its setting).")
    Integer threads;

    @Option(names = "--device", paramLabel = "DEVICE", defaultValue = "cpu",
            description = "Where the loader loads: cpu, or cuda:N (adds a raw pinned host-to-device copy as a "
                    + "second baseline; default: ${DEFAULT-VALUE}).")
    String deviceText;

    @Option(names = "--io", paramLabel = "MODE",
            description = "How the loader reads the files: buffered, direct (O_DIRECT; adds a raw O_DIRECT parallel "
                    + "read as a baseline) or auto (weight-loader.backends.local.io; default: its setting).")
    String ioMode;

    @Option(names = "--drop-caches",
            description = "Cold measurements: run sync and write 3 to /proc/sys/vm/drop_caches before every measured"
                    + " read (root only).")
    boolean dropCaches;

    @Option(names = "--json", description = "Print the result as JSON.")
    boolean json;



    @Override
    public Integer call() throws IOException {
        if (repeat < 1) {
            throw new ParameterException(spec.commandLine(), "--repeat must be at least 1, got " + repeat);
        }
        if (!Files.exists(path)) {
            throw new ParameterException(spec.commandLine(), "PATH: no such file or directory: " + path);
        }
        Device device;
        try {
            device = Device.parse(deviceText);
        } catch (IllegalArgumentException e) {
            throw new ParameterException(spec.commandLine(), "--device: " + e.getMessage());
        }
        if (ioMode != null && !List.of("buffered", "direct", "auto").contains(ioMode)) {
            throw new ParameterException(spec.commandLine(), "--io must be buffered, direct or auto; got '" + ioMode + "'");
        }
        if (dropCaches && !Files.isWritable(LocalBaselines.DROP_CACHES)) {
            throw new ParameterException(spec.commandLine(), "--drop-caches writes " + LocalBaselines.DROP_CACHES + ", which this"
                    + " user (" + System.getProperty("user.name") + ") may not write: run as root, or measure without it");
        }
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(path);
        List<Path> files = cp.files().stream().map(SafetensorsFile::path).toList();
        ByteBuffer buffer = ByteBuffer.allocateDirect(RAW_BUFFER);
        long fileBytes = LocalBaselines.rawRead(files, buffer); // warms the page cache

        Map<String, Object> flags = new LinkedHashMap<>();
        flags.put("weight-loader.backend", "local");
        flags.put("weight-loader.model-path", path.toString());
        flags.put("weight-loader.device", device.toString());
        if (threads != null) {
            flags.put("weight-loader.backends.local.threads", threads);
        }
        if (ioMode != null) {
            flags.put("weight-loader.backends.local.io", ioMode);
        }
        Config config = ConfigFactory.parseMap(flags, "bench-local").withFallback(ConfigFactory.load());

        double rawBest = Double.MAX_VALUE;
        double loadBest = Double.MAX_VALUE;
        double mapBest = Double.MAX_VALUE;
        double touchBest = Double.MAX_VALUE;
        double copyBest = Double.MAX_VALUE;
        double parallelBest = Double.MAX_VALUE;
        double directBest = Double.MAX_VALUE;
        double firstLoad = 0;
        String ioUsed;
        int rawThreads;
        String engine;
        List<TensorSpec> specs;
        long tensorBytes;
        try (WeightLoader loader = WeightLoader.open(config)) {
            engine = loader.backend().engine();
            // the same number of threads as the loader uses ("pread xN"), reading the same files in parallel
            Matcher m = Pattern.compile("^pread x(\\d+)").matcher(engine);
            rawThreads = m.find() ? Integer.parseInt(m.group(1)) : 1;
            ioUsed = config.getString("weight-loader.backends.local.io");
            specs = loader.available();
            tensorBytes = specs.stream().mapToLong(TensorSpec::byteSize).sum();
            try (TensorArena arena = TensorArena.allocate(device, specs);
                 HostMemory parallelTarget = HostMemory.allocate(Math.max(fileBytes, 1));
                 HostMemory directTarget = ioUsed.equals("direct") ? HostMemory.allocate(LocalBaselines.alignedTotal(files)) : null;
                 PinnedMemory staging = device.isHost() ? null : PinnedMemory.allocate(RAW_BUFFER)) {
                parallelTarget.zero();
                if (device.isHost()) {
                    ((HostMemory) arena.region()).zero(); // fault the pages in now, not inside the timing
                }
                LoadRequest request = LoadRequest.of(arena.destinations());
                ZeroCopyLoader zeroCopy = device.isHost() && loader.backend() instanceof ZeroCopyLoader z ? z : null;
                if (directTarget != null) {
                    directTarget.zero();
                }
                for (int r = 0; r < repeat; r++) {
                    coldIfAsked();
                    long t0 = System.nanoTime();
                    LocalBaselines.rawRead(files, buffer);
                    rawBest = Math.min(rawBest, (System.nanoTime() - t0) / 1e9);

                    coldIfAsked();
                    t0 = System.nanoTime();
                    LocalBaselines.rawParallelRead(files, parallelTarget, rawThreads);
                    parallelBest = Math.min(parallelBest, (System.nanoTime() - t0) / 1e9);

                    if (directTarget != null) {
                        coldIfAsked();
                        t0 = System.nanoTime();
                        LocalBaselines.rawDirectRead(files, directTarget, rawThreads);
                        directBest = Math.min(directBest, (System.nanoTime() - t0) / 1e9);
                    }

                    if (staging != null) {
                        t0 = System.nanoTime();
                        LocalBaselines.rawHostToDevice(staging, arena.region(), tensorBytes);
                        copyBest = Math.min(copyBest, (System.nanoTime() - t0) / 1e9);
                    }

                    coldIfAsked();
                    t0 = System.nanoTime();
                    engine = loader.load(request).engine(); // with io = auto, what this load chose
                    double loadSeconds = (System.nanoTime() - t0) / 1e9;
                    if (r == 0) {
                        firstLoad = loadSeconds; // this process's first: its threads, stagers and files are new
                    }
                    loadBest = Math.min(loadBest, loadSeconds);

                    if (zeroCopy != null) {
                        coldIfAsked();
                        t0 = System.nanoTime();
                        try (MappedWeights mapped = zeroCopy.map(specs, false)) {
                            long t1 = System.nanoTime();
                            blackhole += LocalBaselines.touchEveryPage(mapped);
                            long t2 = System.nanoTime();
                            mapBest = Math.min(mapBest, (t1 - t0) / 1e9);
                            touchBest = Math.min(touchBest, (t2 - t0) / 1e9);
                        }
                    }
                }
            }
        }
        Timing raw = new Timing(rawBest, fileBytes);
        Timing load = new Timing(loadBest, tensorBytes);
        double ratio = raw.gigabytesPerSecond() <= 0 ? 0 : load.gigabytesPerSecond() / raw.gigabytesPerSecond();
        ZeroCopy zc = mapBest == Double.MAX_VALUE ? null : new ZeroCopy(mapBest, touchBest);
        Timing parallel = new Timing(parallelBest, fileBytes);
        double ratioToParallel = parallel.gigabytesPerSecond() <= 0 ? 0
                : load.gigabytesPerSecond() / parallel.gigabytesPerSecond();
        Timing direct = directBest == Double.MAX_VALUE ? null : new Timing(directBest, fileBytes);
        Double ratioToDirect = direct == null || direct.gigabytesPerSecond() <= 0 ? null
                : load.gigabytesPerSecond() / direct.gigabytesPerSecond();
        Timing first = new Timing(firstLoad, tensorBytes);
        Timing copy = copyBest == Double.MAX_VALUE ? null : new Timing(copyBest, tensorBytes);
        List<Ratio> ratios = BenchLocalResult.ratios(raw, parallel, direct, copy, rawThreads, load, first);
        GpuBaselines gpu = null;
        if (copy != null) {
            Timing read = direct != null ? direct : parallel; // the read the loader's reads are held to
            Timing serial = new Timing(read.seconds() * tensorBytes / Math.max(1, read.bytes()) + copyBest, tensorBytes);
            gpu = new GpuBaselines(copy, serial,
                    BenchLocalResult.ratio(load, Math.min(read.gigabytesPerSecond(), copy.gigabytesPerSecond())));
        }
        Result result = new Result(path.toString(), device.toString(), files.size(), fileBytes, tensorBytes,
                specs.size(), repeat, engine, raw, load, ratio, zc, gpu, rawThreads, parallel, ratioToParallel, ioUsed,
                dropCaches, direct, ratioToDirect, first, ratios);
        print(result);
        return 0;
    }

    private void coldIfAsked() throws IOException {
        if (dropCaches) {
            LocalBaselines.dropCaches();
        }
    }


    private void print(Result r) throws IOException {
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            out.println(CliJson.MAPPER.writeValueAsString(r));
        } else {
            out.printf(Locale.ROOT, "checkpoint %s: %d tensors, %s in %d file%s; page cache %s; io %s; best of %d%n",
                    r.path(), r.tensors(), Sizes.human(r.tensorBytes()), r.files(), r.files() == 1 ? "" : "s",
                    r.cold() ? "dropped before every measurement (cold)" : "warm", r.io(), r.repeat());
            out.printf(Locale.ROOT, "raw read   (FileChannel.read, 64 MiB buffer): %7.3f s  %6.2f GB/s  (%s)%n",
                    r.raw().seconds(), r.raw().gigabytesPerSecond(), Sizes.human(r.raw().bytes()));
            out.printf(Locale.ROOT, "raw parallel read (%d threads, 16 MiB preads): %7.3f s  %6.2f GB/s%n",
                    r.rawThreads(), r.rawParallel().seconds(), r.rawParallel().gigabytesPerSecond());
            if (r.rawDirect() != null) {
                out.printf(Locale.ROOT, "raw O_DIRECT read (%d threads, 16 MiB preads):  %7.3f s  %6.2f GB/s%n",
                        r.rawThreads(), r.rawDirect().seconds(), r.rawDirect().gigabytesPerSecond());
            }
            if (r.gpu() != null) {
                out.printf(Locale.ROOT, "raw copy   (cudaMemcpy, pinned 64 MiB -> %s): %7.3f s  %6.2f GB/s  (%s)%n",
                        r.device(), r.gpu().hostToDevice().seconds(), r.gpu().hostToDevice().gigabytesPerSecond(),
                        Sizes.human(r.gpu().hostToDevice().bytes()));
                out.printf(Locale.ROOT, "raw %s read, then raw copy (sum of the two): %7.3f s  %6.2f GB/s%n",
                        r.rawDirect() != null ? "O_DIRECT" : "parallel", r.gpu().serial().seconds(),
                        r.gpu().serial().gigabytesPerSecond());
            }
            String into = r.device().equals("cpu") ? "host" : r.device();
            out.printf(Locale.ROOT, "loader     (local, %s, into %s arena): %7.3f s  %6.2f GB/s  (%s; best of %d)%n",
                    r.engine(), into, r.loader().seconds(), r.loader().gigabytesPerSecond(),
                    Sizes.human(r.loader().bytes()), r.repeat());
            out.printf(Locale.ROOT, "first load (this process's first, into %s):  %7.3f s  %6.2f GB/s%n", into,
                    r.firstLoad().seconds(), r.firstLoad().gigabytesPerSecond());
            for (Ratio ratio : r.ratios()) {
                out.println(ratio.line());
            }
            if (r.zeroCopy() != null) {
                out.printf(Locale.ROOT, "zero-copy: map %.2f ms, map + touch every page %.2f ms%n",
                        r.zeroCopy().mapSeconds() * 1e3, r.zeroCopy().mapAndTouchSeconds() * 1e3);
            } else if (r.gpu() != null) {
                out.println("zero-copy: not measured (it maps host memory; the destination is a GPU)");
            } else {
                out.println("zero-copy: not offered by the backend");
            }
        }
        out.flush();
    }

}
