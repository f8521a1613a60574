package io.weightloader.api;

/** Receives load progress; called from loader threads, so implementations must be thread-safe and quick. */
@FunctionalInterface
public interface ProgressListener {
    ProgressListener NONE = (bytesDone, bytesTotal, tensorsDone, tensorsTotal) -> { };

    void onProgress(long bytesDone, long bytesTotal, int tensorsDone, int tensorsTotal);

    /**
     * Bytes {@code [offset, offset + length)} of what {@code dest} holds have arrived (remote backends call it for
     * every contiguous part of a read as it completes; a relay serves them onwards while it loads). Default: nothing.
     */
    default void onArrived(TensorDestination dest, long offset, long length) {
    }
}
