package io.weightloader.backend.local;

import io.weightloader.api.Device;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.memory.Threads;
import java.util.HashMap;
import java.util.Map;
import org.slf4j.Logger;

/**
 * A backend's staging buffers, per destination GPU: up to one stager per reader thread (two pinned buffers of
 * {@code staging-size} each), kept for the backend's life. Pinning host memory is slow (about 1.4 GB/s), so a host that
 * loads more than once pins its staging buffers once. A backend made for a GPU starts pinning them when it is made
 * ({@link #prepare}); a load that finds fewer than it has threads makes the others as its threads first need them.
 */
final class StagerCache {
    private final int stagingSize;
    private final int threads;
    private final Logger log;
    private final Map<Device, Stagers> cache = new HashMap<>();
    private volatile Thread preparing;

    /** @param log where a failure to pin ahead of the first load is told (the backend's logger) */
    StagerCache(int stagingSize, int threads, Logger log) {
        this.stagingSize = stagingSize;
        this.threads = threads;
        this.log = log;
    }

    /**
     * Starts pinning {@code device}'s stagers on a background thread, for a backend made to load into that GPU
     * ({@code weight-loader.device}): pinning runs at about 1.4 GB/s and holds up the copies of a load that runs beside
     * it, so a process's first load, if it pinned them itself, spent a fifth of its time pinning (docs/PERFORMANCE.md).
     * What the host does before its first load (allocating the weights' GPU memory, building the model) hides it. A
     * load that comes sooner takes the stagers made so far and makes the rest itself; a failure here is left for the
     * load to meet and report.
     */
    void prepare(Device device) {
        if (device.isHost()) {
            return;
        }
        Stagers pool;
        synchronized (cache) {
            pool = cache.computeIfAbsent(device, k -> new Stagers(k, stagingSize, threads));
        }
        Thread t = Threads.daemon("weightloader-local-pin").newThread(() -> {
            try {
                pool.fill();
            } catch (RuntimeException e) {
                log.debug("pinning staging buffers for {} ahead of"
                        + " the first load failed; the load will pin its own: {}", device, e.toString());
            }
        });
        preparing = t;
        t.start();
    }

    /** The stagers of every GPU the request loads into, made (empty) where there are none yet. */
    Map<Device, Stagers> forLoad(LoadRequest request) {
        Map<Device, Stagers> out = new HashMap<>();
        synchronized (cache) {
            for (TensorDestination d : request.tensors()) {
                Device dev = d.region().device();
                if (!dev.isHost() && !out.containsKey(dev)) {
                    out.put(dev, cache.computeIfAbsent(dev, k -> new Stagers(k, stagingSize, threads)));
                }
            }
        }
        return out;
    }

    /** After a failed load a stager's state is unknown: drops and closes these, the next load pins new ones. */
    void discard(Map<Device, Stagers> used) {
        synchronized (cache) {
            used.keySet().forEach(cache::remove);
        }
        used.values().forEach(Stagers::close);
    }

    /** Waits for {@link #prepare}'s thread, so that the stagers it makes are closed by {@link #close}, not leaked. */
    void awaitPreparing() {
        Thread t = preparing;
        if (t != null) {
            try {
                t.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    void close() {
        synchronized (cache) {
            cache.values().forEach(Stagers::close);
            cache.clear();
        }
    }
}
