package io.weightloader.backend.nccl;

import com.sun.jna.Native;
import com.sun.jna.Platform;
import io.weightloader.api.Device;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.cuda.Cuda;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.locks.LockSupport;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.cuda.global.nccl;
import org.bytedeco.cuda.nccl.ncclComm;
import org.bytedeco.cuda.nccl.ncclUniqueId;

/**
 * NCCL through JavaCPP ({@code org.bytedeco.cuda.global.nccl}). Communicators are non-blocking
 * ({@code NCCL_COMM_BLOCKING=0} is set in the process environment unless the user set it), so that every step
 * can be given a deadline and aborted with {@code ncclCommAbort} when it passes.
 */
final class JavaCppNccl implements NcclRuntime {
    static final int UNIQUE_ID_BYTES = 128;
    private static volatile boolean initialised;

    /** libc's setenv/unsetenv, so NCCL (which reads the C environment) sees our settings. */
    static final class LibC {
        static {
            Native.register(Platform.C_LIBRARY_NAME);
        }

        static native int setenv(String name, String value, int overwrite);

        static native int unsetenv(String name);

        static native String getenv(String name);
    }

    @Override
    public void require() {
        init();
    }

    private static void init() {
        if (initialised) {
            return;
        }
        synchronized (JavaCppNccl.class) {
            if (!initialised) {
                LibC.setenv("NCCL_COMM_BLOCKING", "0", 0);
                Cuda.requireNccl();
                initialised = true;
            }
        }
    }

    static void check(int rc, String operation) {
        if (rc != nccl.ncclSuccess && rc != nccl.ncclInProgress) {
            throw new WeightLoaderException(operation + " failed (" + rc + ", " + nccl.ncclGetErrorString(rc).getString()
                    + ")");
        }
    }

    @Override
    public synchronized byte[] newUniqueId(Optional<String> bootstrap) {
        init();
        ncclUniqueId id = new ncclUniqueId();
        if (bootstrap.isPresent()) {
            LibC.setenv("NCCL_COMM_ID", bootstrap.get(), 1);
        }
        try {
            check(nccl.ncclGetUniqueId(id), "ncclGetUniqueId" + bootstrap.map(b -> " (bootstrap " + b + ")").orElse(""));
        } finally {
            if (bootstrap.isPresent()) {
                LibC.unsetenv("NCCL_COMM_ID");
            }
        }
        byte[] out = new byte[UNIQUE_ID_BYTES];
        id.internal().get(out);
        return out;
    }

    @Override
    public void transfer(Device device, byte[] uniqueId, int rank, List<NcclOp> ops, long initDeadline,
                         long transferDeadline) {
        init();
        Cuda.use(device);
        ncclUniqueId id = new ncclUniqueId();
        id.internal().put(uniqueId);
        ncclComm comm = new ncclComm();
        check(nccl.ncclCommInitRank(comm, 2, id, rank), "ncclCommInitRank(rank " + rank + ")");
        CUstream_st stream = new CUstream_st();
        CUevent_st done = new CUevent_st();
        boolean ok = false;
        try {
            await(comm, initDeadline, "init (forming the 2-rank NCCL group)");
            Cuda.check(cudart.cudaStreamCreateWithFlags(stream, cudart.cudaStreamNonBlocking), "cudaStreamCreate");
            Cuda.check(cudart.cudaEventCreateWithFlags(done, cudart.cudaEventDisableTiming), "cudaEventCreate");
            int peer = 1 - rank;
            check(nccl.ncclGroupStart(), "ncclGroupStart");
            for (NcclOp op : ops) {
                if (op.bytes() == 0) {
                    continue;
                }
                int rc = rank == 0
                        ? nccl.ncclSend(Cuda.pointer(op.address()), op.bytes(), nccl.ncclUint8, peer, comm, stream)
                        : nccl.ncclRecv(Cuda.pointer(op.address()), op.bytes(), nccl.ncclUint8, peer, comm, stream);
                check(rc, (rank == 0 ? "ncclSend" : "ncclRecv") + " of tensor '" + op.tensor() + "'");
            }
            check(nccl.ncclGroupEnd(), "ncclGroupEnd");
            await(comm, transferDeadline, "enqueue (ncclGroupEnd)");
            Cuda.check(cudart.cudaEventRecord(done, stream), "cudaEventRecord");
            long pause = 20_000;
            while (true) {
                int q = cudart.cudaEventQuery(done);
                if (q == cudart.cudaSuccess) {
                    break;
                }
                if (q != cudart.cudaErrorNotReady) {
                    Cuda.check(q, "waiting for the NCCL transfer");
                }
                int[] st = new int[1];
                check(nccl.ncclCommGetAsyncError(comm, st), "ncclCommGetAsyncError");
                if (st[0] != nccl.ncclSuccess && st[0] != nccl.ncclInProgress) {
                    throw new WeightLoaderException("NCCL transfer failed (" + st[0] + ", "
                            + nccl.ncclGetErrorString(st[0]).getString() + ")");
                }
                if (System.nanoTime() > transferDeadline) {
                    throw new WeightLoaderException("NCCL step 'transfer' did not finish before the deadline "
                            + "(weight-loader.remote-instance.transfer-timeout); communicator aborted");
                }
                LockSupport.parkNanos(pause);
                pause = Math.min(pause * 2, 1_000_000);
            }
            check(nccl.ncclCommFinalize(comm), "ncclCommFinalize");
            await(comm, transferDeadline, "finalize");
            ok = true;
        } finally {
            if (ok) {
                nccl.ncclCommDestroy(comm);
            } else {
                nccl.ncclCommAbort(comm);
            }
            if (done.address() != 0) {
                cudart.cudaEventDestroy(done);
            }
            if (stream.address() != 0) {
                cudart.cudaStreamDestroy(stream);
            }
        }
    }

    /** Polls a non-blocking communicator until its pending operation finished, or the deadline. */
    private static void await(ncclComm comm, long deadline, String step) {
        int[] st = new int[1];
        long pause = 20_000;
        while (true) {
            check(nccl.ncclCommGetAsyncError(comm, st), "ncclCommGetAsyncError during " + step);
            if (st[0] == nccl.ncclSuccess) {
                return;
            }
            if (st[0] != nccl.ncclInProgress) {
                throw new WeightLoaderException("NCCL step '" + step + "' failed (" + st[0] + ", "
                        + nccl.ncclGetErrorString(st[0]).getString() + ")");
            }
            if (System.nanoTime() > deadline) {
                throw new WeightLoaderException("NCCL step '" + step + "' did not finish before its deadline; "
                        + "communicator aborted (is the peer alive and reachable?)");
            }
            LockSupport.parkNanos(pause);
            pause = Math.min(pause * 2, 5_000_000);
        }
    }
}
