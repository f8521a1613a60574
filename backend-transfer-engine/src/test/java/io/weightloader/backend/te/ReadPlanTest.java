package io.weightloader.backend.te;

import static org.assertj.core.api.Assertions.assertThat;

import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.seed.Manifest;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Reads join tensors adjacent on both sides, never cross a gap, and never exceed the slice size. */
class ReadPlanTest {
    @Test
    void adjacentTensorsAreReadTogetherUpToTheSliceSize() {
        // seed: a, b, c adjacent; d after a gap. host: a, b adjacent; c after a gap; d adjacent to c.
        TensorSpec a = TensorSpec.of("a", DType.U8, 100);
        TensorSpec b = TensorSpec.of("b", DType.U8, 300);
        TensorSpec c = TensorSpec.of("c", DType.U8, 50);
        TensorSpec d = TensorSpec.of("d", DType.U8, 20);
        Manifest m = new Manifest(1, 0, 0, "g", "builtin-tcp", "h:1", "cpu", List.of(
                entry(a, 10_000), entry(b, 10_100), entry(c, 10_400), entry(d, 20_000)));
        List<TensorDestination> dest = List.of(
                new TensorDestination(a, MemoryRegion.of(500, 100, Device.CPU)),
                new TensorDestination(b, MemoryRegion.of(600, 300, Device.CPU)),
                new TensorDestination(c, MemoryRegion.of(1000, 50, Device.CPU)),
                new TensorDestination(d, MemoryRegion.of(1050, 20, Device.CPU)));
        List<ReadPlan.Read> reads = ReadPlan.plan(dest, m, 256L);
        // a+b (400 bytes) in slices of 256: [a 0..100 + b 0..156], [b 156..300]; c alone; d alone
        assertThat(reads).hasSize(4);
        assertThat(reads.get(0).local()).isEqualTo(500L);
        assertThat(reads.get(0).remote()).isEqualTo(10_000L);
        assertThat(reads.get(0).length()).isEqualTo(256L);
        assertThat(reads.get(0).parts()).hasSize(2);
        assertThat(reads.get(1).local()).isEqualTo(756L);
        assertThat(reads.get(1).length()).isEqualTo(144L);
        assertThat(reads.get(2).remote()).isEqualTo(10_400L);
        assertThat(reads.get(2).length()).isEqualTo(50L);
        assertThat(reads.get(3).remote()).isEqualTo(20_000L);
        assertThat(reads.stream().mapToLong(ReadPlan.Read::length).sum()).isEqualTo(470);
    }

    static Manifest.Entry entry(TensorSpec s, long address) {
        return new Manifest.Entry(s.name(), s.dtype().name(), s.shape(), s.byteSize(), address, null);
    }
}
