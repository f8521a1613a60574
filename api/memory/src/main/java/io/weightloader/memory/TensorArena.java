package io.weightloader.memory;

import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.memory.cuda.DeviceArena;
import io.weightloader.memory.cuda.DeviceCopies;
import io.weightloader.memory.cuda.VirtualDeviceArena;
import java.util.ArrayList;
import java.util.List;

/**
 * One allocation holding many tensors, host or GPU: what a host (or the command line) uses to give every tensor
 * a destination. On a GPU it is a single {@link DeviceArena} (or, releasable, one {@link VirtualDeviceArena}), so a
 * seed registers one region.
 */
public final class TensorArena implements AutoCloseable {
    /** Tensors start at multiples of this (enough for any dtype and for GPU kernels). */
    public static final long ALIGNMENT = io.weightloader.memory.cuda.DeviceArena.ALIGNMENT;

    private final AutoCloseable owner;
    private final MemoryRegion region;
    private final List<TensorDestination> destinations;

    private TensorArena(AutoCloseable owner, MemoryRegion region, List<TensorDestination> destinations) {
        this.owner = owner;
        this.region = region;
        this.destinations = List.copyOf(destinations);
    }

    /** Byte offset of each tensor and, last, the total size. */
    public static long[] layout(List<TensorSpec> specs) {
        long[] offsets = new long[specs.size() + 1];
        long at = 0;
        for (int i = 0; i < specs.size(); i++) {
            offsets[i] = at;
            at = Math.addExact(at, (specs.get(i).byteSize() + ALIGNMENT - 1) & -ALIGNMENT);
        }
        offsets[specs.size()] = at;
        return offsets;
    }

    public static TensorArena allocate(Device device, List<TensorSpec> specs) {
        return allocate(device, specs, false);
    }

    /**
     * As {@link #allocate(Device, List)}; {@code releasable}: memory whose pages {@link #releasePages()} gives back
     * while its addresses stay (the memory saver). On the host an anonymous mapping instead of {@code posix_memalign};
     * on a GPU a {@link VirtualDeviceArena} (an address range reserved once, physical memory mapped and unmapped there)
     * instead of {@code cudaMalloc}.
     */
    public static TensorArena allocate(Device device, List<TensorSpec> specs, boolean releasable) {
        long[] offsets = layout(specs);
        long size = Math.max(offsets[specs.size()], ALIGNMENT);
        AutoCloseable owner;
        MemoryRegion region;
        if (device.isHost()) {
            HostMemory m = releasable ? HostMemory.map(size) : HostMemory.allocate(size);
            owner = m;
            region = m;
        } else if (releasable) {
            VirtualDeviceArena a = VirtualDeviceArena.allocate(device, size);
            owner = a;
            region = a;
        } else {
            DeviceArena a = DeviceArena.allocate(device, size);
            owner = a;
            region = a;
        }
        List<TensorDestination> d = new ArrayList<>(specs.size());
        for (int i = 0; i < specs.size(); i++) {
            d.add(new TensorDestination(specs.get(i), region.slice(offsets[i], specs.get(i).byteSize())));
        }
        return new TensorArena(owner, region, d);
    }

    public List<TensorDestination> destinations() {
        return destinations;
    }

    public MemoryRegion region() {
        return region;
    }

    /** Whether {@link #releasePages()} can give this arena's pages back. */
    public boolean releasable() {
        return (owner instanceof HostMemory m && m.releasable()) || owner instanceof VirtualDeviceArena;
    }

    /**
     * Physical bytes {@link #releasePages()} gives back: the mapping's whole pages on the host, the reservation's
     * whole granules on a GPU; 0 for an arena that is not {@link #releasable()}.
     */
    public long releasableBytes() {
        if (owner instanceof VirtualDeviceArena v) {
            return v.reservedBytes();
        }
        return releasable() ? region.length() : 0;
    }

    /**
     * Gives the arena's memory back; its addresses, and every destination's, stay valid for {@link #populate()} and
     * a refill. Host memory: the kernel takes the pages ({@code madvise(MADV_DONTNEED)}) and they read zeros until
     * written again. GPU memory: the physical memory is unmapped and released once the device's queued work is done
     * (the GPU's free memory rises by {@link #releasableBytes()}); the range stays reserved, and nothing may touch it
     * until {@link #populate()} (it is not mapped: an access faults).
     *
     * @throws IllegalStateException unless the arena is {@link #releasable()}
     */
    public void releasePages() {
        if (owner instanceof VirtualDeviceArena v) {
            v.release();
        } else if (owner instanceof HostMemory m && m.releasable()) {
            m.releasePages();
        } else {
            throw new IllegalStateException("this arena's memory on " + region.device() + " cannot be released: it"
                    + " was allocated with " + (region.device().isHost() ? "posix_memalign" : "cudaMalloc")
                    + ", not releasable (TensorArena.allocate(device, specs, true): an anonymous mapping on the host,"
                    + " CUDA virtual memory on a GPU)");
        }
    }

    /** Whether the arena's memory is released ({@link #releasePages()}) and not yet {@link #populate() populated}. */
    public boolean released() {
        return owner instanceof VirtualDeviceArena v && !v.mapped();
    }

    /** A copy of the whole arena in new host memory (the caller closes it): a host copy to refill from. */
    public HostMemory copyToHost() {
        checkMapped("copied");
        HostMemory copy = HostMemory.allocate(region.length());
        try {
            if (region.device().isHost()) {
                io.weightloader.memory.internal.LibC.memcpy(new com.sun.jna.Pointer(copy.address()),
                        new com.sun.jna.Pointer(region.address()), region.length());
            } else {
                DeviceCopies.copy(copy, 0, region, 0, region.length());
            }
        } catch (RuntimeException | Error e) {
            copy.close();
            throw e;
        }
        return copy;
    }

    /** Refills the whole arena from {@code copy} ({@link #copyToHost()}). */
    public void copyFrom(HostMemory copy) {
        if (copy.length() != region.length()) {
            throw new IllegalArgumentException("a copy of " + copy.length() + " bytes cannot refill " + region);
        }
        checkMapped("refilled");
        if (region.device().isHost()) {
            io.weightloader.memory.internal.LibC.memcpy(new com.sun.jna.Pointer(region.address()),
                    new com.sun.jna.Pointer(copy.address()), region.length());
        } else {
            DeviceCopies.copy(region, 0, copy, 0, region.length());
        }
    }

    private void checkMapped(String what) {
        if (released()) {
            throw new IllegalStateException("this arena's memory on " + region.device() + " is released and cannot be "
                    + what + ": populate() it first");
        }
    }

    /**
     * Maps the arena's memory in again before a refill, at the same addresses. Host memory: faults every page in,
     * writable, in one call; false where the kernel cannot (the pages then fault in as written). GPU memory: new
     * physical memory mapped and zeroed (true), or an error naming the call and the device (the arena stays released).
     */
    public boolean populate() {
        if (owner instanceof VirtualDeviceArena v) {
            v.map();
            return true;
        }
        return owner instanceof HostMemory m && m.populate();
    }

    @Override
    public void close() {
        try {
            owner.close();
        } catch (Exception e) {
            throw new WeightLoaderException("freeing a tensor arena failed: " + e.getMessage(), e);
        }
    }
}
