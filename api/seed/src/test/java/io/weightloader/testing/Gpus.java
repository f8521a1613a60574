package io.weightloader.testing;

import io.weightloader.memory.cuda.Cuda;
import org.junit.jupiter.api.Assumptions;

/** Skips a test, with the reason printed, unless this machine has enough GPUs (and CUDA). */
public final class Gpus {
    private Gpus() {
    }

    public static void require(String test, int count) {
        String why = null;
        if (!Cuda.available()) {
            why = "needs CUDA (libcuda.so.1, libcudart.so.13) and a GPU";
        } else if (Cuda.deviceCount() < count) {
            why = "needs " + count + " GPUs, this machine has " + Cuda.deviceCount();
        }
        if (why != null) {
            System.err.println("SKIPPED " + test + ": " + why);
            Assumptions.abort(why);
        }
    }

    /** Skips unless {@code WEIGHTLOADER_MOONCAKE_LIB} names a file. */
    public static void requireMooncake(String test) {
        String lib = System.getenv("WEIGHTLOADER_MOONCAKE_LIB");
        if (lib == null || lib.isBlank() || !new java.io.File(lib).isFile()) {
            String why = "needs Mooncake's libtransfer_engine.so: set WEIGHTLOADER_MOONCAKE_LIB=/path/libtransfer_engine.so";
            System.err.println("SKIPPED " + test + ": " + why);
            Assumptions.abort(why);
        }
    }
}
