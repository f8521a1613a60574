package io.weightloader.host;

import io.weightloader.registry.etcd.EtcdServer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.io.TempDir;

/**
 * What the fleet tests over a real etcd share: one etcd per test class (skipped, the reason printed, without etcd),
 * a temporary directory, and what a test opened, closed after it in reverse order.
 */
abstract class EtcdFleetTest {
    static EtcdServer etcd;

    @TempDir
    Path dir;
    private final List<AutoCloseable> closing = new ArrayList<>();

    @BeforeAll
    static void startEtcd(TestInfo test) throws Exception {
        System.out.println(test.getTestClass().map(Class::getSimpleName).orElse("fleet test") + ": "
                + EtcdServer.version());
        etcd = EtcdServer.start();
    }

    @AfterAll
    static void stopEtcd() throws Exception {
        if (etcd != null) {
            etcd.close();
            etcd = null;
        }
    }

    @AfterEach
    void closeWhatTheTestOpened() throws Exception {
        for (int i = closing.size() - 1; i >= 0; i--) {
            closing.get(i).close();
        }
        closing.clear();
    }

    <T extends AutoCloseable> T closing(T c) {
        closing.add(c);
        return c;
    }

    /** Where clients reach {@code seed}'s control plane on loopback. */
    static String address(SeedHost seed) {
        return "127.0.0.1:" + seed.service().port();
    }
}
