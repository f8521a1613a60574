package io.weightloader.benchmarks;

import io.weightloader.api.Device;
import io.weightloader.memory.cuda.Cuda;
import io.weightloader.memory.cuda.DeviceArena;
import java.io.PrintStream;
import org.bytedeco.cuda.cublas.cublasContext;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cublas;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.FloatPointer;

/**
 * A stand-in inference load: bf16 GEMMs (n x n x n) through cuBLAS on one GPU, in its own thread and stream,
 * printing its throughput every half second as {@code GEMM <epoch-ms> <TFLOP/s>} and each completion as
 * {@code g <nanoTime>}.
 */
final class GemmLoad implements AutoCloseable {
    private final Device device;
    private final int n;
    private final PrintStream out;
    private final Thread thread;
    private volatile boolean stop;
    private volatile boolean paused;
    private volatile Throwable failure;

    GemmLoad(Device device, int n, PrintStream out) {
        this.device = device;
        this.n = n;
        this.out = out;
        this.thread = new Thread(this::run, "gemm-load");
        this.thread.setDaemon(true);
    }

    GemmLoad start() {
        thread.start();
        return this;
    }

    private void run() {
        try {
            Cuda.use(device);
            long bytes = 2L * n * n;
            try (DeviceArena a = DeviceArena.allocate(device, bytes); DeviceArena b = DeviceArena.allocate(device, bytes);
                 DeviceArena c = DeviceArena.allocate(device, bytes);
                 FloatPointer alpha = new FloatPointer(1.0f); FloatPointer beta = new FloatPointer(0.0f)) {
                Cuda.check(cudart.cudaMemset(Cuda.pointer(a.address()), 0x3c, bytes), "cudaMemset");
                Cuda.check(cudart.cudaMemset(Cuda.pointer(b.address()), 0x3c, bytes), "cudaMemset");
                cublasContext h = new cublasContext();
                check(cublas.cublasCreate_v2(h), "cublasCreate");
                CUstream_st stream = new CUstream_st();
                Cuda.check(cudart.cudaStreamCreateWithFlags(stream, cudart.cudaStreamNonBlocking), "cudaStreamCreate");
                check(cublas.cublasSetStream_v2(h, stream), "cublasSetStream");
                // two GEMMs in flight: the next is queued before waiting for the previous, as a serving loop keeps
                // its GPU fed, so host-side jitter (GC, the control plane) does not leave the GPU idle
                CUevent_st[] ev = {new CUevent_st(), new CUevent_st()};
                for (CUevent_st e : ev) {
                    Cuda.check(cudart.cudaEventCreateWithFlags(e, cudart.cudaEventDisableTiming), "cudaEventCreate");
                }
                Runnable launch = () -> check(cublas.cublasGemmEx(h, cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_N, n, n, n,
                        alpha, Cuda.pointer(a.address()), cudart.CUDA_R_16BF, n, Cuda.pointer(b.address()),
                        cudart.CUDA_R_16BF, n, beta, Cuda.pointer(c.address()), cudart.CUDA_R_16BF, n,
                        cublas.CUBLAS_COMPUTE_32F, cublas.CUBLAS_GEMM_DEFAULT), "cublasGemmEx");
                double flopsPerGemm = 2.0 * n * n * n;
                long count = 0;
                long t0 = System.nanoTime();
                launch.run();
                Cuda.check(cudart.cudaEventRecord(ev[0], stream), "cudaEventRecord");
                for (long i = 0; !stop; i++) {
                    if (paused) {
                        Cuda.check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize");
                        while (paused && !stop) {
                            Thread.sleep(5);
                        }
                        count = 0;
                        t0 = System.nanoTime();
                    }
                    launch.run();
                    Cuda.check(cudart.cudaEventRecord(ev[(int) ((i + 1) & 1)], stream), "cudaEventRecord");
                    Cuda.check(cudart.cudaEventSynchronize(ev[(int) (i & 1)]), "cudaEventSynchronize");
                    count++;
                    long now = System.nanoTime();
                    // every completion, on the machine's monotonic clock (shared by processes on one host), so a
                    // client can measure throughput inside its own transfer windows
                    out.print("g ");
                    out.println(now);
                    if (now - t0 >= 500_000_000L) {
                        out.printf("GEMM %d %.2f%n", System.currentTimeMillis(), count * flopsPerGemm / ((now - t0) / 1e9) / 1e12);
                        out.flush();
                        count = 0;
                        t0 = now;
                    }
                }
                Cuda.check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize");
                for (CUevent_st e : ev) {
                    cudart.cudaEventDestroy(e);
                }
                cublas.cublasDestroy_v2(h);
                cudart.cudaStreamDestroy(stream);
            }
        } catch (Throwable t) {
            failure = t;
            out.println("GEMM-FAILED " + t);
            out.flush();
        }
    }

    private static void check(int rc, String op) {
        if (rc != cublas.CUBLAS_STATUS_SUCCESS) {
            throw new IllegalStateException(op + " failed with cuBLAS status " + rc);
        }
    }

    /** Stops issuing GEMMs (after the ones in flight) until {@link #resume()}. */
    void pause() {
        paused = true;
    }

    void resume() {
        paused = false;
    }

    Throwable failure() {
        return failure;
    }

    @Override
    public void close() throws InterruptedException {
        stop = true;
        thread.join(10_000);
    }
}
