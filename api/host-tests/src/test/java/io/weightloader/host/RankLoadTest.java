package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.testing.Slicing;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@link RankLoad}: what {@code weightloader load} does, through the library alone. */
class RankLoadTest {
    @TempDir
    Path dir;

    private Path checkpoint() {
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        for (TensorSpec s : Slicing.llama(2, 64, 32, 96, 128, DType.BF16)) {
            tensors.add(SafetensorsWriter.Tensor.of(s, Slicing.bytes(s, 3)));
        }
        Path ckpt = dir.resolve("ckpt");
        SafetensorsWriter.writeSharded(ckpt, SafetensorsWriter.split(tensors, 2), Map.of());
        return ckpt;
    }

    private static Config config(String hocon) {
        return ConfigFactory.parseString(hocon).withFallback(ConfigFactory.load()).resolve();
    }

    private static List<String> sums(LoadReport report) {
        return report.tensors().stream().map(t -> t.name() + "=" + t.sha256()).sorted().toList();
    }

    @Test
    void aZeroCopyLoadMapsTheTensorsAndReportsWhatACopyReports() {
        Path ckpt = checkpoint();
        HostRanks.Rank rank = HostRanks.of(config("weight-loader { model-path = \"%s\", checksum = sha256 }"
                .formatted(ckpt))).ranks().get(0);
        List<String> notes = new ArrayList<>();
        AtomicLong progressed = new AtomicLong();
        LoadReport copied = RankLoad.copying().withNotes(notes::add)
                .withProgress((done, total, n, of) -> progressed.set(done)).run(rank);
        LoadReport mapped = RankLoad.copying().withZeroCopy(true).withNotes(notes::add).run(rank);
        assertThat(notes).isEmpty();
        assertThat(progressed.get()).isEqualTo(copied.totalBytes());
        assertThat(mapped.totalBytes()).isEqualTo(copied.totalBytes());
        assertThat(sums(mapped)).isEqualTo(sums(copied)).allMatch(s -> !s.endsWith("=null"));
    }

    @Test
    void aCopyOfARankWithALayoutHoldsItsSlices() {
        Path ckpt = checkpoint();
        HostRanks ranks = HostRanks.of(config(("weight-loader { model-path = \"%s\", tp-layout = llama, rank { "
                + "tp-size = 2, tp = 1 } }").formatted(ckpt)));
        LoadReport report = RankLoad.copying().run(ranks.ranks().get(0));
        assertThat(report.tensors()).extracting(TensorReport::slice).anyMatch(s -> s != null);
    }

    @Test
    void zeroCopyOfARankWithALayoutIsRefusedNamingTheLayout() {
        Path ckpt = checkpoint();
        HostRanks.Rank rank = HostRanks.of(config(("weight-loader { model-path = \"%s\", tp-layout = llama, rank { "
                + "tp-size = 2, tp = 0 } }").formatted(ckpt))).ranks().get(0);
        assertThatThrownBy(() -> RankLoad.copying().withZeroCopy(true).run(rank))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.tp-layout")
                .hasMessageContaining("tp-layout llama");
    }

    @Test
    void aBackendThatCannotMapCopiesAndSaysSo() throws Exception {
        Path ckpt = checkpoint();
        try (SeedHost seed = SeedHost.start(config("weight-loader.model-path = \"%s\"".formatted(ckpt)))) {
            assertThat(seed.dialAddress()).as("what clients dial: the bind address").isEqualTo("127.0.0.1");
            HostRanks.Rank client = HostRanks.of(config("""
                    weight-loader { load-format = remote_instance, checksum = sha256
                      remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = %d } }
                    """.formatted(seed.service().port()))).ranks().get(0);
            List<String> notes = new ArrayList<>();
            LoadReport report = RankLoad.copying().withZeroCopy(true).withNotes(notes::add).run(client);
            assertThat(report.totalBytes()).isEqualTo(seed.bytes());
            assertThat(notes).singleElement().asString()
                    .endsWith("' cannot hand out zero-copy views; copying instead");
        }
    }
}
