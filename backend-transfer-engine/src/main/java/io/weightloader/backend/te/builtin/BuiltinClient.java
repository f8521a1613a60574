package io.weightloader.backend.te.builtin;

import static io.weightloader.backend.te.builtin.Link.closeQuietly;

import com.sun.jna.Pointer;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.backend.te.engine.OneSidedEngine.Batch;
import io.weightloader.backend.te.engine.OneSidedEngine.OpStatus;
import io.weightloader.backend.te.engine.OneSidedEngine.Peer;
import io.weightloader.backend.te.engine.OneSidedEngine.ReadOp;
import io.weightloader.seed.Tls;
import java.io.DataInputStream;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The client side of the built-in engine: connections to seed engines ({@code connectionsPerPeer} each, opened and
 * authenticated on first use), and batches of reads spread over them, each answer read straight into its destination.
 */
final class BuiltinClient {
    private static final Logger LOG = LoggerFactory.getLogger(BuiltinClient.class);

    private final byte[] token;
    private final int connectionsPerPeer;
    private final Duration connectTimeout;
    /** TLS, when configured: the client's context. */
    private final SSLContext tls;
    private final ExecutorService workers;

    BuiltinClient(byte[] token, int connectionsPerPeer, Duration connectTimeout, SSLContext tls,
                  ExecutorService workers) {
        this.token = token;
        this.connectionsPerPeer = connectionsPerPeer;
        this.connectTimeout = connectTimeout;
        this.tls = tls;
        this.workers = workers;
    }

    /** Connects to the seed engine {@code session} ({@code host:port}) and passes its token check now. */
    Peer open(String session) {
        InetSocketAddress address = parseSession(session);
        BuiltinPeer p = new BuiltinPeer(session, address);
        p.locks[0].lock();
        try {
            p.connection(0); // fail fast: reach the seed and pass the token check now
        } finally {
            p.locks[0].unlock();
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
    private static final ThreadLocal<ByteBuffer> scatter =
            ThreadLocal.withInitial(() -> ByteBuffer.allocateDirect(Wire.SERVE_CHUNK));

    private final class BuiltinPeer implements Peer {
        private final String session;
        private final InetSocketAddress address;
        private final AtomicReferenceArray<Link> channels = new AtomicReferenceArray<>(connectionsPerPeer);
        private final ReentrantLock[] locks = new ReentrantLock[connectionsPerPeer];

        BuiltinPeer(String session, InetSocketAddress address) {
            this.session = session;
            this.address = address;
            for (int i = 0; i < locks.length; i++) {
                locks[i] = new ReentrantLock();
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
                    LockSupport.parkNanos(ThreadLocalRandom.current().nextLong(pause / 2, pause + 1) * 1_000_000);
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
                sc.write(hello);
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
                        + (e instanceof SSLException ? " (TLS: check weight-loader.tls on both sides)"
                        : ""), e);
            }
        }

        /** TLS, client side, over a connected channel: handshake within connect-timeout, the seed's name checked. */
        private SSLSocket clientTls(SocketChannel ch) throws IOException {
            SSLSocket s = (SSLSocket) tls.getSocketFactory().createSocket(ch.socket(),
                    address.getHostString(), address.getPort(), true);
            s.setUseClientMode(true);
            s.setEnabledProtocols(Tls.PROTOCOLS);
            SSLParameters p = s.getSSLParameters();
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
            if (!lockUnlessAbandoned(batch, conn)) {
                for (int idx : lane) {
                    batch.statuses.compareAndSet(idx, OpStatus.PENDING, OpStatus.failed("batch abandoned"));
                }
                synchronized (batch) {
                    batch.lanes.decrementAndGet();
                    batch.notifyAll();
                }
                return;
            }
            try {
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
                    sc.write(req);
                    ByteBuffer h = ByteBuffer.allocate(Wire.RESPONSE_HEADER_BYTES);
                    for (; next < lane.size(); next++) {
                        int idx = lane.get(next);
                        ReadOp op = batch.ops.get(idx);
                        h.clear();
                        sc.readFully(h);
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
                            sc.readFully(m);
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
            } finally {
                locks[conn].unlock();
            }
        }

        /**
         * Takes connection {@code conn}'s lock (one lane at a time per connection), giving up when {@code batch} is
         * abandoned while it waits: the lane holding the lock may be stuck reading from a stalled seed for another
         * batch, and an abandoned batch must not wait for that (its release waits for its lanes).
         */
        private boolean lockUnlessAbandoned(BuiltinBatch batch, int conn) {
            try {
                while (!locks[conn].tryLock(LOCK_POLL_MILLIS, TimeUnit.MILLISECONDS)) {
                    if (batch.abandoned) {
                        return false;
                    }
                }
                return true;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            }
        }

        /** Reads an answer's payload into the op's runs: straight into memory, or through one buffer for short runs. */
        private void receive(Link sc, ReadOp op) throws IOException {
            if (op.count() == 1 || op.localStride() == op.length() || op.length() >= Wire.SERVE_CHUNK / 4) {
                long runLength = op.localStride() == op.length() ? op.bytes() : op.length();
                int runs = op.localStride() == op.length() ? 1 : op.count();
                for (int i = 0; i < runs; i++) {
                    long run = op.localAddress() + i * op.localStride();
                    for (long off = 0; off < runLength; off += Integer.MAX_VALUE) {
                        int n = (int) Math.min(Integer.MAX_VALUE, runLength - off);
                        sc.readFully(new Pointer(run).getByteBuffer(off, n));
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
                sc.readFully(buf);
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

    /** How often a lane waiting for its connection checks whether its batch was abandoned. */
    private static final long LOCK_POLL_MILLIS = 50;

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
            active.forEach(Link::closeQuietly);
            long until = System.nanoTime() + Duration.ofSeconds(10).toNanos();
            synchronized (this) {
                while (lanes.get() > 0 && System.nanoTime() < until) {
                    try {
                        wait(100);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        break;
                    }
                    active.forEach(Link::closeQuietly);
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
}
