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
}
