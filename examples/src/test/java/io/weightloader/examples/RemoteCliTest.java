package io.weightloader.examples;

import static io.weightloader.examples.WeightLoaderCliTest.FIXTURES;
import static io.weightloader.examples.WeightLoaderCliTest.JSON;
import static io.weightloader.examples.WeightLoaderCliTest.run;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import java.net.ServerSocket;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The remote path from the command line: the demo, and the configured fallback when the seed is gone. */
class RemoteCliTest {
    @TempDir
    Path tmp;

    static int deadPort() throws Exception {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort(); // closed again: nothing listens there
        }
    }

    @Test
    void theDemoLoadsFromDiskAndFromASeedWithEqualChecksums() {
        WeightLoaderCliTest.Run r = run("demo", "--size", "8MiB");
        assertThat(r.exitCode()).as(r.err()).isZero();
        assertThat(r.out()).contains("engine builtin-tcp").contains("5. OK: all");
    }

    @Test
    void anUnreachableSeedIsAnErrorWithoutFallback() throws Exception {
        int port = deadPort();
        WeightLoaderCliTest.Run r = run("load", "--load-format", "remote_instance",
                "--remote-instance-weight-loader-seed-instance-ip", "127.0.0.1",
                "--remote-instance-weight-loader-seed-instance-service-port", String.valueOf(port),
                "--config", write("weight-loader.remote-instance { retries = 0, connect-timeout = 1s }").toString());
        assertThat(r.exitCode()).isEqualTo(WeightLoaderCli.EXIT_FAILURE);
        assertThat(r.err()).contains("127.0.0.1:" + port).doesNotContain("\tat ");
    }

    @Test
    void theConfiguredFallbackLoadsTheLocalCheckpointAndSaysSo() throws Exception {
        int port = deadPort();
        Path report = tmp.resolve("report.json");
        WeightLoaderCliTest.Run r = run("load", "--load-format", "remote_instance",
                "--remote-instance-weight-loader-seed-instance-ip", "127.0.0.1",
                "--remote-instance-weight-loader-seed-instance-service-port", String.valueOf(port),
                "--fallback", "local", "--model-path", FIXTURES.resolve("sharded").toString(),
                "--checksum", "sha256", "--report", report.toString(),
                "--config", write("weight-loader.remote-instance { retries = 0, connect-timeout = 1s }").toString());
        assertThat(r.exitCode()).as(r.err()).isZero();
        JsonNode json = JSON.readTree(report.toFile());
        assertThat(json.get("backend").asText()).isEqualTo("local");
        assertThat(json.get("fallbackReason").asText()).contains("transfer_engine").contains("127.0.0.1:" + port);
        JsonNode expected = JSON.readTree(FIXTURES.resolve("expected.json").toFile()).get("files").get("sharded");
        for (JsonNode t : json.get("tensors")) {
            assertThat(t.get("sha256").asText()).isEqualTo(expected.get(t.get("name").asText()).get("sha256").asText());
        }
    }

    private Path write(String hocon) throws Exception {
        Path p = tmp.resolve("c" + System.nanoTime() + ".conf");
        java.nio.file.Files.writeString(p, hocon);
        return p;
    }
}
