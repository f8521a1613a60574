package io.weightloader.backend.nccl;

import com.fasterxml.jackson.databind.JsonNode;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMatcher;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.seed.Json;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.RemoteLoads;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.SeedRefusedException;
import io.weightloader.api.spi.WeightLoaderBackend;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Client of the nccl backend: fetches the seed's manifest, matches it by name/dtype/shape, asks the seed to send
 * exactly the tensors the host wants ({@code POST /v1/nccl/send}), then joins the 2-rank group as rank 1 and
 * receives each tensor into its destination in the order the seed announced: by name, never by position.
 */
final class NcclBackend implements WeightLoaderBackend {
    /** The backend's name (its provider's {@code NAME}). */
    static final String NAME = "nccl";


    private final SeedClient seed;
    private final RankKey rank;
    private final NcclRuntime runtime;
    private final Duration initTimeout;
    private final Duration transferTimeout;
    private final NcclRuntime.Primitive primitive;

    NcclBackend(SeedClient seed, RankKey rank, NcclRuntime runtime, Duration initTimeout, Duration transferTimeout,
                NcclRuntime.Primitive primitive) {
        this.primitive = primitive;
        this.seed = seed;
        this.rank = rank;
        this.runtime = runtime;
        this.initTimeout = initTimeout;
        this.transferTimeout = transferTimeout;
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public String source() {
        return "seed " + seed.peer() + " rank " + rank;
    }

    @Override
    public String engine() {
        return "nccl-" + primitive.text;
    }

    @Override
    public List<TensorSpec> available() {
        return checkedManifest(seed).specs();
    }

    /** The seed's manifest, refused when the seed does not serve nccl clients. */
    private Manifest checkedManifest(SeedClient seed) {
        Manifest m;
        try {
            m = seed.manifest(rank);
        } catch (SeedRefusedException e) {
            if (e.status() == 404 && rank.tp() > 0) {
                throw new WeightLoaderException(source() + " holds no rank tp" + rank.tp() + ": nccl loads rank to rank"
                        + " from a seed of the same tp size (weight-loader.rank.tp-size). To load from a seed of another"
                        + " tp size, use --remote-instance-weight-loader-backend transfer_engine, which reshards", e);
            }
            throw e;
        }
        if (m.serves() != null && !m.serves().containsKey(NAME)) {
            throw new WeightLoaderException(source() + " does not serve nccl clients; it serves " + m.serves().keySet()
                    + ". Load with weight-loader.remote-instance.backend = " + m.serves().keySet().iterator().next()
                    + " (--remote-instance-weight-loader-backend), or start the seed with nccl in"
                    + " weight-loader.seed.serve (seed --serve nccl)");
        }
        return m;
    }

    /** What the seed answered to a send request. */
    record Session(byte[] uniqueId, List<String> order, String group) {
    }

    /** Asks the seed to send {@code names}; a busy seed is retried, then reported as busy. */
    Session requestSession(List<String> names) {
        return requestSession(seed, names);
    }

    private Session requestSession(SeedClient seed, List<String> names) {
        byte[] body;
        try {
            body = Json.MAPPER.writeValueAsBytes(Map.of("tensors", names, "primitive", primitive.text));
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        byte[] reply;
        try {
            reply = seed.post(NcclSeedPublisher.PATH + "?tp=" + rank.tp() + "&pp=" + rank.pp(), body, Set.of(409));
        } catch (SeedRefusedException e) {
            if (e.status() == 409) {
                throw new WeightLoaderException(source() + " is busy sending to another client over nccl and stayed "
                        + "busy through every retry (weight-loader.remote-instance.retries); try again later", e);
            }
            throw e;
        }
        try {
            JsonNode n = Json.MAPPER.readTree(reply);
            byte[] id = Base64.getDecoder().decode(n.get("uniqueId").textValue());
            if (id.length != JavaCppNccl.UNIQUE_ID_BYTES) {
                throw new WeightLoaderException(source() + " sent an NCCL unique id of " + id.length + " bytes");
            }
            List<String> order = new ArrayList<>();
            for (JsonNode x : n.get("tensors")) {
                order.add(x.textValue());
            }
            if (order.size() != names.size() || !new HashSet<>(order).equals(new HashSet<>(names))) {
                throw new WeightLoaderException(source() + " announced tensors " + order + " for a request of " + names);
            }
            JsonNode g = n.get("group");
            return new Session(id, order, g == null ? "" : g.asText());
        } catch (IOException | RuntimeException e) {
            if (e instanceof WeightLoaderException w) {
                throw w;
            }
            throw new WeightLoaderException(source() + " sent a malformed nccl session: " + e, e);
        }
    }

    /** Slices the seed rank holds exactly (the same tp size and layout); others are refused before any byte moves. */
    @Override
    public boolean loadsSlices() {
        return true;
    }

    @Override
    public LoadReport load(LoadRequest request) {
        long t0 = System.nanoTime();
        // the whole load ends within request-timeout + init-timeout + transfer-timeout, whatever the seed does
        long deadline = t0 + seed.requestTimeout().toNanos() + initTimeout.toNanos() + transferTimeout.toNanos();
        SeedClient bounded = seed.until(deadline);
        Manifest m = checkedManifest(bounded);
        TensorMatcher.check(source(), m.specs(), request.specs(), request.ignoreExtraTensors());
        Map<String, Manifest.Entry> published = m.entriesByName();
        for (TensorDestination d : request.tensors()) {
            Manifest.Entry e = published.get(d.spec().name());
            if (!d.holdsSameAs(e.slice())) {
                throw new WeightLoaderException(source() + " holds " + (e.slice() == null ? "all of" : e.slice()
                        + " of") + " tensor '" + d.spec().name() + "' " + d.spec().shape() + " (tp size "
                        + m.tpSizeOrOne() + ", layout " + m.layout() + "), and this client asks for "
                        + (d.slice() == null ? "all of it" : d.slice()) + ": nccl sends each seed rank's tensors as they"
                        + " are, rank to rank, so it needs the seed's tp size and layout. Use"
                        + " --remote-instance-weight-loader-backend transfer_engine to reshard");
            }
        }
        Device device = null;
        Map<String, TensorDestination> byName = new HashMap<>();
        for (TensorDestination d : request.tensors()) {
            Device dev = d.region().device();
            if (dev.isHost()) {
                throw new WeightLoaderException("the nccl backend fills GPU memory; tensor '" + d.spec().name()
                        + "' has a cpu destination (weight-loader.device)");
            }
            if (device != null && !device.equals(dev)) {
                throw new WeightLoaderException("the nccl backend fills one GPU per rank; destinations are on " + device
                        + " and " + dev);
            }
            device = dev;
            byName.put(d.spec().name(), d);
        }
        List<String> names = request.tensors().stream().map(d -> d.spec().name()).toList();
        Map<String, Double> phases = new LinkedHashMap<>();
        phases.put("manifest", (System.nanoTime() - t0) / 1e9);
        if (!names.isEmpty()) {
            long ts = System.nanoTime();
            Session session = requestSession(bounded, names);
            phases.put("session", (System.nanoTime() - ts) / 1e9);
            List<NcclOp> ops = new ArrayList<>();
            for (String name : session.order()) {
                TensorDestination d = byName.get(name);
                ops.add(new NcclOp(name, d.region().address(), d.byteSize()));
            }
            long start = System.nanoTime();
            try {
                NcclRuntime.Timings t = runtime.transfer(device, session.uniqueId(), 1, ops, primitive,
                        Math.min(start + initTimeout.toNanos(), deadline),
                        Math.min(start + initTimeout.toNanos() + transferTimeout.toNanos(), deadline));
                phases.put("group-init", t.groupInitSeconds());
                phases.put("transfer", t.transferSeconds());
            } catch (WeightLoaderException e) {
                throw new WeightLoaderException("receiving from " + source() + " over nccl failed: " + e.getMessage(), e);
            }
        }
        List<TensorReport> reports = RemoteLoads.verify(bounded, rank, m, request, source());
        request.progress().onProgress(request.totalBytes(), request.totalBytes(), names.size(), names.size());
        return LoadReport.builder(name()).engine(engine()).source(source())
                .device(device == null ? "cuda" : device.toString()).tensors(reports).totalBytes(request.totalBytes())
                .seconds((System.nanoTime() - t0) / 1e9).phases(phases).build();
    }

    @Override
    public void close() {
    }
}
