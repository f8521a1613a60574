package io.weightloader.seed;

import io.weightloader.api.WeightLoaderException;

/**
 * The seed's weights changed (a new generation) between the manifest a load used and the end of that load: the
 * bytes read may mix old and new weights, so nothing was loaded.
 */
public class SeedChangedException extends WeightLoaderException {
    private final String before;
    private final String after;

    public SeedChangedException(String message, String before, String after) {
        super(message);
        this.before = before;
        this.after = after;
    }

    /** The generation of the manifest the load used. */
    public String before() {
        return before;
    }

    /** The seed's generation when the load ended. */
    public String after() {
        return after;
    }
}
