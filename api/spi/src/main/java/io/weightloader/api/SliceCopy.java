package io.weightloader.api;

import java.util.ArrayList;
import java.util.List;

/**
 * A strided byte copy between two holdings of one tensor: {@code count} runs of {@code length} bytes, run {@code i}
 * from {@code srcOffset + i * srcStride} of the source holding to {@code dstOffset + i * dstStride} of the
 * destination's. A holding is the whole tensor or a {@link TensorSlice} of it, stored contiguously in C order.
 *
 * <p>{@link #plan} computes the copies that move the bytes both holdings have in common, for any pair of slices
 * (one dimension each, possibly different dimensions): a disk read of a rank's slice (source = the whole tensor in
 * the file), a seed rank's slice read into a client's slice of another tensor-parallel size, and checks of either.
 */
public record SliceCopy(long srcOffset, long srcStride, long dstOffset, long dstStride, long length, long count) {

    /** Bytes the copy moves. */
    public long bytes() {
        return length * count;
    }

    /**
     * The copies that move, from a holding {@code src} to a holding {@code dst} of tensor {@code full} (null = the
     * whole tensor), every byte both hold, in C order of the destination. Empty when they share no byte.
     *
     * @throws IllegalArgumentException when a slice does not fit the tensor, or the dtype packs several elements in a
     *                                  byte and a run would not fill whole bytes
     */
    public static List<SliceCopy> plan(TensorSpec full, TensorSlice src, TensorSlice dst) {
        int n = full.shape().size();
        long[] shape = new long[n];
        for (int j = 0; j < n; j++) {
            shape[j] = full.shape().get(j);
        }
        long[] srcStart = new long[n];
        long[] srcLen = shape.clone();
        long[] dstStart = new long[n];
        long[] dstLen = shape.clone();
        if (src != null) {
            src.checkWithin(full);
            srcStart[src.dim()] = src.start();
            srcLen[src.dim()] = src.length();
        }
        if (dst != null) {
            dst.checkWithin(full);
            dstStart[dst.dim()] = dst.start();
            dstLen[dst.dim()] = dst.length();
        }
        long[] lo = new long[n];
        long[] len = new long[n];
        for (int j = 0; j < n; j++) {
            lo[j] = Math.max(srcStart[j], dstStart[j]);
            len[j] = Math.min(srcStart[j] + srcLen[j], dstStart[j] + dstLen[j]) - lo[j];
            if (len[j] <= 0) {
                return List.of();
            }
        }
        // m: the first dimension from which on the common part covers both holdings entirely; dims >= m - 1 form
        // one contiguous run on both sides
        int m = n;
        while (m > 0 && len[m - 1] == srcLen[m - 1] && len[m - 1] == dstLen[m - 1]) {
            m--;
        }
        int runDim = Math.max(m - 1, 0);
        long runElems = 1;
        for (int j = runDim; j < n; j++) {
            runElems = Math.multiplyExact(runElems, len[j]);
        }
        // element strides of each dimension on both sides
        long[] srcStride = new long[n];
        long[] dstStride = new long[n];
        long s = 1;
        long d = 1;
        for (int j = n - 1; j >= 0; j--) {
            srcStride[j] = s;
            dstStride[j] = d;
            s = Math.multiplyExact(s, srcLen[j]);
            d = Math.multiplyExact(d, dstLen[j]);
        }
        DType t = full.dtype();
        long runBytes = bytes(t, runElems, full);
        if (n == 0) {
            return List.of(new SliceCopy(0, 0, 0, 0, runBytes, 1));
        }
        // dimension runDim - 1 becomes the stride of one copy; dimensions before it are iterated (rarely more than one
        // copy: only when two leading dimensions are both partial)
        int strideDim = runDim - 1;
        long count = strideDim >= 0 ? len[strideDim] : 1;
        long srcStepBytes = strideDim >= 0 ? bytes(t, srcStride[strideDim], full) : 0;
        long dstStepBytes = strideDim >= 0 ? bytes(t, dstStride[strideDim], full) : 0;
        List<SliceCopy> out = new ArrayList<>();
        long[] idx = new long[Math.max(strideDim, 0)];
        while (true) {
            long srcElem = 0;
            long dstElem = 0;
            for (int j = 0; j < n; j++) {
                long i = j < idx.length ? lo[j] + idx[j] : lo[j];
                srcElem += (i - srcStart[j]) * srcStride[j];
                dstElem += (i - dstStart[j]) * dstStride[j];
            }
            out.add(new SliceCopy(bytes(t, srcElem, full), srcStepBytes, bytes(t, dstElem, full), dstStepBytes,
                    runBytes, count));
            int j = idx.length - 1;
            while (j >= 0 && ++idx[j] == len[j]) {
                idx[j] = 0;
                j--;
            }
            if (j < 0) {
                return out;
            }
        }
    }

    private static long bytes(DType t, long elems, TensorSpec full) {
        long bits = Math.multiplyExact(elems, (long) t.bits());
        if (bits % 8 != 0) {
            throw new IllegalArgumentException("tensor " + full.describe() + ": a slice would split a byte of packed "
                    + t + " elements; choose a split that keeps whole bytes");
        }
        return bits / 8;
    }
}
