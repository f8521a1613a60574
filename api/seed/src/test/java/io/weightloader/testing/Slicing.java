package io.weightloader.testing;

import io.weightloader.api.DType;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * What slicing a whole tensor gives, computed the slow obvious way (element by element, from multi-indices), as the
 * reference the loaders' sliced bytes are compared against; and Llama-shaped specs to slice.
 */
public final class Slicing {
    private Slicing() {
    }

    /** The bytes of {@code full.narrow(slice.dim, slice.start, slice.length).contiguous()}; whole when slice is null. */
    public static byte[] slice(byte[] full, TensorSpec spec, TensorSlice slice) {
        if (slice == null) {
            return full.clone();
        }
        int elem = spec.dtype().bits() / 8;
        if (elem * 8 != spec.dtype().bits()) {
            throw new IllegalArgumentException("the reference slicer handles whole-byte dtypes only");
        }
        List<Long> shape = spec.shape();
        int n = shape.size();
        List<Long> out = new ArrayList<>(shape);
        out.set(slice.dim(), slice.length());
        long count = 1;
        for (long d : out) {
            count *= d;
        }
        byte[] res = new byte[(int) (count * elem)];
        long[] idx = new long[n];
        for (long k = 0; k < count; k++) {
            // k -> multi-index in the slice's shape
            long rem = k;
            for (int j = n - 1; j >= 0; j--) {
                idx[j] = rem % out.get(j);
                rem /= out.get(j);
            }
            long flat = 0;
            for (int j = 0; j < n; j++) {
                long i = j == slice.dim() ? idx[j] + slice.start() : idx[j];
                flat = flat * shape.get(j) + i;
            }
            System.arraycopy(full, (int) (flat * elem), res, (int) (k * elem), elem);
        }
        return res;
    }

    /** Random bytes for a spec, the same for the same seed. */
    public static byte[] bytes(TensorSpec spec, long seed) {
        byte[] b = new byte[(int) spec.byteSize()];
        new Random(seed ^ spec.name().hashCode()).nextBytes(b);
        return b;
    }

    /**
     * A small Llama: embed_tokens, {@code layers} layers of q/k/v/o, gate/up/down and two norms, the final norm and
     * lm_head, with dimensions that divide by 1, 2 and 4, in {@code dtype}.
     */
    public static List<TensorSpec> llama(int layers, int hidden, int kv, int intermediate, int vocab, DType dtype) {
        List<TensorSpec> out = new ArrayList<>();
        out.add(TensorSpec.of("model.embed_tokens.weight", dtype, vocab, hidden));
        for (int l = 0; l < layers; l++) {
            String p = "model.layers." + l + ".";
            out.add(TensorSpec.of(p + "self_attn.q_proj.weight", dtype, hidden, hidden));
            out.add(TensorSpec.of(p + "self_attn.k_proj.weight", dtype, kv, hidden));
            out.add(TensorSpec.of(p + "self_attn.v_proj.weight", dtype, kv, hidden));
            out.add(TensorSpec.of(p + "self_attn.o_proj.weight", dtype, hidden, hidden));
            out.add(TensorSpec.of(p + "mlp.gate_proj.weight", dtype, intermediate, hidden));
            out.add(TensorSpec.of(p + "mlp.up_proj.weight", dtype, intermediate, hidden));
            out.add(TensorSpec.of(p + "mlp.down_proj.weight", dtype, hidden, intermediate));
            out.add(TensorSpec.of(p + "input_layernorm.weight", dtype, hidden));
            out.add(TensorSpec.of(p + "post_attention_layernorm.weight", dtype, hidden));
        }
        out.add(TensorSpec.of("model.norm.weight", dtype, hidden));
        out.add(TensorSpec.of("lm_head.weight", dtype, vocab, hidden));
        return out;
    }
}
