package io.weightloader.backend.local;

import com.sun.nio.file.ExtendedOpenOption;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * Reads a file with {@code O_DIRECT} ({@code io = direct}): the bytes come from the disk into this process without
 * passing through (or evicting anything from) the page cache.
 *
 * <p>{@code O_DIRECT} reads must start at a multiple of the file system's block size, cover a multiple of it and
 * land at an address aligned to it. A range that meets all three (and a direct destination) is read straight into
 * the destination; any other is read in whole aligned blocks into a per-thread aligned bounce buffer (4 MiB, kept by
 * each reader thread for its life) and the requested bytes copied out. At the end of the file the last block is
 * short: the read returns fewer bytes, and a range that runs past the end is an error naming the file and tensor.
 */
final class DirectFileReader implements FileSource {
    /** Bytes read per {@code O_DIRECT} call through the bounce buffer (and its size, per thread). */
    static final int BOUNCE_SIZE = 4 << 20;
    /** Alignment used when the file store reports a smaller block (the page size: always valid for O_DIRECT). */
    static final int MIN_ALIGNMENT = 4096;

    private static final ThreadLocal<ByteBuffer> BOUNCE = new ThreadLocal<>();

    private final Path path;
    private final FileChannel channel;
    private final int align;
    private final int chunk;

    /** Thrown by {@link #open} when the file opens, but not with {@code O_DIRECT} (tmpfs, some network file systems). */
    static final class Refused extends IOException {
        Refused(Path path, IOException cause) {
            super(path + " cannot be opened with O_DIRECT (" + cause.getMessage() + "); its file system does not"
                    + " support direct I/O", cause);
        }
    }

    private DirectFileReader(Path path, FileChannel channel, int align, int bounceSize) {
        this.path = path;
        this.channel = channel;
        this.align = align;
        this.chunk = Math.max(align, bounceSize / align * align);
    }

    static DirectFileReader open(Path path) throws IOException {
        return open(path, BOUNCE_SIZE);
    }

    /** {@code bounceSize}: bytes per read through the bounce buffer (tests make it small). */
    static DirectFileReader open(Path path, int bounceSize) throws IOException {
        long block = Files.getFileStore(path).getBlockSize();
        int align = (int) Math.max(MIN_ALIGNMENT, Math.min(block, 1 << 26));
        if (Integer.bitCount(align) != 1) {
            throw new Refused(path, new IOException("file store block size " + block + " is not a power of two"));
        }
        FileChannel ch;
        try {
            ch = FileChannel.open(path, StandardOpenOption.READ, ExtendedOpenOption.DIRECT);
        } catch (IOException | UnsupportedOperationException e) {
            // tell "no O_DIRECT here" apart from "no such file" or "permission denied": those fail a plain open too
            FileChannel.open(path, StandardOpenOption.READ).close();
            throw new Refused(path, e instanceof IOException io ? io : new IOException(e.getMessage(), e));
        }
        return new DirectFileReader(path, ch, align, bounceSize);
    }

    int alignment() {
        return align;
    }

    @Override
    public Path path() {
        return path;
    }

    @Override
    public boolean direct() {
        return true;
    }

    @Override
    public void read(long position, ByteBuffer dst, String tensor) throws IOException {
        if (!dst.hasRemaining()) {
            return;
        }
        if (position % align == 0 && dst.remaining() % align == 0 && dst.isDirect()
                && dst.alignmentOffset(dst.position(), align) == 0) {
            long end = position + dst.remaining();
            int got = fill(dst, position);
            if (dst.hasRemaining()) {
                throw truncated(position + got, tensor, end);
            }
            return;
        }
        ByteBuffer bounce = bounce();
        long pos = position;
        while (dst.hasRemaining()) {
            long start = pos - pos % align;
            int skip = (int) (pos - start);
            long need = skip + (long) dst.remaining();
            int len = (int) Math.min(chunk, (need + align - 1) / align * align);
            bounce.clear().limit(len);
            int got = fill(bounce, start);
            int n = Math.min(got - skip, dst.remaining());
            if (n <= 0) {
                throw truncated(Math.max(pos, start + got), tensor, pos + dst.remaining());
            }
            int dstLimit = dst.limit();
            bounce.limit(skip + n).position(skip);
            dst.put(bounce);
            dst.limit(dstLimit);
            pos += n;
            if (dst.hasRemaining() && got < len) {
                throw truncated(pos, tensor, pos + dst.remaining());
            }
        }
    }

    /**
     * Reads into {@code buf} (aligned, a whole number of blocks) from {@code position} until it is full or the file
     * ends; returns the bytes read. At the end of the file O_DIRECT returns a short count.
     */
    private int fill(ByteBuffer buf, long position) throws IOException {
        int total = 0;
        while (buf.hasRemaining()) {
            int r = channel.read(buf, position + total);
            if (r <= 0) {
                break;
            }
            total += r;
            if (r % align != 0) {
                break; // the file's short last block: the next read would start unaligned, and there is nothing left
            }
        }
        return total;
    }

    private SafetensorsFormatException truncated(long at, String tensor, long wanted) {
        return new SafetensorsFormatException(path, tensor, "file ended at byte " + at + " before byte " + wanted
                + " (truncated after its header was read?)");
    }

    private ByteBuffer bounce() {
        ByteBuffer b = BOUNCE.get();
        if (b == null || b.capacity() < chunk + align) {
            b = ByteBuffer.allocateDirect(Math.max(BOUNCE_SIZE, chunk) + align);
            BOUNCE.set(b);
        }
        return b.alignedSlice(align);
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
