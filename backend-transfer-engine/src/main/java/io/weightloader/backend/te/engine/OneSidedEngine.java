package io.weightloader.backend.te.engine;

import io.weightloader.api.MemoryRegion;
import java.util.List;

/**
 * A one-sided transfer engine: a seed registers memory once, clients read it without the seed's code (or
 * GPU) doing any per-transfer work. Implemented by the built-in TCP engine and by Mooncake's Transfer Engine.
 *
 * <p>Threading: an engine may be shared; a {@link Batch} belongs to one thread.
 */
public interface OneSidedEngine extends AutoCloseable {

    /** Engine and transport, for every log line and report, e.g. {@code builtin-tcp} or {@code mooncake-tcp}. */
    String name();

    /** What peers dial to reach this engine, {@code host:port}. */
    String sessionId();

    /**
     * Seed side: makes these regions readable by peers. The regions must not overlap (callers merge them
     * first, see {@link RegionMerger}); nothing outside registered regions is ever readable.
     */
    void registerRemoteReadable(List<MemoryRegion> regions);

    /** Client side: registers destination memory (RDMA needs it; TCP engines may do nothing). */
    void registerLocal(List<MemoryRegion> regions);

    /** Client side: undoes {@link #registerLocal}. */
    void unregisterLocal(List<MemoryRegion> regions);

    /** Client side: connects to a seed's engine by its session id. */
    Peer open(String sessionId);

    @Override
    void close();

    /** A connected seed. */
    interface Peer extends AutoCloseable {
        /** Largest number of ops one batch may hold, counted with {@link #cost}. */
        int maxBatchSize();

        /** Most runs one strided op may carry. */
        default int maxRunsPerOp() {
            return 1 << 16;
        }

        /** What one op counts against {@link #maxBatchSize()}: 1, or its runs where the engine reads each alone. */
        default int cost(ReadOp op) {
            return 1;
        }

        /** Starts the reads; returns at once. */
        Batch submit(List<ReadOp> ops);

        @Override
        void close();
    }

    /** Reads in flight. Poll every op to a final state before {@link #close()}. */
    interface Batch extends AutoCloseable {
        int size();

        /** Non-blocking status of op {@code index}. */
        OpStatus status(int index);

        /**
         * Releases the batch. Called with ops still pending (after a deadline), the engine abandons them as
         * safely as it can (the built-in engine drops its connection) and reports whether it could.
         *
         * @return false when the engine had to leak the batch because ops were still in flight
         */
        boolean release();

        @Override
        default void close() {
            release();
        }
    }

    /**
     * Copies {@code count} runs of {@code length} bytes: run {@code i} from remote {@code remoteAddress + i *
     * remoteStride} to local {@code localAddress + i * localStride} (the rows of a tensor-parallel slice). One run:
     * remote {@code [remoteAddress, remoteAddress + length)} into local {@code localAddress}.
     */
    record ReadOp(long localAddress, long remoteAddress, long length, long localStride, long remoteStride, int count) {
        public ReadOp {
            if (length <= 0 || count <= 0 || count > 1 && (localStride < length || remoteStride < length)) {
                throw new IllegalArgumentException("read of " + count + " run(s) of " + length + " bytes, strides "
                        + localStride + "/" + remoteStride + ": runs must be non-empty and must not overlap");
            }
        }

        public ReadOp(long localAddress, long remoteAddress, long length) {
            this(localAddress, remoteAddress, length, length, length, 1);
        }

        /** Bytes the op moves. */
        public long bytes() {
            return length * count;
        }

        /** Remote bytes from the first run's start to the last run's end. */
        public long remoteSpan() {
            return (count - 1) * remoteStride + length;
        }
    }

    enum OpState { PENDING, COMPLETED, FAILED }

    /** State of one op; {@code detail} says why it failed. */
    record OpStatus(OpState state, String detail) {
        public static final OpStatus PENDING = new OpStatus(OpState.PENDING, "");
        public static final OpStatus COMPLETED = new OpStatus(OpState.COMPLETED, "");

        public static OpStatus failed(String detail) {
            return new OpStatus(OpState.FAILED, detail);
        }

        public boolean isFinal() {
            return state != OpState.PENDING;
        }
    }
}
