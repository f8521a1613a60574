package io.weightloader.memory;

import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.memory.cuda.DeviceArena;
import java.util.ArrayList;
import java.util.List;

/**
 * One allocation holding many tensors, host or GPU: what a host (or the command line) uses to give every tensor
 * a destination. On a GPU it is a single {@link DeviceArena}, so a seed registers one region.
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
     * As {@link #allocate(Device, List)}; {@code releasable}: host memory whose pages {@link #releasePages()} gives
     * back while its addresses stay (the memory saver; an anonymous mapping instead of {@code posix_memalign}). GPU
     * arenas cannot be released yet: asking for one is refused.
     */
    public static TensorArena allocate(Device device, List<TensorSpec> specs, boolean releasable) {
        if (releasable && !device.isHost()) {
            throw new WeightLoaderException("releasing GPU memory (weight-loader.enable-memory-saver on " + device
                    + ") is not supported yet: only host memory can be released and resumed");
        }
        long[] offsets = layout(specs);
        long size = Math.max(offsets[specs.size()], ALIGNMENT);
        AutoCloseable owner;
        MemoryRegion region;
        if (device.isHost()) {
            HostMemory m = releasable ? HostMemory.map(size) : HostMemory.allocate(size);
            owner = m;
            region = m;
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
        return owner instanceof HostMemory m && m.releasable();
    }

    /**
     * Gives the arena's pages back to the kernel; its addresses, and every destination's, stay valid and read zeros
     * until written again ({@link #populate()} then a refill).
     *
     * @throws IllegalStateException unless the arena is {@link #releasable()}
     */
    public void releasePages() {
        if (!releasable()) {
            throw new IllegalStateException("this arena's memory cannot be released (allocate it releasable: host"
                    + " memory, TensorArena.allocate(device, specs, true))");
        }
        ((HostMemory) owner).releasePages();
    }

    /** A copy of the whole arena in new host memory (the caller closes it): a host copy to refill from. */
    public HostMemory copyToHost() {
        if (!region.device().isHost()) {
            throw new IllegalStateException("a host copy of " + region.device() + " memory is not supported yet");
        }
        HostMemory copy = HostMemory.allocate(region.length());
        io.weightloader.memory.internal.LibC.memcpy(new com.sun.jna.Pointer(copy.address()),
                new com.sun.jna.Pointer(region.address()), region.length());
        return copy;
    }

    /** Refills the whole arena from {@code copy} ({@link #copyToHost()}). */
    public void copyFrom(HostMemory copy) {
        if (copy.length() != region.length() || !region.device().isHost()) {
            throw new IllegalArgumentException("a copy of " + copy.length() + " bytes cannot refill " + region);
        }
        io.weightloader.memory.internal.LibC.memcpy(new com.sun.jna.Pointer(region.address()),
                new com.sun.jna.Pointer(copy.address()), region.length());
    }

    /** Maps the arena's pages in again before a refill; false where the kernel cannot do it in one call. */
    public boolean populate() {
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
