package io.weightloader.backend.local;

import io.weightloader.memory.Threads;
import io.weightloader.memory.Checksums;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.memory.MappedFile;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMatcher;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.ZeroCopyLoader;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Loads safetensors tensors from local files straight into the host's memory: each tensor is read with
 * positional reads ({@code pread}) directly into its destination, in pieces spread over a thread pool, with
 * no per-element Java work and no intermediate buffer. GPU destinations go through pinned staging buffers with
 * asynchronous copies overlapped with the reads ({@link GpuStager}). Zero-copy mode maps the files instead.
 */
public final class LocalBackend implements WeightLoaderBackend, ZeroCopyLoader {
    private final SafetensorsCheckpoint checkpoint;
    private final int threads;
    private final int pieceSize;
    private final int stagingSize;
    private final boolean zeroCopyPreferred;
    private final LocalIo io;
    private final Set<Path> toldBuffered = ConcurrentHashMap.newKeySet();
    private final ExecutorService pool;

    /** Pinned staging buffer size for GPU destinations when none is given ({@code staging-size}). */
    public static final int DEFAULT_STAGING_SIZE = 1 << 20;

    public LocalBackend(SafetensorsCheckpoint checkpoint, int threads, int pieceSize, boolean zeroCopyPreferred) {
        this(checkpoint, threads, pieceSize, DEFAULT_STAGING_SIZE, zeroCopyPreferred);
    }

    public LocalBackend(SafetensorsCheckpoint checkpoint, int threads, int pieceSize, int stagingSize,
                        boolean zeroCopyPreferred) {
        this(checkpoint, threads, pieceSize, stagingSize, zeroCopyPreferred, LocalIo.BUFFERED);
    }

    LocalBackend(SafetensorsCheckpoint checkpoint, int threads, int pieceSize, int stagingSize,
                 boolean zeroCopyPreferred, LocalIo io) {
        this.io = io;
        this.checkpoint = checkpoint;
        this.threads = threads;
        this.pieceSize = pieceSize;
        this.stagingSize = Math.min(stagingSize, pieceSize);
        this.zeroCopyPreferred = zeroCopyPreferred;
        this.pool = Executors.newFixedThreadPool(threads, Threads.daemon("weightloader-local"));
    }

    /** Whether the config asked for memory-mapped views ({@code weight-loader.backends.local.zero-copy}). */
    public boolean zeroCopyPreferred() {
        return zeroCopyPreferred;
    }

    public SafetensorsCheckpoint checkpoint() {
        return checkpoint;
    }

    @Override
    public String name() {
        return LocalBackendProvider.NAME;
    }

    @Override
    public String source() {
        return checkpoint.root().toString();
    }

    @Override
    public String engine() {
        return "pread x" + threads + switch (io) {
            case BUFFERED -> "";
            case DIRECT -> " (O_DIRECT)";
            case AUTO -> " (io auto: O_DIRECT for cold files of a checkpoint larger than the page cache)";
        };
    }

    @Override
    public List<TensorSpec> available() {
        return checkpoint.specs();
    }

    private record Piece(TensorDestination dest, SafetensorsCheckpoint.Located src, long offset, int length) {
    }

    @Override
    public synchronized LoadReport load(LoadRequest request) { // one load at a time shares the cached stagers
        long t0 = System.nanoTime();
        TensorMatcher.check("checkpoint " + checkpoint.root(), available(), request.specs(),
                request.ignoreExtraTensors());
        Map<Path, FileSource> channels = new HashMap<>();
        String engine;
        try {
            boolean large = io == LocalIo.AUTO && largerThanPageCache();
            for (SafetensorsFile f : checkpoint.files()) {
                channels.put(f.path(), io.open(f.path(), toldBuffered, large));
            }
            int direct = (int) channels.values().stream().filter(FileSource::direct).count();
            engine = "pread x" + threads + LocalIo.engineNote(direct, channels.size());
            copyAll(request, channels);
        } catch (IOException e) {
            throw new WeightLoaderException("cannot open checkpoint files under " + checkpoint.root() + ": "
                    + e.getMessage(), e);
        } finally {
            for (FileSource ch : channels.values()) {
                try {
                    ch.close();
                } catch (IOException ignored) {
                    // closing a read-only channel cannot lose data
                }
            }
        }
        Map<String, String> sums = request.checksum() ? checksums(request) : Map.of();
        List<TensorReport> reports = new ArrayList<>();
        for (TensorDestination d : request.tensors()) {
            reports.add(TensorReport.of(d.spec(), sums.get(d.spec().name())));
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        String device = request.tensors().isEmpty() ? Device.CPU.toString()
                : request.tensors().get(0).region().device().toString();
        return new LoadReport(name(), engine, source(), device, reports, request.totalBytes(), secs, null);
    }

    /** {@code io = auto}: whether the checkpoint's files are too large to stay in the page cache. */
    private boolean largerThanPageCache() {
        long bytes = 0;
        for (SafetensorsFile f : checkpoint.files()) {
            bytes += f.path().toFile().length();
        }
        long available = LocalIo.memAvailable();
        if (available < 0) {
            if (toldBuffered.add(checkpoint.root())) {
                org.slf4j.LoggerFactory.getLogger(LocalBackend.class).info("{} = auto: cannot read MemAvailable from"
                        + " /proc/meminfo; reading {} buffered", LocalIo.KEY, checkpoint.root());
            }
            return false;
        }
        return LocalIo.largerThanPageCache(bytes, available);
    }

    private void copyAll(LoadRequest request, Map<Path, FileSource> channels) {
        List<Piece> pieces = new ArrayList<>();
        Map<String, AtomicLong> remaining = new HashMap<>();
        for (TensorDestination d : request.tensors()) {
            SafetensorsCheckpoint.Located src = checkpoint.tensors().get(d.spec().name());
            long bytes = d.spec().byteSize();
            remaining.put(d.spec().name(), new AtomicLong(bytes));
            if (bytes == 0) {
                continue;
            }
            for (long off = 0; off < bytes; off += pieceSize) {
                pieces.add(new Piece(d, src, off, (int) Math.min(pieceSize, bytes - off)));
            }
        }
        long total = request.totalBytes();
        int tensorCount = request.tensors().size();
        AtomicLong done = new AtomicLong();
        AtomicInteger tensorsDone = new AtomicInteger(
                (int) request.tensors().stream().filter(d -> d.spec().byteSize() == 0).count());
        Map<Device, BlockingQueue<GpuStager>> stagers = stagers(request);
        boolean ok = false;
        List<Future<?>> futures = new ArrayList<>(pieces.size());
        for (Piece p : pieces) {
            futures.add(pool.submit(() -> {
                Device dev = p.dest().region().device();
                if (dev.isHost()) {
                    readPiece(p, channels.get(p.src().file().path()));
                } else {
                    GpuStager g = stagers.get(dev).take();
                    try {
                        g.copy(channels.get(p.src().file().path()), p.dest().spec().name(),
                                p.src().fileOffset() + p.offset(), p.dest().region().address() + p.offset(),
                                p.length());
                    } finally {
                        stagers.get(dev).add(g);
                    }
                }
                long d = done.addAndGet(p.length());
                int t = remaining.get(p.dest().spec().name()).addAndGet(-p.length()) == 0
                        ? tensorsDone.incrementAndGet() : tensorsDone.get();
                request.progress().onProgress(d, total, t, tensorCount);
                return null;
            }));
        }
        request.progress().onProgress(done.get(), total, tensorsDone.get(), tensorCount);
        try {
            awaitAll(futures);
            stagers.values().forEach(q -> q.forEach(GpuStager::finish));
            ok = true;
        } finally {
            if (!ok) {
                // after a failure a stager's state is unknown: drop them, the next load pins new ones
                synchronized (stagerCache) {
                    stagers.keySet().forEach(stagerCache::remove);
                }
                stagers.values().forEach(q -> q.forEach(GpuStager::close));
            }
        }
    }

    /**
     * Per destination GPU, one stager per reader thread (two pinned buffers of {@code staging-size} each), kept for
     * the backend's life: pinning host memory is slow (about 1.4 GB/s), so a host that loads more than once pins
     * its staging buffers once.
     */
    private final Map<Device, BlockingQueue<GpuStager>> stagerCache = new HashMap<>();

    private Map<Device, BlockingQueue<GpuStager>> stagers(LoadRequest request) {
        Map<Device, BlockingQueue<GpuStager>> out = new HashMap<>();
        synchronized (stagerCache) {
            for (TensorDestination d : request.tensors()) {
                Device dev = d.region().device();
                if (!dev.isHost() && !out.containsKey(dev)) {
                    BlockingQueue<GpuStager> q = stagerCache.get(dev);
                    if (q == null) {
                        q = new ArrayBlockingQueue<>(threads);
                        try {
                            for (int i = 0; i < threads; i++) {
                                q.add(new GpuStager(dev, stagingSize));
                            }
                        } catch (RuntimeException e) {
                            q.forEach(GpuStager::close);
                            throw e;
                        }
                        stagerCache.put(dev, q);
                    }
                    out.put(dev, q);
                }
            }
        }
        return out;
    }

    private static void readPiece(Piece p, FileSource src) throws IOException {
        src.read(p.src().fileOffset() + p.offset(), p.dest().region().byteBuffer(p.offset(), p.length()),
                p.dest().spec().name());
    }

    private static void awaitAll(List<Future<?>> futures) {
        try {
            for (Future<?> f : futures) {
                f.get();
            }
        } catch (InterruptedException e) {
            futures.forEach(f -> f.cancel(true));
            Thread.currentThread().interrupt();
            throw new WeightLoaderException("load interrupted", e);
        } catch (ExecutionException e) {
            futures.forEach(f -> f.cancel(true));
            Throwable c = e.getCause();
            if (c instanceof WeightLoaderException w) {
                throw w;
            }
            throw new WeightLoaderException("reading the checkpoint failed: " + c, c);
        }
    }

    private Map<String, String> checksums(LoadRequest request) {
        List<String> sums = Checksums.sha256All(request.tensors().stream().map(TensorDestination::region).toList(),
                request.tensors().stream().map(d -> d.spec().byteSize()).toList(), threads);
        Map<String, String> out = new HashMap<>();
        for (int i = 0; i < sums.size(); i++) {
            out.put(request.tensors().get(i).spec().name(), sums.get(i));
        }
        return out;
    }

    private static Map<String, String> collect(Map<String, Future<String>> futures) {
        Map<String, String> out = new HashMap<>();
        try {
            for (Map.Entry<String, Future<String>> e : futures.entrySet()) {
                out.put(e.getKey(), e.getValue().get());
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new WeightLoaderException("checksum interrupted", e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof WeightLoaderException w) {
                throw w;
            }
            throw new WeightLoaderException("checksum failed: " + e.getCause(), e.getCause());
        }
        return out;
    }

    @Override
    public MappedWeights map(List<TensorSpec> expected, boolean checksum) {
        long t0 = System.nanoTime();
        TensorMatcher.check("checkpoint " + checkpoint.root(), available(), expected, false);
        Map<Path, MappedFile> maps = new LinkedHashMap<>();
        try {
            for (SafetensorsFile f : checkpoint.files()) {
                MappedFile m = MappedFile.map(f.path());
                maps.put(f.path(), m);
                long needed = f.dataStart() + f.entries().values().stream().mapToLong(SafetensorsFile.Entry::end)
                        .max().orElse(0);
                if (m.length() < needed) {
                    throw new SafetensorsFormatException(f.path(), "is " + m.length() + " bytes now, but its header"
                            + " needs " + needed + ": the file was truncated after it was opened; nothing was mapped");
                }
            }
        } catch (RuntimeException e) {
            maps.values().forEach(MappedFile::close);
            throw e;
        }
        Map<String, MemoryRegion> regions = new LinkedHashMap<>();
        for (TensorSpec s : expected) {
            SafetensorsCheckpoint.Located l = checkpoint.tensors().get(s.name());
            MappedFile m = maps.get(l.file().path());
            regions.put(s.name(), l.entry().bytes() == 0
                    ? MemoryRegion.of(0, 0, Device.CPU) : m.slice(l.fileOffset(), l.entry().bytes()));
        }
        Map<String, String> sums = new HashMap<>();
        if (checksum) {
            Map<String, Future<String>> futures = new LinkedHashMap<>();
            regions.forEach((name, r) -> futures.put(name, pool.submit(() -> {
                try {
                    return Checksums.sha256(r);
                } catch (InternalError fault) {
                    // the JVM's word for SIGBUS on mapped memory: the file shrank under the mapping
                    Path file = checkpoint.tensors().get(name).file().path();
                    throw new WeightLoaderException("tensor '" + name + "' of " + file + " could not be read through"
                            + " its memory mapping: the file was truncated or replaced while mapped (" + fault.getMessage()
                            + "); nothing was loaded", fault);
                }
            })));
            try {
                sums = collect(futures);
            } catch (RuntimeException e) {
                maps.values().forEach(MappedFile::close);
                throw e;
            }
        }
        List<TensorReport> reports = new ArrayList<>();
        long total = 0;
        for (TensorSpec s : expected) {
            reports.add(TensorReport.of(s, sums.get(s.name())));
            total += s.byteSize();
        }
        LoadReport report = new LoadReport(name(), "mmap", source(), Device.CPU.toString(), reports, total,
                (System.nanoTime() - t0) / 1e9, null);
        Map<String, MemoryRegion> view = java.util.Collections.unmodifiableMap(regions);
        return new MappedWeights() {
            @Override
            public Map<String, MemoryRegion> regions() {
                return view;
            }

            @Override
            public LoadReport report() {
                return report;
            }

            @Override
            public void close() {
                maps.values().forEach(MappedFile::close);
            }
        };
    }

    @Override
    public void close() {
        pool.shutdownNow();
        synchronized (stagerCache) {
            stagerCache.values().forEach(q -> q.forEach(GpuStager::close));
            stagerCache.clear();
        }
    }
}
