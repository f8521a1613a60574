package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.weightloader.memory.Checksums;
import io.weightloader.api.DType;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SafetensorsWriterTest {
    @TempDir
    Path dir;

    private static byte[] randomBytes(long seed, int n) {
        byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    private static List<SafetensorsWriter.Tensor> mixed() {
        List<TensorSpec> specs = List.of(
                TensorSpec.of("model.embed.weight", DType.BF16, 16, 8),
                TensorSpec.of("f32", DType.F32, 3, 5),
                TensorSpec.of("f4.packed", DType.F4, 2, 8),
                TensorSpec.of("scalar", DType.F64),
                TensorSpec.of("empty", DType.BF16, 0, 4),
                TensorSpec.of("odd.bytes", DType.U8, 13),
                TensorSpec.of("i64", DType.I64, 7));
        List<SafetensorsWriter.Tensor> out = new ArrayList<>();
        for (int i = 0; i < specs.size(); i++) {
            out.add(SafetensorsWriter.Tensor.of(specs.get(i), randomBytes(i, (int) specs.get(i).byteSize())));
        }
        return out;
    }

    private static byte[] bytesOf(SafetensorsWriter.Tensor t) throws IOException {
        ByteBuffer b = ByteBuffer.allocate((int) t.spec().byteSize());
        t.source().fill(0, b);
        return b.array();
    }

    private static byte[] readTensor(SafetensorsCheckpoint.Located l) throws IOException {
        ByteBuffer b = ByteBuffer.allocate((int) l.entry().bytes());
        try (FileChannel ch = FileChannel.open(l.file().path(), StandardOpenOption.READ)) {
            SafetensorsFile.readFully(ch, b, l.fileOffset(), l.file().path());
        }
        return b.array();
    }

    @Test
    void singleFileRoundTripsNamesDtypesShapesBytesAndMetadata() throws IOException {
        List<SafetensorsWriter.Tensor> tensors = mixed();
        Path file = dir.resolve("model.safetensors");
        long size = SafetensorsWriter.write(file, tensors, Map.of("format", "pt"));

        assertThat(Files.size(file)).isEqualTo(size);
        assertThat(Files.exists(dir.resolve("model.safetensors.tmp"))).isFalse();
        SafetensorsFile f = SafetensorsFile.read(file);
        assertThat(f.metadata()).containsExactly(Map.entry("format", "pt"));
        assertThat(f.dataStart() % 8).isZero();
        assertThat(f.entries().keySet()).containsExactlyElementsOf(
                tensors.stream().map(t -> t.spec().name()).toList());
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(file);
        for (SafetensorsWriter.Tensor t : tensors) {
            SafetensorsCheckpoint.Located l = cp.tensors().get(t.spec().name());
            assertThat(l.spec()).isEqualTo(t.spec());
            assertThat(readTensor(l)).as(t.spec().name()).isEqualTo(bytesOf(t));
        }
        assertThat(cp.totalBytes()).isEqualTo(tensors.stream().mapToLong(t -> t.spec().byteSize()).sum());
    }

    @Test
    void headerIsUtf8JsonPaddedWithSpacesToEightBytes() throws IOException {
        Path file = dir.resolve("h.safetensors");
        SafetensorsWriter.write(file, List.of(SafetensorsWriter.Tensor.of(TensorSpec.of("gewicht.ä", DType.U8, 3),
                new byte[] {1, 2, 3})), Map.of());
        byte[] all = Files.readAllBytes(file);
        long n = ByteBuffer.wrap(all, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertThat(n % 8).isZero();
        String header = new String(all, 8, (int) n, StandardCharsets.UTF_8);
        assertThat(header).startsWith("{").contains("gewicht.ä").doesNotContain("__metadata__");
        assertThat(header.stripTrailing()).endsWith("}");
        assertThat(all).hasSize((int) (8 + n + 3));
        assertThat(new ObjectMapper().readTree(header).get("gewicht.ä").get("data_offsets").toString())
                .isEqualTo("[0,3]");
    }

    @Test
    void streamsTensorsLargerThanTheBufferFromACallback() throws Exception {
        long bytes = 2L * SafetensorsWriter.BUFFER_BYTES + 4096 + 6;
        TensorSpec spec = TensorSpec.of("big", DType.BF16, bytes / 2);
        List<Long> offsets = new ArrayList<>();
        MessageDigest expected = Checksums.newSha256();
        SafetensorsWriter.TensorSource source = (offset, buf) -> {
            offsets.add(offset);
            while (buf.hasRemaining()) {
                long pos = offset + buf.position();
                buf.put((byte) (pos * 31 + (pos >>> 9)));
            }
        };
        Path file = dir.resolve("big.safetensors");
        SafetensorsWriter.write(file, List.of(new SafetensorsWriter.Tensor(spec, source)), Map.of());

        assertThat(offsets).containsExactly(0L, (long) SafetensorsWriter.BUFFER_BYTES,
                2L * SafetensorsWriter.BUFFER_BYTES);
        for (long pos = 0; pos < bytes; pos++) {
            expected.update((byte) (pos * 31 + (pos >>> 9)));
        }
        SafetensorsCheckpoint.Located l = SafetensorsCheckpoint.open(file).tensors().get("big");
        assertThat(l.spec()).isEqualTo(spec);
        assertThat(HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(readTensor(l))))
                .isEqualTo(HexFormat.of().formatHex(expected.digest()));
    }

    @Test
    void shardedCheckpointRoundTripsThroughTheIndex() throws IOException {
        List<SafetensorsWriter.Tensor> tensors = mixed();
        List<List<SafetensorsWriter.Tensor>> shards = SafetensorsWriter.split(tensors, 3);
        assertThat(shards).hasSize(3).allSatisfy(s -> assertThat(s).isNotEmpty());
        assertThat(shards.stream().flatMap(List::stream).toList()).containsExactlyElementsOf(tensors);

        Path out = dir.resolve("sharded");
        SafetensorsWriter.Sharded result = SafetensorsWriter.writeSharded(out, shards, Map.of("format", "pt"));

        long total = tensors.stream().mapToLong(t -> t.spec().byteSize()).sum();
        assertThat(result.totalSize()).isEqualTo(total);
        assertThat(result.shards()).extracting(p -> p.getFileName().toString()).containsExactly(
                "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                "model-00003-of-00003.safetensors");
        JsonNode index = new ObjectMapper().readTree(result.index().toFile());
        assertThat(index.get("metadata").get("total_size").asLong()).isEqualTo(total);
        Map<String, String> expectedMap = new LinkedHashMap<>();
        for (int i = 0; i < shards.size(); i++) {
            for (SafetensorsWriter.Tensor t : shards.get(i)) {
                expectedMap.put(t.spec().name(), SafetensorsWriter.shardName(i, 3));
            }
        }
        Map<String, String> actualMap = new LinkedHashMap<>();
        index.get("weight_map").properties().forEach(e -> actualMap.put(e.getKey(), e.getValue().asText()));
        assertThat(actualMap).containsExactlyEntriesOf(expectedMap);

        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(out);
        assertThat(cp.files()).hasSize(3);
        assertThat(cp.tensors().keySet()).containsExactlyElementsOf(expectedMap.keySet());
        for (SafetensorsWriter.Tensor t : tensors) {
            SafetensorsCheckpoint.Located l = cp.tensors().get(t.spec().name());
            assertThat(l.spec()).isEqualTo(t.spec());
            assertThat(l.file().path().getFileName().toString()).isEqualTo(expectedMap.get(t.spec().name()));
            assertThat(readTensor(l)).as(t.spec().name()).isEqualTo(bytesOf(t));
        }
    }

    @Test
    void splitKeepsOrderAndBalancesBytes() {
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            tensors.add(SafetensorsWriter.Tensor.of(TensorSpec.of("t" + i, DType.U8, 100), new byte[100]));
        }
        assertThat(SafetensorsWriter.split(tensors, 4)).extracting(List::size).containsExactly(2, 2, 2, 2);
        assertThat(SafetensorsWriter.split(tensors, 8)).extracting(List::size).containsOnly(1);
        assertThat(SafetensorsWriter.split(tensors, 1)).extracting(List::size).containsExactly(8);
        assertThatThrownBy(() -> SafetensorsWriter.split(tensors, 9)).hasMessageContaining("9 non-empty shards");
    }

    @Test
    void rejectsDuplicateAndReservedNames() {
        SafetensorsWriter.Tensor a = SafetensorsWriter.Tensor.of(TensorSpec.of("a", DType.U8, 1), new byte[1]);
        SafetensorsWriter.Tensor meta = SafetensorsWriter.Tensor.of(TensorSpec.of("__metadata__", DType.U8, 1),
                new byte[1]);
        assertThatThrownBy(() -> SafetensorsWriter.write(dir.resolve("d.safetensors"), List.of(a, a), Map.of()))
                .hasMessageContaining("'a' is given twice");
        assertThatThrownBy(() -> SafetensorsWriter.write(dir.resolve("m.safetensors"), List.of(meta), Map.of()))
                .hasMessageContaining("reserved");
        assertThatThrownBy(() -> SafetensorsWriter.Tensor.of(TensorSpec.of("b", DType.F32, 2), new byte[7]))
                .hasMessageContaining("needs 8 bytes");
    }

    @Test
    void aFailingSourceLeavesNoFileBehind() {
        Path file = dir.resolve("fail.safetensors");
        SafetensorsWriter.Tensor bad = new SafetensorsWriter.Tensor(TensorSpec.of("bad", DType.U8, 64),
                (offset, buf) -> buf.put(new byte[10]));
        assertThatThrownBy(() -> SafetensorsWriter.write(file, List.of(bad), Map.of()))
                .isInstanceOf(WeightLoaderException.class)
                .hasMessageContaining(file.toString())
                .hasMessageContaining("'bad' left 54 of 64 bytes unfilled");
        assertThat(file).doesNotExist();
        assertThat(dir.resolve("fail.safetensors.tmp")).doesNotExist();
    }
}
