package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.TensorArena;
import io.weightloader.testing.Slicing;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * A host that embeds the library as the README shows, with a {@code tp-layout}: {@code rankSpecs()} and
 * {@code rankRequest(...)} load exactly its rank's slices, and a request for whole tensors is refused naming the
 * setting and the calls to use (it silently loaded whole tensors before).
 */
class RankAwareLoaderTest {
    @TempDir
    Path dir;

    private Map<String, byte[]> whole;

    private Path checkpoint() {
        LlamaCheckpoint cp = LlamaCheckpoint.write(dir, 11);
        whole = cp.whole;
        return cp.path;
    }

    private Config config(Path ckpt, String layout, int tpSize, int rank) {
        return ConfigFactory.parseMap(Map.of("weight-loader.model-path", ckpt.toString(),
                "weight-loader.tp-layout", layout, "weight-loader.rank.tp-size", tpSize, "weight-loader.rank.tp", rank));
    }

    @ParameterizedTest(name = "{0}, tp {1}, rank {2}")
    @CsvSource({"llama,2,1", "llama,4,3", "rules,2,0", "rules,4,2"})
    void aHostGetsItsRanksSlicesAndAWholeTensorRequestIsRefused(String layout, int tpSize, int rank) throws Exception {
        Path ckpt = checkpoint();
        String setting = layout;
        if (layout.equals("rules")) {
            Path rules = dir.resolve("rules.conf");
            Files.writeString(rules, """
                    rules = [
                      { match = ".*\\\\.(q|k|v)_proj\\\\.weight", split = 0 }
                      { match = ".*\\\\.o_proj\\\\.weight", split = 1 }
                      { match = "lm_head\\\\.weight", split = 0 }
                    ]
                    """);
            setting = rules.toString();
        }
        try (WeightLoader loader = WeightLoader.open(config(ckpt, setting, tpSize, rank))) {
            // the README's first snippet, whole tensors: refused, naming the setting and the calls to use
            try (TensorArena all = TensorArena.allocate(Device.CPU, loader.available())) {
                assertThatThrownBy(() -> loader.load(LoadRequest.of(all.destinations())))
                        .isInstanceOf(WeightLoaderConfigException.class)
                        .hasMessageContaining("weight-loader.tp-layout")
                        .hasMessageContaining("rank " + rank + " of " + tpSize)
                        .hasMessageContaining("loader.rankSpecs()").hasMessageContaining("loader.rankRequest(");
            }
            // the rank's path: exactly its slices, equal to slicing the whole tensors
            try (TensorArena mine = TensorArena.allocate(Device.CPU, loader.rankSpecs())) {
                LoadRequest request = loader.rankRequest(mine.destinations());
                LoadReport report = loader.load(request);
                int sliced = 0;
                for (TensorDestination d : request.tensors()) {
                    byte[] want = d.slice() == null ? whole.get(d.spec().name())
                            : Slicing.slice(whole.get(d.spec().name()), d.spec(), d.slice());
                    byte[] got = new byte[want.length];
                    d.region().byteBuffer(0, got.length).get(got);
                    assertThat(got).as("%s %s", d.spec().name(), d.slice()).isEqualTo(want);
                    sliced += d.slice() == null ? 0 : 1;
                }
                assertThat(sliced).as("tensors this rank holds a slice of").isGreaterThan(0);
                assertThat(report.totalBytes()).isEqualTo(request.totalBytes())
                        .isLessThan(whole.values().stream().mapToLong(b -> b.length).sum());
            }
        }
    }
}
