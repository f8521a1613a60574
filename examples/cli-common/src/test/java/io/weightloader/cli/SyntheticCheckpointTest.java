package io.weightloader.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import io.weightloader.backend.local.CheckpointListing;
import io.weightloader.backend.local.SafetensorsCheckpoint;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@link SyntheticCheckpoint#write}: what {@code generate} writes, and what it refuses to overwrite. */
class SyntheticCheckpointTest {
    private static final long SIZE = 1 << 20;

    @TempDir
    Path tmp;

    private static String[] names(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toArray(String[]::new);
        }
    }

    @Test
    void writesShardsWithTheirIndexAndAConfigDescribingTheModel() throws IOException {
        Path dir = tmp.resolve("new/model");

        SyntheticCheckpoint.Written w = SyntheticCheckpoint.write(dir, SIZE, 3, 7, false);

        assertThat(names(dir)).containsExactly("config.json", "model-00001-of-00003.safetensors",
                "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", SafetensorsCheckpoint.INDEX);
        assertThat(w.files()).isEqualTo("3 shards + " + SafetensorsCheckpoint.INDEX);
        CheckpointListing listing = CheckpointListing.of(dir);
        assertThat(listing.tensors()).hasSize(w.tensors());
        assertThat(listing.totalBytes()).isEqualTo(w.totalBytes()).isEqualTo(w.model().totalBytes());
        JsonNode config = CliJson.MAPPER.readTree(dir.resolve("config.json").toFile());
        assertThat(config.get("hidden_size").asInt()).isEqualTo(w.model().hidden());
        assertThat(config.get("num_hidden_layers").asInt()).isEqualTo(w.model().layers());
    }

    @Test
    void refusesAnExistingCheckpointWithoutReplaceNamingItsFileAndLeavesItAlone() throws IOException {
        Path dir = tmp.resolve("m");
        SyntheticCheckpoint.write(dir, SIZE, 1, 1, false);
        byte[] before = Files.readAllBytes(dir.resolve("model.safetensors"));

        assertThatThrownBy(() -> SyntheticCheckpoint.write(dir, SIZE, 2, 2, false))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("--out " + dir + " already holds a checkpoint (model.safetensors); choose another directory"
                        + " or pass --force to replace it");

        assertThat(names(dir)).containsExactly("config.json", "model.safetensors");
        assertThat(Files.readAllBytes(dir.resolve("model.safetensors"))).isEqualTo(before);
    }

    @Test
    void aShardedCheckpointIsRefusedTooCountingItsFiles() throws IOException {
        Path dir = tmp.resolve("m");
        SyntheticCheckpoint.write(dir, SIZE, 3, 1, false);

        assertThatThrownBy(() -> SyntheticCheckpoint.write(dir, SIZE, 1, 1, false))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("already holds a checkpoint (").hasMessageContaining(" and 3 more)");
        assertThat(dir.resolve("model.safetensors")).doesNotExist();
    }

    @Test
    void replaceRemovesOnlyTheOldCheckpointsFiles() throws IOException {
        Path dir = tmp.resolve("m");
        SyntheticCheckpoint.write(dir, SIZE, 3, 1, false);
        Files.writeString(dir.resolve("README.md"), "mine");
        Files.writeString(dir.resolve("model.safetensors.bak"), "mine too");
        Files.createDirectory(dir.resolve("tokenizer"));

        SyntheticCheckpoint.Written w = SyntheticCheckpoint.write(dir, SIZE, 1, 2, true);

        assertThat(names(dir)).containsExactly("README.md", "config.json", "model.safetensors",
                "model.safetensors.bak", "tokenizer");
        assertThat(Files.readString(dir.resolve("README.md"))).isEqualTo("mine");
        assertThat(Files.readString(dir.resolve("model.safetensors.bak"))).isEqualTo("mine too");
        assertThat(CheckpointListing.of(dir).tensors()).hasSize(w.tensors());
    }

    @Test
    void theSameArgumentsGiveTheSameBytesAndAnotherSeedOthers() throws IOException {
        SyntheticCheckpoint.write(tmp.resolve("a"), SIZE, 1, 5, false);
        SyntheticCheckpoint.write(tmp.resolve("b"), SIZE, 1, 5, false);
        SyntheticCheckpoint.write(tmp.resolve("c"), SIZE, 1, 6, false);

        byte[] a = Files.readAllBytes(tmp.resolve("a/model.safetensors"));
        assertThat(Files.readAllBytes(tmp.resolve("b/model.safetensors"))).isEqualTo(a);
        assertThat(Files.readAllBytes(tmp.resolve("c/model.safetensors"))).isNotEqualTo(a);
    }

    @Test
    void argumentsItCannotHonourAreRefusedBeforeAnythingIsWritten() throws IOException {
        Path dir = tmp.resolve("never");
        assertThatThrownBy(() -> SyntheticCheckpoint.write(dir, SIZE, 0, 0, false))
                .isInstanceOf(IllegalArgumentException.class).hasMessage("--shards must be at least 1, got 0");
        assertThatThrownBy(() -> SyntheticCheckpoint.write(dir, 300_000, 1000, 0, false))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageStartingWith("--shards 1000 is more than the ");
        assertThatThrownBy(() -> SyntheticCheckpoint.write(dir, 10, 1, 0, false))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("--size 10 is below it");
        assertThat(dir).doesNotExist();

        Path file = Files.writeString(tmp.resolve("file"), "x");
        assertThatThrownBy(() -> SyntheticCheckpoint.write(file, SIZE, 1, 0, true))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("--out " + file + " exists and is not a directory");
        assertThat(Files.readString(file)).isEqualTo("x");
    }
}
