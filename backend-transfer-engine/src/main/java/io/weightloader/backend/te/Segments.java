package io.weightloader.backend.te;

import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.backend.te.ReadPlan.Part;
import io.weightloader.backend.te.ReadPlan.Read;
import io.weightloader.seed.Manifest;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;

/**
 * How a load from several sources is cut up: into <b>units</b>, the smallest pieces checked on their own (a block of a
 * tensor, where the root publishes block checksums of contiguous bytes, else the whole tensor, with the root's SHA-256),
 * and <b>segments</b>, runs of units of about {@code segment-size} handed to one source at a time. A segment's reads
 * are planned against each source's own manifest (a relay's memory is laid out its own way).
 */
final class Segments {
    private Segments() {
    }

    /**
     * The smallest piece checked on its own: bytes {@code [offset, offset + length)} of {@code dest}, whose SHA-256 the
     * root published as {@code sha256} (null where the root publishes none: then nothing can be checked).
     *
     * @param index its place in the load's plan
     */
    record Unit(int index, TensorDestination dest, long offset, long length, String sha256, String what) {
    }

    /**
     * Units handed to one source together.
     *
     * @param id    its number in the load's plan (kept when its unfinished part is moved to another source)
     * @param moved how often its unfinished part was moved
     */
    record Segment(int id, List<Unit> units, int moved) {
        long bytes() {
            long n = 0;
            for (Unit u : units) {
                n += u.length();
            }
            return n;
        }

        /** What is left of it, {@code rest}, for another source. */
        Segment remainder(List<Unit> rest) {
            return new Segment(id, List.copyOf(rest), moved + 1);
        }
    }

    /**
     * The units of every tensor with bytes, in the root's memory order (so a segment is contiguous in the root's memory
     * where tensors are), then segments of whole units up to {@code segmentSize} bytes (a unit larger than that is a
     * segment of its own).
     */
    static List<Segment> plan(List<TensorDestination> tensors, Map<String, Manifest.Entry> root, long segmentSize) {
        List<TensorDestination> order = new ArrayList<>();
        for (TensorDestination d : tensors) {
            if (d.byteSize() > 0) {
                order.add(d);
            }
        }
        order.sort(Comparator.comparingLong(d -> root.get(d.spec().name()).address()));
        List<Unit> units = new ArrayList<>();
        for (TensorDestination d : order) {
            units.addAll(units(d, root.get(d.spec().name()), units.size()));
        }
        List<Segment> segments = new ArrayList<>();
        List<Unit> current = new ArrayList<>();
        long bytes = 0;
        for (Unit u : units) {
            if (!current.isEmpty() && bytes + u.length() > segmentSize) {
                segments.add(new Segment(segments.size(), List.copyOf(current), 0));
                current.clear();
                bytes = 0;
            }
            current.add(u);
            bytes += u.length();
        }
        if (!current.isEmpty()) {
            segments.add(new Segment(segments.size(), List.copyOf(current), 0));
        }
        return segments;
    }

    /** A tensor's units: its root's blocks where they are contiguous bytes, else the whole tensor. */
    static List<Unit> units(TensorDestination d, Manifest.Entry e, int firstIndex) {
        long bytes = d.byteSize();
        Manifest.Blocks b = e.blocks();
        List<Unit> out = new ArrayList<>();
        if (b != null && contiguous(d.held(), b.dim()) && bytes % b.sha256().size() == 0) {
            long block = bytes / b.sha256().size();
            for (int j = 0; j < b.sha256().size(); j++) {
                out.add(new Unit(firstIndex + j, d, j * block, block, b.sha256().get(j), "tensor '" + d.spec().name()
                        + "' block " + j + " of " + b.sha256().size()));
            }
        } else {
            out.add(new Unit(firstIndex, d, 0, bytes, e.sha256(), "tensor '" + d.spec().name() + "'"));
        }
        return out;
    }

    /** Blocks along {@code dim} are contiguous bytes when every dimension before it has extent 1. */
    private static boolean contiguous(TensorSpec held, int dim) {
        for (int j = 0; j < dim; j++) {
            if (held.shape().get(j) != 1) {
                return false;
            }
        }
        return true;
    }

    /**
     * The reads of {@code units} from a source whose manifest lists {@code source}: units adjacent both in the
     * destination and in the source's memory are read together, in reads of at most {@code readSize} bytes.
     */
    static List<Read> reads(List<Unit> units, Map<String, Manifest.Entry> source, long readSize) {
        List<Read> reads = new ArrayList<>();
        int i = 0;
        while (i < units.size()) {
            // a run of units contiguous on both sides
            Unit first = units.get(i);
            long local = first.dest().region().address() + first.offset();
            long remote = source.get(first.dest().spec().name()).address() + first.offset();
            long length = first.length();
            int j = i + 1;
            while (j < units.size()) {
                Unit u = units.get(j);
                if (u.dest().region().address() + u.offset() != local + length
                        || source.get(u.dest().spec().name()).address() + u.offset() != remote + length
                        || !u.dest().region().device().equals(first.dest().region().device())) {
                    break;
                }
                length += u.length();
                j++;
            }
            // cut into reads, each with the parts of the tensors it covers
            int k = i;
            long kDone = 0; // bytes of unit k already covered
            for (long off = 0; off < length; off += readSize) {
                long len = Math.min(readSize, length - off);
                List<Part> parts = new ArrayList<>();
                long left = len;
                while (left > 0) {
                    Unit u = units.get(k);
                    long take = Math.min(u.length() - kDone, left);
                    Part last = parts.isEmpty() ? null : parts.get(parts.size() - 1);
                    if (last != null && last.dest() == u.dest() && last.offset() + last.length() == u.offset() + kDone) {
                        parts.set(parts.size() - 1, new Part(u.dest(), last.offset(), last.length() + take));
                    } else {
                        parts.add(new Part(u.dest(), u.offset() + kDone, take));
                    }
                    left -= take;
                    kDone += take;
                    if (kDone == u.length()) {
                        k++;
                        kDone = 0;
                    }
                }
                reads.add(new Read(local + off, remote + off, len, List.copyOf(parts), 0));
            }
            i = j;
        }
        return reads;
    }
}
