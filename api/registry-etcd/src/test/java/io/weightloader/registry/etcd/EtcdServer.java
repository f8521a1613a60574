package io.weightloader.registry.etcd;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;

/**
 * A real etcd server for tests (Debian's etcd-server: /usr/bin/etcd, or $ETCD): on loopback, free ports, a temporary
 * data directory, stopped and removed by {@link #close()}. Without etcd the calling test is skipped, the reason
 * printed. Other modules' tests use it through this module's test jar.
 */
public final class EtcdServer implements AutoCloseable {
    public final int clientPort;
    private final Process process;
    private final Path dataDir;
    private final Path log;

    private EtcdServer(int clientPort, Process process, Path dataDir, Path log) {
        this.clientPort = clientPort;
        this.process = process;
        this.dataDir = dataDir;
        this.log = log;
    }

    /** {@code etcd://127.0.0.1:PORT}: this server as {@code weight-loader.directory}. */
    public String directory() {
        return "etcd://127.0.0.1:" + clientPort;
    }

    /** The etcd binary, or a skip naming what is missing. */
    public static Path binary() {
        String env = System.getenv("ETCD");
        Path bin = Path.of(env != null && !env.isBlank() ? env : "/usr/bin/etcd");
        if (!Files.isExecutable(bin)) {
            String reason = "etcd is not installed (no executable " + bin + "; apt-get install etcd-server, or set"
                    + " ETCD to its path): etcd registry tests skipped";
            System.out.println("SKIPPED: " + reason);
            Assumptions.abort(reason);
        }
        return bin;
    }

    public static String version() throws IOException, InterruptedException {
        Process p = new ProcessBuilder(binary().toString(), "--version").redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes()).lines().findFirst().orElse("?");
        p.waitFor();
        return out;
    }

    public static EtcdServer start() throws IOException, InterruptedException {
        return start(null, null, null);
    }

    /**
     * An etcd that serves its clients over TLS only ({@code https://}, {@code certificate} and {@code key}, PEM), and,
     * with {@code trustedCa}, asks every client for a certificate that one of the PEM certificates in that file
     * signed ({@code --client-cert-auth}).
     */
    public static EtcdServer startTls(Path certificate, Path key, Path trustedCa)
            throws IOException, InterruptedException {
        return start(certificate, key, trustedCa);
    }

    private static EtcdServer start(Path certificate, Path key, Path trustedCa)
            throws IOException, InterruptedException {
        Path bin = binary();
        int client = freePort();
        int peer = freePort();
        Path data = Files.createTempDirectory("weightloader-etcd-");
        Path log = data.resolveSibling(data.getFileName() + ".log");
        String peerUrl = "http://127.0.0.1:" + peer;
        String clientUrl = (certificate != null ? "https" : "http") + "://127.0.0.1:" + client;
        List<String> cmd = new ArrayList<>(List.of(bin.toString(), "--name", "test", "--data-dir", data.toString(),
                "--listen-client-urls", clientUrl, "--advertise-client-urls", clientUrl,
                "--listen-peer-urls", peerUrl, "--initial-advertise-peer-urls", peerUrl,
                "--initial-cluster", "test=" + peerUrl, "--initial-cluster-state", "new"));
        if (certificate != null) {
            cmd.addAll(List.of("--cert-file", certificate.toString(), "--key-file", key.toString()));
        }
        if (trustedCa != null) {
            cmd.addAll(List.of("--client-cert-auth", "--trusted-ca-file", trustedCa.toString()));
        }
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        EtcdServer s = new EtcdServer(client, p, data, log);
        try {
            if (certificate != null) {
                s.awaitLogLine("serving client requests on", Duration.ofSeconds(30));
            } else {
                s.awaitHealthy(Duration.ofSeconds(30));
            }
        } catch (IOException | RuntimeException e) {
            s.close();
            throw e;
        }
        return s;
    }

    private void awaitHealthy(Duration limit) throws IOException, InterruptedException {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(1)).build();
        HttpRequest health = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + clientPort + "/health"))
                .timeout(Duration.ofSeconds(2)).build();
        long deadline = System.nanoTime() + limit.toNanos();
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                throw new IOException("etcd exited with " + process.exitValue() + ": " + tail());
            }
            try {
                HttpResponse<String> r = http.send(health, HttpResponse.BodyHandlers.ofString());
                if (r.statusCode() == 200 && r.body().contains("true")) {
                    return;
                }
            } catch (IOException e) {
                // not listening yet
            }
            Thread.sleep(100);
        }
        throw new IOException("etcd not healthy after " + limit + ": " + tail());
    }

    /** Waits for etcd to log {@code line} (its /health is behind TLS when it serves TLS). */
    private void awaitLogLine(String line, Duration limit) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + limit.toNanos();
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                throw new IOException("etcd exited with " + process.exitValue() + ": " + tail());
            }
            if (Files.readString(log).contains(line)) {
                return;
            }
            Thread.sleep(100);
        }
        throw new IOException("etcd did not log '" + line + "' within " + limit + ": " + tail());
    }

    private String tail() throws IOException {
        List<String> lines = Files.readAllLines(log);
        return String.join("\n", lines.subList(Math.max(0, lines.size() - 20), lines.size()));
    }

    public static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    @Override
    public void close() throws IOException, InterruptedException {
        process.destroy();
        if (!process.waitFor(10, java.util.concurrent.TimeUnit.SECONDS)) {
            process.destroyForcibly().waitFor();
        }
        try (Stream<Path> files = Files.walk(dataDir)) {
            files.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        }
        Files.deleteIfExists(log);
    }
}
