package io.weightloader.benchmarks;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.cli.SyntheticLlama;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.TensorArena;
import io.weightloader.memory.cuda.DeviceCopies;
import io.weightloader.seed.SeedService;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * {@code bench-gpu --role seed}: the seed JVM on GPU 0. It fills a Llama-shaped checkpoint with bytes the driver can
 * check ({@link #verify}), serves it, runs the GEMM load, prints {@code READY port}, and then pauses and resumes the
 * load as the driver writes on its stdin until the driver closes it.
 */
final class GpuBenchSeed {
    private static final int PATTERN = 64 << 20;

    private GpuBenchSeed() {
    }

    static int serve(long size, int gemm, String mooncakeLibrary) throws Exception {
        Device dev = Device.cuda(0);
        List<TensorSpec> specs = SyntheticLlama.forSize(size).specs();
        StringBuilder hocon = new StringBuilder("""
                weight-loader.seed { bind-address = "127.0.0.1", serve = [nccl], publish-checksums = false }
                weight-loader.remote-instance.token = bench
                """);
        if (mooncakeLibrary != null) {
            hocon.append("weight-loader.seed.serve = [transfer_engine, nccl]\n")
                    .append("weight-loader.backends.transfer_engine { engine = mooncake, protocol = nvlink_intra, ")
                    .append("mooncake.library = \"").append(mooncakeLibrary).append("\" }\n");
        }
        Config config = ConfigFactory.parseString(hocon.toString()).withFallback(ConfigFactory.load()).resolve();
        WeightLoaderSettings settings = WeightLoaderSettings.from(config);
        try (TensorArena arena = TensorArena.allocate(dev, specs); HostMemory pattern = pattern()) {
            for (int i = 0; i < specs.size(); i++) {
                fill(arena.destinations().get(i).region(), i, pattern);
            }
            List<TensorDestination> held = arena.destinations().stream().map(d -> new TensorDestination(d.spec(), d.region())).toList();
            try (SeedService svc = Seeds.start(new BackendContext(settings, config), BackendRegistry.discover(),
                    Map.of(settings.rank(), held));
                 GemmLoad load = new GemmLoad(dev, gemm, System.out).start()) {
                System.out.println("READY " + svc.port());
                System.out.flush();
                // serve until the driver closes our stdin; it may pause and resume the GEMM load
                BufferedReader commands = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
                for (String line; (line = commands.readLine()) != null; ) {
                    if (line.equals("pause")) {
                        load.pause();
                    } else if (line.equals("resume")) {
                        load.resume();
                    }
                }
            }
        }
        return 0;
    }

    /** 64 MiB of deterministic pseudo-random bytes; tensor i starts at a different place in it. */
    private static HostMemory pattern() {
        HostMemory p = HostMemory.allocate(PATTERN);
        SyntheticLlama.fill(12345, 0, p.byteBuffer(0, PATTERN));
        return p;
    }

    private static void fill(MemoryRegion dst, int index, HostMemory pattern) {
        long n = dst.length();
        long shift = (index * 4_194_301L) % PATTERN;
        for (long off = 0; off < n; ) {
            long src = (shift + off) % PATTERN;
            long len = Math.min(PATTERN - src, n - off);
            DeviceCopies.copy(dst, off, pattern, src, len);
            off += len;
        }
    }

    /** SHA-256 of three tensors (first, largest, last) against the bytes the seed's generator makes. */
    static String verify(List<TensorDestination> dest) {
        List<Integer> pick = new ArrayList<>(List.of(0, dest.size() - 1));
        int largest = 0;
        for (int i = 1; i < dest.size(); i++) {
            if (dest.get(i).byteSize() > dest.get(largest).byteSize()) {
                largest = i;
            }
        }
        pick.add(largest);
        try (HostMemory pattern = pattern()) {
            for (int i : pick) {
                TensorDestination d = dest.get(i);
                try (HostMemory expect = HostMemory.allocate(d.byteSize())) {
                    fill(expect, i, pattern);
                    if (!Checksums.sha256(expect).equals(Checksums.sha256(d.region(), d.byteSize()))) {
                        return "MISMATCH in tensor '" + d.spec().name() + "'";
                    }
                }
            }
        }
        return "verified (SHA-256 of 3 tensors)";
    }
}
