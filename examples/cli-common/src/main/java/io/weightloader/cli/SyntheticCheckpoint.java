package io.weightloader.cli;

import io.weightloader.backend.local.SafetensorsCheckpoint;
import io.weightloader.backend.local.SafetensorsWriter;
import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Writes a {@link SyntheticLlama} checkpoint into a directory, as {@code weightloader generate} does: one
 * {@code model.safetensors}, or shards with {@code model.safetensors.index.json}, each with fixed metadata (so the same
 * arguments give the same bytes), and a Hugging Face {@code config.json}. It never mixes with a checkpoint already in
 * the directory: it refuses, or, asked to replace it, removes that checkpoint's files (and only those) first.
 */
public final class SyntheticCheckpoint {
    private SyntheticCheckpoint() {
    }

    /**
     * What {@link #write} wrote.
     *
     * @param dir     the directory written into
     * @param model   the model's shape
     * @param seed    the seed of its bytes
     * @param shards  files the tensors were written into (1: {@code model.safetensors})
     * @param tensors tensors written
     * @param seconds time taken by the writing (not by clearing an old checkpoint)
     */
    public record Written(Path dir, SyntheticLlama model, long seed, int shards, int tensors, double seconds) {
        /** What holds the tensors, in words: {@code model.safetensors}, or {@code N shards + <index>}. */
        public String files() {
            return shards == 1 ? "model.safetensors" : shards + " shards + " + SafetensorsCheckpoint.INDEX;
        }

        /** Bytes of all tensors. */
        public long totalBytes() {
            return model.totalBytes();
        }
    }

    /**
     * Writes a checkpoint of about {@code size} bytes of tensors into {@code dir} (created if missing).
     *
     * @param replace remove a checkpoint already in {@code dir} (its {@code *.safetensors} files and index; nothing
     *     else) instead of refusing
     * @throws IllegalArgumentException before anything is written or removed, when an argument cannot be honoured
     *     (a size below the smallest model, shards below 1 or above the model's tensors, a {@code dir} that is not a
     *     directory, a checkpoint already there without {@code replace}); the message names the argument as
     *     {@code generate} spells it ({@code --size}, {@code --shards}, {@code --out}, {@code --force})
     */
    public static Written write(Path dir, long size, int shards, long seed, boolean replace) throws IOException {
        if (shards < 1) {
            throw new IllegalArgumentException("--shards must be at least 1, got " + shards);
        }
        SyntheticLlama model = SyntheticLlama.forSize(size);
        List<SafetensorsWriter.Tensor> tensors = model.tensors(seed);
        if (shards > tensors.size()) {
            throw new IllegalArgumentException("--shards " + shards + " is more than the " + tensors.size()
                    + " tensors of a model of this size");
        }
        clearOldCheckpoint(dir, replace);
        Files.createDirectories(dir);
        long t0 = System.nanoTime();
        Map<String, String> metadata = new LinkedHashMap<>(); // fixed order: the same bytes on every run
        metadata.put("format", "pt");
        metadata.put("generator", "weightloader generate");
        metadata.put("seed", Long.toString(seed));
        if (shards == 1) {
            SafetensorsWriter.write(dir.resolve("model.safetensors"), tensors, metadata);
        } else {
            SafetensorsWriter.writeSharded(dir, SafetensorsWriter.split(tensors, shards), metadata);
        }
        CliJson.MAPPER.writeValue(dir.resolve("config.json").toFile(), model.configJson());
        double secs = (System.nanoTime() - t0) / 1e9;
        return new Written(dir, model, seed, shards, tensors.size(), secs);
    }

    /** Refuses to mix with an existing checkpoint, or with {@code replace} removes its files (and only those). */
    private static void clearOldCheckpoint(Path dir, boolean replace) throws IOException {
        if (!Files.isDirectory(dir)) {
            if (Files.exists(dir)) {
                throw new IllegalArgumentException("--out " + dir + " exists and is not a directory");
            }
            return;
        }
        List<Path> old = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "*.safetensors")) {
            ds.forEach(old::add);
        }
        Path index = dir.resolve(SafetensorsCheckpoint.INDEX);
        if (Files.exists(index)) {
            old.add(index);
        }
        if (old.isEmpty()) {
            return;
        }
        if (!replace) {
            throw new IllegalArgumentException("--out " + dir + " already holds a checkpoint ("
                    + old.get(0).getFileName() + (old.size() > 1 ? " and " + (old.size() - 1) + " more" : "")
                    + "); choose another directory or pass --force to replace it");
        }
        for (Path p : old) {
            Files.delete(p);
        }
    }
}
