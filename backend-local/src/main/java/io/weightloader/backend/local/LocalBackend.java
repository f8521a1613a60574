package io.weightloader.backend.local;

import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMatcher;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.ZeroCopyLoader;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.Threads;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.Phaser;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Loads safetensors tensors from local files straight into the host's memory: each tensor is read with
 * positional reads ({@code pread}) directly into its destination, in pieces spread over a thread pool, with
 * no per-element Java work and no intermediate buffer. GPU destinations go through pinned staging buffers with
 * asynchronous copies overlapped with the reads ({@link GpuStager}). Zero-copy mode maps the files instead.
 *
 * <p>This class runs a load (files, pool, progress, report); {@link PiecePlan} cuts it into {@link Piece}s,
 * {@link PieceReader} moves each piece, {@link StagerCache} keeps the GPU staging buffers and {@link MappedLoad} does
 * zero-copy.
 */
public final class LocalBackend implements WeightLoaderBackend, ZeroCopyLoader {
    /** The backend's name (its provider's {@code NAME}). */
    static final String NAME = "local";
    private static final Logger LOG = LoggerFactory.getLogger(LocalBackend.class);

    private final SafetensorsCheckpoint checkpoint;
    private final int threads;
    private final int pieceSize;
    private final boolean zeroCopyPreferred;
    private final LocalIo io;
    private final Set<Path> toldBuffered = ConcurrentHashMap.newKeySet();
    private final ExecutorService pool;
    private final StagerCache stagers;

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
        this.zeroCopyPreferred = zeroCopyPreferred;
        this.pool = Executors.newFixedThreadPool(threads, Threads.daemon("weightloader-local"));
        this.stagers = new StagerCache(Math.min(stagingSize, pieceSize), threads, LOG);
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

    @Override
    public boolean loadsSlices() {
        return true;
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
                LOG.info("{} = auto: cannot read MemAvailable from"
                        + " /proc/meminfo; reading {} buffered", LocalIo.KEY, checkpoint.root());
            }
            return false;
        }
        return LocalIo.largerThanPageCache(bytes, available);
    }

    /** Runs the request's pieces on the pool, reporting progress as each ends, and waits for all of them. */
    private void copyAll(LoadRequest request, Map<Path, FileSource> channels) {
        List<Piece> pieces = PiecePlan.plan(checkpoint, request, pieceSize);
        Map<String, AtomicLong> remaining = new HashMap<>();
        for (TensorDestination d : request.tensors()) {
            remaining.put(d.spec().name(), new AtomicLong(d.byteSize()));
        }
        long total = request.totalBytes();
        int tensorCount = request.tensors().size();
        AtomicLong done = new AtomicLong();
        AtomicInteger tensorsDone = new AtomicInteger(
                (int) request.tensors().stream().filter(d -> d.byteSize() == 0).count());
        Map<Device, Stagers> used = stagers.forLoad(request);
        PieceReader reader = new PieceReader(channels, used);
        boolean ok = false;
        // pieces still running: the mappings are unmapped only once none is (a copy from an unmapped file crashes)
        Phaser running = new Phaser(1);
        AtomicBoolean stop = new AtomicBoolean();
        List<Future<?>> futures = new ArrayList<>(pieces.size());
        for (Piece p : pieces) {
            futures.add(pool.submit(() -> {
                running.register();
                try {
                    if (!stop.get()) {
                        reader.read(p);
                    }
                } finally {
                    running.arriveAndDeregister();
                }
                done.addAndGet(p.length());
                if (remaining.get(p.dest().spec().name()).addAndGet(-p.length()) == 0) {
                    tensorsDone.incrementAndGet();
                }
                report(request, done, total, tensorsDone, tensorCount);
                return null;
            }));
        }
        report(request, done, total, tensorsDone, tensorCount);
        try {
            awaitAll(futures);
            used.values().forEach(Stagers::finish);
            ok = true;
        } finally {
            stop.set(true);
            running.arriveAndAwaitAdvance();
            reader.unmap();
            if (!ok) {
                stagers.discard(used);
            }
        }
    }

    /**
     * Starts pinning {@code device}'s staging buffers on a background thread, for a backend made to load into that GPU
     * ({@code weight-loader.device}); see {@link StagerCache#prepare}.
     */
    void prepare(Device device) {
        stagers.prepare(device);
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
        stagers.awaitPreparing(); // its stagers are closed below, not leaked
        pool.shutdownNow();
        stagers.close();
    }

    /**
     * One progress call at a time, each with the counts as they are when it is made: a listener sees bytes and tensors
     * that never go back, and the last call of a load reports every byte (pieces finishing on several threads could
     * otherwise report an older count after a newer one).
     */
    private static void report(LoadRequest request, AtomicLong done, long total, AtomicInteger tensorsDone,
                               int tensorCount) {
        synchronized (done) {
            request.progress().onProgress(done.get(), total, tensorsDone.get(), tensorCount);
        }
    }
}
