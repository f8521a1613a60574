package io.weightloader.examples;

import static io.weightloader.examples.WeightLoaderCliTest.FIXTURES;
import static io.weightloader.examples.WeightLoaderCliTest.run;
import static org.assertj.core.api.Assertions.assertThat;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * What the command line refuses before it loads or serves anything, as a user sees it: the exit code (2 for bad usage
 * or settings, 1 for a failed load) and one line naming the setting, its flag, or the file at fault. In-process.
 *
 * <p>Seeds that pass every check serve until stopped; the seed cases here all fail their checks, and run under a
 * timeout so that a check that is missing fails the test instead of serving for ever.
 */
class StartUpChecksCliTest {
    static final String SHARDED = FIXTURES.resolve("sharded").toString();

    @TempDir
    Path tmp;

    private String conf(String hocon) throws Exception {
        Path p = tmp.resolve("c" + System.nanoTime() + ".conf");
        Files.writeString(p, hocon);
        return p.toString();
    }

    @Test
    void aBadSettingOfAnInstalledBackendFailsALoadThatUsesAnother() throws Exception {
        WeightLoaderCliTest.Run te = run("load", "--model-path", SHARDED, "--config",
                conf("weight-loader.backends.transfer_engine.builtin.port = 70000"));
        assertThat(te.exitCode()).as(te.err()).isEqualTo(2);
        assertThat(te.err()).startsWith("weightloader: error: weight-loader.backends.transfer_engine.builtin.port")
                .contains("70000").contains("backend 'transfer_engine' is installed");

        WeightLoaderCliTest.Run nccl = run("load", "--model-path", SHARDED, "--config",
                conf("weight-loader.backends.nccl.primitive = smoke-signals"));
        assertThat(nccl.exitCode()).as(nccl.err()).isEqualTo(2);
        assertThat(nccl.err()).contains("weight-loader.backends.nccl.primitive").contains("smoke-signals");
    }

    @Test
    @Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
    void aSeedChecksTheSettingsOfBackendsItDoesNotServe() throws Exception {
        WeightLoaderCliTest.Run r = run("seed", "--model-path", SHARDED, "--port", "0", "--config",
                conf("weight-loader.backends.nccl.init-timeout = forever"));
        assertThat(r.exitCode()).as(r.err()).isEqualTo(2);
        assertThat(r.err()).contains("weight-loader.backends.nccl.init-timeout").contains("forever");
    }

    @Test
    @Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
    void aWildcardHostnameIsNamedAsTheHostnameNotAsTheBindAddress() {
        WeightLoaderCliTest.Run r = run("seed", "--model-path", SHARDED, "--port", "0", "--bind", "127.0.0.1",
                "--hostname", "0.0.0.0");
        assertThat(r.exitCode()).as(r.err()).isEqualTo(2);
        assertThat(r.err()).contains("weight-loader.backends.transfer_engine.hostname (--hostname): is 0.0.0.0")
                .doesNotContain("(127.0.0.1)");

        WeightLoaderCliTest.Run bind = run("seed", "--model-path", SHARDED, "--port", "0", "--bind", "0.0.0.0");
        assertThat(bind.exitCode()).as(bind.err()).isEqualTo(2);
        assertThat(bind.err()).contains("weight-loader.backends.transfer_engine.hostname (--hostname): is not set")
                .contains("0.0.0.0 of weight-loader.seed.bind-address (--bind),");
    }

    @Test
    @Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
    void aSeedBeyondLoopbackWithoutTlsIsToldTheFlagsBesideTheSettings() {
        WeightLoaderCliTest.Run r = run("seed", "--model-path", SHARDED, "--port", "0", "--bind", "0.0.0.0",
                "--hostname", "127.0.0.1", "--token", "secret");
        assertThat(r.exitCode()).as(r.err()).isEqualTo(2);
        assertThat(r.err()).contains("weight-loader.tls.certificate (--tls-certificate)")
                .contains("weight-loader.seed.allow-plain-token (--allow-plain-token)");
        assertThat(r.err().lines().toList()).hasSize(1);
    }

    @Test
    void sourcesMapsToItsSettingWhichRefusesWhatItCannotDo() {
        LoadCommand load = new LoadCommand();
        new picocli.CommandLine(load).parseArgs("--sources", "auto");
        assertThat(load.flagsConfig().getString("weight-loader.backends.transfer_engine.sources")).isEqualTo("auto");
        WeightLoaderCliTest.Run bad = run("load", "--model-path", SHARDED, "--sources", "0");
        assertThat(bad.exitCode()).as(bad.err()).isEqualTo(2);
        assertThat(bad.err()).contains("weight-loader.backends.transfer_engine.sources (--sources)")
                .contains("1..64 or auto");
        WeightLoaderCliTest.Run chain = run("load", "--model-path", SHARDED, "--sources", "4", "--source-strategy",
                "chain");
        assertThat(chain.exitCode()).as(chain.err()).isEqualTo(2);
        assertThat(chain.err()).contains("weight-loader.backends.transfer_engine.sources (--sources): is 4")
                .contains("source-strategy (--source-strategy) = chain");
    }

    @Test
    void tlsFlagsSetTheTlsSettings() throws Exception {
        String missing = tmp.resolve("no-such.pem").toString();
        for (String flag : new String[] {"--tls-ca", "--tls-certificate", "--tls-key"}) {
            WeightLoaderCliTest.Run r = run("load", "--model-path", SHARDED, flag, missing);
            String key = "weight-loader.tls." + flag.substring("--tls-".length());
            assertThat(r.exitCode()).as(r.err()).isEqualTo(2);
            assertThat(r.err()).as(flag).contains(key + " (" + flag + ")").contains(missing);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"load", "inspect", "bench-local"})
    void aMissingModelPathIsBadUsage(String command) {
        String missing = tmp.resolve("no-such-model").toString();
        WeightLoaderCliTest.Run r = command.equals("load") ? run("load", "--model-path", missing)
                : run(command, missing);
        assertThat(r.exitCode()).as(r.err()).isEqualTo(2);
        assertThat(r.err()).startsWith("weightloader: error: ").contains("no such file or directory").contains(missing);
        if (command.equals("load")) {
            assertThat(r.err()).contains("weight-loader.model-path (--model-path)");
        }
    }

    @Test
    void aCheckpointThatCannotBeReadIsAFailedLoad() throws Exception {
        Path bad = tmp.resolve("bad.safetensors");
        Files.writeString(bad, "not a checkpoint");
        WeightLoaderCliTest.Run r = run("load", "--model-path", bad.toString());
        assertThat(r.exitCode()).as(r.err()).isEqualTo(1);
        assertThat(r.err()).contains(bad.toString());
    }

    @Test
    void anOverflowingShapeNamesItsTensorOnce() throws Exception {
        byte[] header = "{\"big\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}"
                .getBytes(StandardCharsets.UTF_8);
        Path file = tmp.resolve("big.safetensors");
        Files.write(file, ByteBuffer.allocate(8 + header.length + 8).order(ByteOrder.LITTLE_ENDIAN)
                .putLong(header.length).put(header).array());
        WeightLoaderCliTest.Run r = run("inspect", file.toString());
        assertThat(r.exitCode()).isEqualTo(1);
        assertThat(r.err()).contains("overflows 64 bits").contains(file.toString());
        assertThat(r.err().split("'big'", -1)).as("times the tensor is named in: " + r.err()).hasSize(2);
    }

    @Test
    void backendsHelpListsOnlyItsOwnOptions() {
        WeightLoaderCliTest.Run r = run("backends", "--help");
        assertThat(r.exitCode()).isZero();
        assertThat(r.out()).contains("--json", "--config", "--mooncake-library")
                .doesNotContain("--model-path", "--token", "--tp-size", "--load-format", "--checksum");
    }

    @Test
    void loadSaysItLoadsIntoGpusToo() {
        assertThat(run("load", "--help").out()).contains("GPU");
    }

    @Test
    void versionSaysWhichJavaRunsIt() {
        WeightLoaderCliTest.Run r = run("--version");
        assertThat(r.out()).contains("Java " + System.getProperty("java.version"))
                .contains(System.getProperty("java.home"));
    }
}
