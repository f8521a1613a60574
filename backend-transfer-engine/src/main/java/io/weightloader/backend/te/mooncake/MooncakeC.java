package io.weightloader.backend.te.mooncake;

import com.sun.jna.Library;
import com.sun.jna.Pointer;
import com.sun.jna.Structure;

/**
 * JNA mapping of Mooncake Transfer Engine's C API ({@code transfer_engine_c.h}). Not API: public only because
 * JNA reflects on it; use {@link MooncakeEngine}.
 *
 * <p>Type mapping (x86_64/aarch64 LP64): {@code uint64_t}, {@code size_t} and {@code batch_id_t} are
 * {@code long}; {@code segment_id_t} is {@code int}; {@code transfer_engine_t}, {@code transport_t} and
 * {@code void*} are {@link Pointer}. Two return-code conventions: {@code registerLocalMemory},
 * {@code openSegment} and friends return 0 or a negative {@code ERR_*}; {@code submitTransfer},
 * {@code getTransferStatus} and {@code freeBatchID} return 0 or a positive {@code Status::Code}.
 * See {@link MooncakeLibrary#check(int, String)}.
 */
public interface MooncakeC extends Library {

    int OPCODE_READ = 0;
    int OPCODE_WRITE = 1;

    int STATUS_WAITING = 0;
    int STATUS_PENDING = 1;
    int STATUS_INVALID = 2;
    int STATUS_CANCELED = 3;
    int STATUS_COMPLETED = 4;
    int STATUS_TIMEOUT = 5;
    int STATUS_FAILED = 6;

    /** {@code INVALID_BATCH} ({@code UINT64_MAX}). */
    long INVALID_BATCH = -1L;

    /** {@code struct transfer_request}: 40 bytes, padding after {@code opcode} and {@code target_id}. */
    @Structure.FieldOrder({"opcode", "source", "target_id", "target_offset", "length"})
    final class TransferRequest extends Structure {
        public int opcode;
        public Pointer source;
        public int target_id;
        /** Absolute virtual address in the target process, not an offset into a buffer. */
        public long target_offset;
        public long length;

        public TransferRequest() {
            super();
        }

        public TransferRequest(Pointer memory) {
            super(memory);
        }
    }

    /** {@code struct transfer_status}: 16 bytes. */
    @Structure.FieldOrder({"status", "transferred_bytes"})
    final class TransferStatus extends Structure {
        public int status;
        public long transferred_bytes;
    }

    Pointer createTransferEngine(String metadataConnString, String localServerName, String ipOrHostName,
            long rpcPort, int autoDiscover);

    int discoverTopology(Pointer engine);

    int getLocalIpAndPort(Pointer engine, byte[] bufOut, long bufLen);

    /** {@code args} is a {@code void**} (may be null); for rdma {@code args[0]} is a NIC priority matrix. */
    Pointer installTransport(Pointer engine, String proto, Pointer args);

    int uninstallTransport(Pointer engine, String proto);

    int openSegment(Pointer engine, String segmentName);

    int closeSegment(Pointer engine, int segmentId);

    void destroyTransferEngine(Pointer engine);

    int registerLocalMemory(Pointer engine, Pointer addr, long length, String location, int remoteAccessible);

    int unregisterLocalMemory(Pointer engine, Pointer addr);

    long allocateBatchID(Pointer engine, long batchSize);

    /** {@code entries} must be a contiguous array ({@link Structure#toArray(int)}). */
    int submitTransfer(Pointer engine, long batchId, TransferRequest[] entries, long count);

    int getTransferStatus(Pointer engine, long batchId, long taskId, TransferStatus status);

    int freeBatchID(Pointer engine, long batchId);
}
