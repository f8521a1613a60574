package io.weightloader.backend.te;

import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.SliceCopy;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.backend.te.ReadPlan.Part;
import io.weightloader.backend.te.ReadPlan.Read;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.Parallel;
import io.weightloader.seed.BlockChecksums;
import io.weightloader.seed.Manifest;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * Plans a load whose slices differ from what the seed's ranks hold (another tp size, or another layout): for each
 * tensor, which seed ranks hold which parts of the client's slice, and the one-sided reads that move them (a slice's
 * rows as strided reads, batched). A tensor every seed rank holds whole is read from one of them, spread over the
 * ranks tensor by tensor; a split tensor must be split by the seed ranks into disjoint slices of one dimension that
 * cover it, or the load is refused before any byte moves.
 */
final class Resharding {
    private Resharding() {
    }

    /**
     * The reads per seed rank (index = seed tp rank), the staged copies per seed rank (rows moved as whole spans through
     * a staging buffer, for engines that read each row as a task of its own), and the (tensor, seed rank) pairs to
     * verify.
     */
    record Plan(List<List<Read>> reads, List<List<Span>> spans, List<Check> checks) {
    }

    /**
     * Rows {@code [first, first + rows)} of copy {@code copy} into {@code dest}, read as one contiguous span of the seed
     * rank's memory (rows at the source's stride, the bytes between them included) and then placed row by row.
     */
    record Span(TensorDestination dest, long remoteBase, SliceCopy copy, long first, long rows) {
        long bytes() {
            return (rows - 1) * copy.srcStride() + copy.length();
        }

        long remote() {
            return remoteBase + copy.srcOffset() + first * copy.srcStride();
        }

        long dstOffset() {
            return copy.dstOffset() + first * copy.dstStride();
        }

        long useful() {
            return rows * copy.length();
        }
    }

    /** Rows shorter than this are staged as spans when the engine reads each row as a task. */
    static final long SPAN_ROWS_BELOW = 4L << 20;

    /** What the client read of {@code dest} from seed rank {@code seedRank}'s {@code entry}. */
    record Check(TensorDestination dest, int seedRank, Manifest.Entry entry) {
    }

    /**
     * @param maxRuns most rows one read may carry (the engine's limit: a Mooncake batch holds 256 tasks)
     * @param staging when above 0, copies of many short rows become {@link Span}s of at most this many bytes (the
     *                engine reads each row as a task of its own, e.g. Mooncake)
     */
    static Plan plan(List<TensorDestination> request, List<Manifest> seed, int clientRank, long sliceSize, int maxRuns,
                     long staging, String source) {
        int s = seed.size();
        List<Map<String, Manifest.Entry>> entries = new ArrayList<>();
        for (Manifest m : seed) {
            entries.add(m.entriesByName());
        }
        List<List<Read>> reads = new ArrayList<>();
        List<List<Span>> spans = new ArrayList<>();
        for (int k = 0; k < s; k++) {
            reads.add(new ArrayList<>());
            spans.add(new ArrayList<>());
        }
        List<Check> checks = new ArrayList<>();
        for (int i = 0; i < request.size(); i++) {
            TensorDestination d = request.get(i);
            if (d.byteSize() == 0) {
                continue;
            }
            TensorSpec full = d.spec();
            List<Manifest.Entry> held = new ArrayList<>();
            for (int k = 0; k < s; k++) {
                Manifest.Entry e = entries.get(k).get(full.name());
                if (e == null) {
                    throw new WeightLoaderException(source + ": seed rank tp" + k + " does not hold tensor '"
                            + full.name() + "' that other ranks hold; nothing was loaded");
                }
                held.add(e);
            }
            List<Integer> from = new ArrayList<>();
            if (held.stream().allMatch(e -> e.slice() == null || e.slice().isWhole(full))) {
                from.add((clientRank + i) % s); // replicated: one rank, spread over the ranks tensor by tensor
            } else {
                checkTiling(full, held, source);
                for (int k = 0; k < s; k++) {
                    from.add(k);
                }
            }
            long covered = 0;
            for (int k : from) {
                Manifest.Entry e = held.get(k);
                List<SliceCopy> copies = SliceCopy.plan(full, e.slice(), d.slice());
                if (copies.isEmpty()) {
                    continue;
                }
                checks.add(new Check(d, k, e));
                for (SliceCopy c : copies) {
                    covered += c.bytes();
                    if (staging > 0 && c.count() > 1 && c.length() < SPAN_ROWS_BELOW) {
                        addSpans(spans.get(k), d, e.address(), c, staging);
                    } else {
                        addReads(reads.get(k), d, e.address(), c, sliceSize, maxRuns);
                    }
                }
            }
            if (covered != d.byteSize()) {
                throw new WeightLoaderException(source + ": the seed's ranks hold " + covered + " of the " + d.byteSize()
                        + " bytes of tensor '" + full.name() + "' this client needs; nothing was loaded");
            }
        }
        return new Plan(reads, spans, checks);
    }

    /** A split tensor: every seed rank holds a slice of the same dimension, disjoint, together the whole extent. */
    private static void checkTiling(TensorSpec full, List<Manifest.Entry> held, String source) {
        List<TensorSlice> slices = new ArrayList<>();
        for (Manifest.Entry e : held) {
            if (e.slice() == null || e.slice().dim() != held.get(0).slice().dim()) {
                throw new WeightLoaderException(source + ": the seed's ranks split tensor '" + full.name() + "' "
                        + full.shape() + " inconsistently (" + held.stream().map(x -> String.valueOf(x.slice())).toList()
                        + "); nothing was loaded");
            }
            slices.add(e.slice());
        }
        slices.sort(Comparator.comparingLong(TensorSlice::start));
        long at = 0;
        for (TensorSlice sl : slices) {
            if (sl.start() != at) {
                throw new WeightLoaderException(source + ": the seed's ranks hold overlapping or incomplete slices of"
                        + " tensor '" + full.name() + "' " + full.shape() + ": " + slices + "; nothing was loaded");
            }
            at += sl.length();
        }
        if (at != full.shape().get(slices.get(0).dim())) {
            throw new WeightLoaderException(source + ": the seed's ranks hold " + slices + " of tensor '" + full.name()
                    + "' " + full.shape() + ", not all of it; nothing was loaded");
        }
    }

    /** A copy's rows in groups whose span fits the staging buffer. */
    private static void addSpans(List<Span> out, TensorDestination d, long remoteBase, SliceCopy c, long staging) {
        long perSpan = Math.max(1, (staging - c.length()) / c.srcStride() + 1);
        for (long i = 0; i < c.count(); i += perSpan) {
            out.add(new Span(d, remoteBase, c, i, Math.min(perSpan, c.count() - i)));
        }
    }

    /** The reads of one copy: rows batched up to the slice size and {@code maxRuns}, long rows cut. */
    private static void addReads(List<Read> out, TensorDestination d, long remoteBase, SliceCopy c, long sliceSize,
                                 int maxRuns) {
        long local = d.region().address();
        if (c.length() > sliceSize || c.count() == 1) {
            for (long i = 0; i < c.count(); i++) {
                long dst = c.dstOffset() + i * c.dstStride();
                long src = c.srcOffset() + i * c.srcStride();
                for (long off = 0; off < c.length(); off += sliceSize) {
                    long n = Math.min(sliceSize, c.length() - off);
                    out.add(new Read(local + dst + off, remoteBase + src + off, n,
                            List.of(new Part(d, dst + off, n)), 0));
                }
            }
            return;
        }
        long per = Math.max(1, Math.min(maxRuns, sliceSize / c.length()));
        for (long i = 0; i < c.count(); i += per) {
            int n = (int) Math.min(per, c.count() - i);
            long dst = c.dstOffset() + i * c.dstStride();
            long src = c.srcOffset() + i * c.srcStride();
            out.add(new Read(local + dst, remoteBase + src, c.length(),
                    List.of(new Part(d, dst, n * c.length())), 0,
                    n == 1 ? c.length() : c.dstStride(), n == 1 ? c.length() : c.srcStride(), n));
        }
    }

    /**
     * With checksums asked for: each tensor's SHA-256 (of the client's slice, for the report), and every seed block it
     * read checked against the seed's block checksums, on several threads. A part that does not consist of whole
     * blocks cannot be checked, and fails the load rather than pass unchecked.
     */
    static List<TensorReport> verify(LoadRequest request, List<Check> checks, String source) {
        List<TensorReport> out = new ArrayList<>();
        if (!request.checksum()) {
            for (TensorDestination d : request.tensors()) {
                out.add(TensorReport.of(d, null));
            }
            return out;
        }
        Map<String, List<Check>> byTensor = new HashMap<>();
        for (Check c : checks) {
            byTensor.computeIfAbsent(c.dest().spec().name(), n -> new ArrayList<>()).add(c);
        }
        List<Callable<String>> sums = new ArrayList<>();
        for (TensorDestination d : request.tensors()) {
            sums.add(() -> {
                MemoryRegion view = BlockChecksums.hostView(d);
                try {
                    for (Check c : byTensor.getOrDefault(d.spec().name(), List.of())) {
                        String from = source + " rank tp" + c.seedRank();
                        long checked = BlockChecksums.verify(d, view, c.entry(), from);
                        if (checked < 0 && c.entry().blocks() != null) {
                            throw new WeightLoaderException("tensor '" + d.spec().name() + "': the part read from "
                                    + from + " (" + c.entry().slice() + " there, " + d.slice() + " here) is not"
                                    + " made of whole blocks of the seed's block checksums (dim "
                                    + c.entry().blocks().dim() + ", " + c.entry().blocks().sha256().size()
                                    + " blocks), so it cannot be checked; load without checksums, or with a tp"
                                    + " size and layout whose slices are unions of those blocks");
                        }
                    }
                    return Checksums.sha256(view, d.byteSize());
                } finally {
                    if (!d.region().device().isHost() && view instanceof HostMemory h) {
                        h.close();
                    }
                }
            });
        }
        int threads = Math.max(1, Math.min(Checksums.defaultThreads(), request.tensors().size()));
        List<String> sha256 = Parallel.of("weightloader-verify", threads, "verifying the load from " + source
                + " failed", "interrupted while verifying the load from " + source).call(sums);
        for (int i = 0; i < sha256.size(); i++) {
            out.add(TensorReport.of(request.tensors().get(i), sha256.get(i)));
        }
        return out;
    }
}
