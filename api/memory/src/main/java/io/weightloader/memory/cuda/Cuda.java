package io.weightloader.memory.cuda;

import com.sun.jna.NativeLibrary;
import io.weightloader.api.Device;
import io.weightloader.api.WeightLoaderException;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.cuda.global.nccl;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;

/**
 * CUDA (and NCCL) through JavaCPP's presets, loaded on first use only. When a library is missing the error
 * names it ({@code libcuda.so.1}, {@code libcudart.so.13}, {@code libnccl.so.2}) instead of surfacing a bare
 * {@link UnsatisfiedLinkError} or {@link NoClassDefFoundError}.
 */
public final class Cuda {
    public static final String DRIVER = "libcuda.so.1";
    public static final String RUNTIME = "libcudart.so.13";
    public static final String NCCL = "libnccl.so.2";

    private static volatile boolean cudaLoaded;
    private static volatile boolean ncclLoaded;

    private Cuda() {
    }

    /**
     * Makes sure CUDA can be used.
     *
     * @throws WeightLoaderException naming every missing library and where it was looked for
     */
    public static void require() {
        if (cudaLoaded) {
            return;
        }
        synchronized (Cuda.class) {
            if (cudaLoaded) {
                return;
            }
            List<String> miss = missing(DRIVER, RUNTIME);
            if (!miss.isEmpty()) {
                throw new WeightLoaderException("GPU memory needs CUDA, but " + String.join(" and ", miss)
                        + (miss.size() == 1 ? " is" : " are") + " missing (looked for on the system library path and"
                        + " LD_LIBRARY_PATH; " + DRIVER + " comes with the NVIDIA driver, " + RUNTIME
                        + " with the CUDA 13 runtime). Use weight-loader.device = cpu on machines without a GPU.");
            }
            try {
                Loader.load(cudart.class);
                int[] n = new int[1];
                check(cudart.cudaGetDeviceCount(n), "cudaGetDeviceCount");
                if (n[0] == 0) {
                    throw new WeightLoaderException("CUDA found no GPU (cudaGetDeviceCount = 0)");
                }
            } catch (NoClassDefFoundError e) {
                throw new WeightLoaderException(DRIVER + " and " + RUNTIME + " were found, but JavaCPP's CUDA presets are"
                        + " not on the class path: add io.weightloader:weightloader-cuda to use GPU memory ("
                        + e.getMessage() + ")", e);
            } catch (UnsatisfiedLinkError | ExceptionInInitializerError e) {
                throw new WeightLoaderException(DRIVER + " and " + RUNTIME + " were found, but JavaCPP's CUDA wrappers "
                        + "(org.bytedeco:cuda for this platform) could not load: " + e, e);
            }
            cudaLoaded = true;
        }
    }

    /** Makes sure NCCL can be used (and CUDA). */
    public static void requireNccl() {
        require();
        if (ncclLoaded) {
            return;
        }
        synchronized (Cuda.class) {
            if (ncclLoaded) {
                return;
            }
            if (!missing(NCCL).isEmpty()) {
                throw new WeightLoaderException("the nccl backend needs NCCL, but " + NCCL + " is missing (looked for on"
                        + " the system library path and LD_LIBRARY_PATH)");
            }
            try {
                Loader.load(nccl.class);
            } catch (UnsatisfiedLinkError | NoClassDefFoundError | ExceptionInInitializerError e) {
                throw new WeightLoaderException(NCCL + " was found, but JavaCPP's NCCL wrapper could not load: " + e, e);
            }
            ncclLoaded = true;
        }
    }

    /** True when {@link #require()} would succeed. */
    public static boolean available() {
        try {
            require();
            return true;
        } catch (WeightLoaderException e) {
            return false;
        }
    }

    public static int deviceCount() {
        require();
        int[] n = new int[1];
        check(cudart.cudaGetDeviceCount(n), "cudaGetDeviceCount");
        return n[0];
    }

    /** Makes {@code device} current for this thread. */
    public static void use(Device device) {
        if (device.isHost()) {
            throw new IllegalArgumentException("not a CUDA device: " + device);
        }
        require();
        check(cudart.cudaSetDevice(device.index()), "cudaSetDevice(" + device.index() + ")");
    }

    /** The libraries of {@code names} that the dynamic linker cannot open. */
    static List<String> missing(String... names) {
        List<String> out = new ArrayList<>();
        for (String n : names) {
            try {
                NativeLibrary.getInstance(n);
            } catch (UnsatisfiedLinkError e) {
                out.add(n);
            }
        }
        return out;
    }

    /** One check for every CUDA runtime call: the message holds the operation, the code and CUDA's text. */
    public static void check(int rc, String operation) {
        if (rc != cudart.cudaSuccess) {
            String text;
            try {
                text = cudart.cudaGetErrorName(rc).getString() + ": " + cudart.cudaGetErrorString(rc).getString();
            } catch (RuntimeException | LinkageError e) {
                text = "error " + rc;
            }
            throw new WeightLoaderException(operation + " failed (" + rc + ", " + text + ")");
        }
    }

    /**
     * One check for every CUDA driver call ({@code CUresult}): the message holds the operation (name it with the
     * device), the code and the driver's name and text for it.
     */
    public static void checkDriver(int rc, String operation) {
        if (rc != cudart.CUDA_SUCCESS) {
            String text;
            try (org.bytedeco.javacpp.PointerPointer<?> name = new org.bytedeco.javacpp.PointerPointer<>(1);
                 org.bytedeco.javacpp.PointerPointer<?> what = new org.bytedeco.javacpp.PointerPointer<>(1)) {
                boolean named = cudart.cuGetErrorName(rc, name) == cudart.CUDA_SUCCESS && name.get(0) != null;
                boolean told = cudart.cuGetErrorString(rc, what) == cudart.CUDA_SUCCESS && what.get(0) != null;
                text = (named ? name.getString(0) : "CUresult " + rc) + (told ? ": " + what.getString(0) : "");
            } catch (RuntimeException | LinkageError e) {
                text = "CUresult " + rc;
            }
            throw new WeightLoaderException(operation + " failed (" + rc + ", " + text + ")");
        }
    }

    /** Free and total memory of a GPU, as {@code cudaMemGetInfo} reports them. */
    public record MemoryInfo(long free, long total) {
    }

    /** {@code cudaMemGetInfo} on {@code device} (made current for this thread). */
    public static MemoryInfo memoryInfo(Device device) {
        use(device);
        try (org.bytedeco.javacpp.SizeTPointer free = new org.bytedeco.javacpp.SizeTPointer(1);
             org.bytedeco.javacpp.SizeTPointer total = new org.bytedeco.javacpp.SizeTPointer(1)) {
            check(cudart.cudaMemGetInfo(free, total), "cudaMemGetInfo on " + device);
            return new MemoryInfo(free.get(), total.get());
        }
    }

    /** A JavaCPP pointer to a raw address (no ownership). */
    public static Pointer pointer(long address) {
        return new RawPointer(address);
    }

    private static final class RawPointer extends Pointer {
        RawPointer(long a) {
            address = a;
        }
    }
}
