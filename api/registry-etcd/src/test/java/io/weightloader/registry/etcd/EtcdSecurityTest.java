package io.weightloader.registry.etcd;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Client;
import io.etcd.jetcd.auth.Permission;
import io.weightloader.api.config.RankKey;
import io.weightloader.seed.registry.Fingerprint;
import io.weightloader.seed.registry.Registries;
import io.weightloader.seed.registry.RegistryException;
import io.weightloader.seed.registry.SourceEntry;
import io.weightloader.seed.registry.SourceRegistry;
import io.weightloader.seed.registry.SourceRegistryContract;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * etcd's TLS and authentication, passed through from {@code weight-loader.registry.etcd.*} to a real etcd: a registry
 * that serves TLS with client certificates, and one with authentication enabled. Each with the right settings
 * registers and lists; each without them, or with wrong ones, is an error naming the registry.
 */
class EtcdSecurityTest {
    private static final RankKey RANK = new RankKey(0, 0);
    private static final Fingerprint PRINT = SourceRegistryContract.fingerprint("g1", 0);

    @TempDir
    Path dir;

    /** A self-signed EC certificate for 127.0.0.1 and its PKCS#8 key, by openssl (skips, reason printed, without). */
    private Path[] selfSigned(String name) throws Exception {
        Path cert = dir.resolve(name + ".pem");
        Path key = dir.resolve(name + "-key.pem");
        Process p;
        try {
            p = new ProcessBuilder("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key.toString(), "-out", cert.toString(),
                    "-days", "2", "-subj", "/CN=" + name, "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
                    .redirectErrorStream(true).start();
        } catch (java.io.IOException e) {
            System.out.println("EtcdSecurityTest: openssl is not installed (" + e.getMessage() + "): TLS case skipped");
            Assumptions.abort("openssl is not installed: the etcd TLS test needs it to make certificates");
            throw e;
        }
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0).as("openssl: " + out).isTrue();
        return new Path[] {cert, key};
    }

    private static Config config(String directory, String extra) {
        return EtcdRegistryTest.config(directory, extra);
    }

    /** Registers one source and reads it back through a second handle of the same settings. */
    private static void registersAndLists(Config config, String model) throws Exception {
        try (SourceRegistry writer = Registries.open(config);
             SourceRegistry.Registration ignored = writer.register(new SourceEntry("10.0.0.1:8400", model, PRINT, true));
             SourceRegistry reader = Registries.open(config)) {
            assertThat(reader.listAll(model, RANK)).extracting(SourceEntry::address).containsExactly("10.0.0.1:8400");
        }
    }

    @Test
    void aRegistryOverTlsWithClientCertificatesTakesOnlyClientsWithTheRightCaAndCertificate() throws Exception {
        EtcdServer.binary();
        Path[] server = selfSigned("etcd-server");
        Path[] client = selfSigned("weightloader-client");
        Path[] stranger = selfSigned("stranger");
        try (EtcdServer etcd = EtcdServer.startTls(server[0], server[1], client[0])) {
            String tls = """
                    weight-loader.registry.etcd { ca = "%s", certificate = "%s", key = "%s", connect-timeout = 3s,
                      request-timeout = 3s }
                    """;
            registersAndLists(config(etcd.directory(), tls.formatted(server[0], client[0], client[1])), "test/tls");

            // plain http to a TLS-only etcd, a client certificate etcd does not trust, no client certificate, and a
            // ca that did not sign the server's: each an error naming the registry
            for (String wrong : List.of("weight-loader.registry.etcd { connect-timeout = 2s, request-timeout = 2s }",
                    tls.formatted(server[0], stranger[0], stranger[1]),
                    "weight-loader.registry.etcd { ca = \"" + server[0] + "\", connect-timeout = 2s,"
                            + " request-timeout = 2s }",
                    tls.formatted(stranger[0], client[0], client[1]))) {
                assertThatThrownBy(() -> registersAndLists(config(etcd.directory(), wrong), "test/tls-wrong"))
                        .as(wrong).isInstanceOf(RegistryException.class).hasMessageContaining(etcd.directory());
            }
        }
    }

    @Test
    void aRegistryWithAuthenticationTakesTheConfiguredUserAndRefusesOthers() throws Exception {
        try (EtcdServer etcd = EtcdServer.start()) {
            // as an operator sets it up: a root user (needed to enable auth) and a user for the fleet's prefix
            try (Client admin = Client.builder().endpoints("http://127.0.0.1:" + etcd.clientPort).build()) {
                var auth = admin.getAuthClient();
                ByteSequence root = bytes("root");
                ByteSequence fleet = bytes("fleet");
                auth.userAdd(root, bytes("root-secret")).get(10, TimeUnit.SECONDS);
                auth.roleAdd(root).get(10, TimeUnit.SECONDS);
                auth.userGrantRole(root, root).get(10, TimeUnit.SECONDS);
                auth.userAdd(fleet, bytes("fleet-secret")).get(10, TimeUnit.SECONDS);
                auth.roleAdd(fleet).get(10, TimeUnit.SECONDS);
                auth.roleGrantPermission(fleet, bytes("/weightloader/"), bytes("/weightloader0"),
                        Permission.Type.READWRITE).get(10, TimeUnit.SECONDS);
                auth.userGrantRole(fleet, fleet).get(10, TimeUnit.SECONDS);
                auth.authEnable().get(10, TimeUnit.SECONDS);
            }
            String timeouts = "weight-loader.registry.etcd { connect-timeout = 3s, request-timeout = 3s }\n";
            registersAndLists(config(etcd.directory(), timeouts
                    + "weight-loader.registry.etcd { user = fleet, password = fleet-secret }"), "test/auth");

            for (String wrong : List.of("", "weight-loader.registry.etcd { user = fleet, password = guessed }")) {
                assertThatThrownBy(() -> registersAndLists(config(etcd.directory(), timeouts + wrong),
                        "test/auth-wrong")).as(wrong).isInstanceOf(RegistryException.class)
                        .hasMessageContaining(etcd.directory());
            }
        }
    }

    private static ByteSequence bytes(String s) {
        return ByteSequence.from(s, StandardCharsets.UTF_8);
    }
}
