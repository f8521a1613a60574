package io.weightloader.registry.etcd;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Watch;
import io.etcd.jetcd.options.WatchOption;
import io.etcd.jetcd.watch.WatchResponse;
import io.weightloader.seed.registry.SourceRegistry;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * etcd watches on a few key prefixes from one revision on ({@link SourceRegistry#watch}): every put or delete under
 * them after that revision wakes {@link #await}. A watch that fails (etcd out of reach, the revision compacted) turns
 * into looking again every second, said once in a WARN line: a waiter may wake for nothing, never sleep through a
 * change.
 */
final class EtcdChanges implements SourceRegistry.Changes {
    private static final Logger LOG = LoggerFactory.getLogger(EtcdChanges.class);
    /** How often a waiter looks again once a watch failed. */
    static final long POLL_MILLIS = 1000;

    private final String registry;
    private final List<Watch.Watcher> watchers = new ArrayList<>();
    private long events;
    private long seen;
    private boolean broken;
    private volatile boolean closed;

    /**
     * @param revision the first revision to report: one after the revision the caller's reads will see at least
     */
    EtcdChanges(Watch watch, String registry, List<String> prefixes, long revision) {
        this.registry = registry;
        try {
            for (String prefix : prefixes) {
                watchers.add(watch.watch(ByteSequence.from(prefix, StandardCharsets.UTF_8),
                        WatchOption.builder().isPrefix(true).withRevision(revision).build(),
                        Watch.listener(this::onNext, this::onError, () -> onError(null))));
            }
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    private synchronized void onNext(WatchResponse r) {
        if (!r.getEvents().isEmpty()) {
            events++;
            notifyAll();
        }
    }

    private synchronized void onError(Throwable t) {
        if (!broken && !closed) {
            LOG.warn("registry {}: a watch ended ({}); looking again every {} ms instead", registry,
                    t == null ? "completed" : t.getMessage(), POLL_MILLIS);
        }
        broken = true;
        events++;
        notifyAll();
    }

    @Override
    public synchronized boolean await(long deadlineNanos) throws InterruptedException {
        long pollUntil = System.nanoTime() + POLL_MILLIS * 1_000_000L;
        while (events == seen) {
            long until = broken ? Math.min(deadlineNanos, pollUntil) : deadlineNanos;
            long left = until - System.nanoTime();
            if (left <= 0) {
                return broken && System.nanoTime() < deadlineNanos;
            }
            wait(Math.max(1, left / 1_000_000L));
        }
        seen = events;
        return true;
    }

    @Override
    public void close() {
        closed = true;
        for (Watch.Watcher w : watchers) {
            try {
                w.close();
            } catch (RuntimeException e) {
                LOG.debug("registry {}: closing a watch failed", registry, e);
            }
        }
    }
}
