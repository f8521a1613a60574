package com.example.host;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.api.DType;
import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.memory.Checksums;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The example host as a team deploys it, each host with its own config file and its port given on the command line:
 * a seed of tp 2 (tp-layout llama), a relay of that seed, and rank hosts (tp 2, rank 1) that load from the relay, from
 * the seed and from disk. All hold the same bytes, those of slicing the checkpoint's whole tensors.
 */
class ExampleHostTest {
    private static final int LAYERS = 2;
    private static final int HIDDEN = 64;
    private static final int KV = 32;
    private static final int INTERMEDIATE = 96;
    private static final int VOCAB = 128;
    private static final Pattern ADDRESS = Pattern.compile("\"address\"\\s*:\\s*\"([^\"]+)\"");

    @TempDir
    Path dir;

    /** Each tensor's whole bytes, as written to the checkpoint. */
    private final Map<String, byte[]> whole = new LinkedHashMap<>();

    /** A small Llama: every tensor the llama layout splits (by rows, by columns, by vocabulary) and some it keeps. */
    private Path checkpoint() {
        List<TensorSpec> specs = new ArrayList<>();
        specs.add(TensorSpec.of("model.embed_tokens.weight", DType.BF16, VOCAB, HIDDEN));
        for (int l = 0; l < LAYERS; l++) {
            String p = "model.layers." + l + ".";
            specs.add(TensorSpec.of(p + "self_attn.q_proj.weight", DType.BF16, HIDDEN, HIDDEN));
            specs.add(TensorSpec.of(p + "self_attn.k_proj.weight", DType.BF16, KV, HIDDEN));
            specs.add(TensorSpec.of(p + "self_attn.v_proj.weight", DType.BF16, KV, HIDDEN));
            specs.add(TensorSpec.of(p + "self_attn.o_proj.weight", DType.BF16, HIDDEN, HIDDEN));
            specs.add(TensorSpec.of(p + "mlp.gate_proj.weight", DType.BF16, INTERMEDIATE, HIDDEN));
            specs.add(TensorSpec.of(p + "mlp.up_proj.weight", DType.BF16, INTERMEDIATE, HIDDEN));
            specs.add(TensorSpec.of(p + "mlp.down_proj.weight", DType.BF16, HIDDEN, INTERMEDIATE));
            specs.add(TensorSpec.of(p + "input_layernorm.weight", DType.BF16, HIDDEN));
            specs.add(TensorSpec.of(p + "post_attention_layernorm.weight", DType.BF16, HIDDEN));
        }
        specs.add(TensorSpec.of("model.norm.weight", DType.BF16, HIDDEN));
        specs.add(TensorSpec.of("lm_head.weight", DType.BF16, VOCAB, HIDDEN));
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        Random random = new Random(21);
        for (TensorSpec s : specs) {
            byte[] b = new byte[(int) s.byteSize()];
            random.nextBytes(b);
            whole.put(s.name(), b);
            tensors.add(SafetensorsWriter.Tensor.of(s, b));
        }
        Path ckpt = dir.resolve("llama");
        SafetensorsWriter.writeSharded(ckpt, SafetensorsWriter.split(tensors, 2), Map.of());
        return ckpt;
    }

    /** The bytes of {@code full.narrow(slice.dim, slice.start, slice.length).contiguous()}: whole when null. */
    private static byte[] slice(byte[] full, TensorSpec spec, TensorSlice slice) {
        if (slice == null) {
            return full;
        }
        List<Long> shape = spec.shape();
        long outer = 1;
        for (int d = 0; d < slice.dim(); d++) {
            outer *= shape.get(d);
        }
        long inner = spec.dtype().bits() / 8;
        for (int d = slice.dim() + 1; d < shape.size(); d++) {
            inner *= shape.get(d);
        }
        int run = (int) (slice.length() * inner);
        byte[] out = new byte[(int) (outer * run)];
        for (int o = 0; o < outer; o++) {
            System.arraycopy(full, (int) ((o * shape.get(slice.dim()) + slice.start()) * inner), out, o * run, run);
        }
        return out;
    }

    /** SHA-256 of each tensor's bytes in the host's memory for {@code rank}, by name. */
    private static Map<String, String> sha256(ExampleHost host, RankKey rank) {
        Map<String, String> out = new TreeMap<>();
        for (TensorDestination d : host.weights().get(rank)) {
            out.put(d.spec().name(), Checksums.sha256(d.region(), d.byteSize()));
        }
        return out;
    }

    /** SHA-256 of slicing each whole tensor as {@code host} says rank {@code rank} holds it. */
    private Map<String, String> slicedFromCheckpoint(ExampleHost host, RankKey rank) {
        Map<String, String> out = new TreeMap<>();
        for (TensorDestination d : host.weights().get(rank)) {
            out.put(d.spec().name(), Checksums.sha256(slice(whole.get(d.spec().name()), d.spec(), d.slice())));
        }
        return out;
    }

    /** The relays the seed at {@code port} lists for tp rank 1 ({@code GET /v1/relays}, docs/PROTOCOL.md). */
    private static List<String> relaysListedBy(int port) throws Exception {
        HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                URI.create("http://127.0.0.1:" + port + "/v1/relays?tp=1&pp=0")).build(),
                HttpResponse.BodyHandlers.ofString());
        assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
        List<String> out = new ArrayList<>();
        Matcher m = ADDRESS.matcher(r.body());
        while (m.find()) {
            out.add(m.group(1));
        }
        return out;
    }

    private Path conf(String name, String hocon) throws Exception {
        return Files.writeString(dir.resolve(name), hocon);
    }

    @Test
    void aSeedARelayAndRankHostsFromEachAndFromDiskHoldTheSameSlices() throws Exception {
        Path ckpt = checkpoint();
        // each host's file, as a deployment would ship them; the seed's port is known once it runs
        Path seedConf = conf("seed.conf", """
                example-host.role = seed
                weight-loader { model-path = "%s", tp-layout = llama, rank.tp-size = 2 }
                """.formatted(ckpt));
        Path relayConf = conf("relay.conf", """
                example-host.role = seed
                weight-loader {
                  load-format = remote_instance, tp-layout = llama, rank.tp-size = 2, checksum = sha256
                  remote-instance.seed-instance-ip = "127.0.0.1"
                  backends.transfer_engine.source-strategy = tree
                }
                """);
        Path rankConf = conf("rank.conf", """
                example-host.role = rank
                weight-loader { tp-layout = llama, rank { tp-size = 2, tp = 1 }, checksum = sha256 }
                """);
        String port = "weight-loader.remote-instance.seed-instance-service-port=";
        RankKey rank1 = new RankKey(1, 0);

        try (ExampleHost seed = ExampleHost.start(ExampleHost.config(seedConf.toString()))) {
            int seedPort = seed.seedPort().orElseThrow();
            assertThat(seed.weights()).containsOnlyKeys(new RankKey(0, 0), rank1);
            assertThat(seed.relayAddress()).isEmpty();

            ExampleHost relay = ExampleHost.start(ExampleHost.config(relayConf.toString(), port + seedPort));
            String relayAddress = relay.relayAddress().orElseThrow();
            try {
                int relayPort = relay.seedPort().orElseThrow();
                assertThat(relay.reports()).hasSize(2).allSatisfy(r -> assertThat(r.source()).contains("tree"));
                assertThat(relaysListedBy(seedPort)).containsExactly(relayAddress);

                Map<String, String> fromRelay;
                Map<String, String> fromSeed;
                Map<String, String> fromDisk;
                Map<String, String> expected;
                try (ExampleHost host = ExampleHost.start(ExampleHost.config(rankConf.toString(),
                        "weight-loader.load-format=remote_instance", "weight-loader.remote-instance.seed-instance-ip"
                                + "=127.0.0.1", port + relayPort))) {
                    assertThat(host.reports()).singleElement().extracting(LoadReport::source).asString()
                            .contains(String.valueOf(relayPort));
                    fromRelay = sha256(host, rank1);
                }
                try (ExampleHost host = ExampleHost.start(ExampleHost.config(rankConf.toString(),
                        "weight-loader.load-format=remote_instance", "weight-loader.remote-instance.seed-instance-ip"
                                + "=127.0.0.1", port + seedPort))) {
                    fromSeed = sha256(host, rank1);
                }
                try (ExampleHost host = ExampleHost.start(ExampleHost.config(rankConf.toString(),
                        "weight-loader.load-format=safetensors", "weight-loader.model-path=" + ckpt))) {
                    assertThat(host.reports()).singleElement().extracting(LoadReport::backend).isEqualTo("local");
                    // rank 1 of 2 under llama: the second half of q_proj's rows, of o_proj's columns; norms whole
                    Map<String, TensorSlice> slices = new TreeMap<>();
                    host.weights().get(rank1).forEach(d -> {
                        if (d.slice() != null) {
                            slices.put(d.spec().name(), d.slice());
                        }
                    });
                    assertThat(slices).containsEntry("model.layers.0.self_attn.q_proj.weight",
                                    new TensorSlice(0, HIDDEN / 2, HIDDEN / 2))
                            .containsEntry("model.layers.1.self_attn.o_proj.weight",
                                    new TensorSlice(1, HIDDEN / 2, HIDDEN / 2))
                            .doesNotContainKey("model.norm.weight");
                    fromDisk = sha256(host, rank1);
                    expected = slicedFromCheckpoint(host, rank1);
                }
                assertThat(expected).hasSize(whole.size());
                assertThat(fromDisk).as("from disk").isEqualTo(expected);
                assertThat(fromSeed).as("from the seed").isEqualTo(expected);
                assertThat(fromRelay).as("from the relay").isEqualTo(expected);
                assertThat(sha256(seed, rank1)).as("the seed's rank 1").isEqualTo(expected);
                assertThat(sha256(relay, rank1)).as("the relay's rank 1").isEqualTo(expected);
            } finally {
                assertThat(relay.stop(Duration.ofSeconds(10))).as("the relay stopped with no load cut off").isTrue();
            }
            assertThat(relaysListedBy(seedPort)).as("the relay left the seed's directory").isEmpty();
        }
    }

    @Test
    void aRoleItDoesNotKnowIsRefusedNamingTheSetting() {
        assertThatThrownBy(() -> ExampleHost.start(ExampleHost.config("example-host.role=relay")))
                .hasMessageContaining("example-host.role")
                .hasMessageContaining("rank or seed");
    }

    @Test
    void aLibrarySettingItGotWrongIsRefusedBeforeAnythingLoads() throws Exception {
        Path rankConf = conf("rank.conf", """
                example-host.role = rank
                weight-loader { tp-layout = llama, rank { tp-size = 2, tp = 2 } }
                """);
        assertThatThrownBy(() -> ExampleHost.start(ExampleHost.config(rankConf.toString())))
                .hasMessageContaining("weight-loader.rank.tp");
    }
}
