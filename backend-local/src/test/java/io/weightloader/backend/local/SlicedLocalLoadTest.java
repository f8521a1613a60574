package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.api.DType;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.TpLayout;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.TensorArena;
import io.weightloader.testing.Slicing;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Each rank of a tensor-parallel layout loads exactly what slicing the whole tensor gives, and nothing more. */
class SlicedLocalLoadTest {
    @TempDir
    Path dir;

    private final Map<String, byte[]> whole = new HashMap<>();

    private Path llamaCheckpoint(DType dtype, int shards) {
        List<TensorSpec> specs = Slicing.llama(2, 64, 32, 96, 128, dtype);
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        for (TensorSpec s : specs) {
            byte[] b = Slicing.bytes(s, 7);
            whole.put(s.name(), b);
            tensors.add(SafetensorsWriter.Tensor.of(s, b));
        }
        if (shards == 1) {
            SafetensorsWriter.write(dir.resolve("model.safetensors"), tensors, Map.of());
        } else {
            SafetensorsWriter.writeSharded(dir, SafetensorsWriter.split(tensors, shards), Map.of());
        }
        return dir;
    }

    /** Loads rank {@code rank} of {@code tp} and checks every tensor against the reference slicer. */
    private LoadReport loadRank(Path ckpt, TpLayout layout, int tp, int rank, int pieceSize, boolean checksum) {
        try (LocalBackend b = new LocalBackend(SafetensorsCheckpoint.open(ckpt), 3, pieceSize, false)) {
            List<TensorSpec> specs = b.available();
            Map<String, TensorSlice> slices = layout.plan(specs, tp, rank);
            try (TensorArena arena = TensorArena.allocate(io.weightloader.api.Device.CPU,
                    TpLayout.heldSpecs(specs, slices))) {
                List<TensorDestination> dest = TpLayout.destinations(specs, arena.destinations(), slices);
                LoadReport report = b.load(LoadRequest.of(dest).withChecksum(checksum));
                assertThat(report.totalBytes()).isEqualTo(dest.stream().mapToLong(TensorDestination::byteSize).sum());
                for (TensorDestination d : dest) {
                    byte[] want = Slicing.slice(whole.get(d.spec().name()), d.spec(), d.slice());
                    byte[] got = new byte[want.length];
                    d.region().byteBuffer(0, got.length).get(got);
                    assertThat(got).as("%s rank %d of %d, %s", d.spec().name(), rank, tp, d.slice()).isEqualTo(want);
                }
                return report;
            }
        }
    }

    @ParameterizedTest(name = "tp {0}, {1} shard(s), piece size {2}")
    @CsvSource({"1,1,16777216", "2,1,16777216", "4,3,16777216", "4,1,4096", "2,3,1000"})
    void everyRankOfTheLlamaLayoutHoldsExactlyItsSlices(int tp, int shards, int pieceSize) {
        Path ckpt = llamaCheckpoint(DType.BF16, shards);
        long sum = 0;
        for (int r = 0; r < tp; r++) {
            sum += loadRank(ckpt, TpLayout.LLAMA, tp, r, pieceSize, false).totalBytes();
        }
        long wholeBytes = whole.values().stream().mapToLong(b -> b.length).sum();
        long replicated = (2 * 2 + 1) * 64 * 2; // two norms in each of 2 layers and the final norm, 64 BF16 each
        // split tensors are read once over all ranks, replicated ones once per rank
        assertThat(sum).isEqualTo(wholeBytes + (tp - 1) * replicated);
    }

    @Test
    void theReportNamesEachTensorWithItsSliceShapeAndTheSliceSha256() {
        Path ckpt = llamaCheckpoint(DType.F32, 1);
        LoadReport report = loadRank(ckpt, TpLayout.LLAMA, 2, 1, 1 << 20, true);
        TensorReport o = report.tensors().stream()
                .filter(t -> t.name().equals("model.layers.1.self_attn.o_proj.weight")).findFirst().orElseThrow();
        assertThat(o.shape()).containsExactly(64L, 32L);
        assertThat(o.bytes()).isEqualTo(64 * 32 * 4);
        assertThat(o.slice()).isEqualTo(new TensorSlice(1, 32, 32));
        TensorSpec full = TensorSpec.of(o.name(), DType.F32, 64, 64);
        assertThat(o.sha256()).isEqualTo(Checksums.sha256(Slicing.slice(whole.get(o.name()), full, o.slice())));
        TensorReport norm = report.tensors().stream().filter(t -> t.name().equals("model.norm.weight")).findFirst()
                .orElseThrow();
        assertThat(norm.slice()).isNull();
        assertThat(norm.sha256()).isEqualTo(Checksums.sha256(whole.get("model.norm.weight")));
    }

    @Test
    void aRulesFileLayoutSplitsAnyDimensionOfAnyRank() throws Exception {
        Path rules = dir.resolve("rules.conf");
        Files.writeString(rules, "rules = [ { match = \".*3d\", split = 2 }, { match = \".*3d\", split = 0 },"
                + " { match = \"m.mid\", split = 1 } ]");
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        for (TensorSpec s : List.of(TensorSpec.of("m.3d", DType.I32, 4, 6, 8), TensorSpec.of("m.mid", DType.U8, 5, 12, 3),
                TensorSpec.of("m.rest", DType.F16, 7))) {
            byte[] b = Slicing.bytes(s, 3);
            whole.put(s.name(), b);
            tensors.add(SafetensorsWriter.Tensor.of(s, b));
        }
        Path ckpt = dir.resolve("ckpt");
        Files.createDirectories(ckpt);
        SafetensorsWriter.write(ckpt.resolve("model.safetensors"), tensors, Map.of());
        for (int tp : new int[]{1, 2, 4}) {
            for (int r = 0; r < tp; r++) {
                loadRank(ckpt, TpLayout.parse(rules.toString()), tp, r, 4096, true);
            }
        }
    }

    @Test
    void aLayoutThatCannotSplitTheCheckpointFailsBeforeAnyLoad() {
        Path ckpt = llamaCheckpoint(DType.BF16, 1);
        // vocabulary 128 and hidden 64 divide by 4 but not by 3
        assertThatThrownBy(() -> loadRank(ckpt, TpLayout.LLAMA, 3, 0, 1 << 20, false))
                .hasMessageContaining("weight-loader.tp-layout").hasMessageContaining("does not divide by tp-size 3");
    }
}
