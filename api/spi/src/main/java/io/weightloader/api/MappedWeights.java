package io.weightloader.api;

import java.util.Map;

/** Tensors handed out as views of memory the loader owns (zero-copy); valid until {@link #close()}. */
public interface MappedWeights extends AutoCloseable {
    Map<String, MemoryRegion> regions();

    LoadReport report();

    @Override
    void close();
}
