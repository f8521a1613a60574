package io.weightloader.backend.te.builtin;

/**
 * The built-in engine's wire format (big-endian). After a hello, the client sends read requests and the seed
 * answers each, in order, from registered memory only.
 *
 * <pre>
 * hello    client -> seed: "WLTE" u16 version u16 tokenLength token[tokenLength]
 * welcome  seed -> client: u8 status (0 ok, 1 bad token, 2 bad version, 3 busy) u16 length message[length]
 * request  client -> seed: u64 id u64 address u64 length           (0 < length <= MAX_READ)
 * response seed -> client: u8 status (0 data, 1 refused) u64 id u64 length payload[length]
 *          (payload: the bytes when status is 0, a UTF-8 reason when 1)
 * </pre>
 */
final class Wire {
    static final int MAGIC = 0x574C5445; // "WLTE"
    static final int VERSION = 1;
    static final int MAX_TOKEN = 1024;
    static final int MAX_MESSAGE = 4096;
    /** Largest single read; the client slices larger tensors. */
    static final long MAX_READ = 1L << 30;
    static final int REQUEST_BYTES = 24;
    static final int RESPONSE_HEADER_BYTES = 17;

    static final int OK = 0;
    static final int BAD_TOKEN = 1;
    static final int BAD_VERSION = 2;
    static final int BUSY = 3;
    static final int REFUSED = 1;

    private Wire() {
    }
}
