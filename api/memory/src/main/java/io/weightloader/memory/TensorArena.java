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
        long[] offsets = layout(specs);
        long size = Math.max(offsets[specs.size()], ALIGNMENT);
        AutoCloseable owner;
        MemoryRegion region;
        if (device.isHost()) {
            HostMemory m = HostMemory.allocate(size);
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

    @Override
    public void close() {
        try {
            owner.close();
        } catch (Exception e) {
            throw new WeightLoaderException("freeing a tensor arena failed: " + e.getMessage(), e);
        }
    }
}
