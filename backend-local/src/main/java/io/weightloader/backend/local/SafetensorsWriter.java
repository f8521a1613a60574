package io.weightloader.backend.local;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

/**
 * Writes safetensors files and sharded checkpoints, streaming each tensor's bytes from a callback so that
 * files of many GiB are written through one small buffer and never held in memory.
 *
 * <p>File layout, as the format defines it: an unsigned little-endian 64-bit header length N; N bytes of
 * UTF-8 JSON (an optional {@code __metadata__} string map, then each tensor's {@code dtype}, {@code shape}
 * and {@code data_offsets}), padded with spaces so that N is a multiple of 8; then the tensors' bytes,
 * contiguous, in the order given. A file is written to a temporary name next to its target and moved into
 * place only once complete, so a failed write never leaves a truncated checkpoint behind.
 *
 * <p>A sharded checkpoint is a directory of {@code model-0000i-of-0000N.safetensors} files plus
 * {@code model.safetensors.index.json} holding {@code "metadata": {"total_size": bytes}} and a
 * {@code "weight_map"} of tensor name to shard file, as Hugging Face writes it.
 */
public final class SafetensorsWriter {
    /** Size of the buffer tensor bytes are streamed through. */
    public static final int BUFFER_BYTES = 8 << 20;
    private static final ObjectMapper JSON = JsonMapper.builder().build();
    private static final ObjectMapper PRETTY = JsonMapper.builder().enable(SerializationFeature.INDENT_OUTPUT)
            .build();

    private SafetensorsWriter() {
    }

    /** Produces a tensor's bytes on demand. */
    @FunctionalInterface
    public interface TensorSource {
        /**
         * Puts the tensor's bytes {@code [offset, offset + buffer.remaining())} into {@code buffer}, filling
         * it to its limit. The writer asks for consecutive ranges, in order, from offset 0.
         */
        void fill(long offset, ByteBuffer buffer) throws IOException;
    }

    /** One tensor to write: what it is and where its bytes come from. */
    public record Tensor(TensorSpec spec, TensorSource source) {
        public Tensor {
            Objects.requireNonNull(spec, "spec is null");
            Objects.requireNonNull(source, "source is null");
        }

        /**
         * A tensor whose bytes are the remaining bytes of {@code data} (read from its current position; the
         * buffer itself is not modified).
         */
        public static Tensor of(TensorSpec spec, ByteBuffer data) {
            if (data.remaining() != spec.byteSize()) {
                throw new IllegalArgumentException(spec.describe() + " needs " + spec.byteSize()
                        + " bytes, the buffer holds " + data.remaining());
            }
            ByteBuffer src = data.duplicate();
            int start = src.position();
            return new Tensor(spec, (offset, buffer) -> {
                ByteBuffer piece = src.duplicate();
                int from = Math.toIntExact(start + offset);
                piece.position(from).limit(from + buffer.remaining());
                buffer.put(piece);
            });
        }

        /** A tensor whose bytes are {@code data}. */
        public static Tensor of(TensorSpec spec, byte[] data) {
            return of(spec, ByteBuffer.wrap(data));
        }
    }

    /** What a sharded write produced. */
    public record Sharded(Path index, List<Path> shards, long totalSize) {
    }

    /**
     * The padded header (without the 8-byte length) for {@code specs} laid out contiguously in order.
     *
     * @param metadata string metadata written as {@code __metadata__}; omitted when empty
     */
    public static byte[] header(List<TensorSpec> specs, Map<String, String> metadata) {
        ObjectNode root = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode meta = root.putObject("__metadata__");
            metadata.forEach(meta::put);
        }
        Set<String> names = new HashSet<>();
        long offset = 0;
        for (TensorSpec s : specs) {
            if (s.name().equals("__metadata__")) {
                throw new IllegalArgumentException("'__metadata__' is reserved and cannot name a tensor");
            }
            if (!names.add(s.name())) {
                throw new IllegalArgumentException("tensor '" + s.name() + "' is given twice");
            }
            ObjectNode t = root.putObject(s.name());
            t.put("dtype", s.dtype().safetensorsName());
            ArrayNode shape = t.putArray("shape");
            s.shape().forEach(shape::add);
            long end = offset + s.byteSize();
            t.putArray("data_offsets").add(offset).add(end);
            offset = end;
        }
        byte[] json;
        try {
            json = JSON.writeValueAsBytes(root);
        } catch (IOException e) {
            throw new IllegalStateException("cannot serialise a safetensors header", e);
        }
        int padded = (json.length + 7) & ~7;
        byte[] out = new byte[padded];
        System.arraycopy(json, 0, out, 0, json.length);
        for (int i = json.length; i < padded; i++) {
            out[i] = ' ';
        }
        return out;
    }

    /**
     * Writes one safetensors file.
     *
     * @return the file's size in bytes
     * @throws WeightLoaderException naming the file when writing fails (nothing is left at {@code file})
     */
    public static long write(Path file, List<Tensor> tensors, Map<String, String> metadata) {
        return write(file, tensors, metadata, ByteBuffer.allocateDirect(BUFFER_BYTES));
    }

    private static long write(Path file, List<Tensor> tensors, Map<String, String> metadata, ByteBuffer buffer) {
        byte[] header = header(tensors.stream().map(Tensor::spec).toList(), metadata);
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                    StandardOpenOption.TRUNCATE_EXISTING)) {
                ByteBuffer head = ByteBuffer.allocate(8 + header.length).order(ByteOrder.LITTLE_ENDIAN);
                head.putLong(header.length).put(header).flip();
                writeFully(ch, head);
                for (Tensor t : tensors) {
                    long bytes = t.spec().byteSize();
                    for (long off = 0; off < bytes; ) {
                        int n = (int) Math.min(buffer.capacity(), bytes - off);
                        buffer.clear().limit(n);
                        t.source().fill(off, buffer);
                        if (buffer.hasRemaining()) {
                            throw new WeightLoaderException("the source of tensor '" + t.spec().name()
                                    + "' left " + buffer.remaining() + " of " + n + " bytes unfilled at offset "
                                    + off);
                        }
                        buffer.flip();
                        writeFully(ch, buffer);
                        off += n;
                    }
                }
            }
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            return Files.size(file);
        } catch (IOException | RuntimeException e) {
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException ignored) {
                // the original failure is the one worth reporting
            }
            if (e instanceof WeightLoaderException w) {
                throw new WeightLoaderException(file + ": " + w.getMessage(), w);
            }
            throw new WeightLoaderException("cannot write " + file + ": " + e, e);
        }
    }

    private static void writeFully(FileChannel ch, ByteBuffer buf) throws IOException {
        while (buf.hasRemaining()) {
            ch.write(buf);
        }
    }

    /** Hugging Face's shard file name: {@code model-00001-of-00004.safetensors}. */
    public static String shardName(int index, int count) {
        return String.format("model-%05d-of-%05d.safetensors", index + 1, count);
    }

    /**
     * Writes a sharded checkpoint into {@code dir} (created if missing): one file per group of
     * {@code shards}, then the index.
     *
     * @param metadata written into every shard's {@code __metadata__}
     */
    public static Sharded writeSharded(Path dir, List<List<Tensor>> shards, Map<String, String> metadata) {
        if (shards.isEmpty()) {
            throw new IllegalArgumentException("a sharded checkpoint needs at least one shard");
        }
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new WeightLoaderException("cannot create " + dir + ": " + e, e);
        }
        ByteBuffer buffer = ByteBuffer.allocateDirect(BUFFER_BYTES);
        Map<String, String> weightMap = new LinkedHashMap<>();
        List<Path> files = new ArrayList<>();
        long total = 0;
        for (int i = 0; i < shards.size(); i++) {
            String name = shardName(i, shards.size());
            for (Tensor t : shards.get(i)) {
                if (weightMap.put(t.spec().name(), name) != null) {
                    throw new IllegalArgumentException("tensor '" + t.spec().name() + "' is given twice");
                }
                total += t.spec().byteSize();
            }
        }
        for (int i = 0; i < shards.size(); i++) {
            Path file = dir.resolve(shardName(i, shards.size()));
            write(file, shards.get(i), metadata, buffer);
            files.add(file);
        }
        ObjectNode index = PRETTY.createObjectNode();
        index.putObject("metadata").put("total_size", total);
        ObjectNode map = index.putObject("weight_map");
        weightMap.forEach(map::put);
        Path indexFile = dir.resolve(SafetensorsCheckpoint.INDEX);
        try {
            Path tmp = indexFile.resolveSibling(indexFile.getFileName() + ".tmp");
            PRETTY.writeValue(tmp.toFile(), index);
            Files.move(tmp, indexFile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new WeightLoaderException("cannot write " + indexFile + ": " + e, e);
        }
        return new Sharded(indexFile, List.copyOf(files), total);
    }

    /**
     * Splits tensors, keeping their order, into {@code count} groups of about equal byte size (each
     * non-empty), as a checkpoint's shards.
     */
    public static List<List<Tensor>> split(List<Tensor> tensors, int count) {
        if (count < 1 || (count > 1 && count > tensors.size())) {
            throw new IllegalArgumentException("cannot split " + tensors.size() + " tensors into " + count
                    + " non-empty shards");
        }
        long total = tensors.stream().mapToLong(t -> t.spec().byteSize()).sum();
        List<List<Tensor>> out = new ArrayList<>();
        List<Tensor> current = new ArrayList<>();
        long done = 0;
        for (int i = 0; i < tensors.size(); i++) {
            Tensor t = tensors.get(i);
            current.add(t);
            done += t.spec().byteSize();
            int groupsLeft = count - out.size() - 1;
            int tensorsLeft = tensors.size() - i - 1;
            // close this group once it reaches its share, or when the rest are needed one per group
            boolean full = total > 0 && done * count >= total * (out.size() + 1);
            if (groupsLeft > 0 && (full || tensorsLeft == groupsLeft)) {
                out.add(current);
                current = new ArrayList<>();
            }
        }
        out.add(current);
        return out;
    }
}
