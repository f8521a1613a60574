package io.weightloader.api.config;

/**
 * Which shard of the model a process holds: tensor-parallel rank and pipeline stage. Seeds publish, and
 * clients ask for, weights by the whole key, so two pipeline stages with the same tp rank never collide.
 */
public record RankKey(int tp, int pp) {
    public RankKey {
        if (tp < 0 || pp < 0) {
            throw new IllegalArgumentException("ranks must be >= 0, got tp=" + tp + " pp=" + pp);
        }
    }

    @Override
    public String toString() {
        return "tp" + tp + "-pp" + pp;
    }
}
