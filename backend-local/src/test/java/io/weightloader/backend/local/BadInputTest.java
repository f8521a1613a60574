package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMismatchException;
import io.weightloader.api.TensorSpec;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Every kind of malformed checkpoint gives one clear error naming the file (and tensor); nothing loads. */
class BadInputTest {
    @TempDir
    Path dir;

    /** Writes a safetensors file from raw header bytes and a data section. */
    Path file(String name, byte[] header, int dataBytes) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(8 + header.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(header.length).put(header);
        Path p = dir.resolve(name);
        Files.write(p, b.array());
        return p;
    }

    Path file(String name, String header, int dataBytes) throws IOException {
        return file(name, header.getBytes(StandardCharsets.UTF_8), dataBytes);
    }

    static final String GOOD = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            + "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}";

    void rejects(Path p, String... fragments) {
        var assertion = assertThatThrownBy(() -> SafetensorsCheckpoint.open(p))
                .isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining(p.getFileName().toString());
        for (String f : fragments) {
            assertion.hasMessageContaining(f);
        }
        // and through the public entry point: the load never starts, nothing is reported as loaded
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseMap(Map.of("weight-loader.model-path",
                p.toString())))).isInstanceOf(SafetensorsFormatException.class);
    }

    @Test
    void theLocalBackendNeedsAModelPath() {
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("weight-loader {}")))
                .hasMessageContaining("weight-loader.model-path");
    }

    @Test
    void aGoodFileParses() throws IOException {
        Path p = file("good.safetensors", GOOD, 16);
        assertThat(SafetensorsCheckpoint.open(p).specs()).containsExactly(
                TensorSpec.of("a", DType.F32, 2), TensorSpec.of("b", DType.BF16, 2, 2));
    }

    @Test
    void truncatedBeforeTheHeaderLength() throws IOException {
        Path p = dir.resolve("short.safetensors");
        Files.write(p, new byte[] {1, 2, 3});
        rejects(p, "truncated");
    }

    @Test
    void headerLengthPastTheEndOfTheFile() throws IOException {
        Path p = dir.resolve("past.safetensors");
        ByteBuffer b = ByteBuffer.allocate(20).order(ByteOrder.LITTLE_ENDIAN).putLong(500);
        Files.write(p, b.array());
        rejects(p, "runs past the end of the file");
    }

    @Test
    void absurdHeaderLength() throws IOException {
        Path p = dir.resolve("huge.safetensors");
        ByteBuffer b = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(-5L);
        Files.write(p, b.array());
        rejects(p, "absurdly large");
        Path q = dir.resolve("huge2.safetensors");
        Files.write(q, ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(1L << 40).array());
        rejects(q, "absurdly large");
        // the reference's limit, 100,000,000 bytes (not 100 MiB): a header it refuses is refused here too
        Path r = dir.resolve("huge3.safetensors");
        Files.write(r, ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(100_000_001L).array());
        rejects(r, "absurdly large", "limit 100000000 bytes");
    }

    @Test
    void nonJsonHeader() throws IOException {
        rejects(file("nojson.safetensors", "{\"a\": [1, 2", 0), "not valid JSON");
        rejects(file("array.safetensors", "[1, 2, 3]", 0), "not a JSON object");
    }

    @Test
    void aKeyGivenTwiceIsRefusedAsAmbiguousNamingIt() throws IOException {
        // the reference keeps the last entry (serde_json into a map); which one the writer meant cannot be known
        String u8 = "{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}";
        rejects(file("dup.safetensors", "{\"a\":" + u8 + ",\"a\":" + u8 + "}", 4),
                "tensor 'a'", "listed twice in the header", "ambiguous");
        rejects(file("dup-meta.safetensors", "{\"__metadata__\":{\"format\":\"pt\",\"format\":\"np\"},\"a\":" + u8
                + "}", 4), "key 'format' appears twice in '__metadata__'", "ambiguous");
        rejects(file("dup-field.safetensors", "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"I8\",\"shape\":[4],"
                + "\"data_offsets\":[0,4]}}", 4), "key 'dtype' appears twice in 'a'");
        Path d = sharded("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"a\":\"s2.safetensors\"}}");
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining(SafetensorsCheckpoint.INDEX).hasMessageContaining("tensor 'a'")
                .hasMessageContaining("listed twice in weight_map").hasMessageContaining("ambiguous");
    }

    @Test
    void fieldsATensorEntryHasBeyondTheFormatAreIgnoredAsTheReferenceIgnoresThem() throws IOException {
        // serde ignores unknown fields of TensorInfo: a file the reference reads with them loads here, byte-exact
        Path p = file("extra.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4],"
                + "\"crc32\":\"1a2b\",\"x\":{\"y\":[1]}}}", 4);
        byte[] all = Files.readAllBytes(p);
        all[all.length - 4] = 1;
        all[all.length - 1] = 9;
        Files.write(p, all);
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(p);
        assertThat(cp.specs()).containsExactly(TensorSpec.of("w", DType.U8, 4));
        try (LocalBackend b = new LocalBackend(cp, 2, 4096, false); HostMemory m = HostMemory.allocate(4)) {
            b.load(LoadRequest.of(List.of(new TensorDestination(TensorSpec.of("w", DType.U8, 4), m.slice(0, 4)))));
            byte[] got = new byte[4];
            m.byteBuffer(0, 4).get(got);
            assertThat(got).containsExactly(1, 0, 0, 9);
        }
    }

    @Test
    void anEmptyTensorNameIsRefusedSayingWhy() throws IOException {
        // the reference reads "" as a name; no PyTorch module can hold it, and an empty name means none in a manifest
        rejects(file("empty-name.safetensors", "{\"\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4),
                "empty name", "no PyTorch module can hold");
    }

    @Test
    void nonUtf8Header() throws IOException {
        byte[] h = "{\"\u00e9\":1}".getBytes(StandardCharsets.ISO_8859_1);
        rejects(file("latin1.safetensors", h, 0), "not valid UTF-8");
    }

    @Test
    void unknownDtype() throws IOException {
        rejects(file("dtype.safetensors", "{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2),
                "'w'", "unknown dtype 'Q4_K'");
    }

    @Test
    void rangesOutOfBounds() throws IOException {
        rejects(file("oob.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[64],\"data_offsets\":[0,64]}}", 16),
                "'w'", "out of bounds");
    }

    @Test
    void reversedRange() throws IOException {
        rejects(file("rev.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,4]}}", 8),
                "'w'", "reversed");
    }

    @Test
    void overlappingRanges() throws IOException {
        rejects(file("overlap.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                + "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", 12), "'b'", "overlaps tensor 'a'");
    }

    @Test
    void holesAndTrailingBytes() throws IOException {
        rejects(file("hole.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8),
                "'a'", "hole");
        rejects(file("trail.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 9),
                "trailing bytes");
    }

    @Test
    void shapeAndSizeDisagree() throws IOException {
        rejects(file("size.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8),
                "'w'", "12 bytes", "cover 8");
    }

    @Test
    void negativeDimension() throws IOException {
        rejects(file("neg.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,0]}}", 0),
                "'w'", "negative dimension");
    }

    @Test
    void malformedEntries() throws IOException {
        rejects(file("noshape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,0]}}", 0), "'w'", "shape");
        rejects(file("badoff.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0]}}", 0),
                "'w'", "data_offsets");
        rejects(file("frac.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,0]}}", 0),
                "'w'", "non-integer");
    }

    Path sharded(String index) throws IOException {
        Path d = Files.createDirectories(dir.resolve("ck"));
        Files.copy(file("s1.safetensors", GOOD, 16), d.resolve("s1.safetensors"));
        Files.writeString(d.resolve(SafetensorsCheckpoint.INDEX), index);
        return d;
    }

    @Test
    void indexNamingAMissingShard() throws IOException {
        Path d = sharded("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}");
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d))
                .hasMessageContaining(SafetensorsCheckpoint.INDEX).hasMessageContaining("'b'")
                .hasMessageContaining("s2.safetensors").hasMessageContaining("does not exist");
    }

    @Test
    void indexNamingATensorAbsentFromItsShard() throws IOException {
        Path d = sharded("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s1.safetensors\"}}");
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d))
                .hasMessageContaining(SafetensorsCheckpoint.INDEX).hasMessageContaining("'c'")
                .hasMessageContaining("does not contain it");
    }

    @Test
    void shardTensorMissingFromTheIndex() throws IOException {
        Path d = sharded("{\"weight_map\":{\"a\":\"s1.safetensors\"}}");
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d))
                .hasMessageContaining("s1.safetensors").hasMessageContaining("'b'")
                .hasMessageContaining("does not list it");
    }

    @Test
    void shardPathsThatEscapeTheDirectory() throws IOException {
        Files.copy(file("outside.safetensors", GOOD, 16), dir.resolve("outside2.safetensors"));
        for (String bad : List.of("../outside2.safetensors", "/etc/passwd", "sub/../../outside2.safetensors")) {
            Path d = sharded("{\"weight_map\":{\"a\":\"" + bad + "\"}}");
            assertThatThrownBy(() -> SafetensorsCheckpoint.open(d)).as(bad)
                    .isInstanceOf(SafetensorsFormatException.class)
                    .hasMessageContaining("escapes the checkpoint directory");
            Files.walk(d).sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    @Test
    void indexThatIsNotAnObject() throws IOException {
        Path d = sharded("[\"s1.safetensors\"]");
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d)).hasMessageContaining("not a JSON object");
        Files.writeString(d.resolve(SafetensorsCheckpoint.INDEX), "{\"metadata\":{}}");
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d)).hasMessageContaining("weight_map");
    }

    @Test
    void anIndexWithAnEmptyWeightMapBesideShardsIsRefusedNamingHowManyShardsThereAre() throws IOException {
        // it loaded as a checkpoint of no tensors
        Path d = sharded("{\"metadata\":{\"total_size\":16},\"weight_map\":{}}");
        file("s2.safetensors", GOOD, 16);
        Files.copy(dir.resolve("s2.safetensors"), d.resolve("s2.safetensors"));
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining(d.resolve(SafetensorsCheckpoint.INDEX).toString())
                .hasMessageContaining("weight_map is empty").hasMessageContaining("2 *.safetensors files");
        // and whatever allow-empty says: shards beside an empty index are a damaged checkpoint, not an empty one
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseMap(Map.of("weight-loader.model-path",
                d.toString(), "weight-loader.backends.local.allow-empty", true))))
                .hasMessageContaining("weight_map is empty");
    }

    @Test
    void anIndexWhoseTotalSizeDisagreesWithItsShardsIsRefusedNamingBothSums() throws IOException {
        // shard s2 left out of the weight_map: without total_size nothing tells the index lost it
        Path d = sharded("{\"metadata\":{\"total_size\":32},\"weight_map\":{\"a\":\"s1.safetensors\","
                + "\"b\":\"s1.safetensors\"}}");
        Files.write(d.resolve("s2.safetensors"), Files.readAllBytes(file("s2.safetensors",
                "{\"c\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}", 16)));
        long fileBytes = Files.size(d.resolve("s1.safetensors"));
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining(d.resolve(SafetensorsCheckpoint.INDEX).toString())
                .hasMessageContaining("total_size is 32 bytes").hasMessageContaining("hold 16 bytes of tensors")
                .hasMessageContaining(fileBytes + " bytes of files");
        for (String bad : List.of("1e400", "-1", "16.5", "\"16\"")) {
            Files.writeString(d.resolve(SafetensorsCheckpoint.INDEX), "{\"metadata\":{\"total_size\":" + bad
                    + "},\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}");
            assertThatThrownBy(() -> SafetensorsCheckpoint.open(d)).as(bad)
                    .isInstanceOf(SafetensorsFormatException.class).hasMessageContaining("total_size");
        }
        // what writers mean by it: the tensors' bytes (Hugging Face, as a float by old transformers), or the shard
        // files' bytes (mlx-lm); absent or null, nothing is compared
        for (String good : List.of("16", "16.0", String.valueOf(fileBytes), "null")) {
            Files.writeString(d.resolve(SafetensorsCheckpoint.INDEX), "{\"metadata\":{\"total_size\":" + good
                    + "},\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}");
            assertThat(SafetensorsCheckpoint.open(d).tensors()).as(good).containsOnlyKeys("a", "b");
        }
    }

    @Test
    void aCheckpointWithNoTensorsIsRefusedUnlessAllowEmptyIsSet() throws IOException {
        Path single = file("empty.safetensors", "{}      ", 0);
        Path indexed = Files.createDirectories(dir.resolve("empty-index"));
        Files.writeString(indexed.resolve(SafetensorsCheckpoint.INDEX), "{\"weight_map\":{}}");
        for (Path p : List.of(single, indexed)) {
            assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseMap(Map.of("weight-loader.model-path",
                    p.toString())))).as(p.toString()).isInstanceOf(SafetensorsFormatException.class)
                    .hasMessageContaining(p.toString()).hasMessageContaining("no tensors")
                    .hasMessageContaining("weight-loader.backends.local.allow-empty");
            try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(Map.of("weight-loader.model-path",
                    p.toString(), "weight-loader.backends.local.allow-empty", true)))) {
                assertThat(loader.available()).as(p.toString()).isEmpty();
            }
        }
    }

    @Test
    void aFileTruncatedAfterOpeningFailsTheLoad() throws IOException {
        Path p = file("shrinks.safetensors", GOOD, 16);
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(p);
        byte[] all = Files.readAllBytes(p);
        Files.write(p, java.util.Arrays.copyOf(all, all.length - 6));
        try (LocalBackend b = new LocalBackend(cp, 2, 4096, false); HostMemory m = HostMemory.allocate(16)) {
            assertThatThrownBy(() -> b.load(LoadRequest.of(List.of(
                    new TensorDestination(TensorSpec.of("a", DType.F32, 2), m.slice(0, 8)),
                    new TensorDestination(TensorSpec.of("b", DType.BF16, 2, 2), m.slice(8, 8))))))
                    .hasMessageContaining("shrinks.safetensors").hasMessageContaining("'b'");
        }
    }

    @Test
    void aZeroCopyLoadOfAFileTruncatedUnderItNamesTheFileNotAnUnsafeAccessFault() throws IOException {
        Path p = file("shrinks-mapped.safetensors", GOOD, 16);
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(p);
        byte[] all = Files.readAllBytes(p);
        Files.write(p, java.util.Arrays.copyOf(all, all.length - 6));
        try (LocalBackend b = new LocalBackend(cp, 2, 4096, true)) {
            assertThatThrownBy(() -> b.map(cp.tensors().values().stream().map(SafetensorsCheckpoint.Located::spec)
                    .toList(), true))
                    .hasMessageContaining("shrinks-mapped.safetensors").hasMessageContaining("truncated")
                    .hasMessageNotContaining("InternalError");
        }
    }

    @Test
    void aZeroCopyLoadOfAFileCutShortWithinItsLastPageIsRefusedNotHashedWithZerosForTheLostBytes() throws IOException {
        // bytes lost within the last page read as zeros through the mapping instead of faulting: only the size tells
        Path p = dir.resolve("cut-tail.safetensors");
        byte[] data = new byte[10_000];
        java.util.Arrays.fill(data, (byte) 7);
        SafetensorsWriter.write(p, List.of(SafetensorsWriter.Tensor.of(TensorSpec.of("w", DType.U8, 10_000), data)),
                Map.of());
        long whole = Files.size(p);
        long cut = whole - 3;
        assertThat((whole - 1) / 4096).as("the cut stays within the last page").isEqualTo(cut / 4096);
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(p);
        try (LocalBackend b = new LocalBackend(cp, 2, 4096, true)) {
            b.afterMapping = () -> {
                try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(p,
                        java.nio.file.StandardOpenOption.WRITE)) {
                    ch.truncate(cut);
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            };
            assertThatThrownBy(() -> b.map(cp.specs(), true)).isInstanceOf(SafetensorsFormatException.class)
                    .hasMessageContaining(p.toString()).hasMessageContaining(cut + " bytes now")
                    .hasMessageContaining("needs " + whole).hasMessageContaining("truncated");
        }
    }

    @Test
    void expectationsThatDifferAreAllListed() throws IOException {
        Path p = file("m.safetensors", GOOD, 16);
        try (LocalBackend b = new LocalBackend(SafetensorsCheckpoint.open(p), 2, 4096, false);
             HostMemory m = HostMemory.allocate(64)) {
            assertThatThrownBy(() -> b.load(LoadRequest.of(List.of(
                    new TensorDestination(TensorSpec.of("a", DType.F16, 2), m.slice(0, 8)),
                    new TensorDestination(TensorSpec.of("zzz", DType.F32, 1), m.slice(8, 8))))))
                    .isInstanceOfSatisfying(TensorMismatchException.class, e -> {
                        assertThat(e.missing()).containsExactly("zzz F32[1]");
                        assertThat(e.extra()).containsExactly("b BF16[2, 2]");
                        assertThat(e.mismatched()).hasSize(1);
                    })
                    .hasMessageContaining("m.safetensors");
        }
    }

    /** mkfifo, where the machine has it; the test is skipped, saying why, where it does not. */
    private Path fifo(Path p) throws Exception {
        Process mk = new ProcessBuilder("mkfifo", p.toString()).redirectErrorStream(true).start();
        org.junit.jupiter.api.Assumptions.assumeTrue(mk.waitFor(10, java.util.concurrent.TimeUnit.SECONDS)
                && mk.exitValue() == 0, "mkfifo is not available here");
        return p;
    }

    @Test
    @org.junit.jupiter.api.Timeout(20)
    void aFifoNamedLikeACheckpointIsRefusedNotOpened() throws Exception {
        // opening a FIFO blocks until a writer comes: inspect and load hung for ever on one
        Path lone = fifo(dir.resolve("model.safetensors"));
        rejects(lone, "FIFO", "not a regular file");
        Path shards = Files.createDirectories(dir.resolve("unindexed"));
        file("unindexed/a.safetensors", GOOD, 16);
        Path pipe = fifo(shards.resolve("b.safetensors"));
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(shards)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining(pipe.toString()).hasMessageContaining("FIFO");
    }

    @Test
    @org.junit.jupiter.api.Timeout(20)
    void aShardThatIsADirectoryOrAFifoIsNamedAsSuch() throws Exception {
        Path d = sharded("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}");
        Files.createDirectory(d.resolve("s2.safetensors"));
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d)).hasMessageContaining("s2.safetensors")
                .hasMessageContaining("is a directory");
        Files.delete(d.resolve("s2.safetensors"));
        fifo(d.resolve("s2.safetensors"));
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d)).hasMessageContaining("s2.safetensors")
                .hasMessageContaining("FIFO");
    }

    @Test
    void trailingContentAfterTheHeaderOrTheIndexIsRefused() throws IOException {
        rejects(file("trailing.safetensors", GOOD + " {\"b\": garbage", 16), "not valid JSON");
        // spaces after the header are how writers pad it to 8 bytes: allowed
        assertThat(SafetensorsCheckpoint.open(file("padded.safetensors", GOOD + "   ", 16)).tensors()).hasSize(2);
        Path d = sharded("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}} {\"x\": 1}");
        assertThatThrownBy(() -> SafetensorsCheckpoint.open(d)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining(SafetensorsCheckpoint.INDEX).hasMessageContaining("not valid JSON");
    }

    @Test
    void permissionDeniedSaysSo() throws IOException {
        assertThat(SafetensorsFile.cannotRead(new java.nio.file.AccessDeniedException("/m/x.safetensors")))
                .contains("permission denied");
        Path p = file("locked.safetensors", GOOD, 16);
        Files.setPosixFilePermissions(p, java.util.Set.of());
        org.junit.jupiter.api.Assumptions.assumeFalse(Files.isReadable(p),
                "this user reads files whatever their mode (root): permission cannot be denied here");
        rejects(p, "permission denied");
    }

    @Test
    void shardsSymlinkedOutsideTheDirectoryLoadAsHuggingFacesCacheLaysThemOut() throws IOException {
        // snapshots/<rev>/model-0000x.safetensors -> ../../blobs/<hash>: allowed on purpose
        Path blobs = Files.createDirectories(dir.resolve("blobs"));
        Path snapshot = Files.createDirectories(dir.resolve("snapshots").resolve("rev"));
        Path blob = file("blobs/abc", GOOD, 16);
        Files.createSymbolicLink(snapshot.resolve("model.safetensors"), blob);
        assertThat(SafetensorsCheckpoint.open(snapshot).tensors()).containsOnlyKeys("a", "b");
        assertThat(blobs).exists();
    }
}
