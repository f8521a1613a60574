package io.weightloader.backend.local;

import io.weightloader.api.Device;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.memory.MappedFile;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Moves one load's {@link Piece}s into their destinations, each the way its memory and file allow: host memory with
 * one positional read per row, or, for short rows of a buffered file, copied out of a mapping of the file; GPU memory
 * through a stager's pinned buffers. Holds the load's open files, the mappings it made and the stagers it uses; its
 * caller runs pieces on several threads and calls {@link #unmap} once none runs.
 */
final class PieceReader {
    /**
     * Rows shorter than this on average are copied from a mapping of the file instead of read one {@code pread} each:
     * a slice of an inner dimension at a high tp size has rows of a few hundred bytes, where a system call per row
     * cost three quarters of the time (docs/PERFORMANCE.md).
     */
    static final int SHORT_ROWS = 32 << 10;

    private final Map<Path, FileSource> channels;
    private final Map<Device, Stagers> stagers;
    private final Map<Path, MappedFile> maps = new ConcurrentHashMap<>();

    PieceReader(Map<Path, FileSource> channels, Map<Device, Stagers> stagers) {
        this.channels = channels;
        this.stagers = stagers;
    }

    void read(Piece p) throws IOException, InterruptedException {
        Device dev = p.dest().region().device();
        FileSource src = channels.get(p.src().file().path());
        // short rows from a mapping: through the page cache, so not for files read with O_DIRECT
        if (dev.isHost() && shortRows(p) && !(src instanceof DirectFileReader)) {
            copyRows(p, mapping(p.src().file()));
        } else if (dev.isHost()) {
            readPiece(p, src);
        } else {
            Stagers pool = stagers.get(dev);
            GpuStager g = pool.take();
            try {
                g.gather(src, p.dest().spec().name(), p.positions(), p.lengths(),
                        p.dest().region().address() + p.dstOffset());
            } finally {
                pool.give(g);
            }
        }
    }

    /** Unmaps the files this load mapped; only once no piece runs (a copy from an unmapped file crashes). */
    void unmap() {
        maps.values().forEach(MappedFile::close);
    }

    private static boolean shortRows(Piece p) {
        return p.positions().length > 1 && p.length() / p.positions().length < SHORT_ROWS
                && p.positions()[p.positions().length - 1] + p.lengths()[p.lengths().length - 1] - p.positions()[0]
                < (1L << 30);
    }

    /** Copies a piece's short rows out of the file's mapping: one view of the rows' span, sliced per row. */
    private static void copyRows(Piece p, MappedFile map) {
        int last = p.positions().length - 1;
        long first = p.positions()[0];
        ByteBuffer src = map.byteBuffer(first, (int) (p.positions()[last] + p.lengths()[last] - first));
        ByteBuffer dst = p.dest().region().byteBuffer(p.dstOffset(), p.length());
        int at = 0;
        try {
            for (int i = 0; i <= last; i++) {
                dst.put(at, src, (int) (p.positions()[i] - first), p.lengths()[i]);
                at += p.lengths()[i];
            }
        } catch (InternalError fault) {
            // the JVM's word for SIGBUS on mapped memory: the file shrank under the mapping
            throw new WeightLoaderException("tensor '" + p.dest().spec().name() + "' of " + p.src().file().path()
                    + " could not be read through its memory mapping: the file was truncated or replaced during the"
                    + " load (" + fault.getMessage() + "); nothing was loaded", fault);
        }
    }

    /** The file's mapping for this load, made on first use (and checked against the header's length). */
    private MappedFile mapping(SafetensorsFile f) {
        return maps.computeIfAbsent(f.path(), path -> {
            MappedFile m = MappedFile.map(path);
            long needed = f.dataStart() + f.entries().values().stream().mapToLong(SafetensorsFile.Entry::end).max()
                    .orElse(0);
            if (m.length() < needed) {
                m.close();
                throw new SafetensorsFormatException(path, "is " + m.length() + " bytes now, but its header needs "
                        + needed + ": the file was truncated after it was opened; nothing was loaded");
            }
            return m;
        });
    }

    private static void readPiece(Piece p, FileSource src) throws IOException {
        long at = p.dstOffset();
        for (int i = 0; i < p.positions().length; i++) {
            src.read(p.positions()[i], p.dest().region().byteBuffer(at, p.lengths()[i]), p.dest().spec().name());
            at += p.lengths()[i];
        }
    }
}
