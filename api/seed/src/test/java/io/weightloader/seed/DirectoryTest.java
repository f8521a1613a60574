package io.weightloader.seed;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Set;
import org.junit.jupiter.api.Test;

/** The root's directory: which source each strategy gives, and when. */
class DirectoryTest {
    private static final Object RANK = "tp0-pp0";
    private final Directory d = new Directory();

    @Test
    void starIsAlwaysTheRoot() throws Exception {
        d.register(RANK, "10.0.0.2:7000", true, true);
        for (int i = 0; i < 3; i++) {
            assertThat(d.choose(RANK, "star", "c" + i, Set.of(), false, 0).address()).isEqualTo(Directory.ROOT);
        }
    }

    @Test
    void treeGivesEachReadySourceOneClientAtATimeAndMakesTheRestWait() throws Exception {
        assertThat(d.choose(RANK, "tree", "a", Set.of(), false, 0).address()).isEqualTo(Directory.ROOT);
        // the root is busy and no relay is ready: the next client waits, and is told to ask again
        assertThat(d.choose(RANK, "tree", "b", Set.of(), false, 50)).isNull();
        // a loading relay is no tree source; a ready one is
        d.register(RANK, "10.0.0.2:7000", false, true);
        assertThat(d.choose(RANK, "tree", "b", Set.of(), false, 0)).isNull();
        d.register(RANK, "10.0.0.2:7000", true, true);
        assertThat(d.choose(RANK, "tree", "b", Set.of(), false, 0).address()).isEqualTo("10.0.0.2:7000");
        // a waiting client gets the root as soon as its client is done
        Thread done = new Thread(() -> d.done(RANK, Directory.ROOT, "a"));
        done.start();
        assertThat(d.choose(RANK, "tree", "c", Set.of(), false, 5000).address()).isEqualTo(Directory.ROOT);
        done.join();
        // never itself
        d.done(RANK, "10.0.0.2:7000", "b");
        assertThat(d.choose(RANK, "tree", "10.0.0.2:7000", Set.of(), false, 0)).isNull();
    }

    @Test
    void chainLinksEachPipelinedRelayToTheOneBeforeItAndNeverLoops() throws Exception {
        d.register(RANK, "a:1", false, true);
        d.register(RANK, "b:1", false, true);
        d.register(RANK, "c:1", false, true);
        // in the order they ask, whatever the order they registered in
        assertThat(d.choose(RANK, "chain", "b:1", Set.of(), false, 0).address()).isEqualTo(Directory.ROOT);
        Directory.Source forC = d.choose(RANK, "chain", "c:1", Set.of(), false, 0);
        assertThat(forC.address()).isEqualTo("b:1");
        assertThat(forC.ready()).isFalse(); // read while b still loads
        assertThat(d.choose(RANK, "chain", "a:1", Set.of(), false, 0).address()).isEqualTo("c:1");
        // a plain client reads from the end and does not extend the chain
        assertThat(d.choose(RANK, "chain", "client-x", Set.of(), false, 0).address()).isEqualTo("a:1");
        assertThat(d.choose(RANK, "chain", "client-y", Set.of(), false, 0).address()).isEqualTo("a:1");
        // the end leaves: the chain goes on from the newest link alive
        d.drop(RANK, "a:1");
        assertThat(d.choose(RANK, "chain", "client-z", Set.of(), false, 0).address()).isEqualTo("c:1");
    }

    @Test
    void aRelayRestartedAtTheAddressOfTheChainsEndIsNeverItsOwnSource() throws Exception {
        d.register(RANK, "a:1", false, true);
        d.register(RANK, "b:1", false, true);
        assertThat(d.choose(RANK, "chain", "a:1", Set.of(), false, 0).address()).isEqualTo(Directory.ROOT);
        assertThat(d.choose(RANK, "chain", "b:1", Set.of(), false, 0).address()).isEqualTo("a:1");
        // b, the end, is killed and started again at its address before its old registration expired: it registers,
        // then asks; before, it was given itself and waited for its own bytes until its transfer-timeout
        d.register(RANK, "b:1", false, true);
        assertThat(d.choose(RANK, "chain", "b:1", Set.of(), false, 0).address()).isEqualTo("a:1");
        // with a as good as gone too, the root
        assertThat(d.choose(RANK, "chain", "b:1", Set.of("a:1"), false, 0).address()).isEqualTo(Directory.ROOT);
    }

    @Test
    void aClientWhoseSourceDiedGetsAReadySourceWithTheFewestClientsAndNeverTheDeadOne() throws Exception {
        d.register(RANK, "a:1", true, false);
        d.register(RANK, "b:1", false, true);
        assertThat(d.choose(RANK, "tree", "x", Set.of(), false, 0).address()).isEqualTo(Directory.ROOT);
        assertThat(d.choose(RANK, "tree", "y", Set.of(), false, 0).address()).isEqualTo("a:1");
        // y's source a died: y gets the ready source with the fewest clients (the root has x, b is not ready)
        Directory.Source s = d.choose(RANK, "tree", "y", Set.of("a:1"), true, 0);
        assertThat(s.address()).isEqualTo(Directory.ROOT);
        // one client's report does not remove a relay for everyone (its heartbeat decides); for y it is gone
        assertThat(d.relays(RANK)).extracting(m -> m.get("address")).containsExactly("a:1", "b:1");
        d.done(RANK, Directory.ROOT, "x");
        d.done(RANK, Directory.ROOT, "y");
        d.done(RANK, "a:1", "y");
        d.register(RANK, "a:1", true, false);
        assertThat(d.choose(RANK, "tree", "z", Set.of(Directory.ROOT), false, 0).address()).isEqualTo("a:1");
        assertThat(d.choose(RANK, "tree", "y2", Set.of("a:1"), false, 0).address()).isEqualTo(Directory.ROOT);
    }

    @Test
    void aRelayThatStopsBeatingIsDroppedAndUnknownStrategiesAreRefused() throws Exception {
        d.register(RANK, "a:1", true, false);
        assertThat(d.relays(RANK)).hasSize(1);
        assertThatThrownBy(() -> d.choose(RANK, "ring", "x", Set.of(), false, 0)).hasMessageContaining("ring");
        java.lang.reflect.Field f = Directory.class.getDeclaredField("ranks");
        f.setAccessible(true);
        // age the relay past the expiry instead of sleeping for it
        Object rank = ((java.util.Map<?, ?>) f.get(d)).get(RANK);
        java.lang.reflect.Field relays = rank.getClass().getDeclaredField("relays");
        relays.setAccessible(true);
        Object relay = ((java.util.Map<?, ?>) relays.get(rank)).get("a:1");
        java.lang.reflect.Field seen = relay.getClass().getDeclaredField("lastSeen");
        seen.setAccessible(true);
        seen.setLong(relay, System.nanoTime() - Directory.EXPIRY_NANOS - 1);
        assertThat(d.relays(RANK)).isEmpty();
    }

    @Test
    void anAssignmentIsALeaseThatEndsWhenItsClientStopsRenewingIt() throws Exception {
        assertThat(d.choose(RANK, "tree", "a", Set.of(), false, 0).address()).isEqualTo(Directory.ROOT);
        assertThat(d.choose(RANK, "tree", "b", Set.of(), false, 0)).isNull();
        assertThat(d.busy(RANK)).contains("the root serves 1 client(s)");
        // a renews while it reads: still its source
        age("root", "a");
        assertThat(d.renew(RANK, Directory.ROOT, "a")).isTrue();
        assertThat(d.choose(RANK, "tree", "b", Set.of(), false, 0)).isNull();
        // a was killed: no renewal, no done; the lease runs out and b gets the root
        age("root", "a");
        assertThat(d.choose(RANK, "tree", "b", Set.of(), false, 0).address()).isEqualTo(Directory.ROOT);
        assertThat(d.renew(RANK, Directory.ROOT, "a")).isFalse();
    }

    @Test
    void aRelayReportedForWrongBytesIsNoOnesSourceUntilItLeaves() throws Exception {
        d.register(RANK, "bad:1", true, true);
        d.register(RANK, "good:1", false, true);
        assertThat(d.choose(RANK, "chain", "bad:1", Set.of(), false, 0).address()).isEqualTo(Directory.ROOT);
        d.done(RANK, Directory.ROOT, "bad:1");
        assertThat(d.choose(RANK, "tree", "x", Set.of(), false, 0).address()).isEqualTo(Directory.ROOT);
        assertThat(d.report(RANK, "bad:1", "x", "tensor 'w' did not match")).isTrue();
        assertThat(d.report(RANK, "nobody:1", "x", "whatever")).isFalse();
        // not for tree, not as the chain's end, not on failover; listed with the report
        assertThat(d.choose(RANK, "tree", "y", Set.of(), false, 0)).isNull();
        assertThat(d.choose(RANK, "chain", "z", Set.of(), false, 0).address()).isEqualTo(Directory.ROOT);
        assertThat(d.choose(RANK, "tree", "y", Set.of(), true, 0).address()).isEqualTo(Directory.ROOT);
        assertThat(d.relays(RANK)).filteredOn(m -> m.get("address").equals("bad:1"))
                .extracting(m -> m.get("reported")).containsExactly("client x: tensor 'w' did not match");
        // heartbeats do not clear the report; leaving and coming back does
        d.register(RANK, "bad:1", true, false);
        assertThat(d.choose(RANK, "tree", "y2", Set.of(), true, 0).address()).isEqualTo(Directory.ROOT);
        d.drop(RANK, "bad:1");
        d.register(RANK, "bad:1", true, false);
        d.done(RANK, Directory.ROOT, "x");
        d.done(RANK, Directory.ROOT, "y");
        d.done(RANK, Directory.ROOT, "y2");
        d.done(RANK, Directory.ROOT, "z");
        d.done(RANK, Directory.ROOT, "bad:1");
        assertThat(d.choose(RANK, "tree", "w", Set.of(Directory.ROOT), false, 0).address()).isEqualTo("bad:1");
    }

    /** Ages {@code client}'s assignment to {@code source} past the lease instead of sleeping for it. */
    @SuppressWarnings("unchecked")
    private void age(String source, String client) throws Exception {
        java.lang.reflect.Field f = Directory.class.getDeclaredField("ranks");
        f.setAccessible(true);
        Object rank = ((java.util.Map<?, ?>) f.get(d)).get(RANK);
        java.lang.reflect.Field clients = rank.getClass().getDeclaredField("clients");
        clients.setAccessible(true);
        java.util.Map<String, java.util.Map<String, Long>> c =
                (java.util.Map<String, java.util.Map<String, Long>>) clients.get(rank);
        c.get(source).put(client, System.nanoTime() - Directory.LEASE_NANOS - 1);
    }
}
