package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.api.DType;
import io.weightloader.api.TensorSpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@link CheckpointListing}: what {@code inspect} shows of a checkpoint, tensor by tensor. */
class CheckpointListingTest {
    @TempDir
    Path dir;

    private static SafetensorsWriter.Tensor tensor(String name, DType dtype, long... shape) {
        TensorSpec spec = TensorSpec.of(name, dtype, shape);
        return SafetensorsWriter.Tensor.of(spec, new byte[(int) spec.byteSize()]);
    }

    @Test
    void aShardedCheckpointListsEachTensorWithItsDtypeShapeBytesAndShardFile() {
        List<SafetensorsWriter.Tensor> tensors = List.of(
                tensor("model.embed_tokens.weight", DType.BF16, 32, 8),
                tensor("model.norm.weight", DType.F32, 8),
                tensor("lm_head.bias", DType.F16, 32));
        SafetensorsWriter.writeSharded(dir, SafetensorsWriter.split(tensors, 2), Map.of());

        CheckpointListing listing = CheckpointListing.of(dir);

        assertThat(listing.path()).isEqualTo(dir.toString());
        assertThat(listing.tensors()).containsExactlyInAnyOrder(
                new CheckpointListing.Tensor("model.embed_tokens.weight", "BF16", List.of(32L, 8L), 512,
                        "model-00001-of-00002.safetensors"),
                new CheckpointListing.Tensor("model.norm.weight", "F32", List.of(8L), 32,
                        "model-00002-of-00002.safetensors"),
                new CheckpointListing.Tensor("lm_head.bias", "F16", List.of(32L), 64,
                        "model-00002-of-00002.safetensors"));
        assertThat(listing.totalBytes()).isEqualTo(512 + 32 + 64);
    }

    @Test
    void aSingleFileListsItsTensorsInTheFilesOrderUnderTheFilesName() {
        Path file = dir.resolve("weights.safetensors");
        SafetensorsWriter.write(file, List.of(tensor("b", DType.I64, 3), tensor("a", DType.U8, 2, 2),
                tensor("scalar", DType.F64)), Map.of());

        CheckpointListing listing = CheckpointListing.of(file);

        assertThat(listing.tensors()).extracting(CheckpointListing.Tensor::name).containsExactly("b", "a", "scalar");
        assertThat(listing.tensors()).extracting(CheckpointListing.Tensor::shape)
                .containsExactly(List.of(3L), List.of(2L, 2L), List.of());
        assertThat(listing.tensors()).extracting(CheckpointListing.Tensor::file).containsOnly("weights.safetensors");
        assertThat(listing.totalBytes()).isEqualTo(24 + 4 + 8);
    }

    @Test
    void aFileThatIsNotSafetensorsIsRefusedNamingIt() throws IOException {
        Path bad = Files.writeString(dir.resolve("model.safetensors"), "not a checkpoint");

        assertThatThrownBy(() -> CheckpointListing.of(bad)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining(bad.toString());
    }
}
