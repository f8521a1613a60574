package io.weightloader.seed;

import java.util.Map;

/**
 * What the control plane's memory-saver endpoints ({@code POST /release_memory_occupation},
 * {@code POST /resume_memory_occupation}) call: the host that owns the seed's memory registers one with
 * {@link SeedService#memoryControl(MemoryControl)}. The host releases its memory through the service
 * ({@link SeedService#releaseWeights}, {@link SeedService#resumeWeights}), which owns registration and answers.
 */
public interface MemoryControl {
    /**
     * Releases the weights' memory.
     *
     * @param keepHostCopy keep a copy in host memory to resume from instead of the checkpoint
     * @return fields for the answer (what was freed, how long it took)
     */
    Map<String, Object> release(boolean keepHostCopy);

    /** Maps the memory again, refills it, re-registers it and publishes a new generation; fields for the answer. */
    Map<String, Object> resume();
}
