package io.weightloader.benchmarks;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.spi.ZeroCopyLoader;
import io.weightloader.backend.local.SafetensorsCheckpoint;
import io.weightloader.backend.local.SafetensorsFile;
import io.weightloader.cli.CliJson;
import io.weightloader.cli.CliSubcommand;
import io.weightloader.cli.Sizes;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.TensorArena;
import io.weightloader.memory.cuda.DeviceCopies;
import io.weightloader.memory.cuda.PinnedMemory;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
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
 * other they would take the sum, which is printed too. Every ratio printed names its baseline ({@link #ratios}).
 */
@Command(name = "bench-local", mixinStandardHelpOptions = true,
        description = "Benchmark the local backend against a raw FileChannel read of the same files "
                + "(page cache warm; best of N).")
public final class BenchLocalCommand implements CliSubcommand {
    private static final int RAW_BUFFER = 64 << 20;
    private static final int PAGE = 4096;
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

    /** One measurement: the best time of the repeats, and the bytes it moved. */
    record Timing(double seconds, long bytes) {
        @JsonProperty("gigabytesPerSecond")
        public double gigabytesPerSecond() {
            return seconds <= 0 ? 0 : bytes / seconds / 1e9;
        }
    }

    /** Zero-copy times: mapping alone, and mapping plus one read per page. */
    record ZeroCopy(double mapSeconds, double mapAndTouchSeconds) {
    }

    /**
     * GPU destinations only: the raw host-to-device copy, reading (the raw parallel read, or the raw O_DIRECT read with
     * {@code io = direct}) and copying one after the other (the sum of the two baselines' times), and the loader
     * against the slower of that read and the copy (its ideal when they overlap).
     */
    record GpuBaselines(Timing hostToDevice, Timing serial, double ratioToSlowerBaseline) {
    }

    /**
     * One printed ratio: {@code measured} / {@code baseline}, both named, the baseline measured in the same run;
     * {@code target} is the floor for it, or null where none is set.
     */
    record Ratio(String measured, String baseline, double value, Double target) {
        boolean met() {
            return target == null || value >= target;
        }

        String line() {
            return String.format(Locale.ROOT, "ratio %s / %s: %.3f%s", measured, baseline, value,
                    target == null ? "" : String.format(Locale.ROOT, " (target >= %.2f: %s)", target,
                            met() ? "met" : "NOT met"));
        }
    }

    /** Target of a load into host memory against the raw parallel read with as many threads. */
    static final double TARGET_PARALLEL = 0.90;
    /** Target of an O_DIRECT load against the raw O_DIRECT read with as many threads. */
    static final double TARGET_DIRECT = 0.95;
    /** Target of a load into a GPU against the slower of the raw read and the raw pinned copy. */
    static final double TARGET_GPU = 0.90;

    /** The {@code --json} document. */
    record Result(String path, String device, int files, long fileBytes, long tensorBytes, int tensors, int repeat,
                  String engine, Timing raw, Timing loader, double ratio, ZeroCopy zeroCopy, GpuBaselines gpu,
                  int rawThreads, Timing rawParallel, double ratioToParallel, String io, boolean cold,
                  Timing rawDirect, Double ratioToDirect, Timing firstLoad, List<Ratio> ratios) {
    }

    /**
     * Every ratio the benchmark prints, each against a baseline of the same run that it names. The loader's main
     * baseline, which carries the target: for a host load the raw parallel read (buffered) or the raw O_DIRECT read
     * (when the loader read with O_DIRECT), each with as many threads as the loader; for a GPU load the slower of that
     * read and the raw pinned copy. The first load of the process (whose reader threads, stagers and files are new)
     * is held to the same baseline as the best one.
     */
    static List<Ratio> ratios(Timing raw, Timing parallel, Timing direct, Timing copy, int threads, Timing loader,
                              Timing first) {
        List<Ratio> out = new java.util.ArrayList<>();
        String parallelName = "raw parallel read (" + threads + " threads)";
        String directName = "raw O_DIRECT read (" + threads + " threads)";
        String mainName;
        double mainRate;
        double target;
        if (direct != null) {
            mainName = directName;
            mainRate = direct.gigabytesPerSecond();
            target = TARGET_DIRECT;
        } else {
            mainName = parallelName;
            mainRate = parallel.gigabytesPerSecond();
            target = TARGET_PARALLEL;
        }
        out.add(new Ratio("loader", "raw single-thread read (FileChannel.read)", ratio(loader, raw.gigabytesPerSecond()),
                null));
        out.add(new Ratio("loader", parallelName, ratio(loader, parallel.gigabytesPerSecond()),
                direct == null && copy == null ? target : null));
        if (direct != null) {
            out.add(new Ratio("loader", directName, ratio(loader, direct.gigabytesPerSecond()),
                    copy == null ? target : null));
        }
        if (copy != null) {
            boolean readSlower = mainRate <= copy.gigabytesPerSecond();
            mainName = "slower of " + mainName + " and raw pinned copy (the " + (readSlower ? "read" : "copy") + ")";
            mainRate = Math.min(mainRate, copy.gigabytesPerSecond());
            target = TARGET_GPU;
            out.add(new Ratio("loader", mainName, ratio(loader, mainRate), target));
        }
        if (first != null) {
            out.add(new Ratio("first load", mainName, ratio(first, mainRate), target));
        }
        return out;
    }

    private static double ratio(Timing measured, double baselineRate) {
        return baselineRate <= 0 ? 0 : measured.gigabytesPerSecond() / baselineRate;
    }

    static final Path DROP_CACHES = Path.of("/proc/sys/vm/drop_caches");

    /** {@code sync; echo 3 > /proc/sys/vm/drop_caches}: the next read of every file comes from the disk. */
    static void dropCaches() throws IOException {
        try {
            int rc = new ProcessBuilder("sync").inheritIO().start().waitFor();
            if (rc != 0) {
                throw new IOException("sync exited with " + rc);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while running sync", e);
        }
        Files.writeString(DROP_CACHES, "3");
    }

    @Override
    public Integer call() throws IOException {
        if (repeat < 1) {
            throw new ParameterException(spec.commandLine(), "--repeat must be at least 1, got " + repeat);
        }
        if (!java.nio.file.Files.exists(path)) {
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
        if (dropCaches && !Files.isWritable(DROP_CACHES)) {
            throw new ParameterException(spec.commandLine(), "--drop-caches writes " + DROP_CACHES + ", which this"
                    + " user (" + System.getProperty("user.name") + ") may not write: run as root, or measure without it");
        }
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(path);
        List<Path> files = cp.files().stream().map(SafetensorsFile::path).toList();
        ByteBuffer buffer = ByteBuffer.allocateDirect(RAW_BUFFER);
        long fileBytes = rawRead(files, buffer); // warms the page cache

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
            java.util.regex.Matcher m = java.util.regex.Pattern.compile("^pread x(\\d+)").matcher(engine);
            rawThreads = m.find() ? Integer.parseInt(m.group(1)) : 1;
            ioUsed = config.getString("weight-loader.backends.local.io");
            specs = loader.available();
            tensorBytes = specs.stream().mapToLong(TensorSpec::byteSize).sum();
            try (TensorArena arena = TensorArena.allocate(device, specs);
                 HostMemory parallelTarget = HostMemory.allocate(Math.max(fileBytes, 1));
                 HostMemory directTarget = ioUsed.equals("direct") ? HostMemory.allocate(alignedTotal(files)) : null;
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
                    rawRead(files, buffer);
                    rawBest = Math.min(rawBest, (System.nanoTime() - t0) / 1e9);

                    coldIfAsked();
                    t0 = System.nanoTime();
                    rawParallelRead(files, parallelTarget, rawThreads);
                    parallelBest = Math.min(parallelBest, (System.nanoTime() - t0) / 1e9);

                    if (directTarget != null) {
                        coldIfAsked();
                        t0 = System.nanoTime();
                        rawDirectRead(files, directTarget, rawThreads);
                        directBest = Math.min(directBest, (System.nanoTime() - t0) / 1e9);
                    }

                    if (staging != null) {
                        t0 = System.nanoTime();
                        rawHostToDevice(staging, arena.region(), tensorBytes);
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
                            blackhole += touchEveryPage(mapped);
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
        List<Ratio> ratios = ratios(raw, parallel, direct, copy, rawThreads, load, first);
        GpuBaselines gpu = null;
        if (copy != null) {
            Timing read = direct != null ? direct : parallel; // the read the loader's reads are held to
            Timing serial = new Timing(read.seconds() * tensorBytes / Math.max(1, read.bytes()) + copyBest, tensorBytes);
            gpu = new GpuBaselines(copy, serial,
                    ratio(load, Math.min(read.gigabytesPerSecond(), copy.gigabytesPerSecond())));
        }
        Result result = new Result(path.toString(), device.toString(), files.size(), fileBytes, tensorBytes,
                specs.size(), repeat, engine, raw, load, ratio, zc, gpu, rawThreads, parallel, ratioToParallel, ioUsed,
                dropCaches, direct, ratioToDirect, first, ratios);
        print(result);
        return 0;
    }

    private void coldIfAsked() throws IOException {
        if (dropCaches) {
            dropCaches();
        }
    }

    private static final int DIRECT_ALIGN = 4096;

    /** Bytes of a buffer that holds every file, each starting at a multiple of 4 KiB and rounded up to one. */
    static long alignedTotal(List<Path> files) throws IOException {
        long total = 0;
        for (Path f : files) {
            total += (Files.size(f) + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN;
        }
        return Math.max(total, 1);
    }

    /**
     * The raw O_DIRECT read: every file opened with {@code O_DIRECT} and read in 16 MiB positional reads spread over
     * {@code threads} threads straight into one page-aligned host buffer (each file at a 4 KiB boundary, its last
     * read rounded up to whole blocks and returning short at the end of the file).
     */
    static void rawDirectRead(List<Path> files, HostMemory target, int threads) throws IOException {
        parallelRead(files, target, threads, true);
    }

    /** Every file read with positional reads of 16 MiB spread over {@code threads} threads into one host buffer. */
    static void rawParallelRead(List<Path> files, HostMemory target, int threads) throws IOException {
        parallelRead(files, target, threads, false);
    }

    /**
     * The two raw reads: 16 MiB positional reads of every file, back to back in {@code target}, on {@code threads}
     * threads; with {@code direct}, through {@code O_DIRECT}, each file's extent rounded up to whole 4 KiB blocks.
     */
    private static void parallelRead(List<Path> files, HostMemory target, int threads, boolean direct)
            throws IOException {
        final long piece = 16L << 20;
        List<java.util.concurrent.Callable<Void>> tasks = new java.util.ArrayList<>();
        List<FileChannel> open = new java.util.ArrayList<>();
        try {
            long at = 0;
            for (Path f : files) {
                FileChannel ch = direct
                        ? FileChannel.open(f, StandardOpenOption.READ, com.sun.nio.file.ExtendedOpenOption.DIRECT)
                        : FileChannel.open(f, StandardOpenOption.READ);
                open.add(ch);
                long size = ch.size();
                long extent = direct ? (size + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN : size;
                for (long off = 0; off < extent; off += piece) {
                    long fileOff = off;
                    long dst = at + off;
                    int len = (int) Math.min(piece, extent - off);
                    long want = Math.min(len, size - off); // an O_DIRECT read returns short at the end of the file
                    tasks.add(() -> {
                        ByteBuffer view = target.byteBuffer(dst, len);
                        long pos = fileOff;
                        while (pos - fileOff < want) {
                            int n = ch.read(view, pos);
                            if (n < 0 || direct && n == 0) {
                                throw new IOException(f + " ended early");
                            }
                            pos += n;
                        }
                        return null;
                    });
                }
                at += extent;
            }
            java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(
                    Math.max(1, threads), io.weightloader.memory.Threads.daemon(direct ? "bench-raw-direct" : "bench-raw"));
            try {
                for (java.util.concurrent.Future<Void> f : pool.invokeAll(tasks)) {
                    f.get();
                }
            } catch (InterruptedException | java.util.concurrent.ExecutionException e) {
                throw new IOException((direct ? "raw O_DIRECT read" : "raw parallel read") + " failed: " + e, e);
            } finally {
                pool.shutdownNow();
            }
        } finally {
            for (FileChannel ch : open) {
                ch.close();
            }
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

    /** Copies {@code bytes} to the device region, one pinned piece after another (each copy synchronous). */
    static void rawHostToDevice(PinnedMemory staging, MemoryRegion device, long bytes) {
        long piece = staging.length();
        for (long off = 0; off < bytes; off += piece) {
            DeviceCopies.copy(device, off, staging, 0, Math.min(piece, bytes - off));
        }
    }

    /** Reads every file front to back into {@code buffer}; returns the bytes read. */
    static long rawRead(List<Path> files, ByteBuffer buffer) throws IOException {
        long total = 0;
        for (Path f : files) {
            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                while (true) {
                    buffer.clear();
                    int n = ch.read(buffer);
                    if (n < 0) {
                        break;
                    }
                    total += n;
                }
            }
        }
        return total;
    }

    /** Reads one byte of every 4 KiB page of every mapped tensor. */
    private static long touchEveryPage(MappedWeights mapped) {
        long sink = 0;
        for (MemoryRegion region : mapped.regions().values()) {
            long len = region.length();
            for (long off = 0; off < len; off += MemoryRegion.MAX_VIEW) {
                int n = (int) Math.min(MemoryRegion.MAX_VIEW, len - off);
                ByteBuffer view = region.byteBuffer(off, n);
                for (int i = 0; i < n; i += PAGE) {
                    sink += view.get(i);
                }
            }
        }
        return sink;
    }
}
