package io.weightloader.backend.te.mooncake;

import com.sun.jna.Pointer;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.backend.te.engine.OneSidedEngine.Batch;
import io.weightloader.backend.te.engine.OneSidedEngine.Peer;
import io.weightloader.backend.te.engine.OneSidedEngine.ReadOp;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A segment opened on a seed by a Mooncake engine: turns read ops into Mooncake transfer requests, one task per
 * run of an op, and submits them as one batch.
 */
final class MooncakePeer implements Peer {
    private final MooncakeHandle handle;
    private final MooncakeC c;
    private final String session;
    private final int segment;
    private final AtomicBoolean peerClosed = new AtomicBoolean();

    MooncakePeer(MooncakeHandle handle, String session, int segment) {
        this.handle = handle;
        this.c = handle.api();
        this.session = session;
        this.segment = segment;
    }

    @Override
    public int maxBatchSize() {
        return MooncakeHandle.MAX_BATCH_SIZE;
    }

    @Override
    public int maxRunsPerOp() {
        return MooncakeHandle.MAX_BATCH_SIZE;
    }

    /** Mooncake reads each run of a strided op as a task of its own. */
    @Override
    public int cost(ReadOp op) {
        return op.count();
    }

    @Override
    public Batch submit(List<ReadOp> ops) {
        Objects.requireNonNull(ops, "ops is null");
        int n = 0;
        for (ReadOp op : ops) {
            n += op.count();
        }
        if (ops.isEmpty() || n > MooncakeHandle.MAX_BATCH_SIZE) {
            throw new IllegalArgumentException("a batch holds 1.." + MooncakeHandle.MAX_BATCH_SIZE + " runs, got " + n);
        }
        if (peerClosed.get()) {
            throw new IllegalStateException("peer " + session + " is closed");
        }
        handle.checkOpen();
        MooncakeC.TransferRequest[] reqs = (MooncakeC.TransferRequest[]) new MooncakeC.TransferRequest()
                .toArray(n);
        int[] first = new int[ops.size() + 1];
        int t = 0;
        for (int i = 0; i < ops.size(); i++) {
            ReadOp op = ops.get(i);
            first[i] = t;
            for (int k = 0; k < op.count(); k++, t++) {
                reqs[t].opcode = MooncakeC.OPCODE_READ;
                reqs[t].source = new Pointer(op.localAddress() + k * op.localStride());
                reqs[t].target_id = segment;
                reqs[t].target_offset = op.remoteAddress() + k * op.remoteStride();
                reqs[t].length = op.length();
            }
        }
        first[ops.size()] = t;
        long batch = c.allocateBatchID(handle.engine(), n);
        if (batch == MooncakeC.INVALID_BATCH || batch == 0) {
            throw new WeightLoaderException("Mooncake allocateBatchID(" + n + ") failed");
        }
        handle.batchOpened();
        MooncakeBatch b = new MooncakeBatch(handle, batch, n, session);
        int rc = c.submitTransfer(handle.engine(), batch, reqs, n);
        if (rc != 0) {
            b.abandonAfterFailedSubmit();
            MooncakeLibrary.check(rc, "submitTransfer(" + n + " reads from " + session + ")");
        }
        return n == ops.size() ? b : new RunsBatch(b, first);
    }

    @Override
    public void close() {
        if (peerClosed.compareAndSet(false, true)) {
            handle.peerClosed(this);
            int rc = c.closeSegment(handle.engine(), segment);
            if (rc != 0) {
                handle.log().debug("Mooncake closeSegment({}) {}", session, MooncakeLibrary.describe(rc));
            }
        }
    }
}
