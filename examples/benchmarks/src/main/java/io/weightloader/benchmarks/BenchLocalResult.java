package io.weightloader.benchmarks;

import com.fasterxml.jackson.annotation.JsonProperty;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * What {@code bench-local} measured and how it judges it: the timings, the {@code --json} document, and every ratio
 * printed, each against a baseline of the same run that it names ({@link #ratios}).
 */
final class BenchLocalResult {
    private BenchLocalResult() {
    }

    /** One measurement: the best time of the repeats, and the bytes it moved. */
    record Timing(double seconds, long bytes) {
        @JsonProperty("gigabytesPerSecond")
        public double gigabytesPerSecond() {
            return seconds <= 0 ? 0 : bytes / seconds / 1e9;
        }
    }

    /** Zero-copy times: mapping alone, and mapping plus one read per page. */
    record ZeroCopy(double mapSeconds, double mapAndTouchSeconds) {
    }

    /**
     * GPU destinations only: the raw host-to-device copy, reading (the raw parallel read, or the raw O_DIRECT read with
     * {@code io = direct}) and copying one after the other (the sum of the two baselines' times), and the loader
     * against the slower of that read and the copy (its ideal when they overlap).
     */
    record GpuBaselines(Timing hostToDevice, Timing serial, double ratioToSlowerBaseline) {
    }

    /**
     * One printed ratio: {@code measured} / {@code baseline}, both named, the baseline measured in the same run;
     * {@code target} is the floor for it, or null where none is set.
     */
    record Ratio(String measured, String baseline, double value, Double target) {
        boolean met() {
            return target == null || value >= target;
        }

        String line() {
            return String.format(Locale.ROOT, "ratio %s / %s: %.3f%s", measured, baseline, value,
                    target == null ? "" : String.format(Locale.ROOT, " (target >= %.2f: %s)", target,
                            met() ? "met" : "NOT met"));
        }
    }

    /** Target of a load into host memory against the raw parallel read with as many threads. */
    static final double TARGET_PARALLEL = 0.90;
    /** Target of an O_DIRECT load against the raw O_DIRECT read with as many threads. */
    static final double TARGET_DIRECT = 0.95;
    /** Target of a load into a GPU against the slower of the raw read and the raw pinned copy. */
    static final double TARGET_GPU = 0.90;

    /** The {@code --json} document. */
    record Result(String path, String device, int files, long fileBytes, long tensorBytes, int tensors, int repeat,
                  String engine, Timing raw, Timing loader, double ratio, ZeroCopy zeroCopy, GpuBaselines gpu,
                  int rawThreads, Timing rawParallel, double ratioToParallel, String io, boolean cold,
                  Timing rawDirect, Double ratioToDirect, Timing firstLoad, List<Ratio> ratios) {
    }

    /**
     * Every ratio the benchmark prints, each against a baseline of the same run that it names. The loader's main
     * baseline, which carries the target: for a host load the raw parallel read (buffered) or the raw O_DIRECT read
     * (when the loader read with O_DIRECT), each with as many threads as the loader; for a GPU load the slower of that
     * read and the raw pinned copy. The first load of the process (whose reader threads, stagers and files are new)
     * is held to the same baseline as the best one.
     */
    static List<Ratio> ratios(Timing raw, Timing parallel, Timing direct, Timing copy, int threads, Timing loader,
                              Timing first) {
        List<Ratio> out = new ArrayList<>();
        String parallelName = "raw parallel read (" + threads + " threads)";
        String directName = "raw O_DIRECT read (" + threads + " threads)";
        String mainName;
        double mainRate;
        double target;
        if (direct != null) {
            mainName = directName;
            mainRate = direct.gigabytesPerSecond();
            target = TARGET_DIRECT;
        } else {
            mainName = parallelName;
            mainRate = parallel.gigabytesPerSecond();
            target = TARGET_PARALLEL;
        }
        out.add(new Ratio("loader", "raw single-thread read (FileChannel.read)", ratio(loader, raw.gigabytesPerSecond()),
                null));
        out.add(new Ratio("loader", parallelName, ratio(loader, parallel.gigabytesPerSecond()),
                direct == null && copy == null ? target : null));
        if (direct != null) {
            out.add(new Ratio("loader", directName, ratio(loader, direct.gigabytesPerSecond()),
                    copy == null ? target : null));
        }
        if (copy != null) {
            boolean readSlower = mainRate <= copy.gigabytesPerSecond();
            mainName = "slower of " + mainName + " and raw pinned copy (the " + (readSlower ? "read" : "copy") + ")";
            mainRate = Math.min(mainRate, copy.gigabytesPerSecond());
            target = TARGET_GPU;
            out.add(new Ratio("loader", mainName, ratio(loader, mainRate), target));
        }
        if (first != null) {
            out.add(new Ratio("first load", mainName, ratio(first, mainRate), target));
        }
        return out;
    }

    /** {@code measured}'s rate over {@code baselineRate}; 0 where the baseline moved nothing. */
    static double ratio(Timing measured, double baselineRate) {
        return baselineRate <= 0 ? 0 : measured.gigabytesPerSecond() / baselineRate;
    }
}
