package io.weightloader.api;

import java.util.List;

/** The tensors a host expects differ from what the source offers; every difference is listed. */
public class TensorMismatchException extends WeightLoaderException {
    private final List<String> missing;
    private final List<String> extra;
    private final List<String> mismatched;

    public TensorMismatchException(String source, List<String> missing, List<String> extra, List<String> mismatched) {
        super(message(source, missing, extra, mismatched));
        this.missing = List.copyOf(missing);
        this.extra = List.copyOf(extra);
        this.mismatched = List.copyOf(mismatched);
    }

    public List<String> missing() {
        return missing;
    }

    public List<String> extra() {
        return extra;
    }

    public List<String> mismatched() {
        return mismatched;
    }

    private static String message(String source, List<String> missing, List<String> extra, List<String> mismatched) {
        StringBuilder sb = new StringBuilder("tensors expected by the host do not match ").append(source).append(':');
        section(sb, "missing from the source", missing);
        section(sb, "in the source but not expected", extra);
        section(sb, "dtype or shape differ", mismatched);
        return sb.toString();
    }

    private static void section(StringBuilder sb, String title, List<String> items) {
        if (items.isEmpty()) {
            return;
        }
        sb.append("\n  ").append(items.size()).append(' ').append(title).append(':');
        for (String item : items) {
            sb.append("\n    ").append(item);
        }
    }
}
