package io.weightloader.seed;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A root seed's directory of the instances that serve its weights (relays), per rank, and the choice of a source for
 * each client by a strategy:
 * <ul>
 *   <li>{@code star}: always the root.</li>
 *   <li>{@code tree}: a ready source (the root, or a relay that has loaded and verified everything) serving no
 *   client; when every ready source is busy the client waits for one, so each round of loads doubles the sources (a
 *   binomial tree: about log2(N + 1) rounds for N clients).</li>
 *   <li>{@code chain}: the end of the chain, so far the root; a client that is itself a relay serving as it loads
 *   (pipelined) then becomes the end: every instance reads from the one before it while that one is still loading.</li>
 * </ul>
 * Relays register with a heartbeat and are dropped when it stops ({@link #EXPIRY_NANOS}) or when they leave; a source a
 * client reports dead is never that client's source again. A relay a client reports for wrong bytes (its bytes did not
 * match the root's checksums) is no one's source again until it leaves or its heartbeat stops. An assignment is a
 * lease of its client: it ends when the client says it is done or stops renewing it ({@link #LEASE_NANOS}), so a client
 * killed mid-load frees its source within seconds. A failover request (a client whose source died) gets a ready source,
 * never a loading one, so a chain never loops. Thread-safe.
 */
public final class Directory {
    /** How often relays re-register. */
    public static final long HEARTBEAT_MILLIS = 1000;
    /** A relay not heard from for this long is dropped. */
    public static final long EXPIRY_NANOS = 4 * HEARTBEAT_MILLIS * 1_000_000L;
    /** An assignment its client has not renewed for this long ends (the client died, or hangs). */
    public static final long LEASE_NANOS = 4 * HEARTBEAT_MILLIS * 1_000_000L;
    public static final String ROOT = "root";

    /** A source the directory hands out: a relay's control-plane address, or {@link #ROOT}. */
    public record Source(String address, boolean ready) {
    }

    private static final class Relay {
        final String address;
        final long order;
        long lastSeen;
        boolean ready;
        boolean pipelined;
        /** Why a client reported it (wrong bytes), or null: a reported relay is no one's source. */
        String reported;

        Relay(String address, long order) {
            this.address = address;
            this.order = order;
        }
    }

    private static final class Rank {
        final Map<String, Relay> relays = new LinkedHashMap<>();
        /** source -> client -> when assigned or last renewed */
        final Map<String, Map<String, Long>> clients = new HashMap<>();
        /** The end of the chain: the last pipelined relay given a source (the root before any). */
        String chainEnd = ROOT;
        final Set<String> inChain = new HashSet<>();
    }

    private final Map<Object, Rank> ranks = new HashMap<>();
    private long registrations;
    /** Counts the changes a waiting client may care about (relays, readiness, assignments): {@link #awaitChange}. */
    private long version;

    private Rank rank(Object key) {
        return ranks.computeIfAbsent(key, k -> new Rank());
    }

    /** A relay (re-)registers: {@code ready} once it holds every byte, checked; {@code pipelined} while loading. */
    public synchronized void register(Object rankKey, String address, boolean ready, boolean pipelined) {
        Rank r = rank(rankKey);
        Relay relay = r.relays.get(address);
        if (relay == null) {
            relay = new Relay(address, registrations++);
            r.relays.put(address, relay);
            version++;
        } else if (relay.ready != ready || relay.pipelined != pipelined) {
            version++;
        }
        relay.lastSeen = System.nanoTime();
        relay.ready = ready;
        relay.pipelined = pipelined;
        notifyAll();
    }

    /** A relay leaves, or a client found it dead: it is no one's source any more. */
    public synchronized void drop(Object rankKey, String address) {
        Rank r = rank(rankKey);
        if (r.relays.remove(address) != null) {
            r.clients.remove(address);
            version++;
            notifyAll();
        }
    }

    /** Every relay of every rank: after the root's weights changed, they serve an old generation. */
    public synchronized void clear(Object rankKey) {
        ranks.remove(rankKey);
        version++;
        notifyAll();
    }

    /**
     * A client renews its lease on {@code source} (it is still reading).
     *
     * @return false when the client holds no such assignment (it expired, or was never given)
     */
    public synchronized boolean renew(Object rankKey, String source, String client) {
        Map<String, Long> c = rank(rankKey).clients.get(source);
        if (c == null || !c.containsKey(client)) {
            return false;
        }
        c.put(client, System.nanoTime());
        return true;
    }

    /**
     * A client found that {@code address} sent bytes that do not match the root's checksums: it is no one's source
     * again until it leaves or its heartbeat stops.
     *
     * @return false when no such relay is registered
     */
    public synchronized boolean report(Object rankKey, String address, String client, String reason) {
        Relay x = rank(rankKey).relays.get(address);
        if (x == null) {
            return false;
        }
        if (x.reported == null) {
            x.reported = "client " + client + ": " + reason;
            version++;
        }
        notifyAll();
        return true;
    }

    /** The client is done with its source (loaded, or gave up). */
    public synchronized void done(Object rankKey, String source, String client) {
        Map<String, Long> c = rank(rankKey).clients.get(source);
        if (c != null && c.remove(client) != null) {
            version++;
            notifyAll();
        }
    }

    /**
     * Assigns {@code source} to {@code client} if no client holds it now (the {@code tree} rule: one client per source
     * at a time), whether or not {@code source} is registered: how a registry client that picked its source claims it.
     * The assignment is a lease as any other: renewed with {@link #renew}, ended by {@link #done} or when not renewed
     * for {@link #LEASE_NANOS}.
     *
     * @return false when another client holds {@code source}
     */
    public synchronized boolean claim(Object rankKey, String source, String client) {
        Rank r = rank(rankKey);
        expire(r);
        if (active(r, source) > 0) {
            return false;
        }
        r.clients.computeIfAbsent(source, k -> new LinkedHashMap<>()).put(client, System.nanoTime());
        version++;
        notifyAll();
        return true;
    }

    /** Each source's clients now (leases that ended left out), by source. */
    public synchronized Map<String, List<String>> clients(Object rankKey) {
        Rank r = rank(rankKey);
        expire(r);
        Map<String, List<String>> out = new LinkedHashMap<>();
        for (String source : new ArrayList<>(r.clients.keySet())) {
            if (active(r, source) > 0) {
                out.put(source, List.copyOf(r.clients.get(source).keySet()));
            }
        }
        return out;
    }

    /** The count of changes so far, for {@link #awaitChange}. */
    public synchronized long version() {
        return version;
    }

    /**
     * Waits until the directory changed after {@code seen} (a relay came, left or became ready, an assignment began
     * or ended) or until {@code untilNanos} ({@link System#nanoTime()}). Leases and heartbeats that run out are noticed
     * only when someone looks, not as events: a waiter should look again every {@link #HEARTBEAT_MILLIS} at least.
     *
     * @return the count of changes now
     */
    public synchronized long awaitChange(long seen, long untilNanos) throws InterruptedException {
        while (version == seen) {
            long left = untilNanos - System.nanoTime();
            if (left <= 0) {
                break;
            }
            wait(Math.max(1, left / 1_000_000L));
        }
        return version;
    }

    /** What a client told to wait is waiting for: the ready sources and their clients (a few, then a count). */
    public synchronized String busy(Object rankKey) {
        Rank r = rank(rankKey);
        expire(r);
        StringBuilder sb = new StringBuilder("the root serves " + active(r, ROOT) + " client(s)");
        int listed = 0;
        int more = 0;
        int loading = 0;
        for (Relay x : r.relays.values()) {
            if (!x.ready) {
                loading++;
            } else if (x.reported == null && listed++ < 4) {
                sb.append(", relay ").append(x.address).append(' ').append(active(r, x.address));
            } else if (x.reported == null) {
                more++;
            }
        }
        if (more > 0) {
            sb.append(" and ").append(more).append(" more ready relay(s)");
        }
        if (loading > 0) {
            sb.append("; ").append(loading).append(" relay(s) still loading");
        }
        return sb.toString();
    }

    /** The live relays of a rank, in registration order, for diagnostics. */
    public synchronized List<Map<String, Object>> relays(Object rankKey) {
        Rank r = rank(rankKey);
        expire(r);
        List<Map<String, Object>> out = new ArrayList<>();
        for (Relay x : r.relays.values()) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("address", x.address);
            m.put("ready", x.ready);
            m.put("pipelined", x.pipelined);
            m.put("clients", active(r, x.address));
            if (x.reported != null) {
                m.put("reported", x.reported);
            }
            out.add(m);
        }
        return out;
    }

    /**
     * A source for {@code client} by {@code strategy}, never one in {@code exclude} (the client found them dead), never
     * the client itself. {@code tree} waits up to {@code waitMillis} for a free ready source
     * and returns null when none came free.
     *
     * @param failover the client's source died mid-load: a ready source with the fewest clients, at once
     */
    public synchronized Source choose(Object rankKey, String strategy, String client, Set<String> exclude,
                                      boolean failover, long waitMillis) throws InterruptedException {
        Rank r = rank(rankKey);
        // what a client found dead is never its source again; the directory drops a relay only when it leaves or its
        // heartbeat stops (a dead one within EXPIRY_NANOS), so a client failing for reasons of its own cannot empty it
        long deadline = System.nanoTime() + waitMillis * 1_000_000L;
        while (true) {
            expire(r);
            Source s = failover ? fewestClients(r, client, exclude)
                    : switch (strategy) {
                        case "star" -> new Source(ROOT, true);
                        case "tree" -> freeReady(r, client, exclude);
                        case "chain" -> chainEnd(r, client, exclude);
                        default -> throw new IllegalArgumentException("unknown strategy '" + strategy
                                + "' (star, tree, chain)");
                    };
            if (s != null) {
                r.clients.computeIfAbsent(s.address(), k -> new LinkedHashMap<>()).put(client, System.nanoTime());
                version++;
                return s;
            }
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                return null;
            }
            wait(Math.max(1, Math.min(left / 1_000_000L, HEARTBEAT_MILLIS)));
        }
    }

    private Source freeReady(Rank r, String client, Set<String> exclude) {
        if (active(r, ROOT) == 0 && !exclude.contains(ROOT)) {
            return new Source(ROOT, true);
        }
        return r.relays.values().stream()
                .filter(x -> x.ready && x.reported == null && !x.address.equals(client) && !exclude.contains(x.address)
                        && active(r, x.address) == 0)
                .min(Comparator.comparingLong(x -> x.order)).map(x -> new Source(x.address, true)).orElse(null);
    }

    private Source fewestClients(Rank r, String client, Set<String> exclude) {
        Source best = exclude.contains(ROOT) ? null : new Source(ROOT, true);
        int bestClients = best == null ? Integer.MAX_VALUE : active(r, ROOT);
        for (Relay x : r.relays.values()) {
            if (x.ready && x.reported == null && !x.address.equals(client) && !exclude.contains(x.address)
                    && active(r, x.address) < bestClients) {
                best = new Source(x.address, true);
                bestClients = active(r, x.address);
            }
        }
        return best;
    }

    private Source chainEnd(Rank r, String client, Set<String> exclude) {
        String end = r.chainEnd;
        Relay relay = end.equals(ROOT) ? null : r.relays.get(end);
        if (!end.equals(ROOT) && (relay == null || relay.reported != null || exclude.contains(end)
                || end.equals(client))) {
            // the end left or died (or is the asking relay itself, started again at its address): the chain goes on
            // from the newest link still alive, else the root
            end = ROOT;
            for (Relay x : r.relays.values()) {
                if (r.inChain.contains(x.address) && x.reported == null && !x.address.equals(client)
                        && !exclude.contains(x.address)) {
                    end = x.address;
                }
            }
            relay = end.equals(ROOT) ? null : r.relays.get(end);
        }
        Relay self = r.relays.get(client);
        if (self != null && self.pipelined && !r.inChain.contains(client)) {
            r.chainEnd = client;
            r.inChain.add(client);
        }
        return new Source(end, relay == null || relay.ready);
    }

    private static int active(Rank r, String source) {
        Map<String, Long> c = r.clients.get(source);
        if (c == null) {
            return 0;
        }
        long now = System.nanoTime();
        c.values().removeIf(t -> now - t > LEASE_NANOS);
        return c.size();
    }

    private void expire(Rank r) {
        long now = System.nanoTime();
        List<String> gone = new ArrayList<>();
        for (Relay x : r.relays.values()) {
            if (now - x.lastSeen > EXPIRY_NANOS) {
                gone.add(x.address);
            }
        }
        for (String g : gone) {
            r.relays.remove(g);
            r.clients.remove(g);
        }
        if (!gone.isEmpty()) {
            version++;
            notifyAll();
        }
    }
}
