package io.weightloader.examples;

import io.weightloader.cli.Sizes;
import io.weightloader.cli.SyntheticLlama;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.weightloader.memory.HostMemory;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import picocli.CommandLine;

/** Runs the command line in-process against the reference fixtures written by Python safetensors + torch. */
class WeightLoaderCliTest {
    /** Relative to the examples module directory, where Maven runs the tests. */
    static final Path FIXTURES = Path.of("../backend-local/src/test/resources/fixtures");
    static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path tmp;
    private long liveBefore;

    @BeforeEach
    void before() {
        liveBefore = HostMemory.liveBytes();
    }

    @AfterEach
    void noLeaks() {
        assertThat(HostMemory.liveBytes()).as("host memory leaked by the command").isEqualTo(liveBefore);
    }

    /** One in-process run: exit code and what went to stdout / stderr. */
    record Run(int exitCode, String out, String err) {
        JsonNode json() throws IOException {
            return JSON.readTree(out);
        }
    }

    static Run run(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        CommandLine cli = WeightLoaderCli.commandLine();
        cli.setOut(new PrintWriter(out, true));
        cli.setErr(new PrintWriter(err, true));
        int rc = cli.execute(args);
        return new Run(rc, out.toString(), err.toString());
    }

    /** expected.json: for each fixture ("all_dtypes.safetensors", "sharded"), tensor name to dtype/shape/sha256. */
    static JsonNode expected(String fixture) throws IOException {
        JsonNode node = JSON.readTree(FIXTURES.resolve("expected.json").toFile()).get("files").get(fixture);
        assertThat(node).as("expected.json entry for " + fixture).isNotNull();
        return node;
    }

    static List<Long> shape(JsonNode array) {
        List<Long> out = new ArrayList<>();
        array.forEach(d -> out.add(d.asLong()));
        return out;
    }

    @ParameterizedTest
    @ValueSource(strings = {"all_dtypes.safetensors", "sharded"})
    void inspectJsonMatchesTheReferenceDtypesAndShapes(String fixture) throws IOException {
        Run r = run("inspect", FIXTURES.resolve(fixture).toString(), "--json");

        assertThat(r.exitCode()).as(r.err()).isZero();
        assertThat(r.err()).isEmpty();
        JsonNode doc = r.json();
        JsonNode expected = expected(fixture);
        assertThat(doc.get("path").asText()).isEqualTo(FIXTURES.resolve(fixture).toString());
        Map<String, JsonNode> byName = new HashMap<>();
        long total = 0;
        for (JsonNode t : doc.get("tensors")) {
            byName.put(t.get("name").asText(), t);
            total += t.get("bytes").asLong();
            assertThat(t.get("file").asText()).endsWith(".safetensors");
        }
        assertThat(byName.keySet()).containsExactlyInAnyOrderElementsOf(
                expected.properties().stream().map(Map.Entry::getKey).toList());
        expected.properties().forEach(e -> {
            JsonNode t = byName.get(e.getKey());
            assertThat(t.get("dtype").asText()).as(e.getKey()).isEqualTo(e.getValue().get("dtype").asText());
            assertThat(shape(t.get("shape"))).as(e.getKey()).isEqualTo(shape(e.getValue().get("shape")));
        });
        assertThat(doc.get("totalBytes").asLong()).isEqualTo(total);
    }

    @Test
    void inspectShardedNamesEachTensorsShardFile() throws IOException {
        JsonNode index = JSON.readTree(FIXTURES.resolve("sharded/model.safetensors.index.json").toFile());
        Run r = run("inspect", FIXTURES.resolve("sharded").toString(), "--json");
        for (JsonNode t : r.json().get("tensors")) {
            assertThat(t.get("file").asText()).isEqualTo(index.get("weight_map").get(t.get("name").asText()).asText());
        }
        assertThat(r.json().get("totalBytes").asLong()).isEqualTo(index.get("metadata").get("total_size").asLong());
    }

    @Test
    void theBenchCommandsAreFoundInTheBenchmarksJarAndListedAfterTheCommandLinesOwn() {
        Map<String, CommandLine> subcommands = WeightLoaderCli.commandLine().getSubcommands();
        assertThat(subcommands.keySet()).containsSubsequence("generate", "bench-local", "bench-remote",
                "bench-reshard", "bench-saver", "bench-gpu", "help");
        Object bench = subcommands.get("bench-local").getCommand();
        assertThat(bench).isInstanceOf(io.weightloader.cli.CliSubcommand.class);
        assertThat(bench.getClass().getPackageName()).isEqualTo("io.weightloader.benchmarks");
        assertThat(subcommands.get("bench-local").getCommandSpec().findOption("--verbose")).as("inherited")
                .isNotNull();
    }

    @Test
    void inspectTablePrintsTotals() {
        Run r = run("inspect", FIXTURES.resolve("sharded").toString());
        assertThat(r.exitCode()).isZero();
        assertThat(r.out()).contains("NAME", "DTYPE", "SHAPE", "BYTES", "FILE", "lm_head.bias", "F32", "[100]",
                "model-00004-of-00004.safetensors", "11 tensors, 25424 bytes", "in 4 files");
    }

    @ParameterizedTest
    @ValueSource(strings = {"all_dtypes.safetensors", "sharded"})
    void loadReportChecksumsEqualTheReference(String fixture) throws IOException {
        Path report = tmp.resolve("report.json");
        Run r = run("load", "--model-path", FIXTURES.resolve(fixture).toString(), "--checksum", "sha256",
                "--report", report.toString(), "--no-progress");

        assertThat(r.exitCode()).as(r.err()).isZero();
        assertThat(r.out()).contains("loaded", "with backend local", "report written to " + report);
        JsonNode doc = JSON.readTree(report.toFile());
        JsonNode expected = expected(fixture);
        assertThat(doc.get("backend").asText()).isEqualTo("local");
        assertThat(doc.get("tensors")).hasSize(expected.size());
        for (JsonNode t : doc.get("tensors")) {
            String name = t.get("name").asText();
            JsonNode e = expected.get(name);
            assertThat(e).as("unexpected tensor " + name).isNotNull();
            assertThat(t.get("dtype").asText()).as(name).isEqualTo(e.get("dtype").asText());
            assertThat(shape(t.get("shape"))).as(name).isEqualTo(shape(e.get("shape")));
            assertThat(t.get("sha256").asText()).as(name).isEqualTo(e.get("sha256").asText());
        }
    }

    @Test
    void zeroCopyLoadGivesTheSameChecksums() throws IOException {
        Path report = tmp.resolve("zc.json");
        Run r = run("load", "--model-path", FIXTURES.resolve("sharded").toString(), "--checksum", "sha256",
                "--zero-copy", "--report", report.toString());

        assertThat(r.exitCode()).as(r.err()).isZero();
        JsonNode doc = JSON.readTree(report.toFile());
        assertThat(doc.get("engine").asText()).isEqualTo("mmap");
        JsonNode expected = expected("sharded");
        for (JsonNode t : doc.get("tensors")) {
            assertThat(t.get("sha256").asText()).isEqualTo(expected.get(t.get("name").asText()).get("sha256").asText());
        }
    }

    @Test
    void configFileIsOverriddenByFlags() throws IOException {
        Path conf = tmp.resolve("loader.conf");
        Files.writeString(conf, "weight-loader { model-path = \"/does/not/exist\", checksum = sha256 }\n");
        Path report = tmp.resolve("r.json");

        Run fromFile = run("load", "--config", conf.toString());
        assertThat(fromFile.exitCode()).isEqualTo(2); // a model path that is not there is a bad setting
        assertThat(fromFile.err()).contains("/does/not/exist");

        Run overridden = run("load", "--config", conf.toString(), "--model-path",
                FIXTURES.resolve("all_dtypes.safetensors").toString(), "--report", report.toString());
        assertThat(overridden.exitCode()).as(overridden.err()).isZero();
        // checksum = sha256 still comes from the file
        assertThat(JSON.readTree(report.toFile()).get("tensors").get(0).get("sha256").isTextual()).isTrue();
    }

    @Test
    void generatedShardedCheckpointLoads() throws IOException {
        Path dir = tmp.resolve("gen");
        Run g = run("generate", "--out", dir.toString(), "--size", "4MiB", "--shards", "2", "--seed", "7");

        assertThat(g.exitCode()).as(g.err()).isZero();
        assertThat(g.out()).startsWith(dir.toString()).contains("2 shards");
        assertThat(dir.resolve("model.safetensors.index.json")).exists();
        assertThat(dir.resolve("model-00001-of-00002.safetensors")).exists();
        assertThat(dir.resolve("model-00002-of-00002.safetensors")).exists();

        JsonNode inspected = run("inspect", dir.toString(), "--json").json();
        long total = inspected.get("totalBytes").asLong();
        assertThat((double) total).isBetween(0.9 * (4 << 20), 4.0 * (1 << 20));
        List<String> names = new ArrayList<>();
        inspected.get("tensors").forEach(t -> {
            names.add(t.get("name").asText());
            assertThat(t.get("dtype").asText()).isEqualTo("BF16");
        });
        assertThat(names).contains("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
                "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
                "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                "model.norm.weight", "lm_head.weight");

        Path report = tmp.resolve("gen.json");
        Run l = run("load", "--model-path", dir.toString(), "--checksum", "sha256", "--report", report.toString());
        assertThat(l.exitCode()).as(l.err()).isZero();
        JsonNode doc = JSON.readTree(report.toFile());
        assertThat(doc.get("totalBytes").asLong()).isEqualTo(total);
        assertThat(doc.get("tensorCount").asInt()).isEqualTo(names.size());
    }

    @Test
    void generateIsDeterministic() throws IOException {
        Path a = tmp.resolve("a");
        Path b = tmp.resolve("b");
        Path c = tmp.resolve("c");
        assertThat(run("generate", "--out", a.toString(), "--size", "300000").exitCode()).isZero();
        assertThat(run("generate", "--out", b.toString(), "--size", "300000").exitCode()).isZero();
        assertThat(run("generate", "--out", c.toString(), "--size", "300000", "--seed", "1").exitCode()).isZero();
        byte[] first = Files.readAllBytes(a.resolve("model.safetensors"));
        assertThat(Files.readAllBytes(b.resolve("model.safetensors"))).isEqualTo(first);
        assertThat(Files.readAllBytes(c.resolve("model.safetensors"))).isNotEqualTo(first);
    }

    @Test
    void generateRefusesToMixWithAnExistingCheckpoint() {
        Path dir = tmp.resolve("g");
        assertThat(run("generate", "--out", dir.toString(), "--size", "1MiB", "--shards", "3").exitCode()).isZero();
        Run again = run("generate", "--out", dir.toString(), "--size", "1MiB");
        assertThat(again.exitCode()).isEqualTo(2);
        assertThat(again.err()).contains("already holds a checkpoint", "--force");
        Run forced = run("generate", "--out", dir.toString(), "--size", "1MiB", "--force");
        assertThat(forced.exitCode()).as(forced.err()).isZero();
        assertThat(run("inspect", dir.toString()).exitCode()).isZero();
    }

    @Test
    void benchLocalReportsBothThroughputsAndTheirRatio() throws IOException {
        Path dir = tmp.resolve("bench");
        assertThat(run("generate", "--out", dir.toString(), "--size", "2MiB", "--shards", "2").exitCode()).isZero();
        Run r = run("bench-local", dir.toString(), "--repeat", "1", "--json");

        assertThat(r.exitCode()).as(r.err()).isZero();
        JsonNode doc = r.json();
        assertThat(doc.get("raw").get("gigabytesPerSecond").asDouble()).isPositive();
        assertThat(doc.get("loader").get("gigabytesPerSecond").asDouble()).isPositive();
        assertThat(doc.get("ratio").asDouble()).isPositive();
        assertThat(doc.get("zeroCopy").get("mapSeconds").asDouble()).isPositive();
        assertThat(doc.get("files").asInt()).isEqualTo(2);
    }

    @Test
    void benchLocalOnAGpuWithoutCudaNamesWhatIsMissing() throws IOException {
        if (io.weightloader.memory.cuda.Cuda.available()) {
            System.err.println("SKIPPED benchLocalOnAGpuWithoutCudaNamesWhatIsMissing: this machine has CUDA");
            org.junit.jupiter.api.Assumptions.abort("this machine has CUDA");
        }
        Path dir = tmp.resolve("bench-gpu-less");
        assertThat(run("generate", "--out", dir.toString(), "--size", "1MiB").exitCode()).isZero();
        Run r = run("bench-local", dir.toString(), "--repeat", "1", "--device", "cuda:0");

        assertThat(r.exitCode()).isNotZero();
        assertThat(r.err()).startsWith("weightloader: error: ").contains("libcudart.so.13").doesNotContain("\tat ");
        assertThat(run("bench-local", dir.toString(), "--device", "gpu0").err()).contains("--device", "gpu0");
    }

    @ParameterizedTest
    @ValueSource(strings = {"inspect", "load", "bench-local"})
    void aBadPathIsOneLineNamingItWithoutAStackTrace(String command) {
        String missing = tmp.resolve("no-such-model").toString();
        Run r = command.equals("load") ? run("load", "--model-path", missing) : run(command, missing);

        assertThat(r.exitCode()).isNotZero();
        assertThat(r.err().lines().toList()).singleElement().satisfies(line -> assertThat(line)
                .startsWith("weightloader: error: ").contains(missing));
        assertThat(r.err()).doesNotContain("Exception", "\tat ");
    }

    @Test
    void verboseAddsTheStackTrace() throws IOException {
        Path bad = Files.writeString(tmp.resolve("bad.safetensors"), "not a checkpoint");
        Run r = run("inspect", bad.toString(), "--verbose");
        assertThat(r.exitCode()).isEqualTo(1);
        assertThat(r.err()).startsWith("weightloader: error: ").contains("SafetensorsFormatException", "\tat ");
    }

    @Test
    void unknownFlagIsAUsageError() {
        Run r = run("load", "--no-such-flag");
        assertThat(r.exitCode()).isEqualTo(2);
        assertThat(r.err().lines().toList()).singleElement().satisfies(line -> assertThat(line)
                .startsWith("weightloader: error: ").contains("--no-such-flag"));
    }

    @Test
    void badSettingsAreUsageErrorsNamingTheConfigKey() {
        Run r = run("load", "--model-path", FIXTURES.resolve("sharded").toString(), "--fallback", "sometimes");
        assertThat(r.exitCode()).isEqualTo(2);
        assertThat(r.err()).startsWith("weightloader: error: weight-loader.fallback (--fallback):");

        Run remote = run("load", "--load-format", "remote_instance");
        assertThat(remote.exitCode()).isEqualTo(2);
        assertThat(remote.err()).contains("weight-loader.remote-instance.seed-instance-ip");

        Run size = run("generate", "--out", tmp.toString(), "--size", "lots");
        assertThat(size.exitCode()).isEqualTo(2);
        assertThat(size.err()).contains("'lots' is not a size");
    }

    @Test
    void sgLangFlagsMapToTheirConfigKeys() {
        LoadCommand load = new LoadCommand();
        new CommandLine(load).parseArgs("--load-format", "remote_instance", "--model-path", "/m",
                "--remote-instance-weight-loader-seed-instance-ip", "10.0.0.2",
                "--remote-instance-weight-loader-seed-instance-service-port", "30000",
                "--remote-instance-weight-loader-send-weights-group-ports", "5000,5001",
                "--remote-instance-weight-loader-backend", "nccl",
                "--remote-instance-weight-loader-start-seed-via-transfer-engine", "--enable-memory-saver",
                "--backend", "nccl", "--device", "cuda:1", "--tp-rank", "1", "--pp-rank", "2", "--token", "s3cret",
                "--fallback", "local", "--checksum", "sha256", "--zero-copy", "--protocol", "nvlink_intra",
                "--tp-size", "4");
        var c = load.flagsConfig();
        assertThat(c.getString("weight-loader.load-format")).isEqualTo("remote_instance");
        assertThat(c.getString("weight-loader.model-path")).isEqualTo("/m");
        assertThat(c.getString("weight-loader.remote-instance.seed-instance-ip")).isEqualTo("10.0.0.2");
        assertThat(c.getInt("weight-loader.remote-instance.seed-instance-service-port")).isEqualTo(30000);
        // passed as given; the settings read SGLang's JSON list or a comma-separated string (WeightLoaderSettingsTest)
        assertThat(c.getString("weight-loader.remote-instance.send-weights-group-ports")).isEqualTo("5000,5001");
        assertThat(c.getString("weight-loader.backends.transfer_engine.protocol")).isEqualTo("nvlink_intra");
        assertThat(c.getInt("weight-loader.rank.tp-size")).isEqualTo(4);
        assertThat(c.getString("weight-loader.remote-instance.backend")).isEqualTo("nccl");
        assertThat(c.getBoolean("weight-loader.remote-instance.start-seed-via-transfer-engine")).isTrue();
        assertThat(c.getBoolean("weight-loader.enable-memory-saver")).isTrue();
        assertThat(c.getString("weight-loader.backend")).isEqualTo("nccl");
        assertThat(c.getString("weight-loader.device")).isEqualTo("cuda:1");
        assertThat(c.getInt("weight-loader.rank.tp")).isEqualTo(1);
        assertThat(c.getInt("weight-loader.rank.pp")).isEqualTo(2);
        assertThat(c.getString("weight-loader.remote-instance.token")).isEqualTo("s3cret");
        assertThat(c.getString("weight-loader.fallback")).isEqualTo("local");
        assertThat(c.getString("weight-loader.checksum")).isEqualTo("sha256");
        assertThat(c.getBoolean("weight-loader.backends.local.zero-copy")).isTrue();

        LoadCommand none = new LoadCommand();
        new CommandLine(none).parseArgs();
        assertThat(none.flagsConfig().isEmpty()).as("flags not given must not override lower layers").isTrue();
    }

    @Test
    void sizesParseBinaryAndDecimalUnits() {
        assertThat(Sizes.parse("1GiB")).isEqualTo(1L << 30);
        assertThat(Sizes.parse("512MiB")).isEqualTo(512L << 20);
        assertThat(Sizes.parse("8GB")).isEqualTo(8_000_000_000L);
        assertThat(Sizes.parse("4096")).isEqualTo(4096);
        assertThat(Sizes.parse("1.5g")).isEqualTo(3L << 29);
        assertThat(Sizes.human(64L << 20)).isEqualTo("64.00 MiB");
    }

    @Test
    void syntheticModelsLandCloseToTheirTarget() {
        for (long target : new long[] {300_000, 4L << 20, 64L << 20, 1L << 30, 8_000_000_000L, 70L << 30}) {
            SyntheticLlama m = SyntheticLlama.forSize(target);
            assertThat(m.totalBytes()).as("model for %d: %s", target, m).isLessThanOrEqualTo(target)
                    .isGreaterThan(target - 64 * 4L * m.hidden());
            // whole multiples of 64 vocabulary rows: the llama layout splits it for tp sizes up to 64
            assertThat(m.vocab() % 64).as("vocab of %s", m).isZero();
            assertThat(m.specs().stream().mapToLong(s -> s.byteSize()).sum()).isEqualTo(m.totalBytes());
        }
        SyntheticLlama gib = SyntheticLlama.forSize(1L << 30);
        assertThat(gib.layers()).isGreaterThan(4);
        assertThat(gib.hidden() % 64).isZero();
    }
}
