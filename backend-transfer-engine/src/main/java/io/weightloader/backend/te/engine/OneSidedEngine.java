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
        /** Largest number of ops one batch may hold. */
        int maxBatchSize();

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

    /** Copies remote {@code [remoteAddress, remoteAddress + length)} into local {@code localAddress}. */
    record ReadOp(long localAddress, long remoteAddress, long length) {
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
