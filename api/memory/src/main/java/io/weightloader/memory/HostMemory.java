package io.weightloader.memory;

import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.WeightLoaderException;
import com.sun.jna.Pointer;
import io.weightloader.memory.internal.LibC;
import java.lang.ref.Cleaner;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Page-aligned off-heap host memory of any size (also above 2 GiB), freed by {@link #close()}.
 *
 * <p>{@code close()} is safe to call twice. Memory that is garbage-collected without being closed is freed
 * and reported as a leak; run with {@code -Dweightloader.leak.detail=true} to see where it was allocated.
 */
public final class HostMemory implements MemoryRegion, AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(HostMemory.class);
    private static final Cleaner CLEANER = Cleaner.create();
    private static final AtomicLong LIVE_BYTES = new AtomicLong();
    private static final boolean LEAK_DETAIL = Boolean.getBoolean("weightloader.leak.detail");

    private final long address;
    private final long length;
    private final State state;
    private final Cleaner.Cleanable cleanable;

    private HostMemory(long address, long length, State state) {
        this.address = address;
        this.length = length;
        this.state = state;
        this.cleanable = CLEANER.register(this, state);
    }

    /** Allocates {@code bytes} of page-aligned, uninitialised host memory. */
    public static HostMemory allocate(long bytes) {
        return allocate(bytes, LibC.pageSize());
    }

    /** Allocates {@code bytes} aligned to {@code alignment} (a power of two, at least the pointer size). */
    public static HostMemory allocate(long bytes, long alignment) {
        LibC.require();
        if (bytes < 0) {
            throw new IllegalArgumentException("negative allocation size " + bytes);
        }
        if (Long.bitCount(alignment) != 1 || alignment < 8) {
            throw new IllegalArgumentException("alignment must be a power of two >= 8, got " + alignment);
        }
        long[] out = new long[1];
        int rc = LibC.posix_memalign(out, alignment, Math.max(bytes, 1));
        if (rc != 0 || out[0] == 0) {
            throw new WeightLoaderException("cannot allocate " + bytes + " bytes of host memory (posix_memalign rc "
                    + rc + ")");
        }
        LIVE_BYTES.addAndGet(bytes);
        State state = new State(out[0], bytes, false, LEAK_DETAIL ? new Throwable("allocated here") : null);
        return new HostMemory(out[0], bytes, state);
    }

    /**
     * Maps {@code bytes} (rounded up to whole pages) of private anonymous memory, zero-filled: memory whose pages
     * {@link #releasePages()} can give back to the kernel while its addresses stay valid (the memory saver).
     */
    public static HostMemory map(long bytes) {
        LibC.require();
        if (bytes < 0) {
            throw new IllegalArgumentException("negative allocation size " + bytes);
        }
        long page = LibC.pageSize();
        long size = Math.max(page, (bytes + page - 1) / page * page);
        Pointer p = LibC.mmap(null, size, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS,
                -1, 0);
        long address = Pointer.nativeValue(p);
        if (address == -1 || address == 0) {
            throw new WeightLoaderException("cannot map " + size + " bytes of host memory (mmap: " + LibC.lastError()
                    + ")");
        }
        LIVE_BYTES.addAndGet(size);
        State state = new State(address, size, true, LEAK_DETAIL ? new Throwable("allocated here") : null);
        return new HostMemory(address, bytes, state);
    }

    /** Whether {@link #releasePages()} can give this memory's pages back (it was made by {@link #map}). */
    public boolean releasable() {
        return state.mapped;
    }

    /**
     * Gives every page back to the kernel ({@code madvise(MADV_DONTNEED)}): the process's resident memory drops by
     * this memory's size, the addresses stay valid, and reading them gives zeros until they are written again.
     */
    public void releasePages() {
        checkOpen();
        if (!state.mapped) {
            throw new IllegalStateException("this host memory was allocated with posix_memalign, not mapped: its pages"
                    + " cannot be released (HostMemory.map makes releasable memory)");
        }
        if (LibC.madvise(new Pointer(address), state.length, LibC.MADV_DONTNEED) != 0) {
            throw new WeightLoaderException("madvise(MADV_DONTNEED) of " + state.length + " bytes failed: "
                    + LibC.lastError());
        }
    }

    /**
     * Faults every page in, writable, in one call ({@code MADV_POPULATE_WRITE}), so that refilling does not take a
     * page fault per page.
     *
     * @return false where the kernel does not support it (before Linux 5.14): the pages then fault in as written
     */
    public boolean populate() {
        checkOpen();
        return state.mapped && LibC.madvise(new Pointer(address), state.length, LibC.MADV_POPULATE_WRITE) == 0;
    }

    /** Bytes currently allocated and not yet closed, across all instances (for leak checks). */
    public static long liveBytes() {
        return LIVE_BYTES.get();
    }

    @Override
    public long address() {
        checkOpen();
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

    /** Fills the memory with zeros. */
    public HostMemory zero() {
        checkOpen();
        LibC.memset(new Pointer(address), 0, length);
        return this;
    }

    public boolean isClosed() {
        return state.freed.get();
    }

    private void checkOpen() {
        if (state.freed.get()) {
            throw new IllegalStateException("host memory of " + length + " bytes is closed");
        }
    }

    @Override
    public void close() {
        state.closedExplicitly = true;
        cleanable.clean();
    }

    @Override
    public String toString() {
        return "HostMemory[" + length + " bytes @0x" + Long.toHexString(address) + "]";
    }

    private static final class State implements Runnable {
        final long address;
        final long length;
        final boolean mapped;
        final Throwable origin;
        final AtomicBoolean freed = new AtomicBoolean();
        volatile boolean closedExplicitly;

        State(long address, long length, boolean mapped, Throwable origin) {
            this.address = address;
            this.length = length;
            this.mapped = mapped;
            this.origin = origin;
        }

        @Override
        public void run() {
            if (freed.compareAndSet(false, true)) {
                if (mapped) {
                    LibC.munmap(new Pointer(address), length);
                } else {
                    LibC.free(new Pointer(address));
                }
                LIVE_BYTES.addAndGet(-length);
                if (!closedExplicitly) {
                    if (origin != null) {
                        LOG.warn("LEAK: HostMemory of {} bytes was garbage-collected without close()", length, origin);
                    } else {
                        LOG.warn("LEAK: HostMemory of {} bytes was garbage-collected without close(); "
                                + "run with -Dweightloader.leak.detail=true to see where it was allocated", length);
                    }
                }
            }
        }
    }
}
