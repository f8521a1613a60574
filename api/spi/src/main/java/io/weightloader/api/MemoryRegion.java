package io.weightloader.api;

import java.nio.ByteBuffer;
import java.util.Objects;

/**
 * A range of memory: a start address, a length and the device it lives on.
 *
 * <p>A region does not own its memory; owners (weightloader-memory's {@code HostMemory}, {@code MappedFile}, device arenas) are
 * {@link AutoCloseable} and hand out regions. Host regions can be viewed as direct {@link ByteBuffer}s in
 * pieces of at most 2 GiB - 1 so that tensors larger than 2 GiB are still reachable.
 */
public interface MemoryRegion {

    /** Largest piece a single {@link ByteBuffer} view can cover. */
    int MAX_VIEW = Integer.MAX_VALUE - 4096;

    long address();

    long length();

    Device device();

    /** A sub-range of this region. */
    default MemoryRegion slice(long offset, long length) {
        Objects.checkFromIndexSize(offset, length, length());
        return of(address() + offset, length, device());
    }

    /** A direct buffer over {@code [offset, offset + length)} of this host region. */
    default ByteBuffer byteBuffer(long offset, int length) {
        if (!device().isHost()) {
            throw new UnsupportedOperationException("no host view of " + device() + " memory");
        }
        Objects.checkFromIndexSize(offset, length, length());
        if (length == 0) {
            return ByteBuffer.allocateDirect(0);
        }
        return io.weightloader.api.spi.NativeAccess.get().view(address() + offset, length);
    }

    static MemoryRegion of(long address, long length, Device device) {
        return new Simple(address, length, device);
    }

    /** A plain region value. */
    record Simple(long address, long length, Device device) implements MemoryRegion {
        public Simple {
            Objects.requireNonNull(device, "device is null");
            if (length < 0) {
                throw new IllegalArgumentException("negative region length " + length);
            }
        }
    }
}
