package io.weightloader.backend.te;

import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.TensorSpec;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.memory.TensorArena;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Staging buffers kept for the backend's life, registered once (allocating and registering 256 MiB of GPU memory
 * per load cost more than a 4 GiB load over NVLink): one per seed rank being read at once.
 */
final class StagingPool {
    private static final Logger LOG = LoggerFactory.getLogger(StagingPool.class);
    /** Staging buffer per lane for the spans of a resharded load (Mooncake reads each row as a task). */
    static final long STAGING_BYTES = 256L << 20;

    private final Map<Device, Deque<TensorArena>> cache = new HashMap<>();

    /** A staging buffer on {@code device}, registered with {@code engine}: a cached one, or a new one. */
    TensorArena take(OneSidedEngine engine, Device device) {
        synchronized (cache) {
            Deque<TensorArena> q = cache.get(device);
            if (q != null && !q.isEmpty()) {
                return q.poll();
            }
        }
        TensorArena a = TensorArena.allocate(device, List.of(TensorSpec.of("staging", DType.U8, STAGING_BYTES)));
        try {
            engine.registerLocal(List.of(a.destinations().get(0).region()));
        } catch (RuntimeException e) {
            a.close();
            throw e;
        }
        return a;
    }

    /** Back to the cache after a good load; after a failure its state is unknown, so it is freed. */
    void giveBack(OneSidedEngine engine, Device device, TensorArena staging, boolean ok) {
        if (ok) {
            synchronized (cache) {
                cache.computeIfAbsent(device, d -> new ArrayDeque<>()).add(staging);
            }
            return;
        }
        free(engine, staging);
    }

    /** Frees every cached buffer (the backend closes). */
    void close(OneSidedEngine engine) {
        synchronized (cache) {
            cache.values().forEach(q -> q.forEach(a -> free(engine, a)));
            cache.clear();
        }
    }

    private static void free(OneSidedEngine engine, TensorArena staging) {
        try {
            engine.unregisterLocal(List.of(staging.destinations().get(0).region()));
        } catch (RuntimeException e) {
            LOG.debug("unregistering a staging buffer failed", e);
        }
        staging.close();
    }
}
