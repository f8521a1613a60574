package io.weightloader.backend.te;

import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.backend.te.ReadPlan.Part;
import io.weightloader.backend.te.ReadPlan.Read;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** Bytes and whole tensors done, reported to the request's listener. */
final class Progress {
    private final LoadRequest request;
    private final Map<String, Long> remaining = new HashMap<>();
    private final long total;
    private long done;
    private int tensorsDone;

    Progress(LoadRequest request) {
        this.request = request;
        this.total = request.totalBytes();
        for (TensorDestination d : request.tensors()) {
            remaining.put(d.spec().name(), d.byteSize());
            if (d.byteSize() == 0) {
                tensorsDone++;
            }
        }
    }

    synchronized void completed(Read r) {
        done += r.bytes();
        for (Part p : r.parts()) {
            if (r.count() == 1) {
                request.progress().onArrived(p.dest(), p.offset(), p.length());
            }
            if (remaining.merge(p.dest().spec().name(), -p.length(), Long::sum) == 0) {
                tensorsDone++;
            }
        }
    }

    /**
     * The tensors not yet complete, in request order; one that was partly read is reset, to be read again whole
     * (after its source died).
     */
    synchronized List<TensorDestination> incomplete() {
        List<TensorDestination> out = new ArrayList<>();
        for (TensorDestination d : request.tensors()) {
            long left = remaining.get(d.spec().name());
            if (left > 0) {
                done -= d.byteSize() - left;
                remaining.put(d.spec().name(), d.byteSize());
                out.add(d);
            }
        }
        return out;
    }

    /** The names of the tensors with bytes that are complete. */
    synchronized Set<String> complete() {
        Set<String> out = new HashSet<>();
        for (TensorDestination d : request.tensors()) {
            if (d.byteSize() > 0 && remaining.get(d.spec().name()) == 0) {
                out.add(d.spec().name());
            }
        }
        return out;
    }

    /** {@code tensors} are to be read again whole (their bytes were wrong). */
    synchronized void reset(List<TensorDestination> tensors) {
        for (TensorDestination d : tensors) {
            long left = remaining.get(d.spec().name());
            if (left == 0 && d.byteSize() > 0) {
                tensorsDone--;
            }
            done -= d.byteSize() - left;
            remaining.put(d.spec().name(), d.byteSize());
        }
    }

    /**
     * {@code bytes} of {@code d} that had arrived are to be read again (a load from several sources dropped their
     * source before the block they belong to was whole, or they did not match).
     */
    synchronized void retract(TensorDestination d, long bytes) {
        if (bytes <= 0) {
            return;
        }
        long left = remaining.get(d.spec().name());
        if (left == 0) {
            tensorsDone--;
        }
        done -= bytes;
        remaining.put(d.spec().name(), left + bytes);
    }

    /** Bytes of {@code d} placed from a staging buffer. */
    synchronized void staged(TensorDestination d, long bytes) {
        done += bytes;
        if (remaining.merge(d.spec().name(), -bytes, Long::sum) == 0) {
            tensorsDone++;
        }
    }

    /** Bytes done so far. */
    synchronized long done() {
        return done;
    }

    /** Bytes of the whole request. */
    long total() {
        return total;
    }

    synchronized void report() {
        request.progress().onProgress(done, total, tensorsDone, request.tensors().size());
    }
}
