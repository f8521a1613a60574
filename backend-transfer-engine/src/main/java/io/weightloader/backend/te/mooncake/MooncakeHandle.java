package io.weightloader.backend.te.mooncake;

import com.sun.jna.Pointer;
import io.weightloader.backend.te.engine.OneSidedEngine.Peer;
import java.util.Collections;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;

/**
 * One native Mooncake engine as its {@link MooncakeEngine}, its {@link MooncakePeer}s and their {@link MooncakeBatch}es
 * share it: the C API, the engine pointer, whether it is closed, the peers open on it and the batches not yet freed.
 */
final class MooncakeHandle {
    /** Largest number of reads (tasks) per batch. */
    static final int MAX_BATCH_SIZE = 256;

    private final MooncakeC c;
    private final Pointer engine;
    private final String sessionId;
    private final Logger log;
    private final AtomicBoolean closed = new AtomicBoolean();
    private final Set<Peer> peers = ConcurrentHashMap.newKeySet();
    private final AtomicInteger liveBatches = new AtomicInteger();

    /** @param log where the engine, its peers and batches log (the engine's logger) */
    MooncakeHandle(MooncakeC c, Pointer engine, String sessionId, Logger log) {
        this.c = c;
        this.engine = engine;
        this.sessionId = sessionId;
        this.log = log;
    }

    MooncakeC api() {
        return c;
    }

    /** The native engine ({@code transfer_engine_t}). */
    Pointer engine() {
        return engine;
    }

    Logger log() {
        return log;
    }

    void checkOpen() {
        if (closed.get()) {
            throw new IllegalStateException("Mooncake engine " + sessionId + " is closed");
        }
    }

    boolean isClosed() {
        return closed.get();
    }

    /** Marks the engine closed; true for the one caller that did. */
    boolean markClosed() {
        return closed.compareAndSet(false, true);
    }

    void peerOpened(Peer peer) {
        peers.add(peer);
    }

    void peerClosed(Peer peer) {
        peers.remove(peer);
    }

    /** The peers open now (a live view: a peer that closes leaves it). */
    Set<Peer> peers() {
        return Collections.unmodifiableSet(peers);
    }

    void batchOpened() {
        liveBatches.incrementAndGet();
    }

    void batchReleased() {
        liveBatches.decrementAndGet();
    }

    /** Batches allocated and not yet freed. */
    int liveBatches() {
        return liveBatches.get();
    }
}
