package io.weightloader.api;

import java.util.Arrays;
import java.util.Locale;
import java.util.Optional;

/**
 * Every element type the safetensors format defines, with its size in bits.
 *
 * <p>The names are the safetensors header strings ({@code "BF16"}, {@code "F8_E4M3"} ...). Sub-byte types
 * ({@link #F4}, {@link #F6_E2M3}, {@link #F6_E3M2}) are packed: a tensor of them must fill whole bytes.
 */
public enum DType {
    BOOL(8),
    F4(4),
    F6_E2M3(6),
    F6_E3M2(6),
    U8(8),
    I8(8),
    F8_E5M2(8),
    F8_E4M3(8),
    F8_E8M0(8),
    I16(16),
    U16(16),
    F16(16),
    BF16(16),
    I32(32),
    U32(32),
    F32(32),
    C64(64),
    F64(64),
    I64(64),
    U64(64);

    private final int bits;

    DType(int bits) {
        this.bits = bits;
    }

    /** Size of one element in bits. */
    public int bits() {
        return bits;
    }

    /** The string used in safetensors headers. */
    public String safetensorsName() {
        return name();
    }

    /**
     * Byte size of {@code numel} elements of this type.
     *
     * @throws IllegalArgumentException when packed elements do not fill whole bytes, or on overflow
     */
    public long byteSize(long numel) {
        if (numel < 0) {
            throw new IllegalArgumentException("negative element count " + numel);
        }
        long totalBits = Math.multiplyExact(numel, (long) bits);
        if (totalBits % 8 != 0) {
            throw new IllegalArgumentException(
                    numel + " elements of " + name() + " (" + bits + " bits each) do not fill whole bytes");
        }
        return totalBits / 8;
    }

    /** Looks up a safetensors dtype string, exactly as written in a header (case-sensitive). */
    public static Optional<DType> fromSafetensors(String name) {
        for (DType d : values()) {
            if (d.name().equals(name)) {
                return Optional.of(d);
            }
        }
        return Optional.empty();
    }

    /** Like {@link #fromSafetensors} but lenient on case, for command-line input. */
    public static DType parse(String name) {
        return fromSafetensors(name.toUpperCase(Locale.ROOT))
                .orElseThrow(() -> new IllegalArgumentException(
                        "unknown dtype '" + name + "'; known: " + Arrays.toString(values())));
    }
}
