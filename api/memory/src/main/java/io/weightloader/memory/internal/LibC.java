package io.weightloader.memory.internal;

import com.sun.jna.Native;
import com.sun.jna.Platform;
import com.sun.jna.Pointer;

/**
 * The few libc calls weightloader needs, bound with JNA direct mapping. Not API. Call {@link #require()} before the
 * first use: it turns JNA's failure to load its own native part into one error that says what to do.
 */
public final class LibC {
    public static final int PROT_READ = 1;
    public static final int PROT_WRITE = 2;
    public static final int MAP_SHARED = 1;
    public static final int MAP_PRIVATE = 2;
    public static final int MAP_ANONYMOUS = 0x20;
    /** The pages go; the mapping stays, and reading it again gives zero-filled pages (private anonymous memory). */
    public static final int MADV_DONTNEED = 4;
    /** Faults every page in, writable (Linux 5.14 and later; EINVAL before). */
    public static final int MADV_POPULATE_WRITE = 23;
    public static final int O_RDONLY = 0;
    public static final int MADV_SEQUENTIAL = 2;
    public static final int MADV_WILLNEED = 3;
    private static final int SC_PAGESIZE = 30;

    private static final Throwable LOAD_FAILURE;

    static {
        Throwable failure = null;
        try {
            Native.register(Platform.C_LIBRARY_NAME);
        } catch (LinkageError e) {
            failure = e;
        }
        LOAD_FAILURE = failure;
    }

    private LibC() {
    }

    /**
     * Makes sure the binding loaded.
     *
     * @throws io.weightloader.api.WeightLoaderException when JNA's native part (libjnidispatch) could not load, with
     *     its reason and the usual fix: a temporary directory where files may not be executed
     */
    public static void require() {
        if (LOAD_FAILURE != null) {
            throw jnaFailure(LOAD_FAILURE);
        }
    }

    /** One line for a JNA that cannot load its native part, naming the setting that fixes the usual cause. */
    public static io.weightloader.api.WeightLoaderException jnaFailure(Throwable e) {
        String why = String.valueOf(e.getMessage()).replace('\n', ' ');
        return new io.weightloader.api.WeightLoaderException("JNA could not load its native library (" + why + "). It"
                + " unpacks libjnidispatch into jna.tmpdir or java.io.tmpdir and runs it from there: when that directory"
                + " is mounted noexec, point JNA at one that is not, e.g. JAVA_OPTS=-Djna.tmpdir=$HOME/.cache/jna", e);
    }

    public static native int posix_memalign(long[] memptr, long alignment, long size);

    public static native void free(Pointer ptr);

    public static native Pointer mmap(Pointer addr, long length, int prot, int flags, int fd, long offset);

    public static native int munmap(Pointer addr, long length);

    public static native int madvise(Pointer addr, long length, int advice);

    public static native int open(String path, int flags);

    public static native int close(int fd);

    public static native long sysconf(int name);

    public static native Pointer memset(Pointer dst, int c, long n);

    public static native Pointer memcpy(Pointer dst, Pointer src, long n);

    /** The C environment (what native libraries such as NCCL read), not Java's copy of it. */
    public static native int setenv(String name, String value, int overwrite);

    public static native int unsetenv(String name);

    private static final long PAGE = LOAD_FAILURE != null ? 4096
            : sysconf(SC_PAGESIZE) > 0 ? sysconf(SC_PAGESIZE) : 4096;

    public static long pageSize() {
        return PAGE;
    }

    public static String lastError() {
        int errno = Native.getLastError();
        return "errno " + errno;
    }
}
