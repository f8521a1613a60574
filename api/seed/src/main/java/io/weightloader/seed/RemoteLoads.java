package io.weightloader.seed;

import io.weightloader.memory.Checksums;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import java.util.ArrayList;
import java.util.List;

/** What every remote backend does once the bytes have moved, so that none reports a load it cannot vouch for. */
public final class RemoteLoads {
    private RemoteLoads() {
    }

    /**
     * Fails ({@link SeedChangedException}) unless {@code seed}'s {@code rank} still has generation {@code before}: asked
     * after the last byte of a load, this proves every byte was read from the generation the load started from.
     *
     * @param source the seed, as named in messages
     */
    public static void checkGeneration(SeedClient seed, RankKey rank, String before, String source) {
        String after = seed.generation(rank);
        if (!after.equals(before)) {
            throw SeedChangedException.during(source, before, after);
        }
    }

    /**
     * Fails ({@link SeedChangedException}) unless the seed's generation is still the one the load started from; then, when the request asks for
     * checksums, hashes every destination and fails on any that differs from the seed's published SHA-256.
     *
     * @param source the seed, as named in messages ({@code seed host:port rank tp0-pp0})
     * @return one report line per tensor
     */
    public static List<TensorReport> verify(SeedClient seed, RankKey rank, Manifest before, LoadRequest request,
                                            String source) {
        checkGeneration(seed, rank, before.generation(), source);
        List<TensorReport> reports = new ArrayList<>();
        List<String> sums = request.checksum() ? Checksums.sha256Held(request.tensors(), Checksums.defaultThreads())
                : null;
        java.util.Map<String, Manifest.Entry> published = request.checksum() ? before.entriesByName() : null;
        for (int i = 0; i < request.tensors().size(); i++) {
            TensorDestination d = request.tensors().get(i);
            String sha = null;
            if (request.checksum()) {
                sha = sums.get(i);
                String theirs = published.get(d.spec().name()).sha256();
                if (theirs != null && !theirs.equals(sha)) {
                    throw new WeightLoaderException("tensor '" + d.spec().name() + "' loaded from " + source
                            + " has SHA-256 " + sha + " but the seed published " + theirs);
                }
            }
            reports.add(TensorReport.of(d, sha));
        }
        return reports;
    }
}
