package io.weightloader.api;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Plugins build reports with the builder: every field but the backend has a default, and it equals the constructor. */
class LoadReportTest {
    @Test
    void theBuilderGivesWhatTheConstructorGivesAndDefaultsTheRest() {
        TensorReport t = TensorReport.of(TensorSpec.of("w", DType.F32, 4), "ab");
        LoadReport built = LoadReport.builder("pattern").engine("gen").source("nowhere").device("cpu")
                .tensors(List.of(t)).totalBytes(16).seconds(0.5).phases(Map.of("transfer", 0.4)).build();
        assertThat(built).isEqualTo(new LoadReport("pattern", "gen", "nowhere", "cpu", List.of(t), 16, 0.5, null,
                Map.of("transfer", 0.4)));
        LoadReport bare = LoadReport.builder("pattern").build();
        assertThat(bare.tensors()).isEmpty();
        assertThat(bare.totalBytes()).isZero();
        assertThat(bare.fallbackReason()).isNull();
        assertThat(bare.summary()).contains("backend pattern");
        assertThatThrownBy(() -> LoadReport.builder(null)).hasMessageContaining("backend");
    }

    @Test
    void aLoadFromSeveralSourcesListsThemAndKeepsThemThroughTheCopies() {
        SourceReport dropped = new SourceReport("10.0.0.2:7000", 10, 14, 1, "stalled: ...", 1.5, 1.0, List.of(3));
        LoadReport r = LoadReport.builder("transfer_engine").sources(List.of(
                new SourceReport("root", 20, 20, 2, null, 0, 0, null), dropped)).build();
        assertThat(r.sources()).hasSize(2);
        assertThat(r.sources().get(0).moved()).isEmpty();
        assertThat(r.withPhases(Map.of("transfer", 1.0)).sources()).isEqualTo(r.sources());
        assertThat(r.withFallbackReason("x").sources()).isEqualTo(r.sources());
        assertThat(LoadReport.builder("local").build().sources()).isNull();
    }
}
