package io.weightloader.api;

import java.util.Objects;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Native memory owned by this object: a region that frees itself exactly once on {@link #close()} (safe to call
 * twice) and refuses to hand out its address afterwards.
 */
public abstract class OwnedRegion implements MemoryRegion, AutoCloseable {
    private final long address;
    private final long length;
    private final Device device;
    private final AtomicBoolean closed = new AtomicBoolean();

    protected OwnedRegion(long address, long length, Device device) {
        this.address = address;
        this.length = length;
        this.device = Objects.requireNonNull(device, "device is null");
    }

    /** What this memory is, for messages (e.g. {@code device arena on cuda:0}). */
    protected abstract String describe();

    /** Releases the memory; called once. */
    protected abstract void free(long address, long length);

    @Override
    public final long address() {
        if (closed.get()) {
            throw new IllegalStateException(describe() + " is closed");
        }
        return address;
    }

    @Override
    public final long length() {
        return length;
    }

    @Override
    public final Device device() {
        return device;
    }

    @Override
    public final void close() {
        if (closed.compareAndSet(false, true)) {
            free(address, length);
        }
    }
}
