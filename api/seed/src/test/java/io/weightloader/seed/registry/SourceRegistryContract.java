package io.weightloader.seed.registry;

import static org.assertj.core.api.Assertions.assertThat;

import io.weightloader.api.config.RankKey;
import java.time.Duration;
import java.util.List;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * What every {@link SourceRegistry} must do, run against each implementation (the etcd module runs it against a real
 * etcd): register, list, leave, expiry of a source that stops renewing, fingerprints that differ skipped.
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
}
