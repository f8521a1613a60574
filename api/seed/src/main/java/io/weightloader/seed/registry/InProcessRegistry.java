package io.weightloader.seed.registry;

import io.weightloader.api.config.RankKey;
import io.weightloader.seed.Directory;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * The embedded registry ({@code weight-loader.directory = ""}): a {@link Directory} in this process, keyed by (model
 * id, rank), its relays' liveness the directory's heartbeat rule ({@link Directory#EXPIRY_NANOS}). Several of these
 * over one directory stand for several processes sharing it: closing one stops its renewals, and its entries go when
 * the directory's expiry passes. Assignments are the directory's own ({@link Directory#claim}): one client per source,
 * a lease renewed every {@link Directory#HEARTBEAT_MILLIS} that ends {@link Directory#LEASE_NANOS} after its handle
 * stops renewing it. Nothing to install; nothing outlives the process.
 */
public final class InProcessRegistry implements SourceRegistry {
    /** The directory's rank key for a model's rank. */
    record Key(String modelId, RankKey rank) {
    }

    private final Directory directory;
    private final Shared shared;
    /** What each address registered, by key: the shared state beside the directory's liveness. */
    private final Map<Key, Map<String, SourceEntry>> entries;
    private final ScheduledExecutorService beats;
    private volatile boolean closed;

    /** A registry over a directory of its own. */
    public InProcessRegistry() {
        this(new Shared());
    }

    /** Another handle on {@code shared}, as another process of the fleet would hold. */
    public InProcessRegistry(Shared shared) {
        this.directory = shared.directory;
        this.shared = shared;
        this.entries = shared.entries;
        this.beats = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "weightloader-registry-heartbeat");
            t.setDaemon(true);
            return t;
        });
    }

    /** A directory and its entries, shared by the {@link InProcessRegistry} handles made from it. */
    public static final class Shared {
        final Directory directory = new Directory();
        final Map<Key, Map<String, SourceEntry>> entries = new ConcurrentHashMap<>();
        /** Each rank's chain: its end, and what each link joined after ("" for none); guarded by this. */
        final Map<Key, String> ends = new java.util.HashMap<>();
        final Map<Key, Map<String, String>> links = new java.util.HashMap<>();
    }

    @Override
    public String describe() {
        return "in-process";
    }

    @Override
    public long ttlMillis() {
        return TimeUnit.NANOSECONDS.toMillis(Directory.EXPIRY_NANOS);
    }

    @Override
    public Registration register(SourceEntry source) {
        Objects.requireNonNull(source, "source is null");
        if (closed) {
            throw new RegistryException("in-process registry: closed");
        }
        Key key = new Key(source.modelId(), source.fingerprint().rank());
        return new Registration() {
            private volatile SourceEntry entry = source;
            private final ScheduledFuture<?> beat;

            {
                beat();
                beat = beats.scheduleWithFixedDelay(this::beat, Directory.HEARTBEAT_MILLIS, Directory.HEARTBEAT_MILLIS,
                        TimeUnit.MILLISECONDS);
            }

            private void beat() {
                SourceEntry e = entry;
                entries.computeIfAbsent(key, k -> new ConcurrentHashMap<>()).put(e.address(), e);
                directory.register(key, e.address(), e.ready(), !e.ready());
            }

            @Override
            public void update(boolean ready) {
                entry = new SourceEntry(source.address(), source.modelId(), source.fingerprint(), ready);
                beat();
            }

            @Override
            public Optional<String> joinChain() {
                String self = source.address();
                synchronized (shared) {
                    Optional<String> after = Optional.ofNullable(shared.ends.get(key))
                            .filter(a -> !a.equals(self) && live(key).contains(a));
                    shared.ends.put(key, self);
                    shared.links.computeIfAbsent(key, k -> new java.util.HashMap<>()).put(self, after.orElse(""));
                    return after;
                }
            }

            @Override
            public void close() {
                if (beat.cancel(false)) {
                    directory.drop(key, source.address());
                    Map<String, SourceEntry> m = entries.get(key);
                    if (m != null) {
                        m.remove(source.address());
                    }
                    synchronized (shared) { // its chain keys go with its entry, as on its lease in etcd
                        shared.ends.remove(key, source.address());
                        Map<String, String> l = shared.links.get(key);
                        if (l != null) {
                            l.remove(source.address());
                        }
                    }
                }
            }
        };
    }

    /** The addresses the directory still lists for {@code key}. */
    private java.util.Set<String> live(Key key) {
        java.util.Set<String> out = new java.util.HashSet<>();
        directory.relays(key).forEach(r -> out.add((String) r.get("address")));
        return out;
    }

    /** The chain of the relays still listed: a link whose relay stopped renewing goes with its entry. */
    @Override
    public Chains.Chain chain(String modelId, RankKey rank) {
        Key key = new Key(SourceEntry.checkModelId(modelId), rank);
        java.util.Set<String> live = live(key);
        synchronized (shared) {
            Map<String, String> after = new java.util.HashMap<>(shared.links.getOrDefault(key, Map.of()));
            after.keySet().retainAll(live);
            return new Chains.Chain(Optional.ofNullable(shared.ends.get(key)).filter(live::contains), after);
        }
    }

    @Override
    public List<SourceEntry> listAll(String modelId, RankKey rank) {
        Key key = new Key(SourceEntry.checkModelId(modelId), rank);
        Map<String, SourceEntry> m = entries.getOrDefault(key, Map.of());
        List<SourceEntry> out = new ArrayList<>();
        for (Map<String, Object> relay : directory.relays(key)) {
            SourceEntry e = m.get((String) relay.get("address"));
            if (e != null) {
                out.add(e);
            }
        }
        return out;
    }

    @Override
    public Optional<Assignment> claim(String modelId, RankKey rank, String source, String client) {
        Key key = new Key(SourceEntry.checkModelId(modelId), rank);
        SourceEntry.checkAddress(source);
        Assignments.checkClient(client);
        if (closed) {
            throw new RegistryException("in-process registry: closed");
        }
        if (!directory.claim(key, source, client)) {
            return Optional.empty();
        }
        ScheduledFuture<?> renewal = beats.scheduleWithFixedDelay(() -> directory.renew(key, source, client),
                Directory.HEARTBEAT_MILLIS, Directory.HEARTBEAT_MILLIS, TimeUnit.MILLISECONDS);
        return Optional.of(new Assignment() {
            @Override
            public String source() {
                return source;
            }

            @Override
            public String client() {
                return client;
            }

            @Override
            public void close() {
                // a closed handle stands for a dead process: its claims end when their leases do, not now
                if (renewal.cancel(false) && !closed) {
                    directory.done(key, source, client);
                }
            }
        });
    }

    @Override
    public List<Assignments.Held> assignments(String modelId, RankKey rank) {
        List<Assignments.Held> out = new ArrayList<>();
        directory.clients(new Key(SourceEntry.checkModelId(modelId), rank))
                .forEach((source, clients) -> clients.forEach(c -> out.add(new Assignments.Held(source, c))));
        return out;
    }

    /** The directory's changes; its leases and heartbeats run out without an event, so a waiter looks every beat. */
    @Override
    public Changes watch(String modelId, RankKey rank) {
        SourceEntry.checkModelId(modelId);
        return new Changes() {
            private long seen = directory.version();

            @Override
            public boolean await(long deadlineNanos) throws InterruptedException {
                long beat = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(Directory.HEARTBEAT_MILLIS);
                long now = directory.awaitChange(seen, Math.min(deadlineNanos, beat));
                if (now != seen) {
                    seen = now;
                    return true;
                }
                return System.nanoTime() < deadlineNanos;
            }

            @Override
            public void close() {
            }
        };
    }

    @Override
    public void close() {
        closed = true;
        beats.shutdownNow();
    }
}
