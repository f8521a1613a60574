package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.spi.ZeroCopyLoader;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Checkpoints written by the reference implementation (Python safetensors 0.8 + torch 2.11, see
 * fixtures/make_fixtures.py) read back with the dtypes, shapes and SHA-256 values it recorded.
 */
class ReferenceFixturesTest {
    static final Path FIXTURES = Path.of("src/test/resources/fixtures");
    private long live;

    @BeforeEach
    void before() {
        live = HostMemory.liveBytes();
    }

    @AfterEach
    void noLeak() {
        assertThat(HostMemory.liveBytes()).isEqualTo(live);
    }

    static Map<String, JsonNode> expected(String key) throws IOException {
        JsonNode root = new ObjectMapper().readTree(FIXTURES.resolve("expected.json").toFile());
        Map<String, JsonNode> out = new java.util.TreeMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.get("files").get(key).fields(); it.hasNext(); ) {
            var e = it.next();
            out.put(e.getKey(), e.getValue());
        }
        return out;
    }

    static List<Long> shape(JsonNode n) {
        List<Long> s = new ArrayList<>();
        n.get("shape").forEach(d -> s.add(d.longValue()));
        return s;
    }

    @ParameterizedTest
    @ValueSource(strings = {"all_dtypes.safetensors", "sharded"})
    void headersMatchTheReference(String name) throws IOException {
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(FIXTURES.resolve(name));
        Map<String, JsonNode> exp = expected(name);
        assertThat(cp.tensors().keySet()).containsExactlyInAnyOrderElementsOf(exp.keySet());
        for (var e : exp.entrySet()) {
            TensorSpec s = cp.tensors().get(e.getKey()).spec();
            assertThat(s.dtype().safetensorsName()).as(e.getKey()).isEqualTo(e.getValue().get("dtype").textValue());
            assertThat(s.shape()).as(e.getKey()).isEqualTo(shape(e.getValue()));
            if (e.getValue().has("shard")) {
                assertThat(cp.tensors().get(e.getKey()).file().path().getFileName().toString())
                        .isEqualTo(e.getValue().get("shard").textValue());
            }
        }
        assertThat(cp.tensors().get(name.equals("sharded") ? "lm_head.bias" : "scalar").spec().shape()).isNotNull();
    }

    @ParameterizedTest
    @ValueSource(strings = {"all_dtypes.safetensors", "sharded"})
    void loadedBytesHaveTheReferenceChecksums(String name) throws IOException {
        Map<String, JsonNode> exp = expected(name);
        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(Map.of(
                "weight-loader.model-path", FIXTURES.resolve(name).toString(),
                "weight-loader.checksum", "sha256")))) {
            List<TensorSpec> specs = loader.available();
            long total = specs.stream().mapToLong(TensorSpec::byteSize).sum();
            try (HostMemory arena = HostMemory.allocate(total)) {
                List<TensorDestination> dests = new ArrayList<>();
                long off = 0;
                for (TensorSpec s : specs) {
                    dests.add(new TensorDestination(s, arena.slice(off, s.byteSize())));
                    off += s.byteSize();
                }
                LoadReport report = loader.load(LoadRequest.of(dests));
                assertThat(report.backend()).isEqualTo("local");
                assertThat(report.totalBytes()).isEqualTo(total);
                assertThat(report.tensors()).hasSize(exp.size());
                for (TensorReport t : report.tensors()) {
                    assertThat(t.sha256()).as(t.name()).isEqualTo(exp.get(t.name()).get("sha256").textValue());
                    assertThat(t.dtype()).isEqualTo(exp.get(t.name()).get("dtype").textValue());
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"all_dtypes.safetensors", "sharded"})
    void zeroCopyViewsHaveTheReferenceChecksums(String name) throws IOException {
        Map<String, JsonNode> exp = expected(name);
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(FIXTURES.resolve(name));
        try (LocalBackend b = new LocalBackend(cp, 2, 1 << 16, true);
             MappedWeights w = ((ZeroCopyLoader) b).map(cp.specs(), true)) {
            for (TensorReport t : w.report().tensors()) {
                assertThat(t.sha256()).as(t.name()).isEqualTo(exp.get(t.name()).get("sha256").textValue());
            }
            assertThat(w.regions()).hasSize(exp.size());
        }
    }
}
