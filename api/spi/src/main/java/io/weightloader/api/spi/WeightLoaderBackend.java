package io.weightloader.api.spi;

import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorSpec;
import java.util.List;

/**
 * One open weight source (a checkpoint, a seed) that copies named tensors into the host's memory.
 *
 * <p>{@link #load} returns only when every byte of every requested tensor arrived and matched; on any
 * failure it throws, and the destination contents are then unspecified. {@link #close()} releases every
 * native resource and is safe to call twice.
 */
public interface WeightLoaderBackend extends AutoCloseable {

    /** Provider name, as in the config. */
    String name();

    /** Where the weights come from, for logs and reports (a path, {@code seed host:port}, ...). */
    String source();

    /** The engine that moves bytes, for logs and reports (e.g. {@code filechannel}, {@code builtin-tcp}). */
    String engine();

    /** The tensors the source offers (checkpoint header or seed manifest). */
    List<TensorSpec> available();

    /**
     * Copies every tensor of the request into its destination. Before any byte moves, the request is
     * matched against {@link #available()} by name, dtype and shape; every difference is listed in one error.
     */
    LoadReport load(LoadRequest request);

    /**
     * Whether {@link #load} fills destinations that hold a {@link io.weightloader.api.TensorSlice} (a
     * tensor-parallel rank's share) with exactly that part of each tensor. {@code WeightLoader} refuses sliced
     * requests for backends that do not say so.
     */
    default boolean loadsSlices() {
        return false;
    }

    @Override
    void close();
}
