package io.weightloader.backend.local;

import com.sun.jna.Native;
import com.sun.jna.Platform;
import com.sun.jna.Pointer;
import io.weightloader.memory.internal.LibC;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.OptionalDouble;

/**
 * How much of a file is in the page cache, from {@code mincore(2)} on a read-only mapping of it (the mapping is made
 * without touching or prefetching a page, so asking does not warm the file). Used by {@code io = auto}.
 *
 * <p>Linux reveals a file's residency only to a process that owns the file or could open it for writing (or holds
 * CAP_FOWNER); to anyone else it reports every page resident. {@link #residentFraction} then answers empty rather
 * than a number it cannot know.
 */
final class PageCache {
    private static final long WINDOW = 1L << 30; // mincore in 1 GiB steps: a 256 KiB vector

    private static final Throwable LOAD_FAILURE;

    static {
        Throwable failure = null;
        try {
            Native.register(PageCache.class, Platform.C_LIBRARY_NAME);
        } catch (LinkageError e) {
            failure = e;
        }
        LOAD_FAILURE = failure;
    }

    private PageCache() {
    }

    private static native int mincore(Pointer addr, long length, byte[] vec);

    /** Whether the kernel will tell this process the truth about {@code file}'s pages. */
    static boolean residencyVisible(Path file) {
        try {
            return Files.isWritable(file) || "root".equals(System.getProperty("user.name"))
                    || Files.getOwner(file).getName().equals(System.getProperty("user.name"));
        } catch (IOException | UnsupportedOperationException e) {
            return false;
        }
    }

    /** The fraction (0..1) of {@code file}'s pages in the page cache, or empty when it cannot be known. */
    static OptionalDouble residentFraction(Path file) {
        if (LOAD_FAILURE != null || !residencyVisible(file)) {
            return OptionalDouble.empty();
        }
        LibC.require();
        long size;
        try {
            size = Files.size(file);
        } catch (IOException e) {
            return OptionalDouble.empty();
        }
        if (size == 0) {
            return OptionalDouble.of(1);
        }
        int fd = LibC.open(file.toString(), LibC.O_RDONLY);
        if (fd < 0) {
            return OptionalDouble.empty();
        }
        Pointer map;
        try {
            map = LibC.mmap(null, size, LibC.PROT_READ, LibC.MAP_SHARED, fd, 0);
        } finally {
            LibC.close(fd);
        }
        long addr = Pointer.nativeValue(map);
        if (addr == -1L || addr == 0L) {
            return OptionalDouble.empty();
        }
        try {
            long page = LibC.pageSize();
            long pages = (size + page - 1) / page;
            long resident = 0;
            byte[] vec = new byte[(int) (WINDOW / page)];
            for (long off = 0; off < size; off += WINDOW) {
                long len = Math.min(WINDOW, size - off);
                if (mincore(new Pointer(addr + off), len, vec) != 0) {
                    return OptionalDouble.empty();
                }
                int n = (int) ((len + page - 1) / page);
                for (int i = 0; i < n; i++) {
                    resident += vec[i] & 1;
                }
            }
            return OptionalDouble.of((double) resident / pages);
        } finally {
            LibC.munmap(map, size);
        }
    }
}
