package io.weightloader.backend.local;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;

/**
 * One checkpoint file opened for one load: positional reads of tensor bytes, buffered ({@link BufferedFileSource})
 * or with {@code O_DIRECT} ({@link DirectFileReader}). Safe for concurrent use by the load's reader threads.
 */
interface FileSource extends Closeable {
    /**
     * Fills {@code dst.remaining()} bytes from {@code position} of the file. An end of file before the range ends is
     * a {@link SafetensorsFormatException} naming the file and {@code tensor}.
     */
    void read(long position, ByteBuffer dst, String tensor) throws IOException;

    Path path();

    /** Whether reads bypass the page cache ({@code O_DIRECT}). */
    boolean direct();
}
