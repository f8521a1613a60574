package io.weightloader.api;

import java.util.HashSet;
import java.util.List;
import java.util.Objects;
import java.util.Set;

/**
 * The tensors a host wants and where each goes.
 *
 * @param tensors            destinations, one per tensor name
 * @param checksum           compute a SHA-256 of each tensor's loaded bytes for the report (and verify it
 *                           against the source's when the source publishes them)
 * @param ignoreExtraTensors tensors the source has beyond the request are ignored instead of an error
 * @param progress           progress callback
 */
public record LoadRequest(List<TensorDestination> tensors, boolean checksum, boolean ignoreExtraTensors,
                          ProgressListener progress) {
    public LoadRequest {
        Objects.requireNonNull(tensors, "tensors is null");
        Objects.requireNonNull(progress, "progress is null");
        tensors = List.copyOf(tensors);
        Set<String> names = new HashSet<>();
        for (TensorDestination t : tensors) {
            if (!names.add(t.spec().name())) {
                throw new IllegalArgumentException("tensor '" + t.spec().name() + "' is requested twice");
            }
        }
    }

    public static LoadRequest of(List<TensorDestination> tensors) {
        return new LoadRequest(tensors, false, false, ProgressListener.NONE);
    }

    public LoadRequest withChecksum(boolean on) {
        return new LoadRequest(tensors, on, ignoreExtraTensors, progress);
    }

    public LoadRequest withProgress(ProgressListener listener) {
        return new LoadRequest(tensors, checksum, ignoreExtraTensors, listener);
    }

    public LoadRequest withIgnoreExtraTensors(boolean ignore) {
        return new LoadRequest(tensors, checksum, ignore, progress);
    }

    public List<TensorSpec> specs() {
        return tensors.stream().map(TensorDestination::spec).toList();
    }

    public long totalBytes() {
        return tensors.stream().mapToLong(t -> t.byteSize()).sum();
    }
}
