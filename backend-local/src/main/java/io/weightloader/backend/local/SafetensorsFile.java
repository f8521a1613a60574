package io.weightloader.backend.local;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import io.weightloader.api.DType;
import io.weightloader.api.TensorSpec;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.CharBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * One safetensors file's header, parsed strictly: every header is treated as hostile.
 *
 * <p>Layout: an unsigned little-endian 64-bit header length N, N bytes of UTF-8 JSON (an object of tensor
 * name to {dtype, shape, data_offsets} plus an optional {@code __metadata__} string map), then the data
 * section. Checked: N within bounds and the file, strict UTF-8, a JSON object without duplicate keys, known
 * dtypes, non-negative dimensions, shape x dtype size equal to the byte range, ranges inside the data
 * section, and ranges that neither overlap nor leave holes (as the format requires).
 *
 * <p>Against the reference implementation (docs/SECURITY.md, "Hostile input"): a file it reads loads here unless it is
 * ambiguous. Fields of a tensor entry other than dtype, shape and data_offsets are ignored as it ignores them (with one
 * warning per file); a key given twice is refused, where it keeps the last; an empty tensor name is refused.
 */
public final class SafetensorsFile {
    /** Largest header accepted, as in the reference implementation ({@code MAX_HEADER_SIZE}, 100,000,000 bytes). */
    public static final long MAX_HEADER_BYTES = 100_000_000L;
    private static final Set<String> TENSOR_KEYS = Set.of("dtype", "shape", "data_offsets");
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(SafetensorsFile.class);
    /** Strict as the reference parser: duplicate keys and anything after the header's JSON object are refused. */
    static final ObjectMapper JSON = JsonMapper.builder()
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    /** A tensor's place in the file: {@code [begin, end)} relative to the data section. */
    public record Entry(TensorSpec spec, long begin, long end) {
        public long bytes() {
            return end - begin;
        }
    }

    private final Path path;
    private final long fileSize;
    private final long dataStart;
    private final Map<String, String> metadata;
    private final Map<String, Entry> entries;

    private SafetensorsFile(Path path, long fileSize, long dataStart, Map<String, String> metadata,
                            Map<String, Entry> entries) {
        this.path = path;
        this.fileSize = fileSize;
        this.dataStart = dataStart;
        this.metadata = metadata;
        this.entries = entries;
    }

    public Path path() {
        return path;
    }

    public long fileSize() {
        return fileSize;
    }

    /** Absolute file offset where the data section starts (8 + header length). */
    public long dataStart() {
        return dataStart;
    }

    public Map<String, String> metadata() {
        return metadata;
    }

    /** Tensors in the order of their data offsets. */
    public Map<String, Entry> entries() {
        return entries;
    }

    public static SafetensorsFile read(Path path) {
        String notRegular = notARegularFile(path);
        if (notRegular != null) {
            throw new SafetensorsFormatException(path, notRegular);
        }
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            return read(path, ch);
        } catch (IOException e) {
            throw new SafetensorsFormatException(path, cannotRead(e), e);
        }
    }

    /**
     * Why {@code path} (symbolic links followed) cannot be read as a checkpoint file, or null when it is a regular
     * file. A FIFO is never opened: opening one blocks until a writer comes.
     */
    static String notARegularFile(Path path) {
        java.nio.file.attribute.BasicFileAttributes a;
        try {
            a = Files.readAttributes(path, java.nio.file.attribute.BasicFileAttributes.class);
        } catch (NoSuchFileException e) {
            return Files.isSymbolicLink(path) ? "is a symbolic link to a file that does not exist" : "does not exist";
        } catch (IOException e) {
            return cannotRead(e);
        }
        if (a.isRegularFile()) {
            return null;
        }
        if (a.isDirectory()) {
            return "is a directory, not a file";
        }
        String kind = "not a regular file";
        try {
            int type = ((Integer) Files.getAttribute(path, "unix:mode")) & 0170000;
            kind = switch (type) {
                case 0010000 -> "a FIFO (named pipe)";
                case 0020000 -> "a character device";
                case 0060000 -> "a block device";
                case 0140000 -> "a socket";
                default -> "not a regular file";
            };
        } catch (IOException | UnsupportedOperationException | IllegalArgumentException | ClassCastException e) {
            // the kind stays generic where the file system does not tell
        }
        return "is " + kind + ", not a regular file; checkpoint files must be regular files";
    }

    /** What went wrong reading a file, with the operating system's reason. */
    static String cannotRead(IOException e) {
        if (e instanceof java.nio.file.AccessDeniedException) {
            return "permission denied: the operating system refused to open it for reading";
        }
        if (e instanceof java.nio.file.FileSystemException f && f.getReason() != null) {
            return "cannot read: " + f.getReason();
        }
        return "cannot read: " + e;
    }

    static SafetensorsFile read(Path path, FileChannel ch) throws IOException {
        long size = ch.size();
        if (size < 8) {
            throw new SafetensorsFormatException(path, "truncated: the file has " + size
                    + " bytes, fewer than the 8-byte header length");
        }
        ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        readFully(ch, lenBuf, 0, path);
        long n = lenBuf.flip().getLong();
        if (n < 0 || n > MAX_HEADER_BYTES) {
            throw new SafetensorsFormatException(path, "header length " + Long.toUnsignedString(n)
                    + " is absurdly large (limit " + MAX_HEADER_BYTES + " bytes)");
        }
        if (8 + n > size) {
            throw new SafetensorsFormatException(path, "truncated: header length " + n
                    + " runs past the end of the file (" + size + " bytes)");
        }
        if (n < 2) {
            throw new SafetensorsFormatException(path, "header length " + n + " is too short for a JSON object");
        }
        ByteBuffer header = ByteBuffer.allocate((int) n);
        readFully(ch, header, 8, path);
        header.flip();
        String text;
        try {
            CharsetDecoder dec = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT);
            CharBuffer chars = dec.decode(header);
            text = chars.toString();
        } catch (CharacterCodingException e) {
            throw new SafetensorsFormatException(path, "header is not valid UTF-8");
        }
        JsonNode root;
        try {
            root = JSON.readTree(text);
        } catch (JsonProcessingException e) {
            Duplicate d = Duplicate.of(e);
            if (d == null) {
                throw new SafetensorsFormatException(path, "header is not valid JSON: " + e.getOriginalMessage());
            }
            throw d.in == null && !d.key.equals("__metadata__")
                    ? new SafetensorsFormatException(path, d.key, "is listed twice in the header; the reference"
                            + " implementation keeps the last entry, but which one the writer meant is ambiguous")
                    : new SafetensorsFormatException(path, d.describe("header") + "; which value is meant is"
                            + " ambiguous");
        }
        if (root == null || !root.isObject()) {
            throw new SafetensorsFormatException(path, "header is not a JSON object");
        }
        long dataStart = 8 + n;
        long dataSize = size - dataStart;
        Map<String, String> metadata = new LinkedHashMap<>();
        List<Entry> list = new ArrayList<>();
        Map<String, Set<String>> ignored = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> f = it.next();
            if (f.getKey().equals("__metadata__")) {
                parseMetadata(path, f.getValue(), metadata);
            } else {
                list.add(parseEntry(path, f.getKey(), f.getValue(), dataSize, ignored));
            }
        }
        if (!ignored.isEmpty()) {
            Map.Entry<String, Set<String>> first = ignored.entrySet().iterator().next();
            LOG.warn("{}: {} hold{} fields the safetensors format does not define ({}); ignored, as the reference"
                    + " implementation ignores them", path, ignored.size() == 1 ? "tensor '" + first.getKey() + "'"
                            : ignored.size() + " tensor entries (the first '" + first.getKey() + "')",
                    ignored.size() == 1 ? "s" : "", first.getValue().stream().map(k -> "'" + k + "'")
                            .collect(java.util.stream.Collectors.joining(", ")));
        }
        list.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
        long expectedBegin = 0;
        Entry prev = null;
        for (Entry e : list) {
            if (e.begin() < expectedBegin) {
                throw new SafetensorsFormatException(path, e.spec().name(), "byte range [" + e.begin() + ", "
                        + e.end() + ") overlaps tensor '" + prev.spec().name() + "' [" + prev.begin() + ", "
                        + prev.end() + ")");
            }
            if (e.begin() > expectedBegin) {
                throw new SafetensorsFormatException(path, e.spec().name(), "starts at " + e.begin()
                        + ", leaving a hole of " + (e.begin() - expectedBegin) + " bytes after "
                        + (prev == null ? "the header" : "tensor '" + prev.spec().name() + "'"));
            }
            expectedBegin = e.end();
            prev = e;
        }
        if (expectedBegin != dataSize) {
            throw new SafetensorsFormatException(path, "the data section holds " + dataSize
                    + " bytes but the tensors cover " + expectedBegin + " (trailing bytes or a damaged file)");
        }
        Map<String, Entry> entries = new LinkedHashMap<>();
        for (Entry e : list) {
            entries.put(e.spec().name(), e);
        }
        return new SafetensorsFile(path, size, dataStart, Map.copyOf(metadata), entries);
    }

    private static void parseMetadata(Path path, JsonNode node, Map<String, String> out) {
        if (!node.isObject()) {
            throw new SafetensorsFormatException(path, "__metadata__ is not a JSON object");
        }
        for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> m = it.next();
            if (!m.getValue().isTextual()) {
                throw new SafetensorsFormatException(path, "__metadata__ value of '" + m.getKey()
                        + "' is not a string");
            }
            out.put(m.getKey(), m.getValue().textValue());
        }
    }

    private static Entry parseEntry(Path path, String name, JsonNode node, long dataSize,
                                    Map<String, Set<String>> ignored) {
        if (name.isEmpty()) {
            throw new SafetensorsFormatException(path, "a tensor has an empty name (\"\"): the reference implementation"
                    + " reads it, but no PyTorch module can hold a parameter or buffer named \"\", and this library"
                    + " names tensors in requests, seed manifests and reports, where an empty name means none");
        }
        if (!node.isObject()) {
            throw new SafetensorsFormatException(path, name, "entry is not a JSON object");
        }
        for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
            String key = it.next();
            if (!TENSOR_KEYS.contains(key)) {
                ignored.computeIfAbsent(name, n -> new java.util.TreeSet<>()).add(key);
            }
        }
        JsonNode dtypeNode = node.get("dtype");
        if (dtypeNode == null || !dtypeNode.isTextual()) {
            throw new SafetensorsFormatException(path, name, "dtype is missing or not a string");
        }
        DType dtype = DType.fromSafetensors(dtypeNode.textValue()).orElseThrow(() ->
                new SafetensorsFormatException(path, name, "unknown dtype '" + dtypeNode.textValue() + "'"));
        JsonNode shapeNode = node.get("shape");
        if (shapeNode == null || !shapeNode.isArray()) {
            throw new SafetensorsFormatException(path, name, "shape is missing or not an array");
        }
        List<Long> shape = new ArrayList<>(shapeNode.size());
        for (JsonNode d : shapeNode) {
            if (!d.isIntegralNumber() || !d.canConvertToLong()) {
                throw new SafetensorsFormatException(path, name, "shape " + shapeNode + " holds a non-integer");
            }
            if (d.longValue() < 0) {
                throw new SafetensorsFormatException(path, name, "shape " + shapeNode + " has a negative dimension");
            }
            shape.add(d.longValue());
        }
        JsonNode offs = node.get("data_offsets");
        if (offs == null || !offs.isArray() || offs.size() != 2) {
            throw new SafetensorsFormatException(path, name, "data_offsets must be an array [begin, end]");
        }
        for (JsonNode o : offs) {
            if (!o.isIntegralNumber() || !o.canConvertToLong() || o.longValue() < 0) {
                throw new SafetensorsFormatException(path, name, "data_offsets " + offs
                        + " must hold two non-negative integers");
            }
        }
        long begin = offs.get(0).longValue();
        long end = offs.get(1).longValue();
        if (end < begin) {
            throw new SafetensorsFormatException(path, name, "data_offsets " + offs + " are reversed");
        }
        if (end > dataSize) {
            throw new SafetensorsFormatException(path, name, "data_offsets " + offs
                    + " run out of bounds: the data section holds " + dataSize + " bytes (truncated file?)");
        }
        TensorSpec spec;
        try {
            spec = new TensorSpec(name, dtype, shape);
        } catch (IllegalArgumentException | ArithmeticException e) {
            throw new SafetensorsFormatException(path, name, e.getMessage());
        }
        if (spec.byteSize() != end - begin) {
            throw new SafetensorsFormatException(path, name, "shape " + shape + " of " + dtype + " is "
                    + spec.byteSize() + " bytes but data_offsets " + offs + " cover " + (end - begin));
        }
        return new Entry(spec, begin, end);
    }

    /**
     * A key given twice in one JSON object, as Jackson's strict duplicate detection reports it: {@code key}, and the
     * key of the object it is in ({@code in}, null at the top level).
     */
    record Duplicate(String key, String in) {
        /** The duplicate {@code e} reports, or null when it reports something else. */
        static Duplicate of(JsonProcessingException e) {
            if (!(e.getProcessor() instanceof JsonParser p) || e.getOriginalMessage() == null
                    || !e.getOriginalMessage().startsWith("Duplicate field")) {
                return null;
            }
            com.fasterxml.jackson.core.JsonStreamContext object = p.getParsingContext();
            if (object == null || object.getCurrentName() == null) {
                return null;
            }
            com.fasterxml.jackson.core.JsonStreamContext parent = object.getParent();
            return new Duplicate(object.getCurrentName(),
                    parent == null || parent.inRoot() ? null : parent.getCurrentName());
        }

        /** "key 'k' appears twice in X" for the messages of one file. */
        String describe(String document) {
            return "key '" + key + "' appears twice in " + (in == null ? "the " + document : "'" + in + "'");
        }
    }

    static void readFully(FileChannel ch, ByteBuffer buf, long position, Path path) throws IOException {
        readFully(ch, buf, position, path, null);
    }

    /**
     * Fills {@code buf} from {@code position}; an early end of file is an error naming the file and, when reading a
     * tensor's bytes, the tensor (the file shrank after its header was read).
     */
    static void readFully(FileChannel ch, ByteBuffer buf, long position, Path path, String tensor) throws IOException {
        long pos = position;
        while (buf.hasRemaining()) {
            int r = ch.read(buf, pos);
            if (r < 0) {
                throw tensor == null
                        ? new SafetensorsFormatException(path, "truncated: unexpected end of file at byte " + pos)
                        : new SafetensorsFormatException(path, tensor, "file ended at byte " + pos
                                + " (truncated after its header was read?)");
            }
            pos += r;
        }
    }
}
