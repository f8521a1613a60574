package io.weightloader.backend.nccl;

import io.weightloader.memory.internal.LibC;
import io.weightloader.api.Device;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.memory.cuda.Cuda;
import io.weightloader.memory.cuda.DeviceArena;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.locks.LockSupport;
import java.util.function.IntPredicate;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.cuda.global.nccl;
import org.bytedeco.cuda.nccl.ncclComm;
import org.bytedeco.cuda.nccl.ncclUniqueId;
import org.bytedeco.javacpp.Pointer;

/**
 * NCCL through JavaCPP ({@code org.bytedeco.cuda.global.nccl}). The seed (rank 0) sends each tensor to the client
 * (rank 1) in one NCCL group, with ncclSend/ncclRecv or (same bytes, a collective) ncclBroadcast. Communicators
 * are non-blocking
 * ({@code NCCL_COMM_BLOCKING=0} is set in the process environment unless the user set it), so that every step
 * can be given a deadline and aborted with {@code ncclCommAbort} when it passes (on its own thread: see
 * {@link #abort}).
 */
final class JavaCppNccl implements NcclRuntime {
    static final int UNIQUE_ID_BYTES = 128;
    private static volatile boolean initialised;

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
                LibC.require(); // libc's setenv, so NCCL (which reads the C environment) sees our settings
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
    public Timings transfer(Device device, byte[] uniqueId, int rank, List<NcclOp> ops, Primitive primitive,
                            long initDeadline, long transferDeadline) {
        long t0 = System.nanoTime();
        init();
        Cuda.use(device);
        ncclUniqueId id = new ncclUniqueId();
        id.internal().put(uniqueId);
        ncclComm comm = new ncclComm();
        CUstream_st stream = new CUstream_st();
        CUevent_st done = new CUevent_st();
        DeviceArena scratch = null;
        try {
            // Outside a group NCCL runs the init on the calling thread, non-blocking mode or not, and the init
            // waits with no timeout for a peer that never joins (seen on GPUs: the caller spun in
            // ncclCommInitRank long past its deadline). Inside a group of a non-blocking communicator it runs
            // on NCCL's own thread and ncclGroupEnd returns ncclInProgress, so the deadline below can fire.
            check(nccl.ncclGroupStart(), "ncclGroupStart (init)");
            int rc = nccl.ncclCommInitRank(comm, 2, id, rank);
            int end = nccl.ncclGroupEnd();
            check(rc, "ncclCommInitRank(rank " + rank + ")");
            check(end, "ncclGroupEnd (init, rank " + rank + ")");
            await(comm, initDeadline, "init (forming the 2-rank NCCL group)");
            Cuda.check(cudart.cudaStreamCreateWithFlags(stream, cudart.cudaStreamNonBlocking), "cudaStreamCreate");
            Cuda.check(cudart.cudaEventCreateWithFlags(done, cudart.cudaEventDisableTiming), "cudaEventCreate");
            // NCCL connects its channels on first use: a one-byte exchange of the same kind does it as part of
            // forming the group, so the transfer phase measures the transfer. The byte's buffer is freed only once
            // nothing can use it any more (after a failure: once the communicator is aborted).
            scratch = DeviceArena.allocate(device, 256);
            Pointer one = Cuda.pointer(scratch.address());
            if (primitive == Primitive.BROADCAST) {
                rc = nccl.ncclBroadcast(one, one, 1, nccl.ncclUint8, 0, comm, stream);
            } else {
                check(nccl.ncclGroupStart(), "ncclGroupStart");
                rc = rank == 0 ? nccl.ncclSend(one, 1, nccl.ncclUint8, 1, comm, stream)
                        : nccl.ncclRecv(one, 1, nccl.ncclUint8, 0, comm, stream);
                check(rc, "connect");
                rc = nccl.ncclGroupEnd();
            }
            check(rc, "connect (" + primitive.text + ")");
            await(comm, initDeadline, "connect");
            waitFor(done, stream, comm, initDeadline, "connect");
            long t1 = System.nanoTime();
            // rank 0 sends each tensor to rank 1, all in one group
            int peer = 1 - rank;
            check(nccl.ncclGroupStart(), "ncclGroupStart");
            for (NcclOp op : ops) {
                if (op.bytes() == 0) {
                    continue;
                }
                if (primitive == Primitive.BROADCAST) {
                    rc = nccl.ncclBroadcast(Cuda.pointer(op.address()), Cuda.pointer(op.address()), op.bytes(),
                            nccl.ncclUint8, 0, comm, stream);
                } else if (rank == 0) {
                    rc = nccl.ncclSend(Cuda.pointer(op.address()), op.bytes(), nccl.ncclUint8, peer, comm, stream);
                } else {
                    rc = nccl.ncclRecv(Cuda.pointer(op.address()), op.bytes(), nccl.ncclUint8, peer, comm, stream);
                }
                check(rc, primitive.text + " of tensor '" + op.tensor() + "'");
            }
            check(nccl.ncclGroupEnd(), "ncclGroupEnd");
            await(comm, transferDeadline, "enqueue (ncclGroupEnd)");
            waitFor(done, stream, comm, transferDeadline, "transfer");
            long t2 = System.nanoTime();
            scratch.close();
            // the bytes are in place: neither side waits for the communicator's teardown (~0.5 s), so the client
            // can use its weights and the seed can serve the next client at once
            background("weightloader-nccl-teardown", () -> {
                Cuda.use(device);
                teardown(comm, stream, done, System.nanoTime() + 60_000_000_000L);
            });
            return new Timings((t1 - t0) / 1e9, (t2 - t1) / 1e9);
        } catch (RuntimeException e) {
            throw abort(device, comm, stream, done, scratch, e);
        } catch (Error e) {
            abort(device, comm, stream, done, scratch, new WeightLoaderException(String.valueOf(e)));
            throw e;
        }
    }

    /** How long a failed step waits for ncclCommAbort before reporting anyway. */
    static final long ABORT_WAIT_NANOS = 10_000_000_000L;

    /**
     * Aborts the communicator after a failed step. ncclCommAbort waits for NCCL's threads of that communicator
     * to notice the abort, which a thread stuck in a system call may not do soon, so it runs on its own thread
     * and the step's error is reported after at most {@link #ABORT_WAIT_NANOS}, saying when the abort had not
     * finished. The stream, event and scratch byte are released only once the abort returned: freeing memory a
     * stuck kernel may still use would block, or worse.
     */
    private static RuntimeException abort(Device device, ncclComm comm, CUstream_st stream, CUevent_st done,
                                          DeviceArena scratch, RuntimeException cause) {
        java.util.concurrent.CountDownLatch aborted = new java.util.concurrent.CountDownLatch(1);
        background("weightloader-nccl-abort", () -> {
            try {
                Cuda.use(device);
                if (comm.address() != 0) { // null when ncclCommInitRank failed before creating it
                    nccl.ncclCommAbort(comm);
                }
                if (done.address() != 0) {
                    cudart.cudaEventDestroy(done);
                }
                if (stream.address() != 0) {
                    cudart.cudaStreamDestroy(stream);
                }
                if (scratch != null) {
                    scratch.close();
                }
            } finally {
                aborted.countDown();
            }
        });
        // an interrupted step (a seed that stops serving) waits for its abort too: its caller frees the memory next
        boolean interrupted = Thread.interrupted();
        long end = System.nanoTime() + ABORT_WAIT_NANOS;
        try {
            while (true) {
                try {
                    if (!aborted.await(Math.max(0, end - System.nanoTime()), java.util.concurrent.TimeUnit.NANOSECONDS)) {
                        return new WeightLoaderException(cause.getMessage() + "; the communicator is being aborted, but "
                                + "ncclCommAbort had not returned after "
                                + ABORT_WAIT_NANOS / 1_000_000_000L + " s and goes on in the background (NCCL may still"
                                + " use the destination memory until it does)", cause);
                    }
                    break;
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
        return new WeightLoaderException(cause.getMessage() + "; communicator aborted", cause);
    }

    private static void background(String name, Runnable r) {
        Thread t = new Thread(() -> {
            try {
                r.run();
            } catch (RuntimeException e) {
                org.slf4j.LoggerFactory.getLogger(JavaCppNccl.class).warn("{} failed: {}", name, e.getMessage());
            }
        }, name);
        t.setDaemon(true);
        t.start();
    }

    private static void teardown(ncclComm comm, CUstream_st stream, CUevent_st done, long deadline) {
        try {
            check(nccl.ncclCommFinalize(comm), "ncclCommFinalize");
            await(comm, deadline, "finalize");
            nccl.ncclCommDestroy(comm);
        } catch (RuntimeException e) {
            nccl.ncclCommAbort(comm);
            throw e;
        } finally {
            cudart.cudaEventDestroy(done);
            cudart.cudaStreamDestroy(stream);
        }
    }

    /** Waits until the stream's work so far is done, watching the communicator for errors, until the deadline. */
    private static void waitFor(CUevent_st done, CUstream_st stream, ncclComm comm, long deadline, String step) {
        Cuda.check(cudart.cudaEventRecord(done, stream), "cudaEventRecord");
        poll(comm, deadline, step, status -> {
            int q = cudart.cudaEventQuery(done);
            if (q != cudart.cudaSuccess && q != cudart.cudaErrorNotReady) {
                Cuda.check(q, "waiting for NCCL step '" + step + "'");
            }
            return q == cudart.cudaSuccess;
        });
    }

    /** Polls a non-blocking communicator until its pending operation finished, or the deadline. */
    private static void await(ncclComm comm, long deadline, String step) {
        poll(comm, deadline, step, status -> status == nccl.ncclSuccess);
    }

    /**
     * Polls until {@code finished} (given the communicator's asynchronous status) says so, failing on an NCCL
     * error or when the deadline passes.
     */
    private static void poll(ncclComm comm, long deadline, String step, IntPredicate finished) {
        int[] st = new int[1];
        long pause = 20_000;
        while (true) {
            check(nccl.ncclCommGetAsyncError(comm, st), "ncclCommGetAsyncError during " + step);
            if (st[0] != nccl.ncclSuccess && st[0] != nccl.ncclInProgress) {
                throw new WeightLoaderException("NCCL step '" + step + "' failed (" + st[0] + ", "
                        + nccl.ncclGetErrorString(st[0]).getString() + ")");
            }
            if (finished.test(st[0])) {
                return;
            }
            if (Thread.currentThread().isInterrupted()) { // the seed stopped serving (or released its memory)
                throw new WeightLoaderException("NCCL step '" + step + "' was interrupted");
            }
            if (System.nanoTime() > deadline) {
                throw new WeightLoaderException("NCCL step '" + step + "' did not finish before its deadline "
                        + "(is the peer alive and reachable?)");
            }
            LockSupport.parkNanos(pause);
            pause = Math.min(pause * 2, 1_000_000);
        }
    }
}
