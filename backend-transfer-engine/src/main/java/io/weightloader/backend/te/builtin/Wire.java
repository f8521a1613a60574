package io.weightloader.backend.te.builtin;

/**
 * The built-in engine's wire format (big-endian). After a hello, the client sends read requests and the seed
 * answers each, in order, from registered memory only.
 *
 * <pre>
 * hello    client -> seed: "WLTE" u16 version u16 tokenLength token[tokenLength]
 * welcome  seed -> client: u8 status (0 ok, 1 bad token, 2 bad version, 3 busy) u16 length message[length]
 * request  client -> seed: u64 id u64 address u64 length u64 stride u32 count
 *          (count runs of length bytes, run i at address + i * stride; 0 < length, 0 < count <= MAX_RUNS,
 *          stride >= length when count > 1, length * count <= MAX_READ, and every run inside registered memory)
 * response seed -> client: u8 status (0 data, 1 refused) u64 id u64 length payload[length]
 *          (payload: the runs' bytes back to back when status is 0, length = length * count; a UTF-8 reason
 *          when 1)
 * </pre>
 */
final class Wire {
    static final int MAGIC = 0x574C5445; // "WLTE"
    /** 2: strided requests (the rows of a tensor-parallel slice in one request). */
    static final int VERSION = 2;
    static final int MAX_TOKEN = 1024;
    static final int MAX_MESSAGE = 4096;
    /** Largest single read; the client slices larger tensors. */
    static final long MAX_READ = 1L << 30;
    static final int REQUEST_BYTES = 36;
    /** Most runs in one request. */
    static final int MAX_RUNS = 1 << 16;
    static final int RESPONSE_HEADER_BYTES = 17;
    /** Bytes written to a socket at a time when serving a read; a client's buffer for short runs is as large. */
    static final int SERVE_CHUNK = 4 << 20;

    static final int OK = 0;
    static final int BAD_TOKEN = 1;
    static final int BAD_VERSION = 2;
    static final int BUSY = 3;
    static final int REFUSED = 1;

    private Wire() {
    }
}
