package io.weightloader.registry.etcd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Client;
import io.weightloader.api.config.RankKey;
import io.weightloader.seed.registry.Assignments;
import io.weightloader.seed.registry.Entries;
import io.weightloader.seed.registry.Fingerprint;
import io.weightloader.seed.registry.RegistryException;
import io.weightloader.seed.registry.Registries;
import io.weightloader.seed.registry.SourceEntry;
import io.weightloader.seed.registry.SourceRegistry;
import io.weightloader.seed.registry.SourceRegistryContract;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The registry contract, and etcd's own cases, against a real etcd started for this class. */
class EtcdRegistryTest extends SourceRegistryContract {
    private static EtcdServer etcd;

    @BeforeAll
    static void startEtcd() throws Exception {
        System.out.println("EtcdRegistryTest: " + EtcdServer.version());
        etcd = EtcdServer.start();
    }

    @AfterAll
    static void stopEtcd() throws Exception {
        if (etcd != null) {
            etcd.close();
        }
    }

    static Config config(String directory, String extra) {
        return ConfigFactory.parseString("weight-loader.directory = \"" + directory + "\"\n"
                        + "weight-loader.registry.etcd.lease-ttl = 2s\n" + extra)
                .withFallback(ConfigFactory.defaultReference()).resolve();
    }

    @Override
    protected SourceRegistry openHandle() {
        return Registries.open(config(etcd.directory(), ""));
    }

    private static void putRaw(String key, byte[] value) throws Exception {
        try (Client c = Client.builder().endpoints("http://127.0.0.1:" + etcd.clientPort).build()) {
            c.getKVClient().put(ByteSequence.from(key, StandardCharsets.UTF_8), ByteSequence.from(value))
                    .get(10, TimeUnit.SECONDS);
        }
    }

    @Test
    void hostileEntriesAreSkipped() throws Exception {
        SourceRegistry r = open();
        String m = model("hostile");
        Fingerprint f = fingerprint("g1", 0);
        r.register(new SourceEntry("10.0.0.1:8400", m, f, true));
        String prefix = Entries.rankPrefix(m, new RankKey(0, 0));
        String good = Entries.value(new SourceEntry("10.0.0.2:8400", m, f, true));
        putRaw(prefix + "10.0.0.2:8400", good.replace("\"ready\":true", "\"ready\":true,\"x\":1").getBytes());
        putRaw(prefix + "10.0.0.3:8400", good.getBytes()); // its value names another address
        putRaw(prefix + "10.0.0.4:8400", new byte[Entries.MAX_VALUE_BYTES + 1]);
        putRaw(prefix + "not-an-address", good.getBytes());
        putRaw(prefix + "10.0.0.5:8400", "{\"version\":1".getBytes());
        putRaw(prefix + "10.0.0.6:8400/deeper", good.getBytes());
        putRaw(prefix + "x".repeat(Entries.MAX_KEY_BYTES), good.getBytes());

        assertThat(r.list(m, f)).extracting(SourceEntry::address).containsExactly("10.0.0.1:8400");
        assertThat(r.listAll(m, new RankKey(0, 0))).extracting(SourceEntry::address).containsExactly("10.0.0.1:8400");
    }

    @Test
    void hostileAssignmentsAreSkippedAndNeverTakeASourceAway() throws Exception {
        SourceRegistry r = open();
        String m = model("hostile-claims");
        RankKey r0 = new RankKey(0, 0);
        String prefix = Assignments.rankPrefix(m, r0);
        putRaw(prefix + "10.0.0.2:8400", Assignments.value(m, "10.0.0.3:8400", "x").getBytes()); // another source
        putRaw(prefix + "10.0.0.4:8400", "{\"version\":1}".getBytes());
        putRaw(prefix + "10.0.0.5:8400", new byte[Entries.MAX_VALUE_BYTES + 1]);
        assertThat(r.claim(m, r0, "10.0.0.1:8400", "client-a")).isPresent();

        assertThat(r.assignments(m, r0)).containsExactly(new Assignments.Held("10.0.0.1:8400", "client-a"));
        // a key there, parsed or not, is a claim etcd's transaction sees: nobody else gets that source
        assertThat(r.claim(m, r0, "10.0.0.2:8400", "client-b")).isEmpty();
    }

    @Test
    void anUnreachableRegistryIsAnErrorNamingIt() throws Exception {
        int port = EtcdServer.freePort(); // nothing listens there
        String dir = "etcd://127.0.0.1:" + port;
        long start = System.nanoTime();
        assertThatThrownBy(() -> Registries.open(config(dir, "weight-loader.registry.etcd.connect-timeout = 1s")))
                .isInstanceOf(RegistryException.class).hasMessageContaining(dir);
        assertThat(TimeUnit.NANOSECONDS.toSeconds(System.nanoTime() - start)).isLessThan(15);
    }

    @Test
    void settingsAreCheckedUpFrontNamingThePath() {
        assertThatThrownBy(() -> Registries.settings(config("etcd://127.0.0.1", "")))
                .hasMessageContaining("weight-loader.directory").hasMessageContaining("host:port");
        assertThatThrownBy(() -> Registries.settings(config("etcd://h:1,", "")))
                .hasMessageContaining("weight-loader.directory");
        assertThatThrownBy(() -> Registries.settings(config("etcd://h:1", "weight-loader.registry.etcd.lease-ttl = 1s")))
                .hasMessageContaining("weight-loader.registry.etcd.lease-ttl");
        assertThatThrownBy(() -> Registries.settings(config("etcd://h:1", "weight-loader.registry.etcd.ca = /nonexistent")))
                .hasMessageContaining("weight-loader.registry.etcd.ca");
        assertThatThrownBy(() -> Registries.settings(config("etcd://h:1", "weight-loader.registry.etcd.user = u")))
                .hasMessageContaining("weight-loader.registry.etcd.password");
        assertThat(Registries.settings(config("etcd://h:1,[::1]:2379", "")).scheme()).isEqualTo("etcd");
    }
}
