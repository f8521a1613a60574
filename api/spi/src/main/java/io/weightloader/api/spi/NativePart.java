package io.weightloader.api.spi;

import java.util.Objects;

/**
 * A native library a backend needs, and whether this machine has it: what {@code weightloader backends} prints.
 *
 * @param name      the library, e.g. {@code libnccl.so.2}
 * @param neededFor what it is needed for, e.g. {@code cuda:N destinations}
 * @param present   whether the dynamic linker could open it here
 * @param detail    where it was found, or why it could not be opened (the linker's own words)
 */
public record NativePart(String name, String neededFor, boolean present, String detail) {
    public NativePart {
        Objects.requireNonNull(name, "name is null");
        Objects.requireNonNull(neededFor, "neededFor is null");
        Objects.requireNonNull(detail, "detail is null");
    }
}
