package io.weightloader.backend.local;

import com.sun.nio.file.ExtendedOpenOption;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import io.weightloader.memory.Threads;

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
    static final int BOUNCE_SIZE = Integer.getInteger("wltune.direct-bounce", 4 << 20);
    /** Alignment used when the file store reports a smaller block (the page size: always valid for O_DIRECT). */
    static final int MIN_ALIGNMENT = 4096;

    private static final ThreadLocal<ByteBuffer[]> BOUNCE = new ThreadLocal<>();

    /**
     * Whether a range longer than one chunk copies each chunk out of its bounce buffer on a copier thread while the
     * reader thread reads the next chunk into its second bounce buffer (the disk never waits for a copy). Off only
     * to measure the difference ({@code -Dwltune.direct-overlap=false}).
     */
    static final boolean OVERLAP = !"false".equals(System.getProperty("wltune.direct-overlap"));

    /**
     * The copier threads, shared by every load of the process: daemons that end after 10 s idle. A copy out of a
     * bounce buffer runs at memory speed, many times a disk's, so half the cores are more than the copies need.
     */
    private static final ExecutorService COPIERS;

    static {
        int n = Math.max(2, Runtime.getRuntime().availableProcessors() / 2);
        ThreadPoolExecutor pool = new ThreadPoolExecutor(n, n, 10, TimeUnit.SECONDS, new LinkedBlockingQueue<>(),
                Threads.daemon("weightloader-direct-copy"));
        pool.allowCoreThreadTimeOut(true);
        COPIERS = pool;
    }

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
        ByteBuffer[] bounce = new ByteBuffer[2];
        Future<?>[] copying = new Future<?>[2];
        int base = dst.position();
        int want = dst.remaining();
        int done = 0;
        long pos = position;
        try {
            for (int b = 0; done < want; b ^= 1) {
                await(copying[b]); // this buffer's previous bytes are in place: it may be filled again
                copying[b] = null;
                if (bounce[b] == null) {
                    bounce[b] = bounce(b);
                }
                ByteBuffer buf = bounce[b];
                long start = pos - pos % align;
                int skip = (int) (pos - start);
                long need = skip + (long) (want - done);
                int len = (int) Math.min(chunk, (need + align - 1) / align * align);
                buf.clear().limit(len);
                int got = fill(buf, start);
                int n = Math.min(got - skip, want - done);
                if (n <= 0) {
                    throw truncated(Math.max(pos, start + got), tensor, position + want);
                }
                int at = base + done;
                done += n;
                pos += n;
                if (done < want && got < len) {
                    throw truncated(pos, tensor, position + want);
                }
                if (done < want && OVERLAP) {
                    // more to read: copy these bytes out on a copier thread while this one reads the next chunk
                    copying[b] = COPIERS.submit(() -> dst.put(at, buf, skip, n));
                } else {
                    dst.put(at, buf, skip, n);
                }
            }
        } finally {
            for (Future<?> f : copying) {
                await(f);
            }
        }
        dst.position(base + want);
    }

    /** Waits for a bounce copy ({@code null}: none); its failure is this read's. */
    private static void await(Future<?> copy) throws IOException {
        if (copy == null) {
            return;
        }
        boolean interrupted = false;
        try {
            while (true) {
                try {
                    copy.get();
                    return;
                } catch (InterruptedException e) {
                    interrupted = true; // the copy writes into the caller's buffer: it must end before the read does
                }
            }
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            if (c instanceof RuntimeException r) {
                throw r;
            }
            if (c instanceof Error err) {
                throw err;
            }
            throw new IOException("copying out of the O_DIRECT bounce buffer failed: " + c, c);
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
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

    /** This thread's bounce buffer {@code i} (0 or 1; the second only for ranges longer than one chunk). */
    private ByteBuffer bounce(int i) {
        ByteBuffer[] mine = BOUNCE.get();
        if (mine == null) {
            mine = new ByteBuffer[2];
            BOUNCE.set(mine);
        }
        if (mine[i] == null || mine[i].capacity() < chunk + align) {
            mine[i] = ByteBuffer.allocateDirect(Math.max(BOUNCE_SIZE, chunk) + align);
        }
        return mine[i].alignedSlice(align);
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
