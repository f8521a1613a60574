package io.weightloader.backend.local;

import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.MappedFile;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.concurrent.Phaser;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * One zero-copy load ({@link LocalBackend#map}): maps every file of the checkpoint, hashes the tensors through the
 * mappings when asked, and hands the mappings to the caller, or unmaps them on any failure.
 *
 * <p>A file that shrinks under its mapping makes reads of the lost pages fault (SIGBUS, which the JVM turns into an
 * {@link InternalError} during a copy), and a read of a mapping that was unmapped kills the JVM (SIGSEGV). So: no
 * mapping is unmapped while any hashing task may still read it (after a failure the others stop at their next piece
 * and every started task is waited for), and each file's size is checked against its header before the mapping is
 * used and again after the tensors were read, so a file truncated during the load is one error naming it and both
 * sizes, never a checksum of bytes that are no longer the file's.
 */
final class MappedLoad {
    /** Tensors are hashed in pieces of this size; a task stops between pieces once another has failed. */
    private static final int HASH_PIECE = 16 << 20;

    private final SafetensorsCheckpoint checkpoint;
    private final ExecutorService pool;
    private final String backend;
    private final String source;
    private final Runnable afterMapping;

    /**
     * @param afterMapping runs once every file is mapped and checked, before a tensor is read (tests truncate a file
     *                     there, under its mapping)
     */
    MappedLoad(SafetensorsCheckpoint checkpoint, ExecutorService pool, String backend, String source,
               Runnable afterMapping) {
        this.checkpoint = checkpoint;
        this.pool = pool;
        this.backend = backend;
        this.source = source;
        this.afterMapping = afterMapping;
    }

    MappedWeights map(List<TensorSpec> expected, boolean checksum) {
        long t0 = System.nanoTime();
        Map<Path, MappedFile> maps = new LinkedHashMap<>();
        boolean ok = false;
        try {
            for (SafetensorsFile f : checkpoint.files()) {
                MappedFile m = MappedFile.map(f.path());
                maps.put(f.path(), m);
                if (m.length() < f.fileSize()) {
                    throw truncated(f, m.length(), "after it was opened");
                }
            }
            afterMapping.run();
            Map<String, MemoryRegion> regions = new LinkedHashMap<>();
            for (TensorSpec s : expected) {
                SafetensorsCheckpoint.Located l = checkpoint.tensors().get(s.name());
                regions.put(s.name(), l.entry().bytes() == 0 ? MemoryRegion.of(0, 0, Device.CPU)
                        : maps.get(l.file().path()).slice(l.fileOffset(), l.entry().bytes()));
            }
            Map<String, String> sums = checksum ? hashAll(regions) : Map.of();
            // a file cut short within its last page reads as zeros there instead of faulting: only its size tells
            for (SafetensorsFile f : checkpoint.files()) {
                long now = sizeNow(f.path());
                if (now >= 0 && now < f.fileSize()) {
                    throw truncated(f, now, "while it was mapped");
                }
            }
            List<TensorReport> reports = new ArrayList<>();
            long total = 0;
            for (TensorSpec s : expected) {
                reports.add(TensorReport.of(s, sums.get(s.name())));
                total += s.byteSize();
            }
            LoadReport report = LoadReport.builder(backend).engine("mmap").source(source).device(Device.CPU.toString())
                    .tensors(reports).totalBytes(total).seconds((System.nanoTime() - t0) / 1e9).build();
            Map<String, MemoryRegion> view = Collections.unmodifiableMap(regions);
            ok = true;
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
        } finally {
            if (!ok) {
                // every hashing task has ended (hashAll waits for them), so nothing reads these any more
                maps.values().forEach(MappedFile::close);
            }
        }
    }

    /**
     * SHA-256 of every region on the backend's pool. Returns or throws only once no task reads a region any more: after
     * a failure the stop flag ends the others at their next piece and tasks not yet started read nothing.
     */
    private Map<String, String> hashAll(Map<String, MemoryRegion> regions) {
        AtomicBoolean stop = new AtomicBoolean();
        Phaser running = new Phaser(1); // this thread, plus each task while it runs
        Map<String, Future<String>> futures = new LinkedHashMap<>();
        RuntimeException failure = null;
        boolean interrupted = false;
        try {
            regions.forEach((name, region) -> futures.put(name, pool.submit(() -> {
                running.register();
                try {
                    return stop.get() ? null : sha256(name, region, stop);
                } finally {
                    running.arriveAndDeregister();
                }
            })));
            Map<String, String> out = new HashMap<>();
            for (Map.Entry<String, Future<String>> e : futures.entrySet()) {
                try {
                    out.put(e.getKey(), e.getValue().get());
                } catch (ExecutionException ex) {
                    Throwable c = ex.getCause();
                    failure = c instanceof WeightLoaderException w ? w
                            : new WeightLoaderException("hashing tensor '" + e.getKey() + "' failed: " + c, c);
                    break;
                } catch (InterruptedException ex) {
                    interrupted = true;
                    failure = new WeightLoaderException("zero-copy load of " + source + " interrupted", ex);
                    break;
                }
            }
            if (failure == null) {
                return out;
            }
        } catch (RuntimeException e) { // a pool that no longer takes tasks
            failure = e;
        } finally {
            stop.set(true);
            running.arriveAndAwaitAdvance(); // not interruptible: the mappings must outlive every reader
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
        throw failure;
    }

    private String sha256(String name, MemoryRegion region, AtomicBoolean stop) {
        MessageDigest md = Checksums.newSha256();
        try {
            for (long off = 0; off < region.length(); off += HASH_PIECE) {
                if (stop.get()) {
                    return null;
                }
                md.update(region.byteBuffer(off, (int) Math.min(HASH_PIECE, region.length() - off)));
            }
        } catch (InternalError fault) {
            // the JVM's word for SIGBUS on mapped memory: the file shrank under the mapping
            stop.set(true);
            SafetensorsFile f = checkpoint.tensors().get(name).file();
            long now = sizeNow(f.path());
            String why = now >= 0 && now < f.fileSize()
                    ? "the file is now " + now + " bytes but its header needs " + f.fileSize()
                    + " (truncated while mapped)"
                    : "the file was truncated or replaced while mapped (" + fault.getMessage() + ")";
            throw new SafetensorsFormatException(f.path(), name, "could not be read through its memory mapping: "
                    + why + "; nothing was loaded", fault);
        }
        return HexFormat.of().formatHex(md.digest());
    }

    private static SafetensorsFormatException truncated(SafetensorsFile f, long now, String when) {
        return new SafetensorsFormatException(f.path(), "is " + now + " bytes now, but its header needs "
                + f.fileSize() + ": the file was truncated " + when + "; nothing was loaded");
    }

    /** The file's size now, or -1 when it cannot be read (the error then comes from the read itself). */
    private static long sizeNow(Path path) {
        try {
            return Files.size(path);
        } catch (IOException e) {
            return -1;
        }
    }
}
