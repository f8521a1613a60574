package io.weightloader.backend.te;

import static org.assertj.core.api.Assertions.assertThat;

import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.backend.te.ReadPlan.Part;
import io.weightloader.backend.te.ReadPlan.Read;
import io.weightloader.backend.te.Segments.Segment;
import io.weightloader.backend.te.Segments.Unit;
import io.weightloader.seed.Manifest;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * A load from several sources is cut into units (the root's blocks, else whole tensors) and segments of whole units;
 * each source's reads of a segment follow its own addresses and cover the segment's units exactly.
 */
class SegmentsTest {
    private static final String HEX = "0".repeat(64);

    /** {@code rows} x 64 bytes, with {@code blocks} block checksums along dim 0 (0: none). */
    private static Manifest.Entry entry(TensorSpec s, long address, int blocks) {
        return new Manifest.Entry(s.name(), s.dtype().safetensorsName(), s.shape(), s.byteSize(), address, HEX, null,
                blocks == 0 ? null : new Manifest.Blocks(0, Collections.nCopies(blocks, HEX)));
    }

    @Test
    void segmentsHoldWholeUnitsInTheRootsOrderAndReadsFollowEachSourcesAddresses() {
        TensorSpec a = TensorSpec.of("a", DType.U8, 16, 64);   // 1024 bytes, 16 blocks of 64
        TensorSpec b = TensorSpec.of("b", DType.U8, 4, 64);    // 256 bytes, no blocks: one unit
        TensorSpec c = TensorSpec.of("c", DType.U8, 8, 64);    // 512 bytes, 4 blocks of 128
        // the root holds c, a, b in that order, adjacent; the host a, b, c adjacent
        Map<String, Manifest.Entry> root = Map.of("c", entry(c, 100_000, 4), "a", entry(a, 100_512, 16),
                "b", entry(b, 101_536, 0));
        List<TensorDestination> dest = List.of(
                new TensorDestination(a, MemoryRegion.of(1000, 1024, Device.CPU)),
                new TensorDestination(b, MemoryRegion.of(2024, 256, Device.CPU)),
                new TensorDestination(c, MemoryRegion.of(2280, 512, Device.CPU)));
        List<Segment> plan = Segments.plan(dest, root, 300);
        List<Unit> units = new ArrayList<>();
        plan.forEach(s -> units.addAll(s.units()));
        assertThat(units).hasSize(4 + 16 + 1);
        assertThat(units.get(0).what()).isEqualTo("tensor 'c' block 0 of 4");
        assertThat(units.get(4).dest().spec().name()).isEqualTo("a");
        assertThat(units.get(20).what()).isEqualTo("tensor 'b'");
        assertThat(units.get(20).length()).isEqualTo(256);
        for (int i = 0; i < units.size(); i++) {
            assertThat(units.get(i).index()).isEqualTo(i);
        }
        for (Segment s : plan) {
            // at most 300 bytes, unless one unit alone is larger
            assertThat(s.bytes() <= 300 || s.units().size() == 1).as(s.toString()).isTrue();
        }
        // c's 4 blocks of 128: two segments of 256; then a's 64-byte blocks, four to a segment; b alone
        assertThat(plan.get(0).bytes()).isEqualTo(256);
        assertThat(plan.get(2).bytes()).isEqualTo(256);
        assertThat(plan.get(plan.size() - 1).units()).hasSize(1);

        // a relay that holds a, b, c at its own addresses, a and b adjacent: a segment of a's blocks is one run
        Map<String, Manifest.Entry> relay = Map.of("a", entry(a, 7000, 16), "b", entry(b, 8024, 0),
                "c", entry(c, 9000, 4));
        Segment ofA = plan.get(2);
        List<Read> reads = Segments.reads(ofA.units(), relay, 100);
        assertThat(reads).extracting(Read::length).containsExactly(100L, 100L, 56L);
        assertThat(reads.get(0).local()).isEqualTo(1000 + ofA.units().get(0).offset());
        assertThat(reads.get(0).remote()).isEqualTo(7000 + ofA.units().get(0).offset());
        long covered = 0;
        for (Read r : reads) {
            for (Part p : r.parts()) {
                assertThat(p.dest().spec().name()).isEqualTo("a");
                covered += p.length();
            }
        }
        assertThat(covered).isEqualTo(ofA.bytes());
        // the last segment before b spans a's last blocks; b is adjacent to a at the relay and in the host: one read
        List<Unit> tail = List.of(units.get(19), units.get(20));
        List<Read> joined = Segments.reads(tail, relay, 1 << 20);
        assertThat(joined).hasSize(1);
        assertThat(joined.get(0).parts()).extracting(Part::length).containsExactly(64L, 256L);
        // at the root, a's end and b's start are adjacent too; c (before a) is not adjacent to b in the host
        assertThat(Segments.reads(List.of(units.get(3), units.get(20)), root, 1 << 20)).hasSize(2);
    }

    @Test
    void towardTheEndASourceTakesOnlyItsShareOfWhatIsLeftAndNothingIsTakenTwice() {
        TensorSpec a = TensorSpec.of("a", DType.U8, 16, 64); // 16 units of 64 bytes, 4 segments of 256
        SegmentLedger ledger = new SegmentLedger(Segments.plan(List.of(new TensorDestination(a,
                MemoryRegion.of(1000, 1024, Device.CPU))), Map.of("a", entry(a, 5000, 16)), 256));
        // 1024 queued, 1 reader: a whole segment (its share, 512, is more)
        Segment first = ledger.take(1);
        assertThat(first.bytes()).isEqualTo(256);
        assertThat(first.id()).isZero();
        // 768 queued, 4 readers: a share of 96, so one unit of 64; the rest of segment 1 is numbered 4, first in line
        Segment cut = ledger.take(4);
        assertThat(cut.id()).isEqualTo(1);
        assertThat(cut.units()).hasSize(1);
        Segment rest = ledger.take(1);
        assertThat(rest.id()).isEqualTo(4);
        assertThat(rest.bytes()).isEqualTo(192);
        List<Unit> all = new ArrayList<>(first.units());
        all.addAll(cut.units());
        all.addAll(rest.units());
        for (Segment s = ledger.take(2); s != null; s = ledger.take(2)) {
            all.addAll(s.units());
        }
        assertThat(all).extracting(Unit::index).doesNotHaveDuplicates().hasSize(16);
    }

    @Test
    void aRemainderKeepsTheSegmentsNumberAndCountsTheMove() {
        TensorSpec a = TensorSpec.of("a", DType.U8, 16, 64);
        List<Segment> plan = Segments.plan(List.of(new TensorDestination(a, MemoryRegion.of(1000, 1024, Device.CPU))),
                Map.of("a", entry(a, 5000, 16)), 512);
        Segment s = plan.get(1);
        Segment rest = s.remainder(s.units().subList(3, 8));
        assertThat(rest.id()).isEqualTo(1);
        assertThat(rest.moved()).isEqualTo(1);
        assertThat(rest.bytes()).isEqualTo(5 * 64);
    }
}
