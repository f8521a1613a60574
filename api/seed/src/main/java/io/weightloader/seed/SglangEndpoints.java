package io.weightloader.seed;

import com.sun.net.httpserver.HttpExchange;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.RankKey;
import java.io.IOException;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * SGLang's endpoints on a seed's control plane: {@code /get_remote_instance_transfer_engine_info?rank=N} and
 * {@code /remote_instance_transfer_engine_info?rank=N} (optional {@code &pp=M}) answer
 * {@code {"rank":N,"remote_instance_transfer_engine_info":[session,{name:[ptr,numel,element_size]}]}}.
 */
final class SglangEndpoints {
    static final Set<String> PATHS = Set.of("/get_remote_instance_transfer_engine_info",
            "/remote_instance_transfer_engine_info");
    /** The query parameters of these endpoints. */
    static final Set<String> QUERY = Set.of("rank", "pp");

    private final PublishedRanks ranks;

    SglangEndpoints(PublishedRanks ranks) {
        this.ranks = ranks;
    }

    /** Whether {@code path} is for these endpoints (their query parameters are {@link #QUERY}). */
    static boolean takes(String path) {
        return path.startsWith("/get_remote_instance") || path.startsWith("/remote_instance");
    }

    void handle(HttpExchange ex, Map<String, String> q) throws IOException {
        RankKey rank = SeedHttp.rank(ex, q, "rank");
        if (rank == null) {
            return;
        }
        PublishedRanks.Published p = ranks.get(rank);
        if (p == null) {
            SeedHttp.reply(ex, 400, Map.of("error", "Invalid rank " + rank.tp() + " (this seed holds " + ranks.keys()
                    + ")"));
            return;
        }
        if (p.updating()) {
            SeedHttp.updating(ex, rank);
            return;
        }
        if (p.released(false)) {
            SeedHttp.released(ex, rank);
            return;
        }
        Map<String, TensorDestination> held = new HashMap<>();
        for (TensorDestination t : p.tensors()) {
            held.put(t.spec().name(), t);
        }
        Map<String, List<Long>> info = new LinkedHashMap<>();
        for (Manifest.Entry e : p.manifest().tensors()) {
            long elementSize = Math.max(1, held.get(e.name()).spec().dtype().bits() / 8);
            info.put(e.name(), List.of(e.address(), e.bytes() / elementSize, elementSize));
        }
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("rank", rank.tp());
        body.put("remote_instance_transfer_engine_info", List.of(p.manifest().session(), info));
        SeedHttp.reply(ex, 200, body);
    }
}
