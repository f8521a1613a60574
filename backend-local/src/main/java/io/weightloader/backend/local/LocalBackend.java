package io.weightloader.backend.local;

import io.weightloader.memory.Threads;
import io.weightloader.memory.Checksums;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.memory.MappedFile;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.SliceCopy;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMatcher;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.ZeroCopyLoader;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
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
    /** The backend's name (its provider's {@code NAME}). */
    static final String NAME = "local";

    private final SafetensorsCheckpoint checkpoint;
    private final int threads;
    private final int pieceSize;
    private final int stagingSize;
    private final boolean zeroCopyPreferred;
    private final LocalIo io;
    private final Set<Path> toldBuffered = ConcurrentHashMap.newKeySet();
    private final ExecutorService pool;

    /** Pinned staging buffer size for GPU destinations when none is given ({@code staging-size}). */
    public static final int DEFAULT_STAGING_SIZE = 2 << 20;

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
        return NAME;
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

    /**
     * One task of a load: {@code length} bytes contiguous in the destination from {@code dstOffset}, read from the
     * file at {@code positions[i]} ({@code lengths[i]} bytes each, in order). A whole tensor or a dim-0 slice is one
     * run; a slice of an inner dimension is many, the rows of the slice, gathered so the destination holds it in C
     * order.
     */
    private record Piece(TensorDestination dest, SafetensorsCheckpoint.Located src, long dstOffset, long[] positions,
                         int[] lengths, int length) {
    }

    @Override
    public boolean loadsSlices() {
        return true;
    }

    /** Cuts every tensor's runs (its slice's rows in the file) into pieces of at most {@code pieceSize} bytes. */
    private List<Piece> plan(LoadRequest request) {
        List<Piece> pieces = new ArrayList<>();
        for (TensorDestination d : request.tensors()) {
            if (d.byteSize() == 0) {
                continue;
            }
            SafetensorsCheckpoint.Located src = checkpoint.tensors().get(d.spec().name());
            PieceBuilder b = new PieceBuilder(d, src, pieces);
            for (SliceCopy c : SliceCopy.plan(d.spec(), null, d.slice())) {
                for (long i = 0; i < c.count(); i++) {
                    b.add(src.fileOffset() + c.srcOffset() + i * c.srcStride(), c.dstOffset() + i * c.dstStride(),
                            c.length());
                }
            }
            b.flush();
        }
        return pieces;
    }

    /** Packs consecutive runs of one tensor into pieces. */
    private final class PieceBuilder {
        private final TensorDestination dest;
        private final SafetensorsCheckpoint.Located src;
        private final List<Piece> out;
        private final List<long[]> runs = new ArrayList<>();
        private long start = -1;
        private long length;

        PieceBuilder(TensorDestination dest, SafetensorsCheckpoint.Located src, List<Piece> out) {
            this.dest = dest;
            this.src = src;
            this.out = out;
        }

        void add(long position, long dstOffset, long bytes) {
            long done = 0;
            while (done < bytes) {
                if (start >= 0 && (length == pieceSize || start + length != dstOffset + done)) {
                    flush();
                }
                if (start < 0) {
                    start = dstOffset + done;
                }
                long n = Math.min(bytes - done, pieceSize - length);
                runs.add(new long[]{position + done, n});
                length += n;
                done += n;
            }
        }

        void flush() {
            if (start < 0) {
                return;
            }
            long[] positions = new long[runs.size()];
            int[] lengths = new int[runs.size()];
            for (int i = 0; i < runs.size(); i++) {
                positions[i] = runs.get(i)[0];
                lengths[i] = (int) runs.get(i)[1];
            }
            out.add(new Piece(dest, src, start, positions, lengths, (int) length));
            runs.clear();
            start = -1;
            length = 0;
        }
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
            reports.add(TensorReport.of(d, sums.get(d.spec().name())));
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        String device = request.tensors().isEmpty() ? Device.CPU.toString()
                : request.tensors().get(0).region().device().toString();
        return LoadReport.builder(name()).engine(engine).source(source()).device(device).tensors(reports)
                .totalBytes(request.totalBytes()).seconds(secs).build();
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
        List<Piece> pieces = plan(request);
        Map<String, AtomicLong> remaining = new HashMap<>();
        for (TensorDestination d : request.tensors()) {
            remaining.put(d.spec().name(), new AtomicLong(d.byteSize()));
        }
        long total = request.totalBytes();
        int tensorCount = request.tensors().size();
        AtomicLong done = new AtomicLong();
        AtomicInteger tensorsDone = new AtomicInteger(
                (int) request.tensors().stream().filter(d -> d.byteSize() == 0).count());
        Map<Device, Stagers> stagers = stagers(request);
        Map<Path, MappedFile> maps = new java.util.concurrent.ConcurrentHashMap<>();
        boolean ok = false;
        // pieces still running: the mappings are unmapped only once none is (a copy from an unmapped file crashes)
        java.util.concurrent.Phaser running = new java.util.concurrent.Phaser(1);
        java.util.concurrent.atomic.AtomicBoolean stop = new java.util.concurrent.atomic.AtomicBoolean();
        List<Future<?>> futures = new ArrayList<>(pieces.size());
        for (Piece p : pieces) {
            futures.add(pool.submit(() -> {
                running.register();
                try {
                    if (!stop.get()) {
                        loadPiece(p, channels, maps, stagers);
                    }
                } finally {
                    running.arriveAndDeregister();
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
            stagers.values().forEach(Stagers::finish);
            ok = true;
        } finally {
            stop.set(true);
            running.arriveAndAwaitAdvance();
            maps.values().forEach(MappedFile::close);
            if (!ok) {
                // after a failure a stager's state is unknown: drop them, the next load pins new ones
                synchronized (stagerCache) {
                    stagers.keySet().forEach(stagerCache::remove);
                }
                stagers.values().forEach(Stagers::close);
            }
        }
    }

    private void loadPiece(Piece p, Map<Path, FileSource> channels, Map<Path, MappedFile> maps,
                           Map<Device, Stagers> stagers) throws IOException, InterruptedException {
        Device dev = p.dest().region().device();
        FileSource src = channels.get(p.src().file().path());
        // short rows from a mapping: through the page cache, so not for files read with O_DIRECT
        if (dev.isHost() && shortRows(p) && !(src instanceof DirectFileReader)) {
            copyRows(p, mapping(maps, p.src().file()));
        } else if (dev.isHost()) {
            readPiece(p, src);
        } else {
            Stagers pool = stagers.get(dev);
            GpuStager g = pool.take();
            try {
                g.gather(src, p.dest().spec().name(), p.positions(), p.lengths(),
                        p.dest().region().address() + p.dstOffset());
            } finally {
                pool.give(g);
            }
        }
    }

    /**
     * Per destination GPU, up to one stager per reader thread (two pinned buffers of {@code staging-size} each), kept
     * for the backend's life: pinning host memory is slow (about 1.4 GB/s), so a host that loads more than once pins
     * its staging buffers once. A backend made for a GPU starts pinning them when it is made ({@link #prepare}); a load
     * that finds fewer than it has threads makes the others as its threads first need them.
     */
    private final Map<Device, Stagers> stagerCache = new HashMap<>();

    /** One GPU's stagers: made on demand, at most {@code max}, handed to one reader thread at a time. */
    static final class Stagers {
        private final Device device;
        private final int stagingSize;
        private final int max;
        private final BlockingQueue<GpuStager> idle;
        private final List<GpuStager> all = new java.util.concurrent.CopyOnWriteArrayList<>();
        private final AtomicInteger made = new AtomicInteger();
        private volatile boolean closed;

        Stagers(Device device, int stagingSize, int max) {
            this.device = device;
            this.stagingSize = stagingSize;
            this.max = max;
            this.idle = new ArrayBlockingQueue<>(max);
        }

        /**
         * An idle stager, or a new one while fewer than {@code max} exist, or the next one given back. Each reader
         * thread holds at most one, and there are {@code max} threads, so a thread that waits gets one.
         */
        GpuStager take() throws InterruptedException {
            while (true) {
                GpuStager g = idle.poll();
                if (g != null) {
                    return g;
                }
                for (int n = made.get(); n < max; n = made.get()) {
                    if (made.compareAndSet(n, n + 1)) {
                        g = make();
                        return g;
                    }
                }
                // all are made or being made (by another thread, or ahead of the load: one that fails frees its place)
                g = idle.poll(10, java.util.concurrent.TimeUnit.MILLISECONDS);
                if (g != null) {
                    return g;
                }
            }
        }

        /** A new stager in a place already counted in {@code made}; a failure frees the place. */
        private GpuStager make() {
            GpuStager g;
            try {
                g = new GpuStager(device, stagingSize);
            } catch (RuntimeException e) {
                made.decrementAndGet();
                throw e;
            }
            synchronized (this) {
                if (closed) {
                    g.close();
                    throw new WeightLoaderException("the local backend's staging buffers for " + device + " were closed");
                }
                all.add(g);
            }
            return g;
        }

        void give(GpuStager g) {
            idle.add(g);
        }

        /** Waits until every copy that any of the stagers queued reached the GPU. */
        void finish() {
            all.forEach(GpuStager::finish);
        }

        synchronized void close() {
            closed = true;
            all.forEach(GpuStager::close);
        }

        /** Makes stagers until there are {@code max}, each given to the idle ones as it is made. */
        void fill() {
            for (int n = made.get(); n < max && !closed; n = made.get()) {
                if (made.compareAndSet(n, n + 1)) {
                    idle.add(make());
                }
            }
        }
    }

    private volatile Thread preparing;

    /**
     * Starts pinning {@code device}'s stagers on a background thread, for a backend made to load into that GPU
     * ({@code weight-loader.device}): pinning runs at about 1.4 GB/s and holds up the copies of a load that runs beside
     * it, so a process's first load, if it pinned them itself, spent a fifth of its time pinning (docs/PERFORMANCE.md).
     * What the host does before its first load (allocating the weights' GPU memory, building the model) hides it. A
     * load that comes sooner takes the stagers made so far and makes the rest itself; a failure here is left for the
     * load to meet and report.
     */
    void prepare(Device device) {
        if (device.isHost()) {
            return;
        }
        Stagers pool;
        synchronized (stagerCache) {
            pool = stagerCache.computeIfAbsent(device, k -> new Stagers(k, stagingSize, threads));
        }
        Thread t = Threads.daemon("weightloader-local-pin").newThread(() -> {
            try {
                pool.fill();
            } catch (RuntimeException e) {
                org.slf4j.LoggerFactory.getLogger(LocalBackend.class).debug("pinning staging buffers for {} ahead of"
                        + " the first load failed; the load will pin its own: {}", device, e.toString());
            }
        });
        preparing = t;
        t.start();
    }

    private Map<Device, Stagers> stagers(LoadRequest request) {
        Map<Device, Stagers> out = new HashMap<>();
        synchronized (stagerCache) {
            for (TensorDestination d : request.tensors()) {
                Device dev = d.region().device();
                if (!dev.isHost() && !out.containsKey(dev)) {
                    out.put(dev, stagerCache.computeIfAbsent(dev, k -> new Stagers(k, stagingSize, threads)));
                }
            }
        }
        return out;
    }

    /**
     * Rows shorter than this on average are copied from a mapping of the file instead of read one {@code pread} each:
     * a slice of an inner dimension at a high tp size has rows of a few hundred bytes, where a system call per row
     * cost three quarters of the time (docs/PERFORMANCE.md).
     */
    static final int SHORT_ROWS = 32 << 10;

    private static boolean shortRows(Piece p) {
        return p.positions().length > 1 && p.length() / p.positions().length < SHORT_ROWS
                && p.positions()[p.positions().length - 1] + p.lengths()[p.lengths().length - 1] - p.positions()[0]
                < (1L << 30);
    }

    /** Copies a piece's short rows out of the file's mapping: one view of the rows' span, sliced per row. */
    private static void copyRows(Piece p, MappedFile map) {
        int last = p.positions().length - 1;
        long first = p.positions()[0];
        ByteBuffer src = map.byteBuffer(first, (int) (p.positions()[last] + p.lengths()[last] - first));
        ByteBuffer dst = p.dest().region().byteBuffer(p.dstOffset(), p.length());
        int at = 0;
        try {
            for (int i = 0; i <= last; i++) {
                dst.put(at, src, (int) (p.positions()[i] - first), p.lengths()[i]);
                at += p.lengths()[i];
            }
        } catch (InternalError fault) {
            // the JVM's word for SIGBUS on mapped memory: the file shrank under the mapping
            throw new WeightLoaderException("tensor '" + p.dest().spec().name() + "' of " + p.src().file().path()
                    + " could not be read through its memory mapping: the file was truncated or replaced during the"
                    + " load (" + fault.getMessage() + "); nothing was loaded", fault);
        }
    }

    /** The file's mapping for this load, made on first use (and checked against the header's length). */
    private static MappedFile mapping(Map<Path, MappedFile> maps, SafetensorsFile f) {
        return maps.computeIfAbsent(f.path(), path -> {
            MappedFile m = MappedFile.map(path);
            long needed = f.dataStart() + f.entries().values().stream().mapToLong(SafetensorsFile.Entry::end).max()
                    .orElse(0);
            if (m.length() < needed) {
                m.close();
                throw new SafetensorsFormatException(path, "is " + m.length() + " bytes now, but its header needs "
                        + needed + ": the file was truncated after it was opened; nothing was loaded");
            }
            return m;
        });
    }

    private static void readPiece(Piece p, FileSource src) throws IOException {
        long at = p.dstOffset();
        for (int i = 0; i < p.positions().length; i++) {
            src.read(p.positions()[i], p.dest().region().byteBuffer(at, p.lengths()[i]), p.dest().spec().name());
            at += p.lengths()[i];
        }
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
        List<String> sums = Checksums.sha256Held(request.tensors(), threads);
        Map<String, String> out = new HashMap<>();
        for (int i = 0; i < sums.size(); i++) {
            out.put(request.tensors().get(i).spec().name(), sums.get(i));
        }
        return out;
    }

    /** Tests: runs in {@link #map} once every file is mapped and checked, before a tensor is read. */
    volatile Runnable afterMapping = () -> { };

    @Override
    public MappedWeights map(List<TensorSpec> expected, boolean checksum) {
        TensorMatcher.check("checkpoint " + checkpoint.root(), available(), expected, false);
        return new MappedLoad(checkpoint, pool, name(), source(), afterMapping).map(expected, checksum);
    }

    @Override
    public void close() {
        Thread t = preparing;
        if (t != null) {
            try {
                t.join(); // its stagers are closed below, not leaked
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        pool.shutdownNow();
        synchronized (stagerCache) {
            stagerCache.values().forEach(Stagers::close);
            stagerCache.clear();
        }
    }
}
