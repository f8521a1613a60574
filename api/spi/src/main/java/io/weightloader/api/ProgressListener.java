package io.weightloader.api;

/** Receives load progress; called from loader threads, so implementations must be thread-safe and quick. */
@FunctionalInterface
public interface ProgressListener {
    ProgressListener NONE = (bytesDone, bytesTotal, tensorsDone, tensorsTotal) -> { };

    void onProgress(long bytesDone, long bytesTotal, int tensorsDone, int tensorsTotal);
}
