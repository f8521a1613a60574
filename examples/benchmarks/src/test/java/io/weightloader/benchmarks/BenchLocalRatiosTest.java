package io.weightloader.benchmarks;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import io.weightloader.benchmarks.BenchLocalResult.Ratio;
import io.weightloader.benchmarks.BenchLocalResult.Timing;
import java.util.List;
import org.junit.jupiter.api.Test;

/** {@code bench-local}'s ratios: each against the right baseline of the same run, and each naming it. */
class BenchLocalRatiosTest {
    static final long GB = 1_000_000_000L;

    /** A timing of {@code gbPerSecond} over 8 GB. */
    static Timing rate(double gbPerSecond) {
        return new Timing(8.0 / gbPerSecond, 8 * GB);
    }

    static Ratio find(List<Ratio> ratios, String measured, String baselineStart) {
        return ratios.stream().filter(r -> r.measured().equals(measured) && r.baseline().startsWith(baselineStart))
                .findFirst().orElseThrow(() -> new AssertionError(measured + " / " + baselineStart + " in " + ratios));
    }

    @Test
    void aGpuLoadIsHeldToTheSlowerOfTheRawParallelReadAndTheRawCopyNotTheSingleThreadRead() {
        // the run: raw single-thread read 7.24, raw parallel read 48.4, raw pinned copy 54.1, loader 42.8 GB/s
        List<Ratio> r = BenchLocalResult.ratios(rate(7.24), rate(48.4), null, rate(54.1), 16, rate(42.8), rate(40.0));

        Ratio gpu = find(r, "loader", "slower of");
        assertThat(gpu.value()).isCloseTo(42.8 / 48.4, within(1e-9));
        assertThat(gpu.baseline()).isEqualTo("slower of raw parallel read (16 threads) and raw pinned copy (the read)");
        assertThat(gpu.target()).isEqualTo(0.90);
        assertThat(gpu.line()).isEqualTo("ratio loader / slower of raw parallel read (16 threads) and raw pinned copy"
                + " (the read): 0.884 (target >= 0.90: NOT met)");
        Ratio first = find(r, "first load", "slower of");
        assertThat(first.value()).isCloseTo(40.0 / 48.4, within(1e-9));
        assertThat(first.target()).isEqualTo(0.90);
        // the single-thread read is still printed, named, and carries no target
        Ratio single = find(r, "loader", "raw single-thread read");
        assertThat(single.value()).isCloseTo(42.8 / 7.24, within(1e-9));
        assertThat(single.target()).isNull();
        assertThat(single.line()).isEqualTo("ratio loader / raw single-thread read (FileChannel.read): 5.912");
        // the target sits on the GPU baseline alone
        assertThat(find(r, "loader", "raw parallel read").target()).isNull();
    }

    @Test
    void whenTheCopyIsTheSlowerBaselineTheLineSaysSo() {
        List<Ratio> r = BenchLocalResult.ratios(rate(5), rate(60), null, rate(50), 16, rate(47), rate(47));
        Ratio gpu = find(r, "loader", "slower of");
        assertThat(gpu.value()).isCloseTo(47.0 / 50, within(1e-9));
        assertThat(gpu.baseline()).endsWith("(the copy)");
        assertThat(gpu.met()).isTrue();
    }

    @Test
    void aHostLoadIsHeldToTheRawParallelReadWithAsManyThreads() {
        List<Ratio> r = BenchLocalResult.ratios(rate(6), rate(58), null, null, 32, rate(57), rate(50));
        Ratio parallel = find(r, "loader", "raw parallel read");
        assertThat(parallel.baseline()).isEqualTo("raw parallel read (32 threads)");
        assertThat(parallel.value()).isCloseTo(57.0 / 58, within(1e-9));
        assertThat(parallel.target()).isEqualTo(0.90);
        assertThat(find(r, "first load", "raw parallel read").value()).isCloseTo(50.0 / 58, within(1e-9));
        assertThat(r).noneMatch(x -> x.baseline().contains("O_DIRECT") || x.baseline().contains("copy"));
    }

    @Test
    void anODirectLoadIsHeldToTheRawODirectReadAt095() {
        List<Ratio> r = BenchLocalResult.ratios(rate(6), rate(58), rate(2.2), null, 16, rate(2.0), rate(1.9));
        Ratio direct = find(r, "loader", "raw O_DIRECT read");
        assertThat(direct.baseline()).isEqualTo("raw O_DIRECT read (16 threads)");
        assertThat(direct.value()).isCloseTo(2.0 / 2.2, within(1e-9));
        assertThat(direct.target()).isEqualTo(0.95);
        assertThat(direct.line()).endsWith("(target >= 0.95: NOT met)");
        // the buffered read is another kind of read: printed, but no target
        assertThat(find(r, "loader", "raw parallel read").target()).isNull();
        assertThat(find(r, "first load", "raw O_DIRECT read").target()).isEqualTo(0.95);
    }

    @Test
    void anODirectLoadIntoAGpuIsHeldToTheSlowerOfTheODirectReadAndTheCopy() {
        List<Ratio> r = BenchLocalResult.ratios(rate(6), rate(58), rate(3), rate(54), 16, rate(2.8), rate(2.7));
        Ratio gpu = find(r, "loader", "slower of");
        assertThat(gpu.baseline()).isEqualTo("slower of raw O_DIRECT read (16 threads) and raw pinned copy (the read)");
        assertThat(gpu.value()).isCloseTo(2.8 / 3, within(1e-9));
        assertThat(find(r, "loader", "raw O_DIRECT read").target()).isNull();
    }

    @Test
    void everyRatioNamesItsBaseline() {
        for (List<Ratio> r : List.of(
                BenchLocalResult.ratios(rate(6), rate(58), null, null, 32, rate(57), rate(50)),
                BenchLocalResult.ratios(rate(6), rate(58), rate(2), rate(54), 16, rate(2), rate(2)))) {
            assertThat(r).allSatisfy(x -> {
                assertThat(x.line()).startsWith("ratio " + x.measured() + " / " + x.baseline() + ": ");
                assertThat(x.baseline()).isNotBlank();
            });
        }
    }
}
