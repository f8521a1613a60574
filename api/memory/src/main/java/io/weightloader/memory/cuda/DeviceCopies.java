package io.weightloader.memory.cuda;

import io.weightloader.api.MemoryRegion;
import org.bytedeco.cuda.global.cudart;

/** Synchronous copies between host and device memory (checksums of device memory: {@code Checksums}). */
public final class DeviceCopies {
    private DeviceCopies() {
    }

    /** Copies {@code length} bytes between any two regions (host or device); blocks until done. */
    public static void copy(MemoryRegion dst, long dstOffset, MemoryRegion src, long srcOffset, long length) {
        if (length == 0) {
            return;
        }
        if (!src.device().isHost()) {
            Cuda.use(src.device());
        } else if (!dst.device().isHost()) {
            Cuda.use(dst.device());
        } else {
            Cuda.require();
        }
        Cuda.check(cudart.cudaMemcpy(Cuda.pointer(dst.address() + dstOffset), Cuda.pointer(src.address() + srcOffset),
                length, cudart.cudaMemcpyDefault), "cudaMemcpy(" + length + " bytes, " + src.device() + " -> "
                + dst.device() + ")");
    }

    /**
     * Copies {@code rows} rows of {@code width} bytes, row i from {@code src + srcOffset + i * srcPitch} to {@code dst +
     * dstOffset + i * dstPitch}: one {@code cudaMemcpy2D} when either side is a GPU's, a loop of host copies otherwise.
     * Blocks until done.
     */
    public static void copy2D(MemoryRegion dst, long dstOffset, long dstPitch, MemoryRegion src, long srcOffset,
                              long srcPitch, long width, long rows) {
        if (rows == 0 || width == 0) {
            return;
        }
        if (src.device().isHost() && dst.device().isHost()) {
            for (long i = 0; i < rows; i++) {
                for (long off = 0; off < width; off += Integer.MAX_VALUE) {
                    int n = (int) Math.min(Integer.MAX_VALUE, width - off);
                    dst.byteBuffer(dstOffset + i * dstPitch + off, n).put(src.byteBuffer(srcOffset + i * srcPitch + off, n));
                }
            }
            return;
        }
        Cuda.use(!dst.device().isHost() ? dst.device() : src.device());
        // one row: its pitches do not matter, but CUDA wants them at least as wide as the row
        Cuda.check(cudart.cudaMemcpy2D(Cuda.pointer(dst.address() + dstOffset), rows == 1 ? width : dstPitch,
                Cuda.pointer(src.address() + srcOffset), rows == 1 ? width : srcPitch, width, rows,
                cudart.cudaMemcpyDefault),
                "cudaMemcpy2D(" + rows + " rows of " + width + " bytes, " + src.device() + " -> " + dst.device() + ")");
    }
}
