package io.weightloader.api.cuda;

import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import java.util.concurrent.atomic.AtomicBoolean;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.PointerPointer;

/** Page-locked host memory ({@code cudaMallocHost}) for fast, asynchronous copies to and from GPUs. */
public final class PinnedMemory implements MemoryRegion, AutoCloseable {
    private final long address;
    private final long length;
    private final AtomicBoolean closed = new AtomicBoolean();

    private PinnedMemory(long address, long length) {
        this.address = address;
        this.length = length;
    }

    public static PinnedMemory allocate(long bytes) {
        Cuda.require();
        try (PointerPointer<?> out = new PointerPointer<>(1)) {
            Cuda.check(cudart.cudaMallocHost(out, Math.max(bytes, 1)), "cudaMallocHost(" + bytes + " bytes)");
            return new PinnedMemory(out.get(0).address(), bytes);
        }
    }

    @Override
    public long address() {
        if (closed.get()) {
            throw new IllegalStateException("pinned memory is closed");
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
        if (closed.compareAndSet(false, true)) {
            Cuda.check(cudart.cudaFreeHost(Cuda.pointer(address)), "cudaFreeHost");
        }
    }
}
