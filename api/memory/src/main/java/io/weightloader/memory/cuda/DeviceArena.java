package io.weightloader.memory.cuda;

import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.OwnedRegion;
import io.weightloader.api.WeightLoaderException;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.PointerPointer;

/**
 * One {@code cudaMalloc} block per device with tensors sub-allocated inside it (256-byte aligned), so a seed
 * registers a single region with its engine. Freed by {@link #close()} (safe twice).
 */
public final class DeviceArena extends OwnedRegion {
    public static final long ALIGNMENT = 256;

    private long used;

    private DeviceArena(Device device, long address, long length) {
        super(address, length, device);
    }

    public static DeviceArena allocate(Device device, long bytes) {
        Cuda.use(device);
        try (PointerPointer<?> out = new PointerPointer<>(1)) {
            Cuda.check(cudart.cudaMalloc(out, Math.max(bytes, 1)), "cudaMalloc(" + bytes + " bytes) on " + device);
            return new DeviceArena(device, out.get(0).address(), bytes);
        }
    }

    /** The next {@code bytes} of the arena, aligned to {@link #ALIGNMENT}. */
    public synchronized MemoryRegion take(long bytes) {
        long start = (used + ALIGNMENT - 1) & -ALIGNMENT;
        if (start + bytes > length()) {
            throw new WeightLoaderException("device arena on " + device() + " of " + length() + " bytes is full: "
                    + bytes + " more bytes requested at offset " + start);
        }
        used = start + bytes;
        return slice(start, bytes);
    }

    /** Fills the arena with zeros. */
    public DeviceArena zero() {
        Cuda.use(device());
        Cuda.check(cudart.cudaMemset(Cuda.pointer(address()), 0, length()), "cudaMemset on " + device());
        return this;
    }

    @Override
    protected String describe() {
        return "device arena on " + device();
    }

    @Override
    protected void free(long address, long length) {
        Cuda.use(device());
        Cuda.check(cudart.cudaFree(Cuda.pointer(address)), "cudaFree on " + device());
    }
}
