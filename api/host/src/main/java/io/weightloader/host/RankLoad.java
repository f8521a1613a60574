package io.weightloader.host;

import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.ProgressListener;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.spi.ZeroCopyLoader;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * One load of a rank's share whose memory is not kept (a check, a tool, {@code weightloader load}): opens the rank's
 * loader, loads every tensor its source offers into memory on the rank's device with the rank's {@code tp-layout}
 * applied ({@link HostRanks#allocate}), frees that memory and returns the report. With zero-copy it maps the
 * tensors instead, where the backend can ({@link ZeroCopyLoader}); a backend that cannot is told to the notes and
 * the tensors are copied; a rank with a {@code tp-layout} is refused (mapping hands out whole tensors, a rank holds
 * slices). A host that keeps what it loaded uses {@link HostRanks#load} instead.
 *
 * <p>Immutable: each {@code with...} returns a new one.
 */
public final class RankLoad {
    private final boolean zeroCopy;
    private final ProgressListener progress;
    private final Consumer<String> notes;

    private RankLoad(boolean zeroCopy, ProgressListener progress, Consumer<String> notes) {
        this.zeroCopy = zeroCopy;
        this.progress = progress;
        this.notes = notes;
    }

    /** A copying load, without progress, its notes dropped. */
    public static RankLoad copying() {
        return new RankLoad(false, null, n -> { });
    }

    /** Maps the tensors instead of copying them when the backend can ({@code backends.local.zero-copy}). */
    public RankLoad withZeroCopy(boolean on) {
        return new RankLoad(on, progress, notes);
    }

    /** Told of the copy's progress (a mapped load has none); null for none. */
    public RankLoad withProgress(ProgressListener listener) {
        return new RankLoad(zeroCopy, listener, notes);
    }

    /** Told, one line each, what the load did other than asked (zero-copy asked of a backend that copies). */
    public RankLoad withNotes(Consumer<String> sink) {
        return new RankLoad(zeroCopy, progress, Objects.requireNonNull(sink, "sink"));
    }

    public boolean zeroCopy() {
        return zeroCopy;
    }

    /**
     * Loads {@code rank}'s share and frees it: the report.
     *
     * @throws WeightLoaderConfigException naming {@code weight-loader.tp-layout} when zero-copy is asked for a rank
     *                                     with a layout
     */
    public LoadReport run(HostRanks.Rank rank) {
        try (WeightLoader loader = rank.open()) {
            List<TensorSpec> specs = loader.available();
            if (zeroCopy && !loader.settings().tpLayout().isNone()) {
                throw new WeightLoaderConfigException("weight-loader.tp-layout",
                        "zero-copy (--zero-copy, RankLoad.withZeroCopy) maps whole tensors from the files; a rank's"
                                + " slices (tp-layout " + loader.settings().tpLayout().name() + ") are copied: drop"
                                + " zero-copy or the layout");
            }
            if (zeroCopy && loader.backend() instanceof ZeroCopyLoader z) {
                try (MappedWeights mapped = z.map(specs, loader.settings().checksum())) {
                    return mapped.report();
                }
            }
            if (zeroCopy) {
                notes.accept("backend '" + loader.backend().name()
                        + "' cannot hand out zero-copy views; copying instead");
            }
            try (HostRanks.Held held = HostRanks.allocate(rank, specs)) {
                LoadRequest request = LoadRequest.of(held.destinations());
                return loader.load(progress == null ? request : request.withProgress(progress));
            }
        }
    }
}
