package io.weightloader.backend.local;

import io.weightloader.api.Device;
import io.weightloader.api.WeightLoaderException;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/** One GPU's stagers: made on demand, at most {@code max}, handed to one reader thread at a time. */
final class Stagers {
    private final Device device;
    private final int stagingSize;
    private final int max;
    private final BlockingQueue<GpuStager> idle;
    private final List<GpuStager> all = new CopyOnWriteArrayList<>();
    private final AtomicInteger made = new AtomicInteger();
    private volatile boolean closed;

    Stagers(Device device, int stagingSize, int max) {
        this.device = device;
        this.stagingSize = stagingSize;
        this.max = max;
        this.idle = new ArrayBlockingQueue<>(max);
    }

    /**
     * An idle stager, or a new one while fewer than {@code max} exist, or the next one given back. Each reader
     * thread holds at most one, and there are {@code max} threads, so a thread that waits gets one.
     */
    GpuStager take() throws InterruptedException {
        while (true) {
            GpuStager g = idle.poll();
            if (g != null) {
                return g;
            }
            for (int n = made.get(); n < max; n = made.get()) {
                if (made.compareAndSet(n, n + 1)) {
                    g = make();
                    return g;
                }
            }
            // all are made or being made (by another thread, or ahead of the load: one that fails frees its place)
            g = idle.poll(10, TimeUnit.MILLISECONDS);
            if (g != null) {
                return g;
            }
        }
    }

    /** A new stager in a place already counted in {@code made}; a failure frees the place. */
    private GpuStager make() {
        GpuStager g;
        try {
            g = new GpuStager(device, stagingSize);
        } catch (RuntimeException e) {
            made.decrementAndGet();
            throw e;
        }
        synchronized (this) {
            if (closed) {
                g.close();
                throw new WeightLoaderException("the local backend's staging buffers for " + device + " were closed");
            }
            all.add(g);
        }
        return g;
    }

    void give(GpuStager g) {
        idle.add(g);
    }

    /** Waits until every copy that any of the stagers queued reached the GPU. */
    void finish() {
        all.forEach(GpuStager::finish);
    }

    synchronized void close() {
        closed = true;
        all.forEach(GpuStager::close);
    }

    /** Makes stagers until there are {@code max}, each given to the idle ones as it is made. */
    void fill() {
        for (int n = made.get(); n < max && !closed; n = made.get()) {
            if (made.compareAndSet(n, n + 1)) {
                idle.add(make());
            }
        }
    }
}
