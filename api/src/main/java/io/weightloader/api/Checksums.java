package io.weightloader.api;

import java.nio.ByteBuffer;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/** SHA-256 of memory regions, streamed in large pieces (regions may exceed 2 GiB). */
public final class Checksums {
    private static final int PIECE = 64 << 20;

    private Checksums() {
    }

    /** Lower-case hex SHA-256 of the first {@code length} bytes of a region (device memory is copied back). */
    public static String sha256(MemoryRegion region, long length) {
        if (!region.device().isHost()) {
            return io.weightloader.api.cuda.DeviceCopies.sha256(region, length);
        }
        MessageDigest md = newSha256();
        for (long off = 0; off < length; off += PIECE) {
            int n = (int) Math.min(PIECE, length - off);
            ByteBuffer view = region.byteBuffer(off, n);
            md.update(view);
        }
        return HexFormat.of().formatHex(md.digest());
    }

    public static String sha256(MemoryRegion region) {
        return sha256(region, region.length());
    }

    public static String sha256(byte[] bytes) {
        return HexFormat.of().formatHex(newSha256().digest(bytes));
    }

    public static MessageDigest newSha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JDK lacks SHA-256", e);
        }
    }
}
