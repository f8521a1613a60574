package io.weightloader.backend.te;

import io.weightloader.backend.te.engine.OneSidedEngine;
import java.util.HashMap;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Connections to seeds, kept for the backend's life (a host may load more than once). */
final class Peers {
    private static final Logger LOG = LoggerFactory.getLogger(Peers.class);

    private final Map<String, OneSidedEngine.Peer> peers = new HashMap<>();

    /** The connection to the engine session {@code session}, opened with {@code engine} on first use. */
    synchronized OneSidedEngine.Peer get(OneSidedEngine engine, String session) {
        return peers.computeIfAbsent(session, engine::open);
    }

    /** Closes the connection to {@code session} (after a failure: the next load opens a new one). */
    synchronized void drop(String session) {
        OneSidedEngine.Peer p = peers.remove(session);
        if (p != null) {
            try {
                p.close();
            } catch (RuntimeException e) {
                LOG.debug("closing the connection to {} failed", session, e);
            }
        }
    }

    synchronized void close() {
        peers.values().forEach(OneSidedEngine.Peer::close);
        peers.clear();
    }
}
