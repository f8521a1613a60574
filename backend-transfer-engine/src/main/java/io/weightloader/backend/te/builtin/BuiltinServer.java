package io.weightloader.backend.te.builtin;

import static io.weightloader.backend.te.builtin.Link.closeQuietly;

import com.sun.jna.Pointer;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.seed.ReadyGate;
import io.weightloader.seed.Tls;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The seed side of the built-in engine: accepts connections, checks each hello (magic, version, token) within
 * {@link #HELLO_DEADLINE}, and serves read requests from registered host memory only, straight from that memory to
 * the socket.
 */
final class BuiltinServer {
    private static final Logger LOG = LoggerFactory.getLogger(BuiltinServer.class);
    /**
     * Time a new connection has, from accept, to send its whole hello (magic, version, token). A peer that sends
     * it a byte at a time is cut when this passes, however often it sends.
     */
    static final Duration HELLO_DEADLINE = Duration.ofSeconds(3);
    /**
     * Connections accepted but not yet authenticated, at most. They hold no serving slot (those are taken only
     * after a good hello), so peers without the token cannot make the seed turn clients away as busy; it takes more
     * than this many of them at once, each cut after {@link #HELLO_DEADLINE}, to delay a client.
     */
    static final int MAX_PENDING = 256;

    private final byte[] token;
    private final RegisteredRegions regions;
    private final ServerSocketChannel server;
    private final Semaphore connectionSlots;
    /** Connections that have not yet sent a good hello: capped apart from the serving slots, and short-lived. */
    private final Semaphore pendingSlots = new Semaphore(MAX_PENDING);
    private final Set<Link> serving = ConcurrentHashMap.newKeySet();
    /** TLS, when configured: the seed's context, and whether clients must show a certificate. */
    private final SSLContext tls;
    private final boolean mutualTls;
    private final ExecutorService workers;
    private final AtomicLong bytesServed = new AtomicLong();
    private final AtomicLong refused = new AtomicLong();
    private volatile boolean closed;

    /** Serves on {@code server} what {@code regions} holds, at most {@code maxConnections} connections at once. */
    BuiltinServer(byte[] token, RegisteredRegions regions, ServerSocketChannel server, int maxConnections,
                  SSLContext tls, boolean mutualTls, ExecutorService workers) {
        this.token = token;
        this.regions = regions;
        this.server = server;
        this.connectionSlots = new Semaphore(maxConnections);
        this.tls = tls;
        this.mutualTls = mutualTls;
        this.workers = workers;
    }

    /** Starts accepting connections (on a worker). */
    void start() {
        workers.submit(this::acceptLoop);
    }

    /** Bytes served to peers so far. */
    long bytesServed() {
        return bytesServed.get();
    }

    /** Requests refused so far: outside registered memory, or malformed. */
    long refusedRequests() {
        return refused.get();
    }

    private void acceptLoop() {
        while (!closed) {
            SocketChannel sc;
            try {
                sc = server.accept();
            } catch (ClosedChannelException e) {
                return;
            } catch (IOException e) {
                if (!closed) {
                    LOG.warn("accept failed", e);
                }
                continue;
            }
            if (!pendingSlots.tryAcquire()) {
                LOG.warn("built-in engine: {} connections are waiting to authenticate; closing {}", MAX_PENDING,
                        sc.socket().getRemoteSocketAddress());
                if (tls == null) {
                    try {
                        welcome(new Link(sc, null), Wire.BUSY, "seed has too many connections waiting to authenticate;"
                                + " retry later");
                    } catch (IOException ignored) {
                        // a 3-byte answer to a new socket; if even that fails the peer is gone
                    }
                }
                closeQuietly(sc);
                continue;
            }
            Link link;
            try {
                link = tls == null ? new Link(sc, null) : new Link(sc, serverTls(sc));
            } catch (IOException e) {
                pendingSlots.release();
                closeQuietly(sc);
                continue;
            }
            serving.add(link);
            workers.submit(() -> {
                try {
                    serve(link);
                } finally {
                    serving.remove(link);
                    link.close();
                }
            });
        }
    }

    /** TLS, server side, over an accepted connection; the handshake happens on the first read, under its deadline. */
    private SSLSocket serverTls(SocketChannel sc) throws IOException {
        SSLSocket s = (SSLSocket) tls.getSocketFactory().createSocket(sc.socket(), null, true);
        s.setUseClientMode(false);
        s.setEnabledProtocols(Tls.PROTOCOLS);
        s.setNeedClientAuth(mutualTls);
        return s;
    }

    /**
     * The socket's input, with every read bounded by one deadline: a peer cannot stretch it by sending a byte
     * just before each read would time out.
     */
    private static final class DeadlineInput extends InputStream {
        private final Socket socket;
        private final InputStream in;
        private volatile long deadline;

        DeadlineInput(Socket socket, InputStream in, long deadline) {
            this.socket = socket;
            this.in = in;
            this.deadline = deadline;
        }

        void noDeadline() {
            deadline = Long.MAX_VALUE;
        }

        private void arm() throws IOException {
            if (deadline == Long.MAX_VALUE) {
                return;
            }
            long left = (deadline - System.nanoTime()) / 1_000_000;
            if (left <= 0) {
                throw new SocketTimeoutException("deadline passed");
            }
            socket.setSoTimeout((int) Math.min(left, Integer.MAX_VALUE));
        }

        @Override
        public int read() throws IOException {
            arm();
            return in.read();
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            arm();
            return in.read(b, off, len);
        }
    }

    private void serve(Link sc) {
        String peer = String.valueOf(sc.socket().getRemoteSocketAddress());
        boolean pending = true;
        boolean slot = false;
        try {
            sc.socket().setTcpNoDelay(true);
            DeadlineInput raw = new DeadlineInput(sc.socket(), sc.in(), System.nanoTime() + HELLO_DEADLINE.toNanos());
            DataInputStream in = new DataInputStream(raw);
            if (in.readInt() != Wire.MAGIC) {
                LOG.warn("built-in engine: {} did not speak the protocol; closed", peer);
                return;
            }
            int version = in.readUnsignedShort();
            int tokenLength = in.readUnsignedShort();
            if (tokenLength > Wire.MAX_TOKEN) {
                welcome(sc, Wire.BAD_TOKEN, "token too long");
                return;
            }
            byte[] theirs = in.readNBytes(tokenLength);
            if (theirs.length < tokenLength) {
                return;
            }
            pendingSlots.release();
            pending = false;
            if (version != Wire.VERSION) {
                welcome(sc, Wire.BAD_VERSION, "seed speaks version " + Wire.VERSION + ", not " + version);
                return;
            }
            if (!MessageDigest.isEqual(token, theirs)) {
                LOG.warn("built-in engine: refused {}: wrong token", peer);
                welcome(sc, Wire.BAD_TOKEN, "wrong token");
                return;
            }
            // only an authenticated peer takes (or is told it cannot take) a serving slot
            if (!connectionSlots.tryAcquire()) {
                welcome(sc, Wire.BUSY, "seed is serving its maximum number of connections; retry later");
                return;
            }
            slot = true;
            raw.noDeadline();
            sc.socket().setSoTimeout((int) Duration.ofMinutes(10).toMillis()); // idle limit between requests
            welcome(sc, Wire.OK, "");
            ByteBuffer header = ByteBuffer.allocate(Wire.RESPONSE_HEADER_BYTES);
            ByteBuffer gather = null;
            while (!closed) {
                long id;
                try {
                    id = in.readLong();
                } catch (EOFException eof) {
                    return;
                }
                long address = in.readLong();
                long length = in.readLong();
                long stride = in.readLong();
                int count = in.readInt();
                String problem = checkRequest(address, length, stride, count);
                if (problem == null && gate != null) {
                    problem = awaitGate(address, (count - 1L) * stride + length);
                }
                if (problem != null) {
                    refused.incrementAndGet();
                    byte[] msg = problem.getBytes(StandardCharsets.UTF_8);
                    header.clear();
                    header.put((byte) Wire.REFUSED).putLong(id).putLong(msg.length).flip();
                    sc.write(header);
                    sc.write(ByteBuffer.wrap(msg));
                    continue;
                }
                header.clear();
                header.put((byte) Wire.OK).putLong(id).putLong(length * count).flip();
                sc.write(header);
                if (stride == length) {
                    // runs back to back (a client reading every row of a slice): one contiguous range
                    length *= count;
                    count = 1;
                }
                if (count == 1 || length >= Wire.SERVE_CHUNK / 4) {
                    // counted chunk by chunk, so that a stopping seed sees a long read as activity while it is sent
                    for (int i = 0; i < count; i++) {
                        long run = address + i * stride;
                        for (long off = 0; off < length; off += Wire.SERVE_CHUNK) {
                            int n = (int) Math.min(Wire.SERVE_CHUNK, length - off);
                            sc.write(new Pointer(run).getByteBuffer(off, n));
                            bytesServed.addAndGet(n);
                        }
                    }
                } else {
                    // short runs (a slice's rows) are gathered into one buffer per write
                    if (gather == null) {
                        gather = ByteBuffer.allocateDirect(Wire.SERVE_CHUNK);
                    }
                    gather.clear();
                    // one view per window of runs (a JNI call each), sliced in Java per run
                    ByteBuffer window = null;
                    long windowStart = 0;
                    for (int i = 0; i < count; i++) {
                        if (gather.remaining() < length) {
                            gather.flip();
                            bytesServed.addAndGet(gather.remaining());
                            sc.write(gather);
                            gather.clear();
                        }
                        long run = address + i * stride;
                        if (window == null || run + length > windowStart + window.capacity()) {
                            windowStart = run;
                            window = new Pointer(run).getByteBuffer(0,
                                    Math.min(Math.max(length, 64L << 20), (count - 1L - i) * stride + length));
                        }
                        gather.put(window.slice((int) (run - windowStart), (int) length));
                    }
                    gather.flip();
                    bytesServed.addAndGet(gather.remaining());
                    sc.write(gather);
                }
            }
        } catch (SocketTimeoutException e) {
            LOG.debug("built-in engine: {} timed out{}", peer, pending ? " before authenticating" : "");
        } catch (IOException e) {
            if (!closed) {
                LOG.debug("built-in engine: connection from {} ended: {}", peer, e.toString());
            }
        } finally {
            if (pending) {
                pendingSlots.release();
            }
            if (slot) {
                connectionSlots.release();
            }
        }
    }

    /** A relay that serves while it loads: reads wait for their bytes (null: serve everything at once). */
    private volatile ReadyGate gate;
    /** Longest a read waits for a relay's bytes before it is refused (the client retries, then fails over). */
    static final Duration GATE_WAIT = Duration.ofSeconds(30);

    /** Makes reads wait until {@code gate} calls their bytes ready (a relay serving while it loads). */
    void gate(ReadyGate gate) {
        this.gate = gate;
    }

    private String awaitGate(long address, long span) throws IOException {
        try {
            if (!gate.awaitReady(address, span, System.nanoTime() + GATE_WAIT.toNanos())) {
                return "read of " + span + " bytes at 0x" + Long.toHexString(address) + " refused: this relay has not"
                        + " received those bytes within " + GATE_WAIT.toSeconds() + " s";
            }
            return null;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while waiting for a relay's bytes", e);
        } catch (WeightLoaderException e) {
            return "read refused: " + e.getMessage();
        }
    }

    /** Why a read request is refused, or null: every run must lie in registered weight memory. */
    private String checkRequest(long address, long length, long stride, int count) {
        String where = count + " run(s) of " + length + " bytes at 0x" + Long.toHexString(address)
                + (count > 1 ? " every " + stride + " bytes" : "");
        if (length <= 0 || count <= 0 || count > Wire.MAX_RUNS || count > 1 && stride < length) {
            return "read of " + where + " refused: malformed (runs must be non-empty, at most " + Wire.MAX_RUNS
                    + ", and not overlap)";
        }
        if (length > Wire.MAX_READ / count) {
            return "read of " + where + " refused: over " + Wire.MAX_READ + " bytes";
        }
        long span;
        try {
            span = Math.addExact(Math.multiplyExact(count - 1L, stride), length);
        } catch (ArithmeticException e) {
            return "read of " + where + " refused: outside registered weight memory";
        }
        // one registered region must hold the runs' whole span: then it holds every run
        if (!regions.contains(address, span)) {
            return "read of " + where + " refused: outside registered weight memory";
        }
        return null;
    }

    private static void welcome(Link sc, int status, String message) throws IOException {
        byte[] m = message.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(3 + m.length);
        b.put((byte) status).putShort((short) m.length).put(m).flip();
        sc.write(b);
    }

    /** Stops accepting and closes every connection being served. */
    void close() {
        closed = true;
        closeQuietly(server);
        serving.forEach(Link::closeQuietly);
    }
}
