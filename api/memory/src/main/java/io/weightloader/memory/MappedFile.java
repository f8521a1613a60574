package io.weightloader.memory;

import io.weightloader.api.Device;
import io.weightloader.api.OwnedRegion;
import io.weightloader.api.WeightLoaderException;
import com.sun.jna.Pointer;
import io.weightloader.memory.internal.LibC;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * A whole file memory-mapped read-only into host memory (any size), unmapped by {@link #close()}.
 * Regions sliced from it are zero-copy views of the file's page cache.
 */
public final class MappedFile extends OwnedRegion {
    private final Path path;

    private MappedFile(Path path, long address, long length) {
        super(address, length, Device.CPU);
        this.path = path;
    }

    public static MappedFile map(Path path) {
        LibC.require();
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
    protected String describe() {
        return "mapping of " + path;
    }

    @Override
    protected void free(long address, long length) {
        if (length > 0) {
            LibC.munmap(new Pointer(address), length);
        }
    }
}
