package io.weightloader.registry.etcd;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Client;
import io.etcd.jetcd.ClientBuilder;
import io.etcd.jetcd.KeyValue;
import io.etcd.jetcd.kv.GetResponse;
import io.etcd.jetcd.kv.TxnResponse;
import io.etcd.jetcd.lease.LeaseKeepAliveResponse;
import io.etcd.jetcd.op.Cmp;
import io.etcd.jetcd.op.CmpTarget;
import io.etcd.jetcd.op.Op;
import io.etcd.jetcd.options.GetOption;
import io.etcd.jetcd.options.PutOption;
import io.weightloader.api.config.RankKey;
import io.weightloader.seed.registry.Assignments;
import io.weightloader.seed.registry.Chains;
import io.weightloader.seed.registry.Entries;
import io.weightloader.seed.registry.RegistryException;
import io.weightloader.seed.registry.SourceEntry;
import io.weightloader.seed.registry.SourceRegistry;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The sources of a model in etcd (docs/PROTOCOL.md, "Registry"): each source's entry is a key under
 * {@link Entries#PREFIX} attached to a lease of its own, renewed every third of {@code lease-ttl}; a source that stops
 * renewing (its process died, or lost etcd) is deleted by etcd when the lease ends; a source that leaves revokes its
 * lease. What etcd holds is parsed strictly ({@link Entries#parse}); entries that do not parse, or whose fingerprint
 * differs, are skipped and named in a log line.
 *
 * <p>Assignments ({@code source-strategy = tree}): a client claims a source with a transaction that creates the key
 * {@link Assignments#key} only if it does not exist, attached to a lease of the claim's own (renewed as an entry's);
 * the client revokes it when its load ends, and etcd deletes it when the client dies and the lease runs out. A waiting
 * client watches the rank's entries and assignments ({@link EtcdChanges}). Thread-safe.
 */
public final class EtcdRegistry implements SourceRegistry, EtcdClaim.Owner {
    private static final Logger LOG = LoggerFactory.getLogger(EtcdRegistry.class);
    /** Most entries read for one (model, rank); more are ignored, with a warning. */
    static final int MAX_ENTRIES = 10_000;
    /** Most times a relay tries to become a chain's end while others keep joining before it. */
    static final int MAX_JOIN_TRIES = 64;
    /** Largest answer read from etcd: {@link #MAX_ENTRIES} of the largest keys and values, with room for framing. */
    static final int MAX_LISTING_BYTES = 64 << 20;

    private final EtcdSettings settings;
    private final Client client;
    private final ScheduledExecutorService renewals;
    private final Set<Lease> leases = ConcurrentHashMap.newKeySet();
    private final Set<EtcdClaim> claims = ConcurrentHashMap.newKeySet();
    private volatile boolean closed;

    private EtcdRegistry(EtcdSettings settings, Client client) {
        this.settings = settings;
        this.client = client;
        this.renewals = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "weightloader-etcd-renewal");
            t.setDaemon(true);
            return t;
        });
    }

    /**
     * Connects, and reads once to check that etcd answers.
     *
     * @throws RegistryException etcd did not answer within {@code connect-timeout} (the message names it)
     */
    static EtcdRegistry connect(EtcdSettings s) {
        ClientBuilder b = Client.builder().connectTimeout(s.connectTimeout())
                // a listing of MAX_ENTRIES entries of the largest size Entries.parse allows fits (gRPC's default, 4 MiB,
                // would fail a legitimate fleet of a few thousand sources)
                .maxInboundMessageSize(MAX_LISTING_BYTES)
                .endpoints(s.endpoints().stream().map(e -> URI.create((s.tls() ? "https://" : "http://") + e))
                        .toArray(URI[]::new));
        try {
            if (s.tls()) {
                b.sslContext(ssl -> {
                    ssl.trustManager(s.ca().get().toFile());
                    s.certificate().ifPresent(c -> ssl.keyManager(c.toFile(), s.key().get().toFile()));
                });
            }
        } catch (javax.net.ssl.SSLException | IllegalArgumentException e) {
            throw new RegistryException("etcd registry " + s.directory() + ": cannot set up TLS from "
                    + EtcdSettings.BASE + ".ca/certificate/key: " + e.getMessage(), e);
        }
        s.authority().ifPresent(b::authority);
        s.user().ifPresent(u -> b.user(bytes(u)));
        s.password().ifPresent(p -> b.password(bytes(p)));
        Client client = b.build();
        EtcdRegistry r = new EtcdRegistry(s, client);
        try {
            r.await(client.getKVClient().get(bytes(Entries.PREFIX), GetOption.builder().withLimit(1)
                    .withKeysOnly(true).build()), s.connectTimeout().toMillis(), "reach it");
        } catch (RuntimeException e) {
            r.close();
            throw e;
        }
        return r;
    }

    @Override
    public String describe() {
        return settings.directory();
    }

    @Override
    public long ttlMillis() {
        return ttlSeconds() * 1000;
    }

    @Override
    public long ttlSeconds() {
        return Math.max(2, (settings.leaseTtl().toMillis() + 999) / 1000);
    }

    @Override
    public Registration register(SourceEntry source) {
        Objects.requireNonNull(source, "source is null");
        if (closed) {
            throw new RegistryException("etcd registry " + describe() + ": closed");
        }
        Lease lease = new Lease(source);
        lease.grant();
        lease.renewal = renewals.scheduleWithFixedDelay(lease::renew, renewEvery(), renewEvery(),
                TimeUnit.MILLISECONDS);
        leases.add(lease);
        return lease;
    }

    @Override
    public List<SourceEntry> listAll(String modelId, RankKey rank) {
        String prefix = Entries.rankPrefix(modelId, rank);
        GetResponse resp = await(client.getKVClient().get(bytes(prefix), GetOption.builder().isPrefix(true)
                .withLimit(MAX_ENTRIES).withSortField(GetOption.SortTarget.KEY)
                .withSortOrder(GetOption.SortOrder.ASCEND).build()), requestMillis(), "list " + prefix);
        if (resp.isMore()) {
            LOG.warn("registry {}: more than {} entries under {}; the rest are ignored", describe(), MAX_ENTRIES,
                    prefix);
        }
        List<SourceEntry> out = new ArrayList<>();
        for (KeyValue kv : resp.getKvs()) {
            byte[] key = kv.getKey().getBytes();
            try {
                out.add(Entries.parse(prefix, key, kv.getValue().getBytes()));
            } catch (IllegalArgumentException e) {
                LOG.warn("registry {}: skipped entry {}: {}", describe(), Entries.show(key), e.getMessage());
            }
        }
        return out;
    }

    @Override
    public Optional<Assignment> claim(String modelId, RankKey rank, String source, String client) {
        String key = Assignments.key(modelId, rank, source);
        String value = Assignments.value(modelId, source, client);
        if (closed) {
            throw new RegistryException("etcd registry " + describe() + ": closed");
        }
        EtcdClaim c = new EtcdClaim(this, key, value, source, client);
        if (!c.take()) {
            return Optional.empty();
        }
        claims.add(c);
        c.renewal = renewals.scheduleWithFixedDelay(c::renew, renewEvery(), renewEvery(), TimeUnit.MILLISECONDS);
        return Optional.of(c);
    }

    /** The jetcd client, for {@link EtcdClaim}. */
    @Override
    public Client client() {
        return client;
    }

    @Override
    public boolean closed() {
        return closed;
    }

    /** A claim released: no longer renewed by this registry. */
    @Override
    public void forget(EtcdClaim c) {
        claims.remove(c);
    }

    @Override
    public List<Assignments.Held> assignments(String modelId, RankKey rank) {
        String prefix = Assignments.rankPrefix(modelId, rank);
        GetResponse resp = await(client.getKVClient().get(bytes(prefix), GetOption.builder().isPrefix(true)
                .withLimit(MAX_ENTRIES).build()), requestMillis(), "list " + prefix);
        List<Assignments.Held> out = new ArrayList<>();
        for (KeyValue kv : resp.getKvs()) {
            byte[] key = kv.getKey().getBytes();
            try {
                out.add(Assignments.parse(prefix, key, kv.getValue().getBytes()));
            } catch (IllegalArgumentException e) {
                LOG.warn("registry {}: skipped assignment {}: {}", describe(), Entries.show(key), e.getMessage());
            }
        }
        return out;
    }

    @Override
    public Changes watch(String modelId, RankKey rank) {
        String entries = Entries.rankPrefix(modelId, rank);
        // the revision now: every change after it is reported, so none made after the caller's next read is missed
        long revision = await(client.getKVClient().get(bytes(entries), GetOption.builder().withLimit(1)
                .withKeysOnly(true).build()), requestMillis(), "read " + entries).getHeader().getRevision();
        return new EtcdChanges(client.getWatchClient(), describe(),
                List.of(entries, Assignments.rankPrefix(modelId, rank)), revision + 1);
    }

    @Override
    public Chains.Chain chain(String modelId, RankKey rank) {
        String prefix = Chains.rankPrefix(modelId, rank);
        GetResponse resp = await(client.getKVClient().get(bytes(prefix), GetOption.builder().isPrefix(true)
                .withLimit(MAX_ENTRIES).build()), requestMillis(), "list " + prefix);
        String end = null;
        Map<String, String> after = new HashMap<>();
        for (KeyValue kv : resp.getKvs()) {
            byte[] key = kv.getKey().getBytes();
            try {
                String e = Chains.parse(prefix, key, kv.getValue().getBytes(), after);
                end = e != null ? e : end;
            } catch (IllegalArgumentException e) {
                LOG.warn("registry {}: skipped chain key {}: {}", describe(), Entries.show(key), e.getMessage());
            }
        }
        return new Chains.Chain(Optional.ofNullable(end), after);
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        renewals.shutdownNow();
        leases.clear();
        claims.clear();
        client.close();
    }

    @Override
    public long renewEvery() {
        return Math.max(200, ttlMillis() / 3);
    }

    /**
     * Renews {@code leaseId} once.
     *
     * @return false when the lease had ended (etcd was out of reach for longer than its TTL)
     * @throws RegistryException etcd could not be reached
     */
    @Override
    public boolean keepAlive(long leaseId, String what) {
        try {
            LeaseKeepAliveResponse r = await(client.getLeaseClient().keepAliveOnce(leaseId), requestMillis(),
                    "renew the lease of " + what);
            return r.getTTL() > 0;
        } catch (RegistryException e) {
            if (String.valueOf(e.getMessage()).contains("not found")) {
                return false;
            }
            throw e;
        }
    }

    @Override
    public void revokeQuietly(long leaseId) {
        client.getLeaseClient().revoke(leaseId).whenComplete((r, t) -> {
            if (t != null) {
                LOG.debug("registry {}: revoking lease {} failed (it ends on its own)", describe(), leaseId, t);
            }
        });
    }

    @Override
    public long requestMillis() {
        return settings.requestTimeout().toMillis();
    }

    @Override
    public <T> T await(CompletableFuture<T> f, long millis, String what) {
        try {
            return f.get(millis, TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            f.cancel(true);
            throw new RegistryException("etcd registry " + describe() + ": could not " + what + " (no answer in "
                    + millis + " ms; is etcd running at " + String.join(",", settings.endpoints()) + "?)", e);
        } catch (ExecutionException e) {
            throw new RegistryException("etcd registry " + describe() + ": could not " + what + ": "
                    + e.getCause().getMessage(), e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new RegistryException("etcd registry " + describe() + ": interrupted while trying to " + what, e);
        }
    }

    static ByteSequence bytes(String s) {
        return ByteSequence.from(s, StandardCharsets.UTF_8);
    }

    /** One source's entry and its lease. */
    private final class Lease implements Registration {
        private final String key;
        private volatile SourceEntry entry;
        private volatile long leaseId;
        private volatile ScheduledFuture<?> renewal;
        private volatile boolean left;

        Lease(SourceEntry entry) {
            this.entry = entry;
            this.key = Entries.key(entry);
        }

        /** A new lease, and the entry put under it. */
        synchronized void grant() {
            leaseId = await(client.getLeaseClient().grant(ttlSeconds()), requestMillis(), "grant a lease").getID();
            put();
        }

        private void put() {
            await(client.getKVClient().put(bytes(key), bytes(Entries.value(entry)),
                    PutOption.builder().withLeaseId(leaseId).build()), requestMillis(), "register " + key);
        }

        void renew() {
            if (left || closed) {
                return;
            }
            try {
                if (!keepAlive(leaseId, key)) {
                    expired();
                }
            } catch (RegistryException e) {
                LOG.warn("{} (trying again in {} ms)", e.getMessage(), renewEvery());
            }
        }

        /** The lease ended while this source lives (etcd was out of reach too long): register again. */
        private void expired() {
            LOG.warn("registry {}: the lease of {} had ended; registering it again", describe(), key);
            try {
                grant();
            } catch (RegistryException e) {
                LOG.warn("{} (trying again)", e.getMessage());
            }
        }

        /**
         * Becomes the chain's end with a transaction that succeeds only if the end is still the one read (by its
         * revision), putting the end and this relay's link on this entry's lease; tried again while other relays join
         * first.
         */
        @Override
        public synchronized Optional<String> joinChain() {
            SourceEntry e = entry;
            RankKey rank = e.fingerprint().rank();
            ByteSequence endKey = bytes(Chains.endKey(e.modelId(), rank));
            ByteSequence end = bytes(Chains.endValue(e.modelId(), e.address()));
            PutOption onLease = PutOption.builder().withLeaseId(leaseId).build();
            for (int attempt = 0; attempt < MAX_JOIN_TRIES; attempt++) {
                GetResponse g = await(client.getKVClient().get(endKey), requestMillis(), "read " + endKey);
                Optional<String> after = Optional.empty();
                Cmp unchanged = new Cmp(endKey, Cmp.Op.EQUAL, CmpTarget.createRevision(0));
                if (!g.getKvs().isEmpty()) {
                    KeyValue kv = g.getKvs().get(0);
                    unchanged = new Cmp(endKey, Cmp.Op.EQUAL, CmpTarget.modRevision(kv.getModRevision()));
                    try {
                        String prefix = Chains.rankPrefix(e.modelId(), rank);
                        after = Optional.ofNullable(Chains.parse(prefix, kv.getKey().getBytes(),
                                kv.getValue().getBytes(), new HashMap<>())).filter(a -> !a.equals(e.address()));
                    } catch (IllegalArgumentException x) {
                        LOG.warn("registry {}: the chain's end {} does not parse ({}); starting the chain again",
                                describe(), Entries.show(kv.getKey().getBytes()), x.getMessage());
                    }
                }
                TxnResponse r = await(client.getKVClient().txn().If(unchanged).Then(Op.put(endKey, end, onLease),
                        Op.put(bytes(Chains.linkKey(e.modelId(), rank, e.address())),
                                bytes(Chains.linkValue(e.modelId(), e.address(), after)), onLease)).commit(),
                        requestMillis(), "join the chain at " + endKey);
                if (r.isSucceeded()) {
                    return after;
                }
            }
            throw new RegistryException("etcd registry " + describe() + ": " + e.address() + " could not join the"
                    + " chain of model " + e.modelId() + " rank " + rank + ": " + MAX_JOIN_TRIES + " other relays"
                    + " joined first");
        }

        @Override
        public synchronized void update(boolean ready) {
            SourceEntry e = entry;
            entry = new SourceEntry(e.address(), e.modelId(), e.fingerprint(), ready);
            put();
        }

        @Override
        public synchronized void close() {
            if (left) {
                return;
            }
            left = true;
            ScheduledFuture<?> r = renewal;
            if (r != null) {
                r.cancel(false);
            }
            leases.remove(this);
            if (!closed) {
                // revoking the lease deletes the entry; if etcd is out of reach, the lease ends on its own
                try {
                    await(client.getLeaseClient().revoke(leaseId), requestMillis(), "remove " + key);
                } catch (RegistryException e) {
                    LOG.warn("{} (it goes when its lease ends, within {} ms)", e.getMessage(), ttlMillis());
                }
            }
        }
    }
}
