package io.weightloader.backend.te.builtin;

import io.weightloader.api.MemoryRegion;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.memory.Threads;
import io.weightloader.seed.ReadyGate;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import javax.net.ssl.SSLContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The built-in one-sided engine: Mooncake's contract (register once, clients read by remote address) over
 * plain TCP in Java, for hosts without Mooncake or RDMA. The seed side ({@link BuiltinServer}) serves reads from
 * registered host memory only, after a token check; the data goes from the registered memory to the socket and from
 * the socket into the client's destination ({@link BuiltinClient}) with no intermediate Java copy.
 */
public final class BuiltinEngine implements OneSidedEngine {
    private static final Logger LOG = LoggerFactory.getLogger(BuiltinEngine.class);
    public static final String NAME = "builtin-tcp";

    private final RegisteredRegions regions = new RegisteredRegions();
    private final String sessionId;
    private final ExecutorService workers;
    /** The seed side; null for a client-side engine. */
    private final BuiltinServer server;
    private final BuiltinClient client;
    private volatile boolean closed;

    private BuiltinEngine(byte[] token, int connectionsPerPeer, Duration connectTimeout, ServerSocketChannel server,
                          String sessionId, int maxConnections, SSLContext tls, boolean mutualTls) {
        byte[] t = token == null ? new byte[0] : token;
        this.sessionId = sessionId;
        this.workers = Executors.newCachedThreadPool(Threads.daemon("weightloader-builtin"));
        this.server = server == null ? null
                : new BuiltinServer(t, regions, server, maxConnections, tls, mutualTls, workers);
        this.client = new BuiltinClient(t, connectionsPerPeer, connectTimeout, tls, workers);
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
                                     int maxConnections, SSLContext tls, boolean mutualTls) {
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
        e.server.start();
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
                                       SSLContext tls) {
        return new BuiltinEngine(bytes(token), connectionsPerPeer, connectTimeout, null, "", 0, tls, false);
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
        return server == null ? 0 : server.bytesServed();
    }

    /** Requests refused so far: outside registered memory, or malformed (seed side). */
    public long refusedRequests() {
        return server == null ? 0 : server.refusedRequests();
    }

    /** Makes reads wait until {@code gate} calls their bytes ready (a relay serving while it loads). */
    public BuiltinEngine gate(ReadyGate gate) {
        if (server != null) {
            server.gate(gate);
        }
        return this;
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

    @Override
    public Peer open(String session) {
        return client.open(session);
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (server != null) {
            server.close();
        }
        regions.clear();
        workers.shutdownNow();
    }
}
