package io.weightloader.backend.local;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.weightloader.api.TensorSpec;
import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * A checkpoint: one safetensors file, or a directory of shards described by
 * {@code model.safetensors.index.json} (or, without an index, every {@code *.safetensors} file in it).
 *
 * <p>Index checks: a JSON object with a {@code weight_map} of tensor name to shard file; shard names must
 * stay inside the directory (no absolute paths, no {@code ..}); every named shard must exist; every tensor of
 * the index must be in its shard, and every tensor of a shard must be in the index; an empty weight_map beside
 * shard files is refused, and {@code metadata.total_size}, when present, must match the shards.
 *
 * <p>A checkpoint with no tensors opens here; the local backend refuses it unless
 * {@code weight-loader.backends.local.allow-empty} is set.
 */
public final class SafetensorsCheckpoint {
    public static final String INDEX = "model.safetensors.index.json";
    private static final long MAX_INDEX_BYTES = 64L << 20;
    private static final ObjectMapper JSON = SafetensorsFile.JSON;

    /** One tensor and the file that holds it. */
    public record Located(SafetensorsFile file, SafetensorsFile.Entry entry) {
        public TensorSpec spec() {
            return entry.spec();
        }

        /** Absolute offset of the tensor's first byte in its file. */
        public long fileOffset() {
            return file.dataStart() + entry.begin();
        }
    }

    private final Path root;
    private final List<SafetensorsFile> files;
    private final Map<String, Located> tensors;

    private SafetensorsCheckpoint(Path root, List<SafetensorsFile> files, Map<String, Located> tensors) {
        this.root = root;
        this.files = files;
        this.tensors = tensors;
    }

    public static SafetensorsCheckpoint open(Path path) {
        if (!Files.isDirectory(path)) {
            SafetensorsFile f = SafetensorsFile.read(path); // names what it is when not a regular file
            Map<String, Located> t = new LinkedHashMap<>();
            f.entries().values().forEach(e -> t.put(e.spec().name(), new Located(f, e)));
            return new SafetensorsCheckpoint(path, List.of(f), t);
        }
        Path index = path.resolve(INDEX);
        if (!Files.exists(index, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
            return openDirectory(path);
        }
        String notRegular = SafetensorsFile.notARegularFile(index);
        if (notRegular != null) {
            throw new SafetensorsFormatException(index, notRegular);
        }
        return openIndexed(path, index);
    }

    private static SafetensorsCheckpoint openDirectory(Path dir) {
        List<Path> shardPaths = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "*.safetensors")) {
            ds.forEach(shardPaths::add);
        } catch (IOException e) {
            throw new SafetensorsFormatException(dir, "cannot list directory: " + e.getMessage(), e);
        }
        if (shardPaths.isEmpty()) {
            throw new SafetensorsFormatException(dir, "no " + INDEX + " and no *.safetensors files");
        }
        shardPaths.sort(null);
        List<SafetensorsFile> files = new ArrayList<>();
        Map<String, Located> tensors = new LinkedHashMap<>();
        for (Path p : shardPaths) {
            SafetensorsFile f = SafetensorsFile.read(p);
            files.add(f);
            for (SafetensorsFile.Entry e : f.entries().values()) {
                Located prev = tensors.putIfAbsent(e.spec().name(), new Located(f, e));
                if (prev != null) {
                    throw new SafetensorsFormatException(p, e.spec().name(), "also present in "
                            + prev.file().path() + " (without an index the owner is ambiguous)");
                }
            }
        }
        return new SafetensorsCheckpoint(dir, List.copyOf(files), tensors);
    }

    private static SafetensorsCheckpoint openIndexed(Path dir, Path index) {
        JsonNode root;
        try {
            if (Files.size(index) > MAX_INDEX_BYTES) {
                throw new SafetensorsFormatException(index, "index is larger than " + MAX_INDEX_BYTES + " bytes");
            }
            root = JSON.readTree(Files.readAllBytes(index));
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            SafetensorsFile.Duplicate d = SafetensorsFile.Duplicate.of(e);
            if (d != null && "weight_map".equals(d.in())) {
                throw new SafetensorsFormatException(index, d.key(), "is listed twice in weight_map; Python's json"
                        + " (transformers) keeps the last, but which shard the writer meant is ambiguous", e);
            }
            if (d != null) {
                throw new SafetensorsFormatException(index, d.describe("index") + "; which value is meant is ambiguous",
                        e);
            }
            throw new SafetensorsFormatException(index, "index is not valid JSON: " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new SafetensorsFormatException(index, SafetensorsFile.cannotRead(e), e);
        }
        if (root == null || !root.isObject()) {
            throw new SafetensorsFormatException(index, "index is not a JSON object");
        }
        JsonNode weightMap = root.get("weight_map");
        if (weightMap == null || !weightMap.isObject()) {
            throw new SafetensorsFormatException(index, "index has no weight_map object");
        }
        if (weightMap.isEmpty()) {
            int shards = countShardFiles(dir);
            if (shards > 0) {
                throw new SafetensorsFormatException(index, "the index's weight_map is empty, but the directory holds "
                        + shards + " *.safetensors file" + (shards == 1 ? "" : "s")
                        + ": the index is damaged or does not belong to them; nothing was loaded");
            }
        }
        Path base = dir.toAbsolutePath().normalize();
        Map<String, String> tensorToShard = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = weightMap.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!e.getValue().isTextual()) {
                throw new SafetensorsFormatException(index, "weight_map entry of '" + e.getKey()
                        + "' is not a file name");
            }
            tensorToShard.put(e.getKey(), e.getValue().textValue());
        }
        Map<String, SafetensorsFile> shards = new TreeMap<>();
        for (Map.Entry<String, String> e : tensorToShard.entrySet()) {
            String shard = e.getValue();
            if (!shards.containsKey(shard)) {
                Path p = resolveShard(index, base, shard, e.getKey());
                shards.put(shard, SafetensorsFile.read(p));
            }
        }
        Map<String, Located> tensors = new LinkedHashMap<>();
        for (Map.Entry<String, String> e : tensorToShard.entrySet()) {
            SafetensorsFile f = shards.get(e.getValue());
            SafetensorsFile.Entry entry = f.entries().get(e.getKey());
            if (entry == null) {
                throw new SafetensorsFormatException(index, e.getKey(), "the index places it in " + e.getValue()
                        + ", but that shard does not contain it");
            }
            tensors.put(e.getKey(), new Located(f, entry));
        }
        for (SafetensorsFile f : shards.values()) {
            for (String name : f.entries().keySet()) {
                if (!listedIn(tensorToShard, name, f, base)) {
                    throw new SafetensorsFormatException(f.path(), name, "is in the shard but the index "
                            + index.getFileName() + " does not list it there");
                }
            }
        }
        checkTotalSize(index, root.get("metadata"), shards.values());
        return new SafetensorsCheckpoint(dir, List.copyOf(shards.values()), tensors);
    }

    /**
     * {@code metadata.total_size}, when the index has one, must agree with the shards it names, so that an index that
     * lost entries (whole shards left out of its weight_map) is not loaded as a smaller model. Writers mean one of two
     * things by it: Hugging Face's ({@code huggingface_hub}, {@code transformers}, and this project's writer) the bytes
     * of tensor data, mlx-lm's and many conversion scripts' the bytes of the shard files, headers included. Either is
     * accepted; any other value is refused, naming both sums (docs/SECURITY.md, "Hostile input").
     */
    private static void checkTotalSize(Path index, JsonNode metadata, java.util.Collection<SafetensorsFile> shards) {
        if (metadata == null || !metadata.isObject()) {
            return;
        }
        JsonNode total = metadata.get("total_size");
        if (total == null || total.isNull()) {
            return;
        }
        if (!total.isNumber()) {
            throw new SafetensorsFormatException(index, "metadata.total_size is " + total
                    + ", not a number of bytes");
        }
        long tensorBytes = 0;
        long fileBytes = 0;
        for (SafetensorsFile f : shards) {
            fileBytes += f.fileSize();
            for (SafetensorsFile.Entry e : f.entries().values()) {
                tensorBytes += e.bytes();
            }
        }
        if (!total.isFloatingPointNumber() || Double.isFinite(total.doubleValue())) { // 1e400 has no decimal value
            java.math.BigDecimal declared = total.decimalValue();
            if (declared.compareTo(java.math.BigDecimal.valueOf(tensorBytes)) == 0
                    || declared.compareTo(java.math.BigDecimal.valueOf(fileBytes)) == 0) {
                return;
            }
        }
        throw new SafetensorsFormatException(index, "metadata.total_size is " + total.asText() + " bytes, but the "
                + shards.size() + " shard" + (shards.size() == 1 ? "" : "s") + " its weight_map names hold "
                + tensorBytes + " bytes of tensors (" + fileBytes + " bytes of files): tensors are missing from the"
                + " weight_map, or total_size is stale; correct or remove total_size if the shards are complete");
    }

    /** The {@code *.safetensors} files directly in {@code dir}. */
    private static int countShardFiles(Path dir) {
        int n = 0;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "*.safetensors")) {
            for (Path ignored : ds) {
                n++;
            }
        } catch (IOException e) {
            throw new SafetensorsFormatException(dir, "cannot list directory: " + e.getMessage(), e);
        }
        return n;
    }

    private static boolean listedIn(Map<String, String> tensorToShard, String name, SafetensorsFile f, Path base) {
        String shard = tensorToShard.get(name);
        return shard != null && base.resolve(shard).normalize().equals(f.path().toAbsolutePath().normalize());
    }

    private static Path resolveShard(Path index, Path base, String shard, String tensor) {
        if (shard.isEmpty() || shard.indexOf('\0') >= 0) {
            throw new SafetensorsFormatException(index, tensor, "shard name '" + shard + "' is not a file name");
        }
        Path rel;
        try {
            rel = Path.of(shard);
        } catch (RuntimeException e) {
            throw new SafetensorsFormatException(index, tensor, "shard name '" + shard + "' is not a file name");
        }
        Path p = base.resolve(rel).normalize();
        if (rel.isAbsolute() || !p.startsWith(base) || p.equals(base)) {
            throw new SafetensorsFormatException(index, tensor, "shard path '" + shard
                    + "' escapes the checkpoint directory " + base);
        }
        for (Path part : rel) {
            if (part.toString().equals("..")) {
                throw new SafetensorsFormatException(index, tensor, "shard path '" + shard
                        + "' escapes the checkpoint directory " + base);
            }
        }
        String notRegular = SafetensorsFile.notARegularFile(p);
        if (notRegular != null) {
            throw new SafetensorsFormatException(index, tensor, "names shard '" + shard + "', which " + notRegular);
        }
        return p;
    }

    public Path root() {
        return root;
    }

    public List<SafetensorsFile> files() {
        return files;
    }

    /** Tensors by name, in index (or file) order. */
    public Map<String, Located> tensors() {
        return tensors;
    }

    public List<TensorSpec> specs() {
        return tensors.values().stream().map(Located::spec).toList();
    }

    public long totalBytes() {
        return tensors.values().stream().mapToLong(l -> l.entry().bytes()).sum();
    }
}
