package io.weightloader.host;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.TpLayout;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.memory.Parallel;
import io.weightloader.memory.TensorArena;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * The tensor-parallel ranks one host process handles, as inference servers run them: {@code rank.tp-size = N} alone
 * means every rank 0..N-1 in this process, {@code rank.tp = r} set in any source (a file, {@code -D}, the
 * environment, a flag) only rank r. Each rank has its own device: the r-th entry of a device list, or {@code cuda:r}
 * for the list {@code cuda}, or the one configured device ({@code weight-loader.device}, the host by default). Each rank
 * gets its own config ({@code rank.tp} and {@code device} set), so its own loader, backend and engine, and
 * {@link #allocate} gives it memory for exactly what it holds under {@code tp-layout}.
 */
public record HostRanks(List<Rank> ranks) {

    /** One rank this process handles, with its settings. */
    public record Rank(RankKey key, Device device, Config config, WeightLoaderSettings settings) {
        /** A loader for this rank (its backend and engine): the caller closes it. */
        public WeightLoader open() {
            return WeightLoader.open(config);
        }
    }

    /** The ranks {@code config} gives this process, each on the configured device. */
    public static HostRanks of(Config config) {
        return of(config, null);
    }

    /**
     * The ranks {@code config} gives this process.
     *
     * @param devices null for the configured device; or one device per tp rank, comma-separated
     *                ({@code cuda:1,cuda:0}); or {@code cuda}: rank r on {@code cuda:r}
     */
    public static HostRanks of(Config config, String devices) {
        WeightLoaderSettings base = WeightLoaderSettings.from(config);
        int size = base.tpSize();
        List<Integer> tps = new ArrayList<>();
        // a rank given anywhere (flag, file, -D, environment) means this process is that one rank
        boolean rankGiven = !config.getValue("weight-loader.rank.tp").origin().description().contains("reference.conf");
        if (rankGiven || size == 1) {
            tps.add(base.rank().tp());
        } else {
            for (int r = 0; r < size; r++) {
                tps.add(r);
            }
        }
        List<Device> perRank = devices(devices, base.device(), size);
        List<Rank> out = new ArrayList<>();
        for (int tp : tps) {
            Device d = perRank.get(Math.min(tp, perRank.size() - 1));
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("weight-loader.rank.tp", tp);
            m.put("weight-loader.device", d.toString());
            Config c = ConfigFactory.parseMap(m, "rank " + tp).withFallback(config).resolve();
            WeightLoaderSettings s = WeightLoaderSettings.from(c);
            out.add(new Rank(s.rank(), d, c, s));
        }
        return new HostRanks(List.copyOf(out));
    }

    /**
     * One device per tp rank (index = rank): the {@code --device} list's entries; {@code --device cuda} puts rank r on
     * {@code cuda:r}; one device named for one rank is that rank's; otherwise every rank gets the configured device
     * (the host by default).
     */
    private static List<Device> devices(String flag, Device configured, int size) {
        List<Device> out = new ArrayList<>();
        if (flag != null && flag.contains(",")) {
            for (String part : flag.split(",")) {
                try {
                    out.add(Device.parse(part.trim()));
                } catch (IllegalArgumentException e) {
                    throw new WeightLoaderConfigException("weight-loader.device", "--device " + flag + ": "
                            + e.getMessage());
                }
            }
            if (out.size() != size) {
                throw new WeightLoaderConfigException("weight-loader.device", "--device lists " + out.size()
                        + " device(s) for " + size + " tp rank(s) (weight-loader.rank.tp-size); give one per rank");
            }
            return out;
        }
        boolean perRank = "cuda".equals(flag);
        for (int r = 0; r < size; r++) {
            out.add(perRank ? Device.cuda(r) : configured);
        }
        return out;
    }

    /**
     * Memory for what {@code rank} holds of {@code specs} under its {@code tp-layout} (each tensor's slice, or the whole
     * tensor), on its device, and the destinations that say which slice each holds. The layout is checked against
     * every tensor first: an indivisible one fails here, before any allocation.
     */
    public static Held allocate(Rank rank, List<TensorSpec> specs) {
        TpLayout layout = rank.settings().tpLayout();
        Map<String, TensorSlice> slices = layout.isNone() ? Map.of()
                : layout.plan(specs, rank.settings().tpSize(), rank.key().tp());
        // with the memory saver the memory can be released and resumed in place: host memory is mapped, GPU memory
        // is an address range reserved once with physical memory mapped there (CUDA virtual memory management)
        TensorArena arena = TensorArena.allocate(rank.device(), TpLayout.heldSpecs(specs, slices),
                rank.settings().enableMemorySaver());
        return new Held(arena, TpLayout.destinations(specs, arena.destinations(), slices));
    }

    /**
     * Opens {@code rank}'s loader, allocates what the rank holds of what it offers, and loads it: the memory and its
     * report, or nothing held (memory freed) when the load fails.
     */
    public static Loaded load(Rank rank) {
        try (WeightLoader loader = rank.open()) {
            Held held = allocate(rank, loader.available());
            try {
                return new Loaded(held, loader.load(LoadRequest.of(held.destinations())));
            } catch (RuntimeException | Error e) {
                held.close();
                throw e;
            }
        }
    }

    /**
     * Loads {@code rank}'s share again into memory it already holds (a seed resuming after its memory was released):
     * the same request as {@link #load}, from the rank's configured source.
     */
    public static LoadReport refill(Rank rank, Held held) {
        try (WeightLoader loader = rank.open()) {
            return loader.load(LoadRequest.of(held.destinations()));
        }
    }

    /** A rank's loaded memory and the load's report. */
    public record Loaded(Held held, LoadReport report) implements AutoCloseable {
        @Override
        public void close() {
            held.close();
        }
    }

    /** A rank's memory and what it holds there. */
    public record Held(TensorArena arena, List<TensorDestination> destinations) implements AutoCloseable {
        @Override
        public void close() {
            arena.close();
        }
    }

    public boolean single() {
        return ranks.size() == 1;
    }

    /** Runs {@code work} for every rank at once (one thread each) and returns the results in rank order. */
    public <T> List<T> parallel(Function<Rank, T> work) {
        return parallel(work, r -> { });
    }

    /**
     * As {@link #parallel(Function)}. The first failure is seen as soon as it happens: the other ranks are interrupted
     * and waited for, and the results of those that finished anyway are handed to {@code discard} (to free what they
     * hold) before the failure is thrown.
     */
    public <T> List<T> parallel(Function<Rank, T> work, Consumer<T> discard) {
        List<Callable<T>> tasks = new ArrayList<>();
        for (Rank rank : ranks) {
            tasks.add(() -> work.apply(rank));
        }
        return Parallel.of("weightloader-rank", ranks.size(), "a rank failed", "interrupted while waiting for the ranks")
                .firstToFail().call(tasks, discard);
    }
}
