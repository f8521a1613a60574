package io.weightloader.backend.te.mooncake;

import com.sun.jna.Pointer;
import io.weightloader.backend.te.engine.OneSidedEngine.Batch;
import io.weightloader.backend.te.engine.OneSidedEngine.OpStatus;
import java.util.Arrays;
import java.util.Objects;
import java.util.concurrent.TimeUnit;

/**
 * One Mooncake batch: polls each task's status and frees the batch id only once Mooncake
 * confirmed every task final. Confined to one thread.
 */
final class MooncakeBatch implements Batch {
    private final MooncakeHandle handle;
    private final MooncakeC c;
    private final Pointer engine;
    private final long batch;
    private final int size;
    private final String session;
    private final boolean[] seenFinal;
    private final MooncakeC.TransferStatus status = new MooncakeC.TransferStatus();
    private boolean released;

    MooncakeBatch(MooncakeHandle handle, long batch, int size, String session) {
        this.handle = handle;
        this.c = handle.api();
        this.engine = handle.engine();
        this.batch = batch;
        this.size = size;
        this.session = session;
        this.seenFinal = new boolean[size];
    }

    @Override
    public int size() {
        return size;
    }

    @Override
    public OpStatus status(int index) {
        Objects.checkIndex(index, size);
        if (released) {
            throw new IllegalStateException("batch is released");
        }
        int rc = c.getTransferStatus(engine, batch, index, status);
        if (rc != 0) {
            // Not marked final: Mooncake has not confirmed this task is done, so the batch must not be freed.
            return OpStatus.failed("Mooncake getTransferStatus(" + index + ") from " + session + ": "
                    + MooncakeLibrary.describe(rc));
        }
        switch (status.status) {
            case MooncakeC.STATUS_WAITING:
            case MooncakeC.STATUS_PENDING:
                return OpStatus.PENDING;
            case MooncakeC.STATUS_COMPLETED:
                seenFinal[index] = true;
                return OpStatus.COMPLETED;
            default:
                seenFinal[index] = true;
                return OpStatus.failed("Mooncake read from " + session + " ended " + statusName(status.status)
                        + " after " + status.transferred_bytes + " bytes");
        }
    }

    @Override
    public boolean release() {
        if (released) {
            return true;
        }
        for (int i = 0; i < size; i++) {
            if (!seenFinal[i]) {
                handle.log().warn("Mooncake batch from {}: op {} of {} not final; leaking the batch (freeing it now "
                        + "would fail busy, and a freed id must never be touched again)", session, i, size);
                return false;
            }
        }
        released = true;
        handle.batchReleased();
        MooncakeLibrary.check(c.freeBatchID(engine, batch), "freeBatchID");
        return true;
    }

    /** After submitTransfer failed: free the batch if Mooncake queued nothing, else wait briefly for it. */
    void abandonAfterFailedSubmit() {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        for (int i = 0; i < size; i++) {
            while (!seenFinal[i]) {
                int rc = c.getTransferStatus(engine, batch, i, status);
                if (rc == 1) {
                    // Invalid argument = task id out of range: Mooncake queued nothing from here on.
                    Arrays.fill(seenFinal, i, size, true);
                    break;
                }
                if (rc != 0) {
                    break;
                }
                if (status.status != MooncakeC.STATUS_WAITING && status.status != MooncakeC.STATUS_PENDING) {
                    seenFinal[i] = true;
                } else if (System.nanoTime() > deadline) {
                    break;
                } else {
                    Thread.onSpinWait();
                }
            }
        }
        if (!release()) {
            handle.log().warn("Mooncake batch from {} leaked after a failed submit", session);
        }
    }

    static String statusName(int status) {
        switch (status) {
            case MooncakeC.STATUS_WAITING: return "WAITING";
            case MooncakeC.STATUS_PENDING: return "PENDING";
            case MooncakeC.STATUS_INVALID: return "INVALID";
            case MooncakeC.STATUS_CANCELED: return "CANCELED";
            case MooncakeC.STATUS_COMPLETED: return "COMPLETED";
            case MooncakeC.STATUS_TIMEOUT: return "TIMEOUT";
            case MooncakeC.STATUS_FAILED: return "FAILED";
            default: return "status " + status;
        }
    }
}
