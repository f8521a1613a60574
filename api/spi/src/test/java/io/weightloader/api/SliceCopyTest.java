package io.weightloader.api;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import org.junit.jupiter.api.Test;

/** The copy plans against element-by-element slicing, for every pair of holdings of small 1-, 2- and 3-D tensors. */
class SliceCopyTest {

    /** Flat element index -> value, so every element is distinct. */
    private static int[] full(TensorSpec s) {
        int[] a = new int[(int) s.numel()];
        for (int i = 0; i < a.length; i++) {
            a[i] = i + 1;
        }
        return a;
    }

    /** The elements a holding holds, in C order, computed from multi-indices. */
    private static int[] held(TensorSpec s, TensorSlice slice) {
        int n = s.shape().size();
        long[] shape = s.shape().stream().mapToLong(Long::longValue).toArray();
        long[] lo = new long[n];
        long[] len = shape.clone();
        if (slice != null) {
            lo[slice.dim()] = slice.start();
            len[slice.dim()] = slice.length();
        }
        long count = 1;
        for (long l : len) {
            count *= l;
        }
        int[] out = new int[(int) count];
        long[] idx = new long[n];
        for (int k = 0; k < count; k++) {
            long rem = k;
            for (int j = n - 1; j >= 0; j--) {
                idx[j] = rem % len[j];
                rem /= len[j];
            }
            long flat = 0;
            for (int j = 0; j < n; j++) {
                flat = flat * shape[j] + lo[j] + idx[j];
            }
            out[k] = (int) flat + 1;
        }
        return out;
    }

    /** Runs the plan on int arrays (element = 4 bytes of F32), starting from a destination of zeros. */
    private static int[] apply(TensorSpec s, TensorSlice src, TensorSlice dst) {
        int[] from = held(s, src);
        int[] to = new int[held(s, dst).length];
        for (SliceCopy c : SliceCopy.plan(s, src, dst)) {
            assertThat(c.length() % 4).isZero();
            for (long i = 0; i < c.count(); i++) {
                for (long b = 0; b < c.length() / 4; b++) {
                    to[(int) ((c.dstOffset() + i * c.dstStride()) / 4 + b)] =
                            from[(int) ((c.srcOffset() + i * c.srcStride()) / 4 + b)];
                }
            }
        }
        return to;
    }

    @Test
    void everyPairOfHoldingsCopiesExactlyTheCommonElements() {
        List<TensorSpec> specs = List.of(TensorSpec.of("a", DType.F32, 12), TensorSpec.of("b", DType.F32, 8, 12),
                TensorSpec.of("c", DType.F32, 4, 6, 8));
        int checked = 0;
        for (TensorSpec s : specs) {
            List<TensorSlice> holdings = new java.util.ArrayList<>();
            holdings.add(null);
            for (int dim = 0; dim < s.shape().size(); dim++) {
                for (int tp : new int[]{1, 2, 4}) {
                    for (int r = 0; r < tp; r++) {
                        holdings.add(TensorSlice.part(s, dim, tp, r));
                    }
                }
            }
            int[] whole = full(s);
            for (TensorSlice src : holdings) {
                for (TensorSlice dst : holdings) {
                    int[] got = apply(s, src, dst);
                    int[] want = held(s, dst);
                    int[] have = held(s, src);
                    java.util.Set<Integer> inSrc = new java.util.HashSet<>();
                    for (int v : have) {
                        inSrc.add(v);
                    }
                    for (int k = 0; k < want.length; k++) {
                        // every element both hold arrived at its place; the others are untouched
                        assertThat(got[k]).as("%s src %s dst %s element %d", s.describe(), src, dst, k)
                                .isEqualTo(inSrc.contains(want[k]) ? want[k] : 0);
                    }
                    checked++;
                }
            }
            assertThat(whole).hasSize((int) s.numel());
        }
        assertThat(checked).isGreaterThan(700);
    }

    @Test
    void aDimZeroSliceOfTheWholeTensorIsOneRunAndAnInnerOneIsOneStridedCopy() {
        TensorSpec s = TensorSpec.of("w", DType.BF16, 4096, 1024);
        assertThat(SliceCopy.plan(s, null, TensorSlice.part(s, 0, 4, 1)))
                .containsExactly(new SliceCopy(1024L * 1024 * 2, 0, 0, 0, 1024L * 1024 * 2, 1));
        assertThat(SliceCopy.plan(s, null, TensorSlice.part(s, 1, 4, 3)))
                .containsExactly(new SliceCopy(768 * 2, 1024 * 2, 0, 256 * 2, 256 * 2, 4096));
    }

    @Test
    void packedDtypesRefuseSlicesThatSplitAByte() {
        TensorSpec s = TensorSpec.of("f4", DType.F4, 3, 2);
        assertThatThrownBy(() -> SliceCopy.plan(s, null, new TensorSlice(1, 1, 1)))
                .hasMessageContaining("split a byte");
        assertThat(SliceCopy.plan(s, null, new TensorSlice(0, 1, 1))).hasSize(1);
    }

    @Test
    void disjointHoldingsShareNothingAndSlicesOutsideTheTensorAreRefused() {
        TensorSpec s = TensorSpec.of("w", DType.F32, 8, 8);
        assertThat(SliceCopy.plan(s, new TensorSlice(0, 0, 4), new TensorSlice(0, 4, 4))).isEmpty();
        assertThatThrownBy(() -> SliceCopy.plan(s, null, new TensorSlice(1, 6, 4))).hasMessageContaining("outside");
        assertThatThrownBy(() -> SliceCopy.plan(s, null, new TensorSlice(2, 0, 1)))
                .hasMessageContaining("dimension 2");
    }
}
