package io.weightloader.backend.te;

import io.weightloader.api.config.SettingsReader;
import java.time.Duration;

/**
 * How a client reads from several sources at once ({@code weight-loader.backends.transfer_engine.sources},
 * {@code segment-size}, {@code stall-timeout}; issue 23), read and validated once with the backend's other settings.
 *
 * @param sources      how many sources to read from at once: 1 (one source, as the strategy picks), or more; 0 stands
 *                     for {@code auto} (every ready source, at most {@link #AUTO_MAX})
 * @param segmentSize  the unit of work handed to a source (at least one checked unit: a block of a tensor, or a whole
 *                     tensor without blocks)
 * @param stallTimeout a source whose reads make no progress for this long, while it has reads in flight, is dropped
 *                     and its unfinished segments moved to the others
 */
record MultiSourceSettings(int sources, long segmentSize, Duration stallTimeout) {
    /** {@code sources = auto}: every ready source the directory gives, at most this many. */
    static final int AUTO_MAX = 8;
    /** Most sources one load reads from at once. */
    static final int MAX = 64;

    static MultiSourceSettings from(SettingsReader r, String strategy) {
        String text = r.string("sources");
        int sources = text.equals("auto") ? 0 : -1;
        if (sources < 0) {
            try {
                sources = Integer.parseInt(text);
            } catch (NumberFormatException e) {
                throw r.error("sources", "must be a whole number in 1.." + MAX + " or auto; got '" + text + "'");
            }
            if (sources < 1 || sources > MAX) {
                throw r.error("sources", "must be in 1.." + MAX + " or auto; got " + sources);
            }
        }
        long segment = r.size("segment-size", 1L << 20, 1L << 30);
        Duration stall = r.duration("stall-timeout", Duration.ofMillis(100), Duration.ofMinutes(10));
        if (sources != 1 && strategy.equals("chain")) {
            throw r.error("sources", "is " + text + ", but " + r.path("source-strategy") + " = chain reads one"
                    + " relay while it still loads; several sources at once read only ready ones. Use sources = 1"
                    + " with chain, or source-strategy = star or tree with sources = " + text);
        }
        return new MultiSourceSettings(sources, segment, stall);
    }

    /** Whether a load reads from several sources at once. */
    boolean several() {
        return sources != 1;
    }

    /** Most sources to hold at once. */
    int target() {
        return sources == 0 ? AUTO_MAX : sources;
    }

    /** As the setting reads. */
    String describe() {
        return sources == 0 ? "auto (at most " + AUTO_MAX + ")" : Integer.toString(sources);
    }
}
