package io.weightloader.examples;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.FileInputStream;
import java.net.ConnectException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The distribution's launcher as a user meets it: which Java it runs on, the archive it ships in, TLS from the flags
 * alone, and how a seed stops. Separate processes of {@code target/weightloader/bin/weightloader}, as in
 * {@link DistributionIT}.
 */
class LauncherIT {
    static final Path LAUNCHER = DistributionIT.LAUNCHER;
    static final Path SHARDED = DistributionIT.FIXTURES.resolve("sharded");

    @TempDir
    Path tmp;
    private final List<Process> started = new ArrayList<>();

    record Run(int exitCode, String out, String err) {
    }

    Run run(Map<String, String> env, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(LAUNCHER.toString()));
        cmd.addAll(List.of(args));
        Path out = tmp.resolve("out-" + System.nanoTime());
        Path err = tmp.resolve("err-" + System.nanoTime());
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile());
        pb.environment().keySet().removeIf(k -> k.startsWith("WEIGHT_LOADER_") || k.startsWith("WEIGHTLOADER_"));
        pb.environment().putAll(env);
        Process p = pb.start();
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("weightloader " + String.join(" ", args) + " did not finish in 120 s");
        }
        return new Run(p.exitValue(), Files.readString(out), Files.readString(err));
    }

    /** Starts {@code weightloader seed ARGS}, waits (bounded) until it serves, and returns it with its port. */
    DistributionIT.Seed seed(String... args) throws Exception {
        return DistributionIT.startSeed(tmp, started, args);
    }

    @AfterEach
    void stop() throws InterruptedException {
        for (Process p : started) {
            p.destroy();
            if (!p.waitFor(30, TimeUnit.SECONDS)) {
                p.destroyForcibly();
            }
        }
    }

    /** A stand-in for {@code java} that says it is {@code version} and records the arguments it is run with. */
    private Path fakeJava(String version) throws Exception {
        Path bin = Files.createDirectories(tmp.resolve("java-" + version).resolve("bin"));
        Path java = bin.resolve("java");
        Files.writeString(java, "#!/bin/sh\n"
                + "if [ \"$1\" = -version ]; then echo 'openjdk version \"" + version + "\" 2020-01-01' >&2; exit 0; fi\n"
                + "echo \"$@\" > \"" + bin.resolve("args") + "\"\n");
        assertThat(java.toFile().setExecutable(true)).isTrue();
        return java;
    }

    @Test
    void aJavaOlderThan17IsRefusedNamingTheVersionAndWhereItWasFound() throws Exception {
        for (String old : new String[] {"11.0.2", "1.8.0_392"}) {
            Path java = fakeJava(old);
            Run r = run(Map.of("WEIGHTLOADER_JAVA", java.toString()), "backends");
            assertThat(r.exitCode()).as(r.err()).isEqualTo(2);
            assertThat(r.err()).contains("Java 17 or newer").contains("Java " + old).contains(java.toString());
            assertThat(java.resolveSibling("args")).as("the old Java was not run").doesNotExist();
        }
    }

    @Test
    void nativeAccessIsEnabledOnlyForJava22AndNewer() throws Exception {
        for (String version : new String[] {"17.0.15", "21.0.2", "22", "25.0.3"}) {
            Path java = fakeJava(version);
            Run r = run(Map.of("WEIGHTLOADER_JAVA", java.toString()), "backends");
            assertThat(r.exitCode()).as(r.err()).isZero();
            String args = Files.readString(java.resolveSibling("args"));
            boolean expected = Integer.parseInt(version.split("\\.")[0]) >= 22;
            assertThat(args.contains("--enable-native-access=ALL-UNNAMED")).as(version + ": " + args).isEqualTo(expected);
            assertThat(args).contains("io.weightloader.examples.WeightLoaderCli backends");
        }
    }

    /** A Java 22 or newer on this machine (JNA warns there unless native access is enabled), if any. */
    static Optional<Path> java22() throws Exception {
        Path jvms = Path.of("/usr/lib/jvm");
        if (!Files.isDirectory(jvms)) {
            return Optional.empty();
        }
        try (Stream<Path> dirs = Files.list(jvms)) {
            for (Path d : dirs.sorted().toList()) {
                Path release = d.resolve("release");
                Path java = d.resolve("bin/java");
                if (Files.isReadable(release) && Files.isExecutable(java)) {
                    for (String line : Files.readAllLines(release)) {
                        if (line.startsWith("JAVA_VERSION=\"")) {
                            String v = line.substring("JAVA_VERSION=\"".length()).split("[.\"+-]")[0];
                            if (v.matches("[0-9]+") && Integer.parseInt(v) >= 22) {
                                return Optional.of(java);
                            }
                        }
                    }
                }
            }
        }
        return Optional.empty();
    }

    @Test
    void onJava22AndNewerJnaLoadsWithoutRestrictedMethodWarnings() throws Exception {
        Optional<Path> java = java22();
        Assumptions.assumeTrue(java.isPresent(), "no Java 22 or newer in /usr/lib/jvm: nothing to check here");
        Run r = run(Map.of("WEIGHTLOADER_JAVA", java.get().toString()), "load", "--model-path", SHARDED.toString());
        assertThat(r.exitCode()).as(r.err()).isZero();
        assertThat(r.err()).doesNotContain("restricted method").doesNotContain("WARNING");
        Run version = run(Map.of("WEIGHTLOADER_JAVA", java.get().toString()), "--version");
        assertThat(version.out()).contains("Java ").contains(java.get().getParent().getParent().toString());
    }

    @Test
    void theArchiveUnpacksToTheSameWeightloaderFolderAsTheDistribution() throws Exception {
        Process tar = new ProcessBuilder("tar", "-tzf", "target/weightloader.tar.gz").redirectErrorStream(true).start();
        String listing = new String(tar.getInputStream().readAllBytes());
        assertThat(tar.waitFor(60, TimeUnit.SECONDS) && tar.exitValue() == 0).as(listing).isTrue();
        assertThat(listing.lines()).isNotEmpty().allSatisfy(entry -> assertThat(entry).startsWith("weightloader/"))
                .contains("weightloader/bin/weightloader");
    }

    /** A self-signed certificate for 127.0.0.1 and its PKCS#8 key, as PEM files (also the clients' CA). */
    private Path[] certificate() throws Exception {
        Path p12 = tmp.resolve("seed.p12");
        Process k = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "keytool").toString(),
                "-genkeypair", "-alias", "k", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=seed",
                "-ext", "SAN=ip:127.0.0.1", "-validity", "2", "-storetype", "PKCS12", "-keystore", p12.toString(),
                "-storepass", "changeit", "-keypass", "changeit").redirectErrorStream(true).start();
        assertThat(k.waitFor(60, TimeUnit.SECONDS) && k.exitValue() == 0).as("keytool").isTrue();
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(p12.toFile())) {
            ks.load(in, "changeit".toCharArray());
        }
        Base64.Encoder b64 = Base64.getMimeEncoder(64, "\n".getBytes());
        Path cert = Files.writeString(tmp.resolve("seed.pem"), "-----BEGIN CERTIFICATE-----\n"
                + b64.encodeToString(ks.getCertificate("k").getEncoded()) + "\n-----END CERTIFICATE-----\n");
        Path key = Files.writeString(tmp.resolve("seed.key"), "-----BEGIN PRIVATE KEY-----\n"
                + b64.encodeToString(ks.getKey("k", "changeit".toCharArray()).getEncoded())
                + "\n-----END PRIVATE KEY-----\n");
        return new Path[] {cert, key};
    }

    @Test
    void aSeedBeyondLoopbackServesTlsFromItsFlagsAndAClientTrustsItWithTlsCa() throws Exception {
        Path[] pem = certificate();
        DistributionIT.Seed s = seed("--model-path", SHARDED.toString(), "--bind", "0.0.0.0", "--hostname", "127.0.0.1", "--token",
                "secret", "--tls-certificate", pem[0].toString(), "--tls-key", pem[1].toString());
        assertThat(Files.readString(s.log())).contains("--remote-instance-weight-loader-seed-instance-ip 127.0.0.1 ")
                .contains("--tls-ca");
        Run r = run(Map.of(), "load", "--load-format", "remote_instance", "--remote-instance-weight-loader-seed-instance-ip",
                "127.0.0.1", "--remote-instance-weight-loader-seed-instance-service-port", String.valueOf(s.port()),
                "--token", "secret", "--tls-ca", pem[0].toString(), "--checksum", "sha256");
        assertThat(r.exitCode()).as(r.err()).isZero();
        assertThat(r.out()).contains("from seed 127.0.0.1:" + s.port());
    }

    @Test
    void aClientAskingWhileTheSeedStopsIsToldItStopsNotRefusedAndTheStopIsInfo() throws Exception {
        DistributionIT.Seed s = seed("--model-path", SHARDED.toString(), "--token", "tok");
        s.process().destroy(); // SIGTERM
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!Files.readString(s.log()).contains("seed stopping")) {
            assertThat(System.nanoTime()).as("the seed logged that it is stopping").isLessThan(deadline);
            Thread.sleep(20);
        }
        // A client that starts now and retries (as loads do on 5xx) is told 503 'shutting down' each time, for longer
        // than the second of quiet after which an idle seed used to close its port under it
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        HttpRequest manifest = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + s.port() + "/v1/manifest?tp=0"))
                .timeout(Duration.ofSeconds(10)).header("Authorization", "Bearer tok").build();
        long asking = System.nanoTime();
        int answers = 0;
        while (System.nanoTime() - asking < TimeUnit.MILLISECONDS.toNanos(2500)) {
            HttpResponse<String> r;
            try {
                r = http.send(manifest, HttpResponse.BodyHandlers.ofString());
            } catch (ConnectException e) {
                throw new AssertionError("connection refused after " + answers + " answers, "
                        + TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - asking) + " ms into the stop", e);
            }
            assertThat(r.statusCode()).isEqualTo(503);
            assertThat(r.body()).contains("shutting down");
            answers++;
            Thread.sleep(100); // the client's pause between attempts
        }
        assertThat(s.process().waitFor(30, TimeUnit.SECONDS)).as("the seed stopped once no one asked").isTrue();
        String log = Files.readString(s.log());
        assertThat(log).contains("INFO io.weightloader.examples.SeedCommand - seed stopping: no new loads; waiting up"
                + " to 10 s for loads in flight").containsPattern("INFO .* - seed stopped after [0-9.]+ s \\(no load in"
                + " flight\\)").doesNotContain("WARN");
    }
}
