package io.weightloader.memory.cuda;

import io.weightloader.api.Device;
import io.weightloader.api.OwnedRegion;

/**
 * GPU memory whose addresses outlive its physical memory (CUDA's virtual memory management), for the memory saver: a
 * host's pointers into its weights (captured CUDA graphs, kernels' arguments) stay valid across a release and a
 * resume.
 *
 * <p>{@link #allocate} reserves the address range once ({@code cuMemAddressReserve}, the size rounded up to the
 * allocation granularity from {@code cuMemGetAllocationGranularity}) and maps physical memory there ({@link #map}:
 * {@code cuMemCreate}, a pinned allocation on the device; {@code cuMemMap}; {@code cuMemSetAccess} read/write for the
 * device and for every GPU that can access it peer to peer, as {@code cudaMalloc} memory is; then zeroed). {@link #release} waits for the device's queued work, unmaps ({@code cuMemUnmap}) and releases
 * the physical allocation ({@code cuMemRelease}): the GPU's free memory rises by {@link #reservedBytes()} and the range
 * stays reserved, so {@link #map} puts new physical memory at the same address. {@link #close} (safe twice) unmaps,
 * releases and frees the reservation ({@code cuMemAddressFree}).
 *
 * <p>Unlike released host memory, which reads zeros, released GPU memory is not mapped: a kernel or copy that touches
 * it faults (an illegal address, which breaks the process's CUDA context). Nothing may use it between
 * {@link #release} and {@link #map}.
 *
 * <p>Mooncake's {@code nvlink_intra} cannot export this memory (it uses {@code cudaIpcGetMemHandle}, which refuses
 * memory from {@code cuMemCreate}); see docs/ARCHITECTURE.md, "Mooncake and released memory".
 */
public final class VirtualDeviceArena extends OwnedRegion {
    private final long reserved;
    private final long granularity;
    /** The GPUs given read/write access: the arena's own, then its peers. */
    private final int[] accessors;
    /** The physical allocation mapped at the range, or 0 while released. */
    private long handle;

    private VirtualDeviceArena(Device device, long address, long length, long reserved, long granularity,
                               int[] accessors) {
        super(address, length, device);
        this.reserved = reserved;
        this.granularity = granularity;
        this.accessors = accessors;
    }

    /**
     * Reserves an address range for {@code bytes} (at least one granule) on {@code device} and maps zeroed physical
     * memory there.
     *
     * @throws io.weightloader.api.WeightLoaderException naming the failed call and the device (for example a GPU
     *                                                   without virtual memory management, or out of memory)
     */
    public static VirtualDeviceArena allocate(Device device, long bytes) {
        if (device.isHost()) {
            throw new IllegalArgumentException("not a CUDA device: " + device);
        }
        if (bytes < 0) {
            throw new IllegalArgumentException("negative allocation size " + bytes);
        }
        VirtualMemory.requireSupported(device);
        long granularity = VirtualMemory.granularity(device);
        int[] accessors = VirtualMemory.accessors(device);
        long size = roundUp(Math.max(bytes, 1), granularity);
        long address = VirtualMemory.reserve(device, size, granularity);
        VirtualDeviceArena arena = new VirtualDeviceArena(device, address, bytes, size, granularity, accessors);
        try {
            arena.map();
        } catch (RuntimeException | Error e) {
            try {
                arena.close();
            } catch (RuntimeException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
        return arena;
    }

    /** {@code bytes} rounded up to a whole number of {@code granularity} (a positive power of two or not). */
    public static long roundUp(long bytes, long granularity) {
        if (bytes < 0 || granularity <= 0) {
            throw new IllegalArgumentException("cannot round " + bytes + " bytes to a granularity of " + granularity);
        }
        return Math.multiplyExact(Math.addExact(bytes, granularity - 1) / granularity, granularity);
    }

    /** Bytes reserved, and mapped while not released: {@link #length()} rounded up to {@link #granularity()}. */
    public long reservedBytes() {
        return reserved;
    }

    /** The allocation granularity the range was rounded to. */
    public long granularity() {
        return granularity;
    }

    /** Whether physical memory is mapped at the range (false between {@link #release} and {@link #map}). */
    public synchronized boolean mapped() {
        return handle != 0;
    }

    /**
     * Maps new physical memory at the same address, zeroed (a no-op while mapped): {@code cuMemCreate},
     * {@code cuMemMap}, {@code cuMemSetAccess}, {@code cudaMemset}. On failure (for example the GPU's memory was taken
     * meanwhile) the arena stays released, and this can be called again.
     */
    public synchronized void map() {
        long address = address(); // refuses a closed arena
        if (handle != 0) {
            return;
        }
        Device device = device();
        VirtualMemory.use(device);
        long h = VirtualMemory.create(device, reserved);
        try {
            VirtualMemory.map(device, address, reserved, h, accessors);
        } catch (RuntimeException | Error e) {
            try {
                VirtualMemory.release(device, h);
            } catch (RuntimeException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
        handle = h;
        VirtualMemory.zero(device, address, reserved);
    }

    /**
     * Gives the physical memory back (a no-op while released): waits for the device's queued work
     * ({@code cudaDeviceSynchronize}), then {@code cuMemUnmap} and {@code cuMemRelease}. The address range stays
     * reserved for {@link #map}.
     */
    public synchronized void release() {
        long address = address(); // refuses a closed arena
        if (handle == 0) {
            return;
        }
        Device device = device();
        VirtualMemory.use(device);
        VirtualMemory.unmap(device, address, reserved);
        long h = handle;
        handle = 0;
        VirtualMemory.release(device, h);
    }

    /** Fills the arena with zeros. */
    public VirtualDeviceArena zero() {
        synchronized (this) {
            if (handle == 0) {
                throw new IllegalStateException(describe() + " is released: map it first");
            }
        }
        VirtualMemory.use(device());
        VirtualMemory.zero(device(), address(), reserved);
        return this;
    }

    @Override
    protected String describe() {
        return "virtual-memory arena on " + device() + " (" + reserved + " bytes reserved)";
    }

    @Override
    protected synchronized void free(long address, long length) {
        Device device = device();
        VirtualMemory.use(device);
        RuntimeException failure = null;
        if (handle != 0) {
            try {
                VirtualMemory.unmap(device, address, reserved);
                long h = handle;
                handle = 0;
                VirtualMemory.release(device, h);
            } catch (RuntimeException e) {
                failure = e;
            }
        }
        if (handle == 0) { // an arena still mapped cannot give its range back
            try {
                VirtualMemory.free(device, address, reserved);
            } catch (RuntimeException e) {
                if (failure == null) {
                    failure = e;
                } else {
                    failure.addSuppressed(e);
                }
            }
        }
        if (failure != null) {
            throw failure;
        }
    }

    @Override
    public String toString() {
        return describe() + (mapped() ? "" : ", released");
    }
}
