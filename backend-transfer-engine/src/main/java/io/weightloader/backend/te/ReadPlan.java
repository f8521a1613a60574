package io.weightloader.backend.te;

import io.weightloader.api.TensorDestination;
import io.weightloader.backend.te.engine.OneSidedEngine.ReadOp;
import io.weightloader.seed.Manifest;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;

/**
 * The reads of a load from a seed rank that holds the same slices as the host: adjacent tensors of the seed's and the
 * host's arenas read together, long runs cut to the slice size.
 */
final class ReadPlan {
    private ReadPlan() {
    }

    /** Part of one tensor covered by a read. */
    record Part(TensorDestination dest, long offset, long length) {
    }

    /**
     * One read: a range contiguous on both sides, covering parts of one or more tensors (adjacent tensors of the
     * seed's and the host's arenas are read together, up to the slice size); or, resharding, {@code count} runs of
     * {@code length} bytes (a slice's rows) at strides {@code localStride} and {@code remoteStride}, of one tensor.
     */
    record Read(long local, long remote, long length, List<Part> parts, int attempt, long localStride,
                long remoteStride, int count) {
        Read(long local, long remote, long length, List<Part> parts, int attempt) {
            this(local, remote, length, parts, attempt, length, length, 1);
        }

        ReadOp op() {
            return new ReadOp(local, remote, length, localStride, remoteStride, count);
        }

        Read retry() {
            return new Read(local, remote, length, parts, attempt + 1, localStride, remoteStride, count);
        }

        long bytes() {
            return length * count;
        }

        String describe() {
            Part p = parts.get(0);
            return "tensor '" + p.dest().spec().name() + "' bytes [" + p.offset() + ", " + (p.offset() + p.length())
                    + ")" + (count > 1 ? " (" + count + " runs of " + length + ")" : "")
                    + (parts.size() > 1 ? " and " + (parts.size() - 1) + " more tensor(s)" : "");
        }
    }

    /** Cuts the request into reads of at most {@code sliceSize}, joining tensors adjacent on both sides. */
    static List<Read> plan(List<TensorDestination> tensors, Manifest m, long sliceSize) {
        List<TensorDestination> order = new ArrayList<>();
        for (TensorDestination d : tensors) {
            if (d.byteSize() > 0) {
                order.add(d);
            }
        }
        Map<String, Manifest.Entry> published = m.entriesByName();
        Map<TensorDestination, Long> remote = new IdentityHashMap<>(order.size() * 2);
        for (TensorDestination d : order) {
            remote.put(d, published.get(d.spec().name()).address());
        }
        order.sort(Comparator.comparingLong(remote::get));
        List<Read> reads = new ArrayList<>();
        int i = 0;
        while (i < order.size()) {
            // a run of tensors contiguous in the seed's memory and in the host's
            int j = i + 1;
            long localEnd = order.get(i).region().address() + order.get(i).byteSize();
            long remoteEnd = remote.get(order.get(i)) + order.get(i).byteSize();
            while (j < order.size() && order.get(j).region().address() == localEnd
                    && remote.get(order.get(j)) == remoteEnd
                    && order.get(j).region().device().equals(order.get(i).region().device())) {
                localEnd += order.get(j).byteSize();
                remoteEnd += order.get(j).byteSize();
                j++;
            }
            long runLocal = order.get(i).region().address();
            long runRemote = remote.get(order.get(i));
            long runLength = localEnd - runLocal;
            int t = i;
            long tStart = 0; // offset of tensor t within the run
            for (long off = 0; off < runLength; off += sliceSize) {
                long len = Math.min(sliceSize, runLength - off);
                List<Part> parts = new ArrayList<>();
                long at = off;
                while (at < off + len) {
                    TensorDestination d = order.get(t);
                    long inTensor = at - tStart;
                    long partLen = Math.min(d.byteSize() - inTensor, off + len - at);
                    parts.add(new Part(d, inTensor, partLen));
                    at += partLen;
                    if (inTensor + partLen == d.byteSize()) {
                        tStart += d.byteSize();
                        t++;
                    }
                }
                reads.add(new Read(runLocal + off, runRemote + off, len, List.copyOf(parts), 0));
            }
            i = j;
        }
        return reads;
    }
}
