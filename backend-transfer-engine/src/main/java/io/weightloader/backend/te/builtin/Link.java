package io.weightloader.backend.te.builtin;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import javax.net.ssl.SSLSocket;

/**
 * One connection of the built-in engine: the channel, and over it TLS when configured. Plain connections move bytes
 * with the channel straight between the socket and registered memory; TLS ones through the TLS socket's streams.
 */
final class Link implements AutoCloseable {
    private static final int CHUNK = 256 << 10;
    final SocketChannel channel;
    final SSLSocket tls;
    private final byte[] staging;

    Link(SocketChannel channel, SSLSocket tls) {
        this.channel = channel;
        this.tls = tls;
        this.staging = tls == null ? null : new byte[CHUNK];
    }

    Socket socket() {
        return tls != null ? tls : channel.socket();
    }

    InputStream in() throws IOException {
        return socket().getInputStream();
    }

    boolean isOpen() {
        return channel.isOpen() && (tls == null || !tls.isClosed());
    }

    void write(ByteBuffer b) throws IOException {
        if (tls == null) {
            while (b.hasRemaining()) {
                channel.write(b);
            }
            return;
        }
        OutputStream out = tls.getOutputStream();
        while (b.hasRemaining()) {
            int n = Math.min(b.remaining(), staging.length);
            b.get(staging, 0, n);
            out.write(staging, 0, n);
        }
        out.flush();
    }

    void readFully(ByteBuffer b) throws IOException {
        if (tls == null) {
            while (b.hasRemaining()) {
                if (channel.read(b) < 0) {
                    throw new EOFException("seed closed the connection");
                }
            }
            return;
        }
        InputStream in = tls.getInputStream();
        while (b.hasRemaining()) {
            int n = in.read(staging, 0, Math.min(b.remaining(), staging.length));
            if (n < 0) {
                throw new EOFException("seed closed the connection");
            }
            b.put(staging, 0, n);
        }
    }

    @Override
    public void close() {
        if (tls != null) {
            closeQuietly(tls);
        }
        closeQuietly(channel);
    }

    /** Closes a connection, channel or socket, ignoring failures (best effort). */
    static void closeQuietly(AutoCloseable c) {
        try {
            c.close();
        } catch (Exception ignored) {
            // best effort
        }
    }
}
