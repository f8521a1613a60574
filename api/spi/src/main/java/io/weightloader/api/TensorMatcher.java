package io.weightloader.api;

import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Matches the tensors a host expects against a source's, by name, then dtype and shape (never position). */
public final class TensorMatcher {
    private TensorMatcher() {
    }

    /**
     * @param source      what is being matched, for the message (a path, a seed)
     * @param available   what the source offers
     * @param expected    what the host asked for
     * @param ignoreExtra whether tensors of the source beyond {@code expected} are allowed
     * @return the source's specs by name
     * @throws TensorMismatchException listing every missing, extra and mismatched tensor
     */
    public static Map<String, TensorSpec> check(String source, Collection<TensorSpec> available,
                                                Collection<TensorSpec> expected, boolean ignoreExtra) {
        Map<String, TensorSpec> byName = new LinkedHashMap<>();
        for (TensorSpec s : available) {
            byName.put(s.name(), s);
        }
        List<String> missing = new ArrayList<>();
        List<String> mismatched = new ArrayList<>();
        Map<String, TensorSpec> wanted = new LinkedHashMap<>();
        for (TensorSpec e : expected) {
            wanted.put(e.name(), e);
            TensorSpec have = byName.get(e.name());
            if (have == null) {
                missing.add(e.describe());
            } else if (have.dtype() != e.dtype() || !have.shape().equals(e.shape())) {
                mismatched.add(e.name() + ": expected " + e.dtype() + e.shape() + ", source has "
                        + have.dtype() + have.shape());
            }
        }
        List<String> extra = new ArrayList<>();
        if (!ignoreExtra) {
            for (TensorSpec s : available) {
                if (!wanted.containsKey(s.name())) {
                    extra.add(s.describe());
                }
            }
        }
        if (!missing.isEmpty() || !extra.isEmpty() || !mismatched.isEmpty()) {
            throw new TensorMismatchException(source, missing, extra, mismatched);
        }
        return byName;
    }
}
