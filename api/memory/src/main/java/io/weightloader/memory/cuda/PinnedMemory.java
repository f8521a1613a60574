package io.weightloader.memory.cuda;

import io.weightloader.api.Device;
import io.weightloader.api.OwnedRegion;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.PointerPointer;

/** Page-locked host memory ({@code cudaMallocHost}) for fast, asynchronous copies to and from GPUs. */
public final class PinnedMemory extends OwnedRegion {
    private PinnedMemory(long address, long length) {
        super(address, length, Device.CPU);
    }

    public static PinnedMemory allocate(long bytes) {
        Cuda.require();
        try (PointerPointer<?> out = new PointerPointer<>(1)) {
            Cuda.check(cudart.cudaMallocHost(out, Math.max(bytes, 1)), "cudaMallocHost(" + bytes + " bytes)");
            return new PinnedMemory(out.get(0).address(), bytes);
        }
    }

    @Override
    protected String describe() {
        return "pinned memory";
    }

    @Override
    protected void free(long address, long length) {
        Cuda.check(cudart.cudaFreeHost(Cuda.pointer(address)), "cudaFreeHost");
    }
}
