package io.weightloader.backend.te;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.seed.SeedService;
import io.weightloader.testing.TestWeights;
import java.io.FileInputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * TLS on the control plane and the built-in engine, with PEM files made here by the JDK's keytool: a seed certificate
 * naming 127.0.0.1, a client certificate for mutual TLS. Every load is checked byte-exact.
 */
class TlsTest {
    static final String TOKEN = "tls-token";
    static final List<TensorSpec> SPECS = List.of(TensorSpec.of("w0", DType.F32, 1 << 16), TensorSpec.of("w1", DType.BF16, 300));

    @TempDir
    static Path dir;
    static Pem seedCert;
    static Pem clientCert;

    /** A certificate and its PKCS#8 key as PEM files. */
    record Pem(Path certificate, Path key) {
    }

    static Pem make(String name) throws Exception {
        Path p12 = dir.resolve(name + ".p12");
        Process k = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "keytool").toString(),
                "-genkeypair", "-alias", "k", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=" + name,
                "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-validity", "2", "-storetype", "PKCS12",
                "-keystore", p12.toString(), "-storepass", "changeit", "-keypass", "changeit")
                .redirectErrorStream(true).start();
        assertThat(k.waitFor(60, TimeUnit.SECONDS) && k.exitValue() == 0).as("keytool").isTrue();
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(p12.toFile())) {
            ks.load(in, "changeit".toCharArray());
        }
        Base64.Encoder b64 = Base64.getMimeEncoder(64, "\n".getBytes());
        Path cert = dir.resolve(name + ".crt");
        Files.writeString(cert, "-----BEGIN CERTIFICATE-----\n" + b64.encodeToString(ks.getCertificate("k").getEncoded())
                + "\n-----END CERTIFICATE-----\n");
        Path key = dir.resolve(name + ".key");
        Files.writeString(key, "-----BEGIN PRIVATE KEY-----\n"
                + b64.encodeToString(ks.getKey("k", "changeit".toCharArray()).getEncoded()) + "\n-----END PRIVATE KEY-----\n");
        return new Pem(cert, key);
    }

    @BeforeAll
    static void certificates() throws Exception {
        seedCert = make("seed");
        clientCert = make("client");
    }

    static BackendContext seedContext(String hocon) {
        Config c = ConfigFactory.parseString("weight-loader.seed.bind-address = \"127.0.0.1\"\n"
                + "weight-loader.remote-instance.token = " + TOKEN + "\n" + hocon)
                .withFallback(ConfigFactory.defaultReference()).resolve();
        return new BackendContext(WeightLoaderSettings.from(c), c);
    }

    static String tls(Path certificate, Path key, Path ca) {
        return "weight-loader.tls { certificate = \"" + (certificate == null ? "" : certificate) + "\", key = \""
                + (key == null ? "" : key) + "\", ca = \"" + (ca == null ? "" : ca) + "\" }\n";
    }

    static LoadReport load(int port, String hocon) {
        try (WeightLoader loader = WeightLoader.open(TwoProcessTransferTest.client(port, TOKEN, hocon,
                "weight-loader.remote-instance { retries = 0, connect-timeout = 2s }"));
             HostMemory arena = TestWeights.arena(SPECS)) {
            return TwoProcessTransferTest.loadAll(loader, SPECS, arena);
        }
    }

    @Test
    void aTlsSeedServesATlsClientByteExactAndNoPlainClient() {
        try (HostMemory held = TestWeights.arena(SPECS);
             SeedService svc = Seeds.start(seedContext(tls(seedCert.certificate(), seedCert.key(), null)),
                     BackendRegistry.discover(), Map.of(new RankKey(0, 0), TestWeights.held(held, SPECS, 5)))) {
            LoadReport r = load(svc.port(), tls(null, null, seedCert.certificate()));
            for (int i = 0; i < SPECS.size(); i++) {
                assertThat(r.tensors().get(i).sha256()).isEqualTo(TestWeights.sha256(SPECS.get(i), 5));
            }
            // a client that speaks plain HTTP gets nothing (the token never leaves it in clear to a TLS port)
            assertThatThrownBy(() -> load(svc.port(), "")).hasMessageContaining("127.0.0.1:" + svc.port());
            // a client that trusts another certificate refuses the seed
            assertThatThrownBy(() -> load(svc.port(), tls(null, null, clientCert.certificate())))
                    .hasMessageContaining("127.0.0.1:" + svc.port());
        }
    }

    @Test
    void withACaTheSeedRequiresClientCertificates() {
        try (HostMemory held = TestWeights.arena(SPECS);
             SeedService svc = Seeds.start(seedContext(tls(seedCert.certificate(), seedCert.key(),
                     clientCert.certificate())), BackendRegistry.discover(),
                     Map.of(new RankKey(0, 0), TestWeights.held(held, SPECS, 6)))) {
            LoadReport r = load(svc.port(), tls(clientCert.certificate(), clientCert.key(), seedCert.certificate()));
            assertThat(r.tensors().get(0).sha256()).isEqualTo(TestWeights.sha256(SPECS.get(0), 6));
            assertThatThrownBy(() -> load(svc.port(), tls(null, null, seedCert.certificate())))
                    .hasMessageContaining("127.0.0.1:" + svc.port());
        }
    }

    @Test
    void aSeedBeyondLoopbackWithoutTlsIsRefusedUnlessPlainTokensAreAllowed() {
        String beyond = "weight-loader.seed.bind-address = \"0.0.0.0\"\n"
                + "weight-loader.backends.transfer_engine.hostname = \"127.0.0.1\"\n";
        assertThatThrownBy(() -> Seeds.bind(seedContext(beyond), BackendRegistry.discover(), List.of(Device.CPU)))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.tls.certificate")
                .hasMessageContaining("weight-loader.seed.allow-plain-token");
        Seeds.bind(seedContext(beyond + "weight-loader.seed.allow-plain-token = true"), BackendRegistry.discover(),
                List.of(Device.CPU)).close();
        Seeds.bind(seedContext(beyond + tls(seedCert.certificate(), seedCert.key(), null)),
                BackendRegistry.discover(), List.of(Device.CPU)).close();
    }

    @Test
    void tlsSettingsAreCheckedAtStart() {
        assertThatThrownBy(() -> seedContext(tls(seedCert.certificate(), null, null)))
                .hasMessageContaining("weight-loader.tls.key");
        assertThatThrownBy(() -> seedContext(tls(dir.resolve("missing.crt"), seedCert.key(), null)))
                .hasMessageContaining("weight-loader.tls.certificate").hasMessageContaining("missing.crt");
    }
}
