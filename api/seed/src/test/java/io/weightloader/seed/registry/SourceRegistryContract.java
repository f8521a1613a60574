package io.weightloader.seed.registry;

import static org.assertj.core.api.Assertions.assertThat;

import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * What every {@link SourceRegistry} must do, run against each implementation (the etcd module runs it against a real
 * etcd): register, list, leave, expiry of a source that stops renewing, fingerprints that differ skipped; assignments
 * (one client per source, released at the end of a load, freed when a client dies) and clients waiting for a free one.
 */
public abstract class SourceRegistryContract {
    public static final String NAMES = Fingerprint.sha256("names");
    public static final String SUMS = Fingerprint.sha256("sums");

    private final java.util.List<SourceRegistry> opened = new java.util.ArrayList<>();

    /** A registry handle; two handles stand for two processes of a fleet sharing one registry. */
    protected abstract SourceRegistry openHandle();

    protected SourceRegistry open() {
        SourceRegistry r = openHandle();
        opened.add(r);
        return r;
    }

    @AfterEach
    void closeAll() {
        opened.forEach(SourceRegistry::close);
    }

    public static Fingerprint fingerprint(String generation, int tp) {
        return new Fingerprint(generation, 2, "llama", new RankKey(tp, 0), NAMES, SUMS);
    }

    /** Waits (bounded) until {@code condition} holds, polling the observable state. */
    public static void await(String what, Duration limit, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + limit.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out after " + limit + " waiting for " + what);
            }
            Thread.sleep(50);
        }
    }

    /** A model id of this test's own, so tests sharing a registry never see each other's entries. */
    protected String model(String name) {
        return "test/" + getClass().getSimpleName() + "-" + name + "-" + System.nanoTime();
    }

    @Test
    void registersListsAndLeaves() {
        SourceRegistry a = open();
        SourceRegistry b = open();
        String m = model("list");
        Fingerprint f0 = fingerprint("g1", 0);
        SourceRegistry.Registration r1 = a.register(new SourceEntry("10.0.0.1:8400", m, f0, true));
        SourceRegistry.Registration r2 = a.register(new SourceEntry("10.0.0.2:8400", m, f0, false));
        a.register(new SourceEntry("10.0.0.3:8400", m, fingerprint("g1", 1), true));

        assertThat(b.list(m, f0)).extracting(SourceEntry::address)
                .containsExactlyInAnyOrder("10.0.0.1:8400", "10.0.0.2:8400");
        assertThat(b.list(m, f0)).filteredOn(SourceEntry::ready).extracting(SourceEntry::address)
                .containsExactly("10.0.0.1:8400");
        assertThat(b.list(m, fingerprint("g1", 1))).extracting(SourceEntry::address).containsExactly("10.0.0.3:8400");
        assertThat(b.list(model("other"), f0)).isEmpty();

        r2.update(true);
        assertThat(b.list(m, f0)).allMatch(SourceEntry::ready);
        r1.close();
        r1.close();
        assertThat(b.list(m, f0)).extracting(SourceEntry::address).containsExactly("10.0.0.2:8400");
    }

    @Test
    void aSourceThatStopsRenewingDisappears() throws InterruptedException {
        SourceRegistry dying = open();
        SourceRegistry watcher = open();
        String m = model("expiry");
        Fingerprint f = fingerprint("g1", 0);
        dying.register(new SourceEntry("10.0.0.9:8400", m, f, true));
        SourceRegistry.Registration kept = watcher.register(new SourceEntry("10.0.0.8:8400", m, f, true));
        assertThat(watcher.list(m, f)).hasSize(2);

        dying.close(); // as when its process dies: no leave, no more renewals
        long start = System.nanoTime();
        await("the dead source's entry to expire", Duration.ofMillis(dying.ttlMillis() * 3 + 5000),
                () -> watcher.list(m, f).size() == 1);
        long took = (System.nanoTime() - start) / 1_000_000;
        System.out.println(getClass().getSimpleName() + ": a source that stopped renewing was gone after " + took
                + " ms (ttl " + dying.ttlMillis() + " ms)");
        assertThat(watcher.list(m, f)).extracting(SourceEntry::address).containsExactly("10.0.0.8:8400");
        kept.close();
    }

    @Test
    void aLiveSourceOutlivesItsTtl() throws InterruptedException {
        SourceRegistry a = open();
        String m = model("renew");
        Fingerprint f = fingerprint("g1", 0);
        a.register(new SourceEntry("10.0.0.7:8400", m, f, true));
        long until = System.nanoTime() + Duration.ofMillis(a.ttlMillis() * 2).toNanos();
        while (System.nanoTime() < until) {
            assertThat(a.list(m, f)).hasSize(1);
            Thread.sleep(200);
        }
    }

    @Test
    void sourcesOfAnotherFingerprintAreSkipped() {
        SourceRegistry a = open();
        String m = model("fp");
        Fingerprint f = fingerprint("g2", 0);
        a.register(new SourceEntry("10.0.0.1:8400", m, f, true));
        a.register(new SourceEntry("10.0.0.2:8400", m, fingerprint("g1", 0), true));
        a.register(new SourceEntry("10.0.0.3:8400", m,
                new Fingerprint("g2", 2, "llama", new RankKey(0, 0), NAMES, Fingerprint.sha256("other sums")), true));

        assertThat(a.list(m, f)).extracting(SourceEntry::address).containsExactly("10.0.0.1:8400");
        List<SourceEntry> all = a.listAll(m, new RankKey(0, 0));
        assertThat(all).extracting(SourceEntry::address)
                .containsExactlyInAnyOrder("10.0.0.1:8400", "10.0.0.2:8400", "10.0.0.3:8400");
    }

    private static final RankKey R0 = new RankKey(0, 0);

    /** The source each client holds, as any handle of the registry reads it. */
    private static List<String> holders(SourceRegistry r, String m) {
        return r.assignments(m, R0).stream().map(h -> h.source() + "=" + h.client()).sorted().toList();
    }

    @Test
    void aSourceIsClaimedByOneClientAtATimeAndFreeAgainWhenItsClientIsDone() {
        SourceRegistry a = open();
        SourceRegistry b = open();
        String m = model("claim");
        String s = "10.0.0.1:8400";
        Optional<SourceRegistry.Assignment> first = a.claim(m, R0, s, "client-a");
        assertThat(first).isPresent();
        assertThat(first.get().source()).isEqualTo(s);
        assertThat(b.claim(m, R0, s, "client-b")).as("held by client-a").isEmpty();
        assertThat(b.claim(m, R0, "10.0.0.2:8400", "client-b")).as("another source is free").isPresent();
        assertThat(holders(b, m)).containsExactly("10.0.0.1:8400=client-a", "10.0.0.2:8400=client-b");
        assertThat(b.claim(model("other"), R0, s, "client-b")).as("another model's sources are its own").isPresent();

        first.get().close();
        first.get().close();
        assertThat(holders(b, m)).containsExactly("10.0.0.2:8400=client-b");
        assertThat(b.claim(m, R0, s, "client-b")).as("free once its client is done").isPresent();
    }

    @Test
    void aClientThatDiesFreesItsSourceWhenItsLeaseEnds() throws InterruptedException {
        SourceRegistry dying = open();
        SourceRegistry other = open();
        String m = model("dead-client");
        String s = "10.0.0.1:8400";
        assertThat(dying.claim(m, R0, s, "client-dies")).isPresent();
        assertThat(other.claim(m, R0, s, "client-waits")).isEmpty();

        dying.close(); // as when its process dies: no release, no more renewals
        long start = System.nanoTime();
        await("the dead client's claim to end", Duration.ofMillis(dying.ttlMillis() * 3 + 5000),
                () -> holders(other, m).isEmpty());
        System.out.println(getClass().getSimpleName() + ": a dead client's source was free after "
                + (System.nanoTime() - start) / 1_000_000 + " ms (ttl " + dying.ttlMillis() + " ms)");
        assertThat(other.claim(m, R0, s, "client-waits")).isPresent();
    }

    @Test
    void aLiveClaimOutlivesItsTtl() throws InterruptedException {
        SourceRegistry a = open();
        SourceRegistry b = open();
        String m = model("claim-renew");
        assertThat(a.claim(m, R0, "10.0.0.1:8400", "client-a")).isPresent();
        long until = System.nanoTime() + Duration.ofMillis(a.ttlMillis() * 2).toNanos();
        while (System.nanoTime() < until) {
            assertThat(holders(b, m)).containsExactly("10.0.0.1:8400=client-a");
            Thread.sleep(200);
        }
        assertThat(b.claim(m, R0, "10.0.0.1:8400", "client-b")).isEmpty();
    }

    @Test
    void withOneSourceAndTwoClientsTheSecondWaitsAndGetsItWhenTheFirstIsDone() throws Exception {
        SourceRegistry a = open();
        SourceRegistry b = open();
        String m = model("wait");
        Fingerprint f = fingerprint("g1", 0);
        a.register(new SourceEntry("10.0.0.1:8400", m, f, true));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        RegistrySources.Claimed first = RegistrySources.claim(a, m, R0, 2, "llama", null, "client-a", Set.of(),
                deadline, "client a");
        assertThat(first.source().address()).isEqualTo("10.0.0.1:8400");

        CompletableFuture<RegistrySources.Claimed> second = CompletableFuture.supplyAsync(() ->
                RegistrySources.claim(b, m, R0, 2, "llama", null, "client-b", Set.of(), deadline, "client b"));
        await("client a's claim to be listed", Duration.ofSeconds(10),
                () -> holders(b, m).equals(List.of("10.0.0.1:8400=client-a")));
        assertThat(second).as("the one source is held: client b waits").isNotDone();
        first.assignment().close();
        RegistrySources.Claimed got = second.get(30, TimeUnit.SECONDS);
        assertThat(got.source().address()).isEqualTo("10.0.0.1:8400");
        assertThat(holders(a, m)).containsExactly("10.0.0.1:8400=client-b");
        got.assignment().close();
    }

    @Test
    void aWaitingClientTakesANewSourceAsSoonAsItIsListed() throws Exception {
        SourceRegistry a = open();
        SourceRegistry b = open();
        String m = model("wait-new");
        Fingerprint f = fingerprint("g1", 0);
        a.register(new SourceEntry("10.0.0.1:8400", m, f, true));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        RegistrySources.Claimed first = RegistrySources.claim(a, m, R0, 2, "llama", null, "client-a", Set.of(),
                deadline, "client a");
        CompletableFuture<RegistrySources.Claimed> second = CompletableFuture.supplyAsync(() ->
                RegistrySources.claim(b, m, R0, 2, "llama", null, "client-b", Set.of(), deadline, "client b"));
        a.register(new SourceEntry("10.0.0.2:8400", m, f, true)); // a relay that finished its load
        assertThat(second.get(30, TimeUnit.SECONDS).source().address()).isEqualTo("10.0.0.2:8400");
        assertThat(holders(a, m)).containsExactly("10.0.0.1:8400=client-a", "10.0.0.2:8400=client-b");
        first.assignment().close();
    }

    @Test
    void aClientThatFindsNoFreeSourceBeforeItsDeadlineFailsNamingWhoHoldsThem() {
        SourceRegistry a = open();
        String m = model("deadline");
        a.register(new SourceEntry("10.0.0.1:8400", m, fingerprint("g1", 0), true));
        assertThat(a.claim(m, R0, "10.0.0.1:8400", "client-a")).isPresent();
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(1500);
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> RegistrySources.claim(a, m, R0, 2, "llama", null,
                        "client-b", Set.of(), deadline, "client b"))
                .isInstanceOf(WeightLoaderException.class).hasMessageContaining("transfer-timeout")
                .hasMessageContaining("10.0.0.1:8400 (client client-a)");
        assertThat(System.nanoTime()).isGreaterThanOrEqualTo(deadline);
    }

    @Test
    void relaysJoinTheChainOneAfterAnotherAndTheirKeysGoWithTheirEntries() {
        SourceRegistry a = open();
        SourceRegistry b = open();
        String m = model("chain");
        Fingerprint f = fingerprint("g1", 0);
        assertThat(b.chain(m, R0)).isEqualTo(Chains.Chain.empty());
        SourceRegistry.Registration r1 = a.register(new SourceEntry("10.0.0.1:8400", m, f, false));
        assertThat(r1.joinChain()).as("the first link reads from a ready source").isEmpty();
        SourceRegistry.Registration r2 = b.register(new SourceEntry("10.0.0.2:8400", m, f, false));
        assertThat(r2.joinChain()).contains("10.0.0.1:8400");
        SourceRegistry.Registration r3 = a.register(new SourceEntry("10.0.0.3:8400", m, f, false));
        assertThat(r3.joinChain()).contains("10.0.0.2:8400");
        r2.update(true); // a link that finished loading stays where it is
        Chains.Chain c = b.chain(m, R0);
        assertThat(c.end()).contains("10.0.0.3:8400");
        assertThat(c.after()).isEqualTo(java.util.Map.of("10.0.0.1:8400", "", "10.0.0.2:8400", "10.0.0.1:8400",
                "10.0.0.3:8400", "10.0.0.2:8400"));

        r3.close(); // the end leaves: its keys go with its entry, and the chain starts again
        c = b.chain(m, R0);
        assertThat(c.end()).isEmpty();
        assertThat(c.after()).containsOnlyKeys("10.0.0.1:8400", "10.0.0.2:8400");
        SourceRegistry.Registration r4 = b.register(new SourceEntry("10.0.0.4:8400", m, f, false));
        assertThat(r4.joinChain()).isEmpty();
        assertThat(a.chain(m, R0).end()).contains("10.0.0.4:8400");
        assertThat(a.chain(model("other"), R0)).isEqualTo(Chains.Chain.empty());
    }

    @Test
    void relaysJoiningAtOnceFormOneChain() throws Exception {
        String m = model("chain-race");
        Fingerprint f = fingerprint("g1", 0);
        List<CompletableFuture<Optional<String>>> joins = new java.util.ArrayList<>();
        for (int i = 1; i <= 8; i++) {
            SourceRegistry r = open();
            SourceRegistry.Registration reg = r.register(new SourceEntry("10.0.1." + i + ":8400", m, f, false));
            joins.add(CompletableFuture.supplyAsync(reg::joinChain));
        }
        java.util.Map<String, String> after = new java.util.HashMap<>();
        for (int i = 0; i < 8; i++) {
            after.put("10.0.1." + (i + 1) + ":8400", joins.get(i).get(60, TimeUnit.SECONDS).orElse(""));
        }
        Chains.Chain c = open().chain(m, R0);
        assertThat(c.after()).isEqualTo(after);
        // from the end back to the first, every link once: one chain, no fork, no loop
        List<String> walked = new java.util.ArrayList<>();
        for (String at = c.end().orElseThrow(); !at.isEmpty(); at = after.get(at)) {
            assertThat(walked).doesNotContain(at);
            walked.add(at);
        }
        assertThat(walked).containsExactlyInAnyOrderElementsOf(after.keySet());
    }

    @Test
    void aDeadRelaysChainKeysGoWhenItsLeaseEnds() throws InterruptedException {
        SourceRegistry dying = open();
        SourceRegistry other = open();
        String m = model("chain-dead");
        Fingerprint f = fingerprint("g1", 0);
        assertThat(dying.register(new SourceEntry("10.0.0.1:8400", m, f, false)).joinChain()).isEmpty();
        assertThat(other.chain(m, R0).end()).contains("10.0.0.1:8400");
        dying.close();
        await("the dead relay's chain keys to go", Duration.ofMillis(dying.ttlMillis() * 3 + 5000),
                () -> other.chain(m, R0).equals(Chains.Chain.empty()));
    }
}
