package io.weightloader.cli;

import io.weightloader.api.DType;
import io.weightloader.api.TensorSpec;
import io.weightloader.backend.local.SafetensorsWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A synthetic Llama-shaped bf16 checkpoint (Hugging Face tensor names) sized to a byte target, with
 * deterministic pseudo-random bytes.
 *
 * <p>Shape: head size 64, as many key/value heads as query heads, intermediate size 8/3 of the hidden size
 * rounded up to a multiple of 256 (as Llama 2), about one layer per 128 of hidden size. The hidden size is the
 * largest multiple of 64 whose nominal model fits the target; the layer count is then raised to fill it and
 * the vocabulary takes up what is left in multiples of 64 rows (so the llama tp layout divides it for tp sizes up
 * to 64), and the total lands within 64 rows of the embedding of the target.
 *
 * @param hidden       hidden size
 * @param intermediate MLP size
 * @param layers       decoder layers
 * @param vocab        vocabulary size (rows of embed_tokens and lm_head)
 */
public record SyntheticLlama(int hidden, int intermediate, int layers, int vocab) {
    private static final int HEAD_DIM = 64;
    private static final int MAX_HIDDEN = 16384;
    private static final int BLOCK = 64 << 10;
    /**
     * Each little-endian bf16 keeps its sign, low exponent bits and mantissa ({@code & KEEP}) and gets exponent
     * bits {@code 01111xxx} ({@code | SET}): every value is finite with 2^-7 <= |x| < 2, like trained weights.
     */
    private static final long BF16_KEEP = 0x83FF_83FF_83FF_83FFL;
    private static final long BF16_SET = 0x3C00_3C00_3C00_3C00L;

    public static SyntheticLlama forSize(long target) {
        SyntheticLlama best = null;
        for (int h = HEAD_DIM; h <= MAX_HIDDEN; h += HEAD_DIM) {
            int layers = Math.max(1, Math.round(h / 128f));
            SyntheticLlama nominal = new SyntheticLlama(h, intermediateFor(h), layers, nominalVocab(h));
            if (nominal.totalBytes() > target) {
                break;
            }
            best = nominal;
        }
        if (best == null) {
            best = new SyntheticLlama(HEAD_DIM, intermediateFor(HEAD_DIM), 1, 1);
            if (best.totalBytes() > target) {
                throw new IllegalArgumentException("the smallest synthetic model is " + best.totalBytes()
                        + " bytes; --size " + target + " is below it");
            }
        }
        long fixed = best.totalBytes() - best.layers * best.layerBytes();
        int layers = (int) Math.max(1, Math.min(Integer.MAX_VALUE, (target - fixed) / best.layerBytes()));
        SyntheticLlama filled = new SyntheticLlama(best.hidden, best.intermediate, layers, best.vocab);
        long perVocabRow = 2L * 2 * best.hidden;
        // whole multiples of 64 rows, so the llama layout splits the vocabulary for any tp size up to 64
        long extraRows = Math.max(0, target - filled.totalBytes()) / perVocabRow / 64 * 64;
        return new SyntheticLlama(best.hidden, best.intermediate, layers,
                (int) Math.min(Integer.MAX_VALUE, best.vocab + extraRows));
    }

    private static int intermediateFor(int h) {
        int raw = (8 * h + 2) / 3;
        return (raw + 255) / 256 * 256;
    }

    private static int nominalVocab(int h) {
        return Math.min(32000, 8 * h);
    }

    /** Bytes of one decoder layer. */
    public long layerBytes() {
        long h = hidden;
        return 2 * (4 * h * h + 3 * h * intermediate + 2 * h);
    }

    public long totalBytes() {
        return layers * layerBytes() + 2L * 2 * vocab * hidden + 2L * hidden;
    }

    public int heads() {
        return hidden / HEAD_DIM;
    }

    /** The tensors in the order Hugging Face writes them: embeddings, layers, final norm, lm_head. */
    public List<TensorSpec> specs() {
        List<TensorSpec> s = new ArrayList<>();
        long h = hidden;
        s.add(TensorSpec.of("model.embed_tokens.weight", DType.BF16, vocab, h));
        for (int i = 0; i < layers; i++) {
            String p = "model.layers." + i + ".";
            s.add(TensorSpec.of(p + "self_attn.q_proj.weight", DType.BF16, h, h));
            s.add(TensorSpec.of(p + "self_attn.k_proj.weight", DType.BF16, h, h));
            s.add(TensorSpec.of(p + "self_attn.v_proj.weight", DType.BF16, h, h));
            s.add(TensorSpec.of(p + "self_attn.o_proj.weight", DType.BF16, h, h));
            s.add(TensorSpec.of(p + "mlp.gate_proj.weight", DType.BF16, intermediate, h));
            s.add(TensorSpec.of(p + "mlp.up_proj.weight", DType.BF16, intermediate, h));
            s.add(TensorSpec.of(p + "mlp.down_proj.weight", DType.BF16, h, intermediate));
            s.add(TensorSpec.of(p + "input_layernorm.weight", DType.BF16, h));
            s.add(TensorSpec.of(p + "post_attention_layernorm.weight", DType.BF16, h));
        }
        s.add(TensorSpec.of("model.norm.weight", DType.BF16, h));
        s.add(TensorSpec.of("lm_head.weight", DType.BF16, vocab, h));
        return s;
    }

    /** The tensors with their bytes: a xorshift stream per tensor, a pure function of (seed, tensor, offset). */
    public List<SafetensorsWriter.Tensor> tensors(long seed) {
        List<TensorSpec> specs = specs();
        List<SafetensorsWriter.Tensor> out = new ArrayList<>(specs.size());
        for (int i = 0; i < specs.size(); i++) {
            long tensorSeed = mix(seed ^ mix(i + 1L));
            out.add(new SafetensorsWriter.Tensor(specs.get(i), (offset, buf) -> fill(tensorSeed, offset, buf)));
        }
        return out;
    }

    /** A Hugging Face style config.json describing the model. */
    public Map<String, Object> configJson() {
        Map<String, Object> c = new LinkedHashMap<>();
        c.put("architectures", List.of("LlamaForCausalLM"));
        c.put("model_type", "llama");
        c.put("hidden_size", hidden);
        c.put("intermediate_size", intermediate);
        c.put("num_hidden_layers", layers);
        c.put("num_attention_heads", heads());
        c.put("num_key_value_heads", heads());
        c.put("vocab_size", vocab);
        c.put("rms_norm_eps", 1e-5);
        c.put("max_position_embeddings", 4096);
        c.put("tie_word_embeddings", false);
        c.put("torch_dtype", "bfloat16");
        c.put("_comment", "synthetic weights written by 'weightloader generate': random values, not a trained model");
        return c;
    }

    /**
     * Puts bytes {@code [offset, offset + buf.remaining())} of a tensor's stream into {@code buf}. The stream
     * restarts from a seed every 64 KiB block, so any range can be produced without generating what precedes.
     */
    public static void fill(long tensorSeed, long offset, ByteBuffer buf) {
        ByteOrder saved = buf.order();
        buf.order(ByteOrder.LITTLE_ENDIAN);
        try {
            long pos = offset;
            while (buf.hasRemaining()) {
                long block = pos / BLOCK;
                long blockEnd = (block + 1) * BLOCK;
                long state = mix(tensorSeed + block) | 1;
                for (long skip = (pos - block * BLOCK) / 8; skip > 0; skip--) {
                    state = xorshift(state);
                }
                int byteInLong = (int) (pos & 7);
                while (buf.hasRemaining() && pos < blockEnd) {
                    state = xorshift(state);
                    long v = (state * 0x2545F4914F6CDD1DL) & BF16_KEEP | BF16_SET;
                    if (byteInLong == 0 && buf.remaining() >= 8) {
                        buf.putLong(v);
                        pos += 8;
                    } else {
                        for (int b = byteInLong; b < 8 && buf.hasRemaining(); b++) {
                            buf.put((byte) (v >>> (8 * b)));
                            pos++;
                        }
                        byteInLong = 0;
                    }
                }
            }
        } finally {
            buf.order(saved);
        }
    }

    private static long xorshift(long x) {
        x ^= x >>> 12;
        x ^= x << 25;
        x ^= x >>> 27;
        return x;
    }

    /** SplitMix64's finaliser: spreads seeds so that nearby ones give unrelated streams. */
    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}
