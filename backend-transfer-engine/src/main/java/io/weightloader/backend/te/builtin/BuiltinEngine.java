package io.weightloader.backend.te.builtin;

import io.weightloader.memory.Threads;
import com.sun.jna.Pointer;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.backend.te.engine.OneSidedEngine;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReferenceArray;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The built-in one-sided engine: Mooncake's contract (register once, clients read by remote address) over
 * plain TCP in Java, for hosts without Mooncake or RDMA. The seed side serves reads from registered host
 * memory only, after a token check; the data goes from the registered memory to the socket and from the
 * socket into the client's destination with no intermediate Java copy.
 */
public final class BuiltinEngine implements OneSidedEngine {
    private static final Logger LOG = LoggerFactory.getLogger(BuiltinEngine.class);
    public static final String NAME = "builtin-tcp";
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
    /** Bytes written to a socket at a time when serving a read. */
    private static final int SERVE_CHUNK = 4 << 20;

    private final byte[] token;
    private final int connectionsPerPeer;
    private final Duration connectTimeout;
    private final RegisteredRegions regions = new RegisteredRegions();
    private final ServerSocketChannel server;
    private final String sessionId;
    private final Semaphore connectionSlots;
    /** Connections that have not yet sent a good hello: capped apart from the serving slots, and short-lived. */
    private final Semaphore pendingSlots = new Semaphore(MAX_PENDING);
    private final Set<Link> serving = ConcurrentHashMap.newKeySet();
    /** TLS, when configured: the seed's context (and whether clients must show a certificate), or the client's. */
    private final javax.net.ssl.SSLContext tls;
    private final boolean mutualTls;
    private final ExecutorService workers;
    private final AtomicLong bytesServed = new AtomicLong();
    private final AtomicLong refused = new AtomicLong();
    private volatile boolean closed;

    private BuiltinEngine(byte[] token, int connectionsPerPeer, Duration connectTimeout, ServerSocketChannel server,
                          String sessionId, int maxConnections, javax.net.ssl.SSLContext tls, boolean mutualTls) {
        this.tls = tls;
        this.mutualTls = mutualTls;
        this.token = token == null ? new byte[0] : token;
        this.connectionsPerPeer = connectionsPerPeer;
        this.connectTimeout = connectTimeout;
        this.server = server;
        this.sessionId = sessionId;
        this.connectionSlots = new Semaphore(maxConnections);
        this.workers = Executors.newCachedThreadPool(Threads.daemon("weightloader-builtin"));
    }

    /**
     * A seed-side engine listening on {@code bindAddress:port} (0 = any free port); peers dial
     * {@code advertisedHost}. Serves at most {@code maxConnections} connections at once.
     */
    public static BuiltinEngine seed(String bindAddress, int port, String advertisedHost, String token,
                                     int maxConnections) {
        return seed(bindAddress, port, advertisedHost, token, maxConnections, null, false);
    }

    /**
     * As {@link #seed(String, int, String, String, int)}, serving TLS with {@code tls} when not null, and requiring
     * client certificates when {@code mutualTls}.
     */
    public static BuiltinEngine seed(String bindAddress, int port, String advertisedHost, String token,
                                     int maxConnections, javax.net.ssl.SSLContext tls, boolean mutualTls) {
        ServerSocketChannel ch;
        try {
            ch = ServerSocketChannel.open();
            ch.bind(new InetSocketAddress(bindAddress, port), 128);
        } catch (IOException e) {
            throw new WeightLoaderException("built-in engine cannot listen on " + bindAddress + ":" + port + ": "
                    + e.getMessage(), e);
        }
        int bound = ((InetSocketAddress) ch.socket().getLocalSocketAddress()).getPort();
        String host = advertisedHost.contains(":") ? "[" + advertisedHost + "]" : advertisedHost;
        BuiltinEngine e = new BuiltinEngine(bytes(token), 1, Duration.ofSeconds(5), ch, host + ":" + bound,
                maxConnections, tls, mutualTls);
        e.workers.submit(e::acceptLoop);
        LOG.info("engine {} listening on {}:{} (token {}, TLS {})", NAME, bindAddress, bound,
                token == null ? "off" : "on", tls == null ? "off" : mutualTls ? "on, client certificates" : "on");
        return e;
    }

    /** A client-side engine that opens {@code connectionsPerPeer} parallel connections to each seed. */
    public static BuiltinEngine client(String token, int connectionsPerPeer, Duration connectTimeout) {
        return client(token, connectionsPerPeer, connectTimeout, null);
    }

    /** As {@link #client(String, int, Duration)}, speaking TLS with {@code tls} when not null. */
    public static BuiltinEngine client(String token, int connectionsPerPeer, Duration connectTimeout,
                                       javax.net.ssl.SSLContext tls) {
        return new BuiltinEngine(bytes(token), connectionsPerPeer, connectTimeout, null, "", 0, tls, false);
    }

    /**
     * One connection: the channel, and over it TLS when configured. Plain connections move bytes with the channel
     * straight between the socket and registered memory; TLS ones through the TLS socket's streams.
     */
    static final class Link implements AutoCloseable {
        private static final int CHUNK = 256 << 10;
        final SocketChannel channel;
        final javax.net.ssl.SSLSocket tls;
        private final byte[] staging;

        Link(SocketChannel channel, javax.net.ssl.SSLSocket tls) {
            this.channel = channel;
            this.tls = tls;
            this.staging = tls == null ? null : new byte[CHUNK];
        }

        java.net.Socket socket() {
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
            java.io.OutputStream out = tls.getOutputStream();
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
    }

    private static byte[] bytes(String token) {
        return token == null ? null : token.getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public String sessionId() {
        return sessionId;
    }

    /** Bytes served to peers so far (seed side). */
    public long bytesServed() {
        return bytesServed.get();
    }

    /** Requests refused so far: outside registered memory, or malformed (seed side). */
    public long refusedRequests() {
        return refused.get();
    }

    @Override
    public void registerRemoteReadable(List<MemoryRegion> list) {
        if (server == null) {
            throw new IllegalStateException("a client-side engine serves nothing");
        }
        regions.add(list);
    }

    @Override
    public void registerLocal(List<MemoryRegion> list) {
        // TCP needs no registration of destination memory
    }

    @Override
    public void unregisterLocal(List<MemoryRegion> list) {
    }

    // ---------------------------------------------------------------- seed side

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
    private javax.net.ssl.SSLSocket serverTls(SocketChannel sc) throws IOException {
        javax.net.ssl.SSLSocket s = (javax.net.ssl.SSLSocket) tls.getSocketFactory().createSocket(sc.socket(), null, true);
        s.setUseClientMode(false);
        s.setEnabledProtocols(io.weightloader.seed.Tls.PROTOCOLS);
        s.setNeedClientAuth(mutualTls);
        return s;
    }

    /**
     * The socket's input, with every read bounded by one deadline: a peer cannot stretch it by sending a byte
     * just before each read would time out.
     */
    private static final class DeadlineInput extends InputStream {
        private final java.net.Socket socket;
        private final InputStream in;
        private volatile long deadline;

        DeadlineInput(java.net.Socket socket, InputStream in, long deadline) {
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
                    writeFully(sc, header);
                    writeFully(sc, ByteBuffer.wrap(msg));
                    continue;
                }
                header.clear();
                header.put((byte) Wire.OK).putLong(id).putLong(length * count).flip();
                writeFully(sc, header);
                if (stride == length) {
                    // runs back to back (a client reading every row of a slice): one contiguous range
                    length *= count;
                    count = 1;
                }
                if (count == 1 || length >= SERVE_CHUNK / 4) {
                    // counted chunk by chunk, so that a stopping seed sees a long read as activity while it is sent
                    for (int i = 0; i < count; i++) {
                        long run = address + i * stride;
                        for (long off = 0; off < length; off += SERVE_CHUNK) {
                            int n = (int) Math.min(SERVE_CHUNK, length - off);
                            writeFully(sc, new Pointer(run).getByteBuffer(off, n));
                            bytesServed.addAndGet(n);
                        }
                    }
                } else {
                    // short runs (a slice's rows) are gathered into one buffer per write
                    if (gather == null) {
                        gather = ByteBuffer.allocateDirect(SERVE_CHUNK);
                    }
                    gather.clear();
                    // one view per window of runs (a JNI call each), sliced in Java per run
                    ByteBuffer window = null;
                    long windowStart = 0;
                    for (int i = 0; i < count; i++) {
                        if (gather.remaining() < length) {
                            gather.flip();
                            bytesServed.addAndGet(gather.remaining());
                            writeFully(sc, gather);
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
                    writeFully(sc, gather);
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
    private volatile io.weightloader.seed.ReadyGate gate;
    /** Longest a read waits for a relay's bytes before it is refused (the client retries, then fails over). */
    static final Duration GATE_WAIT = Duration.ofSeconds(30);

    /** Makes reads wait until {@code gate} calls their bytes ready (a relay serving while it loads). */
    public BuiltinEngine gate(io.weightloader.seed.ReadyGate gate) {
        this.gate = gate;
        return this;
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
        writeFully(sc, b);
    }

    private static void writeFully(Link sc, ByteBuffer b) throws IOException {
        sc.write(b);
    }

    private static void readFully(Link sc, ByteBuffer b) throws IOException {
        sc.readFully(b);
    }

    private static void closeQuietly(AutoCloseable c) {
        try {
            c.close();
        } catch (Exception ignored) {
            // best effort
        }
    }

    // ---------------------------------------------------------------- client side

    @Override
    public Peer open(String session) {
        InetSocketAddress address = parseSession(session);
        BuiltinPeer p = new BuiltinPeer(session, address);
        synchronized (p.locks[0]) {
            p.connection(0); // fail fast: reach the seed and pass the token check now
        }
        return p;
    }

    static InetSocketAddress parseSession(String session) {
        int colon = session.lastIndexOf(':');
        if (colon <= 0 || colon == session.length() - 1) {
            throw new WeightLoaderException("engine session '" + session + "' is not host:port");
        }
        String host = session.substring(0, colon);
        if (host.startsWith("[") && host.endsWith("]")) {
            host = host.substring(1, host.length() - 1);
        }
        try {
            int port = Integer.parseInt(session.substring(colon + 1));
            if (port < 1 || port > 65535) {
                throw new NumberFormatException();
            }
            return new InetSocketAddress(host, port);
        } catch (NumberFormatException e) {
            throw new WeightLoaderException("engine session '" + session + "' has no valid port");
        }
    }

    /** The seed's engine answered the hello with a refusal. */
    static final class Refused extends WeightLoaderException {
        final int status;

        Refused(int status, String message) {
            super(message);
            this.status = status;
        }
    }

    /** Each client lane's buffer for short runs. */
    private static final ThreadLocal<ByteBuffer> scatter = ThreadLocal.withInitial(() -> ByteBuffer.allocateDirect(SERVE_CHUNK));

    private final class BuiltinPeer implements Peer {
        private final String session;
        private final InetSocketAddress address;
        private final java.util.concurrent.atomic.AtomicReferenceArray<Link> channels =
                new java.util.concurrent.atomic.AtomicReferenceArray<>(connectionsPerPeer);
        private final Object[] locks = new Object[connectionsPerPeer];

        BuiltinPeer(String session, InetSocketAddress address) {
            this.session = session;
            this.address = address;
            for (int i = 0; i < locks.length; i++) {
                locks[i] = new Object();
            }
        }

        /**
         * The i-th connection, (re)opened and authenticated when needed. A seed that is busy (serving its most
         * connections) is asked again with jittered backoff until {@code connect-timeout} has passed.
         */
        Link connection(int i) {
            // callers hold locks[i] (one lane per connection): the peer itself is not locked, so a busy retry on
            // one connection does not hold up the others or abandon()
            Link sc = channels.get(i);
            if (sc != null && sc.isOpen()) {
                return sc;
            }
            long deadline = System.nanoTime() + connectTimeout.toNanos();
            long pause = 10;
            while (true) {
                try {
                    return open(i);
                } catch (Refused e) {
                    if (e.status != Wire.BUSY || System.nanoTime() + pause * 1_000_000 > deadline) {
                        throw e;
                    }
                    LOG.debug("seed engine {} is busy; asking again in about {} ms", session, pause);
                    java.util.concurrent.locks.LockSupport.parkNanos(
                            java.util.concurrent.ThreadLocalRandom.current().nextLong(pause / 2, pause + 1) * 1_000_000);
                    pause = Math.min(pause * 2, 500);
                }
            }
        }

        private Link open(int i) {
            SocketChannel ch = null;
            Link sc = null;
            try {
                ch = SocketChannel.open();
                ch.socket().setTcpNoDelay(true);
                ch.socket().setReceiveBufferSize(4 << 20);
                ch.socket().connect(address, (int) connectTimeout.toMillis());
                sc = new Link(ch, tls == null ? null : clientTls(ch));
                ByteBuffer hello = ByteBuffer.allocate(8 + token.length);
                hello.putInt(Wire.MAGIC).putShort((short) Wire.VERSION).putShort((short) token.length).put(token).flip();
                writeFully(sc, hello);
                // the seed's answer, within connect-timeout: a channel's own reads have no timeout, and a seed that
                // is frozen (its kernel still accepts) would hold this thread for ever; the socket's stream has one
                sc.socket().setSoTimeout((int) Math.max(1, connectTimeout.toMillis()));
                DataInputStream welcome = new DataInputStream(sc.in());
                int status = welcome.readUnsignedByte();
                int len = welcome.readUnsignedShort();
                ByteBuffer msg = ByteBuffer.wrap(welcome.readNBytes(Math.min(len, Wire.MAX_MESSAGE)));
                msg.position(msg.limit());
                sc.socket().setSoTimeout(0);
                if (status != Wire.OK) {
                    closeQuietly(sc);
                    String why = new String(msg.array(), 0, msg.position(), StandardCharsets.UTF_8);
                    throw new Refused(status, "seed engine " + session + " refused the connection: " + why
                            + (status == Wire.BAD_TOKEN ? " (check weight-loader.remote-instance.token)" : ""));
                }
                channels.set(i, sc);
                return sc;
            } catch (IOException e) {
                closeQuietly(sc);
                closeQuietly(ch);
                throw new WeightLoaderException("cannot connect to seed engine " + session + ": " + e
                        + (e instanceof javax.net.ssl.SSLException ? " (TLS: check weight-loader.tls on both sides)"
                        : ""), e);
            }
        }

        /** TLS, client side, over a connected channel: handshake within connect-timeout, the seed's name checked. */
        private javax.net.ssl.SSLSocket clientTls(SocketChannel ch) throws IOException {
            javax.net.ssl.SSLSocket s = (javax.net.ssl.SSLSocket) tls.getSocketFactory().createSocket(ch.socket(),
                    address.getHostString(), address.getPort(), true);
            s.setUseClientMode(true);
            s.setEnabledProtocols(io.weightloader.seed.Tls.PROTOCOLS);
            javax.net.ssl.SSLParameters p = s.getSSLParameters();
            p.setEndpointIdentificationAlgorithm("HTTPS"); // the certificate must name the address dialled
            s.setSSLParameters(p);
            s.setSoTimeout((int) Math.max(1, connectTimeout.toMillis()));
            s.startHandshake();
            s.setSoTimeout(0);
            return s;
        }

        @Override
        public int maxBatchSize() {
            return 1024;
        }

        @Override
        public Batch submit(List<ReadOp> ops) {
            if (ops.size() > maxBatchSize()) {
                throw new IllegalArgumentException("batch of " + ops.size() + " ops exceeds " + maxBatchSize());
            }
            BuiltinBatch batch = new BuiltinBatch(this, ops);
            // spread ops over the connections, balancing bytes
            List<List<Integer>> lanes = new ArrayList<>();
            long[] load = new long[connectionsPerPeer];
            for (int i = 0; i < connectionsPerPeer; i++) {
                lanes.add(new ArrayList<>());
            }
            for (int i = 0; i < ops.size(); i++) {
                int best = 0;
                for (int c = 1; c < connectionsPerPeer; c++) {
                    if (load[c] < load[best]) {
                        best = c;
                    }
                }
                lanes.get(best).add(i);
                load[best] += ops.get(i).length();
            }
            for (int c = 0; c < connectionsPerPeer; c++) {
                List<Integer> lane = lanes.get(c);
                if (!lane.isEmpty()) {
                    int conn = c;
                    batch.lanes.incrementAndGet();
                    workers.submit(() -> runLane(batch, conn, lane));
                }
            }
            return batch;
        }

        private void runLane(BuiltinBatch batch, int conn, List<Integer> lane) {
            synchronized (locks[conn]) {
                int next = 0;
                Link sc = null;
                try {
                    if (batch.abandoned) {
                        throw new IOException("batch abandoned");
                    }
                    sc = connection(conn);
                    batch.register(sc);
                    if (batch.abandoned) {
                        throw new IOException("batch abandoned");
                    }
                    ByteBuffer req = ByteBuffer.allocate(Wire.REQUEST_BYTES * lane.size());
                    for (int idx : lane) {
                        ReadOp op = batch.ops.get(idx);
                        req.putLong(idx).putLong(op.remoteAddress()).putLong(op.length()).putLong(op.remoteStride())
                                .putInt(op.count());
                    }
                    req.flip();
                    writeFully(sc, req);
                    ByteBuffer h = ByteBuffer.allocate(Wire.RESPONSE_HEADER_BYTES);
                    for (; next < lane.size(); next++) {
                        int idx = lane.get(next);
                        ReadOp op = batch.ops.get(idx);
                        h.clear();
                        readFully(sc, h);
                        h.flip();
                        int status = h.get() & 0xff;
                        long id = h.getLong();
                        long len = h.getLong();
                        if (id != idx) {
                            throw new IOException("protocol error: answer for op " + id + " when " + idx + " was due");
                        }
                        if (status == Wire.OK) {
                            if (len != op.bytes()) {
                                throw new IOException("protocol error: " + len + " bytes for a read of " + op.bytes());
                            }
                            receive(sc, op);
                            batch.statuses.set(idx, OpStatus.COMPLETED);
                        } else {
                            if (len > Wire.MAX_MESSAGE) {
                                throw new IOException("protocol error: refusal message of " + len + " bytes");
                            }
                            ByteBuffer m = ByteBuffer.allocate((int) len);
                            readFully(sc, m);
                            batch.statuses.set(idx, OpStatus.failed("seed " + session + " refused: "
                                    + new String(m.array(), StandardCharsets.UTF_8)));
                        }
                    }
                } catch (IOException | WeightLoaderException e) {
                    if (sc != null) {
                        closeQuietly(sc);
                    }
                    String why = e instanceof WeightLoaderException ? e.getMessage()
                            : "connection to seed engine " + session + " lost: " + e.getMessage();
                    for (int k = next; k < lane.size(); k++) {
                        batch.statuses.compareAndSet(lane.get(k), OpStatus.PENDING, OpStatus.failed(why));
                    }
                } finally {
                    if (sc != null) {
                        batch.unregister(sc);
                    }
                    synchronized (batch) {
                        batch.lanes.decrementAndGet();
                        batch.notifyAll();
                    }
                }
            }
        }

        /** Reads an answer's payload into the op's runs: straight into memory, or through one buffer for short runs. */
        private void receive(Link sc, ReadOp op) throws IOException {
            if (op.count() == 1 || op.localStride() == op.length() || op.length() >= SERVE_CHUNK / 4) {
                long runLength = op.localStride() == op.length() ? op.bytes() : op.length();
                int runs = op.localStride() == op.length() ? 1 : op.count();
                for (int i = 0; i < runs; i++) {
                    long run = op.localAddress() + i * op.localStride();
                    for (long off = 0; off < runLength; off += Integer.MAX_VALUE) {
                        int n = (int) Math.min(Integer.MAX_VALUE, runLength - off);
                        readFully(sc, new Pointer(run).getByteBuffer(off, n));
                    }
                }
                return;
            }
            ByteBuffer buf = scatter.get();
            // runs per buffer, so many that the local view of them stays under 2 GiB
            int perBuffer = (int) Math.max(1, Math.min(buf.capacity() / op.length(),
                    (Integer.MAX_VALUE - op.length()) / op.localStride() + 1));
            for (int i = 0; i < op.count(); i += perBuffer) {
                int runs = Math.min(perBuffer, op.count() - i);
                buf.clear().limit((int) (runs * op.length()));
                readFully(sc, buf);
                buf.flip();
                // one view of this buffer's runs in local memory (one JNI call), sliced in Java per run
                long first = op.localAddress() + (long) i * op.localStride();
                ByteBuffer local = new Pointer(first).getByteBuffer(0, (runs - 1L) * op.localStride() + op.length());
                for (int k = 0; k < runs; k++) {
                    buf.limit((int) ((k + 1) * op.length()));
                    local.put((int) (k * op.localStride()), buf, buf.position(), (int) op.length());
                    buf.position(buf.limit());
                }
            }
        }

        void abandon() {
            for (int i = 0; i < channels.length(); i++) {
                Link c = channels.getAndSet(i, null);
                if (c != null) {
                    closeQuietly(c);
                }
            }
        }

        @Override
        public void close() {
            abandon();
        }
    }

    private static final class BuiltinBatch implements Batch {
        final BuiltinPeer peer;
        final List<ReadOp> ops;
        final AtomicReferenceArray<OpStatus> statuses;
        final Set<Link> active = ConcurrentHashMap.newKeySet();
        final AtomicInteger lanes = new AtomicInteger();
        volatile boolean abandoned;

        BuiltinBatch(BuiltinPeer peer, List<ReadOp> ops) {
            this.peer = peer;
            this.ops = List.copyOf(ops);
            this.statuses = new AtomicReferenceArray<>(ops.size());
            for (int i = 0; i < ops.size(); i++) {
                statuses.set(i, OpStatus.PENDING);
            }
        }

        void register(Link sc) {
            active.add(sc);
        }

        void unregister(Link sc) {
            active.remove(sc);
        }

        @Override
        public int size() {
            return ops.size();
        }

        @Override
        public OpStatus status(int index) {
            return statuses.get(index);
        }

        @Override
        public boolean release() {
            boolean pending = false;
            for (int i = 0; i < ops.size(); i++) {
                if (!statuses.get(i).isFinal()) {
                    pending = true;
                    break;
                }
            }
            if (!pending) {
                return true;
            }
            // abandon: closing the sockets stops the lanes; wait until none can still write into the
            // destination, so the caller may free it once this returns true
            abandoned = true;
            active.forEach(BuiltinEngine::closeQuietly);
            long until = System.nanoTime() + Duration.ofSeconds(10).toNanos();
            synchronized (this) {
                while (lanes.get() > 0 && System.nanoTime() < until) {
                    try {
                        wait(100);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        break;
                    }
                    active.forEach(BuiltinEngine::closeQuietly);
                }
            }
            for (int i = 0; i < ops.size(); i++) {
                statuses.compareAndSet(i, OpStatus.PENDING, OpStatus.failed("abandoned"));
            }
            if (lanes.get() > 0) {
                LOG.warn("built-in engine: {} reader(s) still running after abandoning a batch", lanes.get());
                return false;
            }
            return true;
        }
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (server != null) {
            closeQuietly(server);
        }
        serving.forEach(BuiltinEngine::closeQuietly);
        regions.clear();
        workers.shutdownNow();
    }
}
