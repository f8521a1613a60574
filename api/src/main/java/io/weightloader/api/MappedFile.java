package io.weightloader.api;

import com.sun.jna.Pointer;
import io.weightloader.api.internal.LibC;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A whole file memory-mapped read-only into host memory (any size), unmapped by {@link #close()}.
 * Regions sliced from it are zero-copy views of the file's page cache.
 */
public final class MappedFile implements MemoryRegion, AutoCloseable {
    private final Path path;
    private final long address;
    private final long length;
    private final AtomicBoolean closed = new AtomicBoolean();

    private MappedFile(Path path, long address, long length) {
        this.path = path;
        this.address = address;
        this.length = length;
    }

    public static MappedFile map(Path path) {
        long size;
        try {
            size = Files.size(path);
        } catch (IOException e) {
            throw new WeightLoaderException("cannot map " + path + ": " + e.getMessage(), e);
        }
        if (size == 0) {
            return new MappedFile(path, 0, 0);
        }
        int fd = LibC.open(path.toString(), LibC.O_RDONLY);
        if (fd < 0) {
            throw new WeightLoaderException("cannot open " + path + " for mapping (" + LibC.lastError() + ")");
        }
        try {
            Pointer p = LibC.mmap(null, size, LibC.PROT_READ, LibC.MAP_SHARED, fd, 0);
            long addr = Pointer.nativeValue(p);
            if (addr == -1L || addr == 0L) {
                throw new WeightLoaderException("cannot mmap " + path + " (" + size + " bytes, "
                        + LibC.lastError() + ")");
            }
            LibC.madvise(p, size, LibC.MADV_WILLNEED);
            return new MappedFile(path, addr, size);
        } finally {
            LibC.close(fd);
        }
    }

    public Path path() {
        return path;
    }

    @Override
    public long address() {
        if (closed.get()) {
            throw new IllegalStateException("mapping of " + path + " is closed");
        }
        return address;
    }

    @Override
    public long length() {
        return length;
    }

    @Override
    public Device device() {
        return Device.CPU;
    }

    @Override
    public void close() {
        if (closed.compareAndSet(false, true) && length > 0) {
            LibC.munmap(new Pointer(address), length);
        }
    }
}
