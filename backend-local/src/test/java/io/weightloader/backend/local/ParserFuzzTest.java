package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;

import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.TensorArena;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A seeded mutation fuzzer for the safetensors header and index parsers, bounded in count and time so that CI runs it
 * on every build: every mutant of the reference fixtures must be refused with a {@link WeightLoaderException} naming
 * the file (the clean refusal) or load byte-exact (fields a tensor entry has beyond the format's are ignored, as the
 * reference implementation ignores them) (each tensor's SHA-256 equals that of its bytes in the file). Anything else
 * (another exception, an Error, a hang) fails the test, and the input is written to {@code target/fuzz-crashes/} to be
 * kept under {@code src/test/resources/fuzz-regressions/}, which {@link #everyKeptRegressionInputIsRefusedOrLoaded}
 * replays on every build.
 *
 * <p>{@code -Dfuzz.seed=N} and {@code -Dfuzz.iterations=N} (default 5000 of each kind) widen a local run.
 */
class ParserFuzzTest {
    static final Path FIXTURES = ReferenceFixturesTest.FIXTURES;
    static final Path REGRESSIONS = Path.of("src/test/resources/fuzz-regressions");
    static final long SEED = Long.getLong("fuzz.seed", 20261129L);
    static final int ITERATIONS = Integer.getInteger("fuzz.iterations", 5000);
    static final long BUDGET_NANOS = 40_000_000_000L;

    @TempDir
    Path dir;

    /** What one input did: refused cleanly, or loaded byte-exact. */
    enum Outcome { REFUSED, LOADED }

    @Test
    void mutatedHeadersAreRefusedCleanlyOrLoadByteExact() throws Exception {
        byte[] seed = Files.readAllBytes(FIXTURES.resolve("all_dtypes.safetensors"));
        SplittableRandom rnd = new SplittableRandom(SEED);
        int refused = 0;
        int loaded = 0;
        long end = System.nanoTime() + BUDGET_NANOS;
        int i = 0;
        for (; i < ITERATIONS && System.nanoTime() < end; i++) {
            byte[] mutant = mutateHeader(seed, rnd);
            Path p = dir.resolve("m.safetensors");
            Files.write(p, mutant);
            Outcome o = check(p, mutant, "header-" + SEED + "-" + i);
            if (o == Outcome.REFUSED) {
                refused++;
            } else {
                loaded++;
            }
        }
        System.out.printf("ParserFuzzTest: %d header mutants (seed %d): %d refused, %d loaded byte-exact%n", i, SEED,
                refused, loaded);
        assertThat(refused).as("the mutations reach the parser's refusals").isPositive();
    }

    @Test
    void mutatedIndexesAreRefusedCleanlyOrLoadByteExact() throws Exception {
        Path sharded = FIXTURES.resolve("sharded");
        byte[] index = Files.readAllBytes(sharded.resolve(SafetensorsCheckpoint.INDEX));
        Path ck = Files.createDirectories(dir.resolve("ck"));
        try (Stream<Path> files = Files.list(sharded)) {
            for (Path f : (Iterable<Path>) files::iterator) {
                Files.copy(f, ck.resolve(f.getFileName()));
            }
        }
        SplittableRandom rnd = new SplittableRandom(SEED + 1);
        int refused = 0;
        int loaded = 0;
        long end = System.nanoTime() + BUDGET_NANOS;
        int i = 0;
        for (; i < ITERATIONS && System.nanoTime() < end; i++) {
            byte[] mutant = mutateJson(index, rnd);
            Files.write(ck.resolve(SafetensorsCheckpoint.INDEX), mutant);
            if (check(ck, mutant, "index-" + SEED + "-" + i) == Outcome.REFUSED) {
                refused++;
            } else {
                loaded++;
            }
        }
        System.out.printf("ParserFuzzTest: %d index mutants (seed %d): %d refused, %d loaded byte-exact%n", i, SEED + 1,
                refused, loaded);
        assertThat(refused).isPositive();
    }

    @Test
    void everyKeptRegressionInputIsRefusedOrLoaded() throws Exception {
        if (!Files.isDirectory(REGRESSIONS)) {
            return; // none kept yet: the fuzzer has found nothing
        }
        try (Stream<Path> files = Files.list(REGRESSIONS)) {
            for (Path p : (Iterable<Path>) files::iterator) {
                check(p, Files.readAllBytes(p), "regression " + p.getFileName());
            }
        }
    }

    /** Opens and loads {@code path}; anything but a clean refusal or a byte-exact load fails, keeping the input. */
    Outcome check(Path path, byte[] input, String name) throws IOException {
        try {
            SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(path);
            List<TensorSpec> specs = cp.tensors().values().stream().map(SafetensorsCheckpoint.Located::spec).toList();
            try (LocalBackend b = new LocalBackend(cp, 2, 4096, false);
                 TensorArena arena = TensorArena.allocate(io.weightloader.api.Device.CPU, specs)) {
                LoadReport r = b.load(LoadRequest.of(arena.destinations()).withChecksum(true));
                for (TensorReport t : r.tensors()) {
                    SafetensorsCheckpoint.Located l = cp.tensors().get(t.name());
                    byte[] file = Files.readAllBytes(l.file().path());
                    MessageDigest md = MessageDigest.getInstance("SHA-256");
                    md.update(file, (int) l.fileOffset(), (int) l.entry().bytes());
                    assertThat(t.sha256()).as(name + ": tensor " + t.name()).isEqualTo(HexFormat.of().formatHex(md.digest()));
                }
            }
            return Outcome.LOADED;
        } catch (WeightLoaderException refused) {
            if (refused.getMessage() == null || !refused.getMessage().contains(path.toString())) {
                throw kept(input, name, "refused without naming " + path, refused);
            }
            return Outcome.REFUSED;
        } catch (Throwable t) {
            throw kept(input, name, "neither a clean refusal nor a byte-exact load", t);
        }
    }

    /** Keeps {@code input} under target/fuzz-crashes and says why it failed. */
    static AssertionError kept(byte[] input, String name, String why, Throwable t) throws IOException {
        Path keep = Path.of("target/fuzz-crashes");
        Files.createDirectories(keep);
        Files.write(keep.resolve(name + ".bin"), input);
        return new AssertionError(name + ": " + why + " (input kept in " + keep.resolve(name + ".bin") + ")", t);
    }

    /** A mutant of a whole safetensors file: its header JSON mutated, its length field sometimes too. */
    static byte[] mutateHeader(byte[] file, SplittableRandom rnd) {
        ByteBuffer b = ByteBuffer.wrap(file).order(ByteOrder.LITTLE_ENDIAN);
        int n = (int) b.getLong(0);
        byte[] header = java.util.Arrays.copyOfRange(file, 8, 8 + n);
        byte[] data = java.util.Arrays.copyOfRange(file, 8 + n, file.length);
        byte[] h = mutateJson(header, rnd);
        long declared = h.length;
        switch (rnd.nextInt(10)) {
            case 0 -> declared = h.length + rnd.nextInt(-16, 17);
            case 1 -> declared = rnd.nextLong();
            default -> { }
        }
        if (rnd.nextInt(10) == 0) {
            data = java.util.Arrays.copyOf(data, rnd.nextInt(data.length + 1));
        }
        ByteBuffer out = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(declared).put(h).put(data);
        return out.array();
    }

    static final String[] TOKENS = {"-1", "0", "18446744073709551615", "9223372036854775807", "1e400", "null", "true",
        "[]", "{}", "\"\"", "\"F32\"", "\"BF16\"", "\"X99\"", "[0,0]", "[1,0]", "[-1]", "\"\\u0000\"", ",", ":", "{", "}",
        "[", "]", "\"data_offsets\"", "\"shape\"", "\"dtype\"", "\"__metadata__\"", "\"weight_map\"", "\"../x\"",
        "\"/etc/passwd\"", " {\"b\": garbage", "\"crc32\":1,", "\"x\":{\"y\":[]},", "\"total_size\"", "\"metadata\""};

    /** Byte flips, insertions, deletions, duplications and JSON tokens spliced in. */
    static byte[] mutateJson(byte[] in, SplittableRandom rnd) {
        List<Byte> b = new ArrayList<>(in.length + 64);
        for (byte x : in) {
            b.add(x);
        }
        int edits = 1 + rnd.nextInt(4);
        for (int e = 0; e < edits && !b.isEmpty(); e++) {
            int at = rnd.nextInt(b.size());
            switch (rnd.nextInt(6)) {
                case 0 -> b.set(at, (byte) (b.get(at) ^ (1 << rnd.nextInt(8))));
                case 1 -> b.add(at, (byte) rnd.nextInt(256));
                case 2 -> b.remove(at);
                case 3 -> {
                    int len = Math.min(b.size() - at, 1 + rnd.nextInt(16));
                    b.addAll(at, new ArrayList<>(b.subList(at, at + len)));
                }
                case 4 -> {
                    byte[] t = TOKENS[rnd.nextInt(TOKENS.length)].getBytes(StandardCharsets.UTF_8);
                    int len = Math.min(b.size() - at, rnd.nextInt(8));
                    for (int k = 0; k < len; k++) {
                        b.remove(at);
                    }
                    for (int k = t.length - 1; k >= 0; k--) {
                        b.add(at, t[k]);
                    }
                }
                default -> {
                    // a digit changed: offsets and shapes that disagree by a little
                    if (Character.isDigit(b.get(at))) {
                        b.set(at, (byte) ('0' + rnd.nextInt(10)));
                    }
                }
            }
        }
        byte[] out = new byte[b.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = b.get(i);
        }
        return out;
    }

    static {
        // keep HostMemory loaded so the arena's class is ready (and the leak detector) before the first mutant
        HostMemory.liveBytes();
    }
}
