package io.weightloader.memory.internal;

import com.sun.jna.Native;
import com.sun.jna.Platform;
import com.sun.jna.Pointer;

/** The few libc calls the memory owners need, bound with JNA direct mapping. Not API. */
public final class LibC {
    public static final int PROT_READ = 1;
    public static final int MAP_SHARED = 1;
    public static final int O_RDONLY = 0;
    public static final int MADV_SEQUENTIAL = 2;
    public static final int MADV_WILLNEED = 3;
    private static final int SC_PAGESIZE = 30;

    static {
        Native.register(Platform.C_LIBRARY_NAME);
    }

    private LibC() {
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

    private static final long PAGE = sysconf(SC_PAGESIZE) > 0 ? sysconf(SC_PAGESIZE) : 4096;

    public static long pageSize() {
        return PAGE;
    }

    public static String lastError() {
        int errno = Native.getLastError();
        return "errno " + errno;
    }
}
