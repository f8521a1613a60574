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
     * Forms a 2-rank group with {@code uniqueId} as {@code rank} on {@code device} (connections included), then
     * sends (rank 0) or receives (rank 1) every op, in order, in one NCCL group on a dedicated stream; returns when
     * all bytes arrived. Each step has its deadline; on expiry the communicator is aborted and the step is named.
     */
    Timings transfer(Device device, byte[] uniqueId, int rank, List<NcclOp> ops, Primitive primitive,
                     long initDeadlineNanos, long transferDeadlineNanos);

    /** How tensors move: a grouped ncclSend/ncclRecv pair per tensor, or a grouped ncclBroadcast per tensor. */
    enum Primitive {
        SEND_RECV("send-recv"), BROADCAST("broadcast");

        final String text;

        Primitive(String text) {
            this.text = text;
        }

        static Primitive parse(String s) {
            for (Primitive p : values()) {
                if (p.text.equals(s)) {
                    return p;
                }
            }
            throw new IllegalArgumentException("must be send-recv or broadcast; got '" + s + "'");
        }
    }

    /** Seconds spent forming the group and moving the bytes. */
    record Timings(double groupInitSeconds, double transferSeconds) {
    }
}
