package io.weightloader.registry.etcd;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Client;
import io.etcd.jetcd.kv.TxnResponse;
import io.etcd.jetcd.op.Cmp;
import io.etcd.jetcd.op.CmpTarget;
import io.etcd.jetcd.op.Op;
import io.etcd.jetcd.options.PutOption;
import io.weightloader.seed.registry.RegistryException;
import io.weightloader.seed.registry.SourceRegistry;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ScheduledFuture;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A client's claim on a source in etcd ({@link SourceRegistry#claim}): its assignment key, created by a transaction
 * only if no key is there, on a lease of its own that its registry renews every third of its TTL until the
 * claim is released (the lease revoked: etcd deletes the key) or the registry is closed (the lease then runs out, as
 * when the client's process dies). A claim whose lease ran out while etcd was out of reach is made again, or, if
 * another client took the source meanwhile, given up with a WARN line.
 */
final class EtcdClaim implements SourceRegistry.Assignment {
    private static final Logger LOG = LoggerFactory.getLogger(EtcdClaim.class);

    /** What a claim needs of its registry (EtcdRegistry), so that the claim does not depend on the registry's class. */
    interface Owner {
        Client client();

        String describe();

        long ttlSeconds();

        long ttlMillis();

        long renewEvery();

        long requestMillis();

        boolean closed();

        boolean keepAlive(long leaseId, String what);

        void revokeQuietly(long leaseId);

        <T> T await(CompletableFuture<T> f, long millis, String what);

        /** A claim released: no longer renewed. */
        void forget(EtcdClaim c);
    }

    private final Owner registry;
    private final String key;
    private final String value;
    private final String source;
    private final String clientId;
    private volatile long leaseId;
    volatile ScheduledFuture<?> renewal;
    private volatile boolean released;

    EtcdClaim(Owner registry, String key, String value, String source, String clientId) {
        this.registry = registry;
        this.key = key;
        this.value = value;
        this.source = source;
        this.clientId = clientId;
    }

    /** A lease, and the key under it if no one holds it: false (the lease revoked) when someone does. */
    synchronized boolean take() {
        long lease = registry.await(registry.client().getLeaseClient().grant(registry.ttlSeconds()),
                registry.requestMillis(), "grant a lease").getID();
        TxnResponse r;
        try {
            ByteSequence k = bytes(key);
            r = registry.await(registry.client().getKVClient().txn()
                    .If(new Cmp(k, Cmp.Op.EQUAL, CmpTarget.createRevision(0)))
                    .Then(Op.put(k, bytes(value), PutOption.builder().withLeaseId(lease).build()))
                    .commit(), registry.requestMillis(), "claim " + key);
        } catch (RegistryException e) {
            registry.revokeQuietly(lease);
            throw e;
        }
        if (!r.isSucceeded()) {
            registry.revokeQuietly(lease);
            return false;
        }
        leaseId = lease;
        return true;
    }

    void renew() {
        if (released || registry.closed()) {
            return;
        }
        try {
            if (registry.keepAlive(leaseId, key)) {
                return;
            }
            // the lease ended while this client lives (etcd was out of reach too long): claim it again
            if (!take()) {
                LOG.warn("registry {}: client {} lost its claim on source {} (its lease ended while etcd was out of"
                        + " reach) and another client holds it now; this client reads on from it",
                        registry.describe(), clientId, source);
                released = true;
                renewal.cancel(false);
            }
        } catch (RegistryException e) {
            LOG.warn("{} (trying again in {} ms)", e.getMessage(), registry.renewEvery());
        }
    }

    private static ByteSequence bytes(String s) {
        return ByteSequence.from(s, StandardCharsets.UTF_8);
    }

    @Override
    public String source() {
        return source;
    }

    @Override
    public String client() {
        return clientId;
    }

    @Override
    public synchronized void close() {
        if (released) {
            return;
        }
        released = true;
        ScheduledFuture<?> r = renewal;
        if (r != null) {
            r.cancel(false);
        }
        registry.forget(this);
        if (!registry.closed()) {
            try {
                registry.await(registry.client().getLeaseClient().revoke(leaseId), registry.requestMillis(),
                        "release " + key);
            } catch (RegistryException e) {
                LOG.warn("{} (it goes when its lease ends, within {} ms)", e.getMessage(), registry.ttlMillis());
            }
        }
    }
}
