package io.weightloader.backend.te;

import io.weightloader.api.LoadRequest;
import io.weightloader.api.config.RankKey;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.RemoteLoads;
import io.weightloader.seed.SeedChangedException;
import io.weightloader.seed.SeedClient;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * The sources a root seed's directory gives a client that reads from several at once (docs/PROTOCOL.md, "Directory"):
 * each is asked for as a failover would be ({@code POST /v1/source} with {@code failover: true}: a ready source with
 * the fewest clients, at once, the root included) with the ones it already holds in {@code exclude}, so every answer
 * is another source and an assignment (a lease) of this client. The client renews the leases of the sources it reads
 * from every {@link io.weightloader.seed.Directory#HEARTBEAT_MILLIS} and says it is done with each as soon as it has
 * nothing more to read from it, so it counts as a client of a source only while it reads from it.
 */
final class DirectorySources implements SourceList {
    private final SeedClient root;
    private final RankKey rank;
    private final String client;
    private final String strategy;
    private final String generation;
    private final SeedReads backend;
    private final Manifest rootManifest;
    private final LoadRequest request;

    DirectorySources(SeedReads backend, SeedClient root, RankKey rank, String client, String strategy,
                     Manifest rootManifest, LoadRequest request) {
        this.backend = backend;
        this.root = root;
        this.rank = rank;
        this.client = client;
        this.strategy = strategy;
        this.rootManifest = rootManifest;
        this.generation = rootManifest.generation(); // a directory that answers another fails the load
        this.request = request;
    }

    @Override
    public String name(String source) {
        return source.equals(ROOT) ? "the root seed " + root.peer() : "relay " + source;
    }

    @Override
    public Manifest manifest(String source) {
        return source.equals(ROOT) ? rootManifest
                : RelayManifests.checked(backend, root.at(source).withRetries(0), rank, rootManifest, request);
    }

    @Override
    public boolean checksEveryUnit() {
        return false; // the root's own bytes are proven by its generation (finished); relays' as verify-relays says
    }

    @Override
    public void finished() {
        // every byte a relay sent matched the root's checksums of this generation; the root's own reads are proven by
        // its generation not having changed since the manifest
        RemoteLoads.checkGeneration(root, rank, generation, backend.source());
    }

    @Override
    public String describe() {
        return "the directory of root seed " + root.peer();
    }

    @Override
    public List<String> take(int max, Set<String> exclude) {
        Set<String> ask = new LinkedHashSet<>(exclude);
        List<String> out = new ArrayList<>();
        while (out.size() < max) {
            SeedClient.SourceChoice c = root.source(rank, strategy, client, ask, true, 0);
            if (c.waits()) {
                break; // no other ready source now
            }
            if (!c.generation().equals(generation)) {
                out.forEach(this::release);
                release(c.address());
                throw SeedChangedException.during("root seed " + root.peer(), generation, c.generation());
            }
            if (!c.ready() || ask.contains(c.address())) {
                if (!ask.contains(c.address())) {
                    release(c.address()); // a failover answer is a ready source; anything else is not for us
                }
                break;
            }
            out.add(c.address());
            ask.add(c.address());
        }
        return out;
    }

    @Override
    public void renew(String source) {
        root.renewSource(rank, source, client);
    }

    @Override
    public void release(String source) {
        root.sourceDone(rank, source, client);
    }

    @Override
    public void reportWrongBytes(String source, String reason) {
        if (!source.equals(ROOT)) {
            root.reportRelay(rank, source, client, reason);
        }
    }
}
