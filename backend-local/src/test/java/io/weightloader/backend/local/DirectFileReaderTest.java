package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.sun.nio.file.ExtendedOpenOption;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.TensorArena;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@code io = direct} returns exactly the bytes {@code io = buffered} does. The files live under the module's
 * {@code target/} (the project's disk): {@code /tmp} may be a file system without O_DIRECT.
 */
class DirectFileReaderTest {
    static Path dir;
    static Path file;
    /** Not a multiple of the block size: the last block is short. */
    static final int SIZE = (5 << 20) + 1234;
    static byte[] bytes;

    @BeforeAll
    static void writeFile() throws IOException {
        Path base = Path.of("target", "direct-io-tests").toAbsolutePath();
        Files.createDirectories(base);
        dir = Files.createTempDirectory(base, "run");
        file = dir.resolve("data.bin");
        bytes = new byte[SIZE];
        new Random(14).nextBytes(bytes);
        Files.write(file, bytes);
        assumeDirect(file);
    }

    /** Skips (saying why) where the test directory's file system refuses O_DIRECT. */
    static void assumeDirect(Path p) {
        String why = null;
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ, ExtendedOpenOption.DIRECT)) {
            ch.size();
        } catch (IOException | UnsupportedOperationException e) {
            why = e.toString();
        }
        if (why != null) {
            System.err.println("DirectFileReaderTest skipped: " + p + " cannot be opened with O_DIRECT: " + why);
        }
        Assumptions.assumeTrue(why == null, p + " cannot be opened with O_DIRECT here: " + why);
    }

    @AfterAll
    static void cleanUp() throws IOException {
        if (dir != null) {
            try (Stream<Path> s = Files.walk(dir)) {
                s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }

    static Stream<Arguments> ranges() {
        List<Arguments> out = new ArrayList<>();
        long[][] cases = {
                {0, 1}, {0, 4095}, {0, 4097}, {1, 1}, {1, 4095}, {1, 4097}, {4095, 2}, {4096, 4096}, {4096, 8192},
                {123, (1 << 20) + 3}, {4096 * 3 - 7, 4096 * 2 + 14}, {(1 << 20) - 1, (1 << 20) + 2},
                {0, (1 << 22) + 4096}, // longer than the default bounce buffer
                {SIZE - 1234, 1234}, {SIZE - 1, 1}, {SIZE - 5000, 5000}, {SIZE - 8192 - 1234, 8192 + 1234},
                {0, SIZE}, {77, SIZE - 77}};
        for (long[] c : cases) {
            for (String dst : List.of("heap", "direct", "aligned")) {
                for (int bounce : new int[] {DirectFileReader.BOUNCE_SIZE, 8192}) {
                    out.add(Arguments.of(c[0], (int) c[1], dst, bounce));
                }
            }
        }
        return out.stream();
    }

    static ByteBuffer destination(String kind, int length) {
        return switch (kind) {
            case "heap" -> ByteBuffer.allocate(length);
            case "direct" -> ByteBuffer.allocateDirect(length + 1).position(1).slice(); // unaligned
            default -> ByteBuffer.allocateDirect(length + 8192).alignedSlice(4096).limit(length).slice();
        };
    }

    @ParameterizedTest(name = "[{index}] {1} bytes at {0} into {2}, bounce {3}")
    @MethodSource("ranges")
    void directReadsTheSameBytesAsBuffered(long position, int length, String dstKind, int bounce) throws IOException {
        ByteBuffer direct = destination(dstKind, length);
        ByteBuffer buffered = ByteBuffer.allocate(length);
        try (DirectFileReader d = DirectFileReader.open(file, bounce);
             BufferedFileSource b = new BufferedFileSource(file)) {
            d.read(position, direct, "t");
            b.read(position, buffered, "t");
        }
        assertThat(direct.hasRemaining()).isFalse();
        byte[] got = new byte[length];
        direct.flip().get(got);
        assertThat(got).isEqualTo(buffered.array());
        byte[] expected = java.util.Arrays.copyOfRange(bytes, (int) position, (int) position + length);
        assertThat(got).isEqualTo(expected);
    }

    @Test
    void aRangePastTheEndOfTheFileNamesTheFileAndTensor() throws IOException {
        try (DirectFileReader d = DirectFileReader.open(file)) {
            assertThatThrownBy(() -> d.read(SIZE - 10, ByteBuffer.allocate(20), "model.layers.0.mlp"))
                    .isInstanceOf(SafetensorsFormatException.class)
                    .hasMessageContaining(file.toString()).hasMessageContaining("model.layers.0.mlp")
                    .hasMessageContaining("file ended at byte " + SIZE);
            assertThatThrownBy(() -> d.read(SIZE + 4096, ByteBuffer.allocateDirect(8192).alignedSlice(4096).limit(4096), "x"))
                    .isInstanceOf(SafetensorsFormatException.class).hasMessageContaining("'x'")
                    .hasMessageContaining("file ended");
        }
    }

    // ---- whole checkpoints through the public entry point ----

    /** A two-shard checkpoint of odd-sized tensors (so most start mid-block), and the specs. */
    static Path checkpoint(String name) {
        Random r = new Random(name.hashCode());
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        int[] sizes = {1, 3, 4095, 4097, (1 << 20) + 3, 7, (3 << 20) + 11, 4096, 65537, (5 << 20) + 1};
        for (int i = 0; i < sizes.length; i++) {
            byte[] data = new byte[sizes[i]];
            r.nextBytes(data);
            tensors.add(SafetensorsWriter.Tensor.of(TensorSpec.of("t" + i, DType.U8, sizes[i]), data));
        }
        Path d = dir.resolve(name);
        SafetensorsWriter.writeSharded(d, SafetensorsWriter.split(tensors, 2), Map.of());
        return d;
    }

    static LoadResult load(Path model, String ioMode, int pieceSize) {
        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(Map.of(
                "weight-loader.model-path", model.toString(), "weight-loader.backends.local.io", ioMode,
                "weight-loader.backends.local.threads", 2, "weight-loader.backends.local.piece-size", pieceSize)));
             TensorArena arena = TensorArena.allocate(io.weightloader.api.Device.CPU, loader.available())) {
            LoadReport report = loader.load(LoadRequest.of(arena.destinations()).withChecksum(true));
            // every tensor's bytes, one after the other (the arena's padding between tensors is not written)
            java.io.ByteArrayOutputStream all = new java.io.ByteArrayOutputStream();
            for (io.weightloader.api.TensorDestination d : arena.destinations()) {
                byte[] t = new byte[(int) d.spec().byteSize()];
                d.region().byteBuffer(0, t.length).get(t);
                all.writeBytes(t);
            }
            return new LoadResult(report, all.toByteArray());
        }
    }

    record LoadResult(LoadReport report, byte[] arena) {
        List<String> sums() {
            return report.tensors().stream().map(t -> t.name() + "=" + t.sha256()).toList();
        }
    }

    @Test
    void aWholeCheckpointLoadedWithODirectEqualsTheBufferedLoad() {
        Path model = checkpoint("whole");
        for (int piece : new int[] {4096, 1 << 20, 16 << 20}) {
            LoadResult buffered = load(model, "buffered", piece);
            LoadResult direct = load(model, "direct", piece);
            assertThat(direct.arena()).as("piece-size %d", piece).isEqualTo(buffered.arena());
            assertThat(direct.sums()).isEqualTo(buffered.sums());
            assertThat(buffered.report().engine()).isEqualTo("pread x2");
            assertThat(direct.report().engine()).isEqualTo("pread x2 (O_DIRECT)");
        }
    }

    @Test
    void aCheckpointTruncatedAfterOpeningFailsTheDirectLoadNamingFileAndTensor() throws IOException {
        Path p = dir.resolve("shrinks.safetensors");
        byte[] data = new byte[10_000];
        new Random(3).nextBytes(data);
        SafetensorsWriter.write(p, List.of(SafetensorsWriter.Tensor.of(TensorSpec.of("a", DType.U8, 1000),
                java.util.Arrays.copyOf(data, 1000)), SafetensorsWriter.Tensor.of(TensorSpec.of("b", DType.U8, 9000),
                java.util.Arrays.copyOfRange(data, 1000, 10_000))), Map.of());
        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(Map.of(
                "weight-loader.model-path", p.toString(), "weight-loader.backends.local.io", "direct")));
             TensorArena arena = TensorArena.allocate(io.weightloader.api.Device.CPU, loader.available())) {
            byte[] all = Files.readAllBytes(p);
            Files.write(p, java.util.Arrays.copyOf(all, all.length - 6));
            assertThatThrownBy(() -> loader.load(LoadRequest.of(arena.destinations())))
                    .isInstanceOf(WeightLoaderException.class)
                    .hasMessageContaining("shrinks.safetensors").hasMessageContaining("'b'")
                    .hasMessageContaining("file ended at byte");
        }
    }

    /** Rewrites {@code p}'s whole blocks with O_DIRECT writes, which drop them from the page cache. */
    static void evict(Path p) throws IOException {
        byte[] all = Files.readAllBytes(p);
        int whole = all.length / 4096 * 4096;
        ByteBuffer buf = ByteBuffer.allocateDirect(whole + 4096).alignedSlice(4096);
        buf.put(all, 0, whole).flip();
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE, ExtendedOpenOption.DIRECT)) {
            while (buf.hasRemaining()) {
                ch.write(buf, buf.position());
            }
        }
    }

    @Test
    void autoConsidersODirectOnlyForACheckpointLargerThanHalfTheAvailableMemory() {
        assertThat(LocalIo.largerThanPageCache(10L << 30, 24L << 30)).isFalse();
        assertThat(LocalIo.largerThanPageCache(13L << 30, 24L << 30)).isTrue();
        assertThat(LocalIo.memAvailable()).isPositive();
    }

    @Test
    void autoReadsAColdFileWithODirectAndAWarmOneBuffered() throws IOException {
        Path model = checkpoint("auto");
        LoadResult buffered = load(model, "buffered", 1 << 20); // reads every file: warm now
        assertThat(PageCache.residentFraction(model.resolve(SafetensorsWriter.shardName(0, 2))).orElse(0))
                .isGreaterThan(0.9);
        LoadResult warm = load(model, "auto", 1 << 20);
        assertThat(warm.report().engine()).isEqualTo("pread x2");

        for (Path f : shards(model)) {
            evict(f);
        }
        double cold = PageCache.residentFraction(model.resolve(SafetensorsWriter.shardName(0, 2))).orElse(1);
        Assumptions.assumeTrue(cold < LocalIo.AUTO_DIRECT_BELOW,
                "O_DIRECT writes left " + cold + " of the file in the page cache on this file system");
        // a cold checkpoint that fits in memory is read buffered (faster cold on the development VM, and warm after)
        LoadResult coldSmall = load(model, "auto", 1 << 20);
        assertThat(coldSmall.report().engine()).isEqualTo("pread x2");
        assertThat(coldSmall.arena()).isEqualTo(buffered.arena());
        assertThat(warm.arena()).isEqualTo(buffered.arena());
        // the same files as part of a checkpoint larger than the page cache: cold ones with O_DIRECT, warm ones not
        for (Path f : shards(model)) {
            evict(f);
        }
        Path shard = model.resolve(SafetensorsWriter.shardName(0, 2));
        try (FileSource s = LocalIo.AUTO.open(shard, new java.util.HashSet<>(), true)) {
            assertThat(s.direct()).isTrue();
        }
        try (FileSource s = LocalIo.AUTO.open(shard, new java.util.HashSet<>(), false)) {
            assertThat(s.direct()).isFalse();
        }
        load(model, "buffered", 1 << 20); // warm again
        try (FileSource s = LocalIo.AUTO.open(shard, new java.util.HashSet<>(), true)) {
            assertThat(s.direct()).isFalse();
        }
    }

    static List<Path> shards(Path model) throws IOException {
        try (Stream<Path> s = Files.list(model)) {
            return s.filter(f -> f.toString().endsWith(".safetensors")).toList();
        }
    }

    @Test
    void residencyOfAFileWrittenJustNowIsSeen() {
        assertThat(PageCache.residentFraction(file)).isPresent();
        assertThat(PageCache.residentFraction(file).getAsDouble()).isBetween(0.0, 1.0);
    }

    // ---- a file system without O_DIRECT ----

    /** A writable directory on a file system that refuses O_DIRECT (ramfs, or tmpfs before Linux 6.6), or skip. */
    static Path noDirectDir() throws IOException {
        List<String> tried = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of("/proc/mounts"))) {
            String[] f = line.split(" ");
            if (f.length < 3 || !(f[2].equals("ramfs") || f[2].equals("tmpfs"))) {
                continue;
            }
            Path mount = Path.of(f[1].replace("\\040", " "));
            try {
                Path d = Files.createTempDirectory(mount, "wl-nodirect");
                Path probe = Files.write(d.resolve("probe"), new byte[1]);
                try (FileChannel ch = FileChannel.open(probe, StandardOpenOption.READ, ExtendedOpenOption.DIRECT)) {
                    tried.add(mount + " (" + f[2] + ": O_DIRECT works)");
                } catch (IOException refused) {
                    return d;
                }
                Files.delete(probe);
                Files.delete(d);
            } catch (IOException | SecurityException e) {
                tried.add(mount + " (" + f[2] + ": " + e.getMessage() + ")");
            }
        }
        Assumptions.assumeTrue(false, "no writable file system here refuses O_DIRECT; tried " + tried);
        return null;
    }

    @Test
    void aFileSystemWithoutODirectIsAnErrorNamingTheFileAndSettingUnlessAuto() throws IOException {
        Path d = noDirectDir();
        try {
            Path p = d.resolve("m.safetensors");
            SafetensorsWriter.write(p, List.of(SafetensorsWriter.Tensor.of(TensorSpec.of("a", DType.U8, 5000),
                    new byte[5000])), Map.of());
            assertThatThrownBy(() -> load(p, "direct", 4096))
                    .isInstanceOf(WeightLoaderException.class).hasMessageContaining(p.toString())
                    .hasMessageContaining("weight-loader.backends.local.io").hasMessageContaining("O_DIRECT");
            LoadResult auto = load(p, "auto", 4096);
            assertThat(auto.report().engine()).isEqualTo("pread x2");
            assertThat(auto.report().tensors()).extracting(TensorReport::name).containsExactly("a");
        } finally {
            try (Stream<Path> s = Files.walk(d)) {
                s.sorted(Comparator.reverseOrder()).forEach(x -> x.toFile().delete());
            }
        }
    }
}
