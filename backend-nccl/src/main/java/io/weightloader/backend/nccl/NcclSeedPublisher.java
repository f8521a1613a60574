package io.weightloader.backend.nccl;

import io.weightloader.memory.Threads;
import io.weightloader.api.TensorDestination;
import com.fasterxml.jackson.databind.JsonNode;
import io.weightloader.api.Device;
import io.weightloader.api.config.RankKey;
import io.weightloader.seed.Json;
import io.weightloader.seed.SeedEndpoint;
import io.weightloader.seed.SeedPublisher;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Seed side of the nccl backend: {@code POST /v1/nccl/send?tp=N&pp=M} with
 * {@code {"tensors":[names], "primitive":"send-recv"|"broadcast"}} makes
 * the seed create an NCCL unique id, answer it at once with the order it will send in (the seed's manifest
 * order, restricted to the names asked for), then form the group as rank 0 and send. One client at a time per
 * rank: another one meanwhile is answered 409 (busy) and may retry; clients are served one after another, each
 * with its own communicator.
 */
final class NcclSeedPublisher implements SeedPublisher {
    private static final Logger LOG = LoggerFactory.getLogger(NcclSeedPublisher.class);
    static final String PATH = "/v1/nccl/send";
    private static final int MAX_NAMES = 1_000_000;

    private final RankKey rank;
    private final Map<String, TensorDestination> tensors = new LinkedHashMap<>();
    private final Device device;
    private final NcclRuntime runtime;
    private final Optional<String> bootstrap;
    private final String groupName;
    private final Duration initTimeout;
    private final Duration transferTimeout;
    private final AtomicBoolean busy = new AtomicBoolean();
    private final ExecutorService sender;
    private volatile String lastOutcome = "none yet";
    private final AtomicLong sends = new AtomicLong();

    NcclSeedPublisher(RankKey rank, List<TensorDestination> held, NcclRuntime runtime, Optional<String> bootstrap,
                      String groupName, Duration initTimeout, Duration transferTimeout) {
        this.rank = rank;
        Device dev = null;
        for (TensorDestination t : held) {
            if (t.region().device().isHost() && t.byteSize() > 0) {
                throw new IllegalArgumentException("nccl sends GPU memory only; tensor '" + t.spec().name()
                        + "' is in host memory (load the seed with weight-loader.device = cuda:N)");
            }
            if (!t.region().device().isHost()) {
                if (dev != null && !dev.equals(t.region().device())) {
                    throw new IllegalArgumentException("nccl sends from one GPU per rank; tensors are on " + dev
                            + " and " + t.region().device());
                }
                dev = t.region().device();
            }
            tensors.put(t.spec().name(), t);
        }
        this.device = dev == null ? Device.cuda(0) : dev;
        this.runtime = runtime;
        this.bootstrap = bootstrap;
        this.groupName = groupName;
        this.initTimeout = initTimeout;
        this.transferTimeout = transferTimeout;
        this.sender = Executors.newSingleThreadExecutor(Threads.daemon("weightloader-nccl-seed-" + rank));
    }

    @Override
    public String engine() {
        return "nccl";
    }

    @Override
    public String sessionId() {
        return "nccl:" + device;
    }

    @Override
    public double registrationSeconds() {
        return 0;
    }

    @Override
    public long activity() {
        // changes all the time while a client is being sent to, and after each send
        return busy.get() ? System.nanoTime() : sends.get();
    }

    /** Whether a client is being served now. */
    boolean busy() {
        return busy.get();
    }

    String lastOutcome() {
        return lastOutcome;
    }

    @Override
    public Map<String, SeedEndpoint> endpoints() {
        return Map.of(PATH, this::send);
    }

    private SeedEndpoint.Reply send(Map<String, String> query, byte[] body) {
        List<String> wanted;
        NcclRuntime.Primitive primitive;
        try {
            JsonNode n = Json.MAPPER.readTree(body);
            JsonNode prim = n == null ? null : n.get("primitive");
            try {
                primitive = prim == null ? NcclRuntime.Primitive.SEND_RECV : NcclRuntime.Primitive.parse(prim.asText());
            } catch (IllegalArgumentException e) {
                return SeedEndpoint.Reply.error(400, "primitive " + e.getMessage());
            }
            JsonNode list = n == null ? null : n.get("tensors");
            if (list == null || !list.isArray() || list.size() > MAX_NAMES) {
                return SeedEndpoint.Reply.error(400, "body must be {\"tensors\": [names]}");
            }
            wanted = new ArrayList<>();
            Set<String> seen = new HashSet<>();
            for (JsonNode x : list) {
                if (!x.isTextual() || !seen.add(x.textValue())) {
                    return SeedEndpoint.Reply.error(400, "tensor names must be distinct strings");
                }
                wanted.add(x.textValue());
            }
        } catch (IOException e) {
            return SeedEndpoint.Reply.error(400, "body is not valid JSON");
        }
        List<String> unknown = wanted.stream().filter(w -> !tensors.containsKey(w)).toList();
        if (!unknown.isEmpty()) {
            return SeedEndpoint.Reply.error(400, "this seed holds no tensor named " + unknown);
        }
        if (!busy.compareAndSet(false, true)) {
            return SeedEndpoint.Reply.error(409, "seed busy: serving another client over nccl for rank " + rank
                    + "; retry later");
        }
        try {
            Set<String> want = new HashSet<>(wanted);
            List<String> order = new ArrayList<>();
            List<NcclOp> ops = new ArrayList<>();
            for (TensorDestination t : tensors.values()) { // the manifest's order
                if (want.contains(t.spec().name())) {
                    order.add(t.spec().name());
                    ops.add(new NcclOp(t.spec().name(), t.region().address(), t.byteSize()));
                }
            }
            byte[] id = runtime.newUniqueId(bootstrap);
            long start = System.nanoTime();
            sender.submit(() -> serve(ops, id, primitive, start));
            Map<String, Object> reply = new LinkedHashMap<>();
            reply.put("uniqueId", Base64.getEncoder().encodeToString(id));
            reply.put("tensors", order);
            reply.put("group", groupName);
            reply.put("device", device.toString());
            reply.put("primitive", primitive.text);
            return SeedEndpoint.Reply.ok(reply);
        } catch (RuntimeException e) {
            busy.set(false);
            throw e;
        }
    }

    private void serve(List<NcclOp> ops, byte[] id, NcclRuntime.Primitive primitive, long start) {
        try {
            runtime.transfer(device, id, 0, ops, primitive, start + initTimeout.toNanos(),
                    start + initTimeout.toNanos() + transferTimeout.toNanos());
            lastOutcome = "sent " + ops.size() + " tensors";
            sends.incrementAndGet();
            LOG.info("nccl group {} rank {}: sent {} tensors in {} s", groupName, rank, ops.size(),
                    String.format("%.3f", (System.nanoTime() - start) / 1e9));
        } catch (RuntimeException e) {
            lastOutcome = "failed: " + e.getMessage();
            LOG.error("nccl group {} rank {}: sending to a client failed: {}", groupName, rank, e.getMessage());
        } finally {
            busy.set(false);
        }
    }

    /** How long {@link #close} waits for a send in flight to end: an interrupted send aborts its communicator. */
    static final long CLOSE_WAIT_NANOS = JavaCppNccl.ABORT_WAIT_NANOS + 5_000_000_000L;

    /**
     * Stops serving: a send in flight is interrupted (its communicator aborted) and waited for, so that nothing this
     * publisher started reads the seed's memory once it returns (the seed may then free it, or release it with the
     * memory saver; kernels already queued are the host's to wait for, as {@code VirtualDeviceArena.release} does).
     */
    @Override
    public void close() {
        sender.shutdownNow();
        try {
            if (!sender.awaitTermination(CLOSE_WAIT_NANOS, java.util.concurrent.TimeUnit.NANOSECONDS)) {
                LOG.warn("nccl group {} rank {}: a send was still running {} s after it was interrupted", groupName,
                        rank, CLOSE_WAIT_NANOS / 1_000_000_000L);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
