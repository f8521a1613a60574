package io.weightloader.api;

import java.util.Objects;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Where memory lives: host memory ({@code cpu}) or one CUDA device ({@code cuda:N}). */
public record Device(Kind kind, int index) {

    public enum Kind { CPU, CUDA }

    public static final Device CPU = new Device(Kind.CPU, 0);

    private static final Pattern CUDA = Pattern.compile("cuda:(\\d{1,4})");

    public Device {
        Objects.requireNonNull(kind, "kind is null");
        if (index < 0) {
            throw new IllegalArgumentException("negative device index " + index);
        }
        if (kind == Kind.CPU && index != 0) {
            throw new IllegalArgumentException("cpu has no index");
        }
    }

    public static Device cuda(int index) {
        return new Device(Kind.CUDA, index);
    }

    /** Parses {@code cpu} or {@code cuda:N}. */
    public static Device parse(String text) {
        if ("cpu".equals(text)) {
            return CPU;
        }
        Matcher m = CUDA.matcher(text == null ? "" : text);
        if (m.matches()) {
            return cuda(Integer.parseInt(m.group(1)));
        }
        throw new IllegalArgumentException("device must be 'cpu' or 'cuda:N', got '" + text + "'");
    }

    public boolean isHost() {
        return kind == Kind.CPU;
    }

    @Override
    public String toString() {
        return kind == Kind.CPU ? "cpu" : "cuda:" + index;
    }
}
