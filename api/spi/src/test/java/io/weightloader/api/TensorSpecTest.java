package io.weightloader.api;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import org.junit.jupiter.api.Test;

class TensorSpecTest {
    @Test
    void byteSizesFollowTheDtype() {
        assertThat(TensorSpec.of("a", DType.BF16, 4096, 4096).byteSize()).isEqualTo(2L * 4096 * 4096);
        assertThat(TensorSpec.of("s", DType.F64).byteSize()).isEqualTo(8);
        assertThat(TensorSpec.of("e", DType.F32, 0, 7).byteSize()).isZero();
        assertThat(TensorSpec.of("f4", DType.F4, 2, 8).byteSize()).isEqualTo(8);
        assertThat(TensorSpec.of("f6", DType.F6_E2M3, 4).byteSize()).isEqualTo(3);
        assertThat(TensorSpec.of("c", DType.C64, 3).byteSize()).isEqualTo(24);
        assertThat(TensorSpec.of("big", DType.F32, 1L << 31).byteSize()).isEqualTo(1L << 33);
    }

    @Test
    void badShapesAreRefused() {
        assertThatThrownBy(() -> TensorSpec.of("n", DType.F32, 2, -1)).hasMessageContaining("'n'")
                .hasMessageContaining("negative");
        assertThatThrownBy(() -> TensorSpec.of("f4", DType.F4, 3)).hasMessageContaining("whole bytes");
        assertThatThrownBy(() -> TensorSpec.of("o", DType.F64, Long.MAX_VALUE, 4)).hasMessageContaining("overflows");
        // the element count fits in 64 bits, its bytes do not: the same message, not a bare "long overflow"
        assertThatThrownBy(() -> TensorSpec.of("o", DType.F64, 1L << 60)).hasMessageContaining("overflows 64 bits");
    }

    @Test
    void theOverflowMessageLeavesTheNameToTheParserThatNamesTheTensor() {
        // a parser says "file: tensor 'o': <message>": the message must not name the tensor a second time
        assertThatThrownBy(() -> TensorSpec.of("model.big.weight", DType.F64, 1L << 62, 4))
                .hasMessage("shape [4611686018427387904, 4] of F64 is more than 2^63 bytes (its size overflows 64 bits)");
    }

    @Test
    void everySafetensorsDtypeIsKnown() {
        for (String s : List.of("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3",
                "F8_E5M2", "F8_E8M0", "U16", "U32", "U64", "C64", "F4", "F6_E2M3", "F6_E3M2")) {
            assertThat(DType.fromSafetensors(s)).as(s).isPresent();
        }
        assertThat(DType.fromSafetensors("bf16")).isEmpty();
        assertThat(DType.fromSafetensors("Q4_K")).isEmpty();
    }

    @Test
    void matcherListsEveryDifferenceAtOnce() {
        var available = List.of(TensorSpec.of("a", DType.BF16, 2, 2), TensorSpec.of("b", DType.F32, 3),
                TensorSpec.of("extra", DType.U8, 1));
        var expected = List.of(TensorSpec.of("a", DType.BF16, 2, 2), TensorSpec.of("b", DType.F16, 3),
                TensorSpec.of("missing", DType.F32, 1));
        assertThatThrownBy(() -> TensorMatcher.check("seed x", available, expected, false))
                .isInstanceOfSatisfying(TensorMismatchException.class, e -> {
                    assertThat(e.missing()).containsExactly("missing F32[1]");
                    assertThat(e.extra()).containsExactly("extra U8[1]");
                    assertThat(e.mismatched()).containsExactly("b: expected F16[3], source has F32[3]");
                })
                .hasMessageContaining("seed x");
        assertThatThrownBy(() -> TensorMatcher.check("seed x", available, expected, true))
                .isInstanceOfSatisfying(TensorMismatchException.class, e -> assertThat(e.extra()).isEmpty());
    }
}
