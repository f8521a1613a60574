package io.weightloader.backend.nccl;

import io.weightloader.api.Device;
import java.util.List;
import java.util.Optional;

/** The NCCL calls the backend needs, behind an interface so the control-plane logic is testable without a GPU. */
interface NcclRuntime {
    /** Fails with a clear error (naming the missing library) when NCCL cannot be used here. */
    void require();

    /** A new NCCL unique id (128 bytes); with {@code bootstrap} ("ip:port") NCCL's bootstrap listens there. */
    byte[] newUniqueId(Optional<String> bootstrap);

    /**
     * Forms a 2-rank group with {@code uniqueId} as {@code rank} on {@code device}, then sends (rank 0) or
     * receives (rank 1) every op, in order, in one NCCL group on a dedicated stream; returns when all bytes
     * arrived. Each step has its deadline; on expiry the communicator is aborted and the step is named.
     */
    void transfer(Device device, byte[] uniqueId, int rank, List<NcclOp> ops, long initDeadlineNanos,
                  long transferDeadlineNanos);
}
