package io.weightloader.examples;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
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
 * The tensor-parallel ranks one process handles, as inference servers run them: {@code --tp-size N} alone means
 * every rank 0..N-1 in this process, {@code --tp-rank r} (or {@code rank.tp} set in any source) only rank r. Each rank has its own device: the {@code --device} list's r-th entry, or {@code cuda:r} with
 * {@code --device cuda}, or the one device named (the host by default).
 * Each rank gets its own config ({@code rank.tp} and {@code device} set), so its own backend and engine.
 */
record Ranks(List<Rank> ranks) {

    /** One rank this process handles, with its settings. */
    record Rank(RankKey key, Device device, Config config, WeightLoaderSettings settings) {
    }

    static Ranks of(Config config, SharedOptions shared) {
        WeightLoaderSettings base = WeightLoaderSettings.from(config);
        int size = base.tpSize();
        List<Integer> tps = new ArrayList<>();
        // a rank given anywhere (flag, file, -D, environment) means this process is that one rank
        boolean rankGiven = shared.tpRank != null
                || !config.getValue("weight-loader.rank.tp").origin().description().contains("reference.conf");
        if (rankGiven || size == 1) {
            tps.add(base.rank().tp());
        } else {
            for (int r = 0; r < size; r++) {
                tps.add(r);
            }
        }
        List<Device> devices = devices(shared.device, base.device(), size, tps.size() == 1);
        List<Rank> out = new ArrayList<>();
        for (int tp : tps) {
            Device d = devices.get(Math.min(tp, devices.size() - 1));
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("weight-loader.rank.tp", tp);
            m.put("weight-loader.device", d.toString());
            Config c = ConfigFactory.parseMap(m, "rank " + tp).withFallback(config).resolve();
            WeightLoaderSettings s = WeightLoaderSettings.from(c);
            out.add(new Rank(s.rank(), d, c, s));
        }
        return new Ranks(List.copyOf(out));
    }

    /**
     * One device per tp rank (index = rank): the {@code --device} list's entries; {@code --device cuda} puts rank r on
     * {@code cuda:r}; one device named for one rank is that rank's; otherwise every rank gets the configured device
     * (the host by default).
     */
    private static List<Device> devices(String flag, Device configured, int size, boolean oneRank) {
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
    static Held allocate(Rank rank, List<TensorSpec> specs) {
        TpLayout layout = rank.settings().tpLayout();
        Map<String, TensorSlice> slices = layout.isNone() ? Map.of()
                : layout.plan(specs, rank.settings().tpSize(), rank.key().tp());
        TensorArena arena = TensorArena.allocate(rank.device(), TpLayout.heldSpecs(specs, slices));
        return new Held(arena, TpLayout.destinations(specs, arena.destinations(), slices));
    }

    /** A rank's memory and what it holds there. */
    record Held(TensorArena arena, List<TensorDestination> destinations) implements AutoCloseable {
        @Override
        public void close() {
            arena.close();
        }
    }

    boolean single() {
        return ranks.size() == 1;
    }

    /** Runs {@code work} for every rank at once (one thread each) and returns the results in rank order. */
    <T> List<T> parallel(Function<Rank, T> work) {
        return parallel(work, r -> { });
    }

    /**
     * As {@link #parallel(Function)}. The first failure is seen as soon as it happens: the other ranks are interrupted
     * and waited for, and the results of those that finished anyway are handed to {@code discard} (to free what they
     * hold) before the failure is thrown.
     */
    <T> List<T> parallel(Function<Rank, T> work, Consumer<T> discard) {
        List<Callable<T>> tasks = new ArrayList<>();
        for (Rank rank : ranks) {
            tasks.add(() -> work.apply(rank));
        }
        return Parallel.of("weightloader-rank", ranks.size(), "a rank failed", "interrupted while waiting for the ranks")
                .firstToFail().call(tasks, discard);
    }
}
