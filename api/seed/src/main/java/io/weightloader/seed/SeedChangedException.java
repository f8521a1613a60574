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

    /** {@code source} (a seed as named in messages) went from generation {@code before} to {@code after} mid-load. */
    public static SeedChangedException during(String source, String before, String after) {
        return new SeedChangedException(source + " changed its weights during the load (generation " + before + " -> "
                + after + "); nothing was loaded, load again", before, after);
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
