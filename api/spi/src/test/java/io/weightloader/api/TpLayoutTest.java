package io.weightloader.api;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.ConfigFactory;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

class TpLayoutTest {
    @TempDir
    Path dir;

    private static final DType T = DType.BF16;

    @Test
    void llamaSplitsColumnParallelOnDimZeroRowParallelOnDimOneAndReplicatesTheRest() {
        TpLayout l = TpLayout.parse("llama");
        TensorSpec q = TensorSpec.of("model.layers.3.self_attn.q_proj.weight", T, 64, 64);
        TensorSpec o = TensorSpec.of("model.layers.3.self_attn.o_proj.weight", T, 64, 64);
        TensorSpec down = TensorSpec.of("model.layers.3.mlp.down_proj.weight", T, 64, 128);
        TensorSpec oBias = TensorSpec.of("model.layers.3.self_attn.o_proj.bias", T, 64);
        TensorSpec qBias = TensorSpec.of("model.layers.3.self_attn.q_proj.bias", T, 64);
        TensorSpec norm = TensorSpec.of("model.layers.3.input_layernorm.weight", T, 64);
        TensorSpec embed = TensorSpec.of("model.embed_tokens.weight", T, 256, 64);
        TensorSpec head = TensorSpec.of("lm_head.weight", T, 256, 64);

        assertThat(l.sliceFor(q, 4, 1)).isEqualTo(new TensorSlice(0, 16, 16));
        assertThat(l.sliceFor(qBias, 4, 3)).isEqualTo(new TensorSlice(0, 48, 16));
        assertThat(l.sliceFor(o, 4, 2)).isEqualTo(new TensorSlice(1, 32, 16));
        assertThat(l.sliceFor(down, 2, 1)).isEqualTo(new TensorSlice(1, 64, 64));
        assertThat(l.sliceFor(embed, 2, 1)).isEqualTo(new TensorSlice(0, 128, 128));
        assertThat(l.sliceFor(head, 2, 0)).isEqualTo(new TensorSlice(0, 0, 128));
        assertThat(l.sliceFor(oBias, 4, 1)).isNull();
        assertThat(l.sliceFor(norm, 4, 1)).isNull();
        // at tp-size 1 a split tensor is a whole-range slice, so a seed's manifest says how it splits
        assertThat(l.sliceFor(o, 1, 0)).isEqualTo(new TensorSlice(1, 0, 64));
        assertThat(TpLayout.parse("none").sliceFor(q, 4, 1)).isNull();
    }

    @Test
    void anIndivisibleDimensionIsRefusedNamingTheTensorItsShapeAndTheRule() {
        List<TensorSpec> specs = List.of(TensorSpec.of("model.embed_tokens.weight", T, 32001, 64),
                TensorSpec.of("model.layers.0.self_attn.q_proj.weight", T, 64, 64));
        assertThatThrownBy(() -> TpLayout.LLAMA.plan(specs, 2, 0))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.tp-layout")
                .hasMessageContaining("model.embed_tokens.weight")
                .hasMessageContaining("[32001, 64]")
                .hasMessageContaining("does not divide by tp-size 2")
                .hasMessageContaining("vocabulary-parallel");
        assertThat(TpLayout.LLAMA.plan(specs, 1, 0)).containsKeys("model.embed_tokens.weight");
    }

    @Test
    void aRulesFileSplitsByItsFirstMatchingRule() throws Exception {
        Path rules = dir.resolve("rules.conf");
        Files.writeString(rules, """
                rules = [
                  { match = ".*\\\\.experts\\\\..*\\\\.w2", split = 1 }
                  { match = ".*\\\\.experts\\\\..*", split = 0 }
                  { match = ".*gate.*", replicate = true }
                ]
                """);
        TpLayout l = TpLayout.parse(rules.toString());
        assertThat(l.name()).isEqualTo(rules.toString());
        assertThat(l.sliceFor(TensorSpec.of("m.experts.3.w2", T, 8, 16), 2, 1)).isEqualTo(new TensorSlice(1, 8, 8));
        assertThat(l.sliceFor(TensorSpec.of("m.experts.3.w1", T, 8, 16), 2, 1)).isEqualTo(new TensorSlice(0, 4, 4));
        assertThat(l.sliceFor(TensorSpec.of("m.gate", T, 8, 16), 2, 1)).isNull();
        assertThat(l.sliceFor(TensorSpec.of("m.other", T, 8, 16), 2, 1)).isNull();
        assertThatThrownBy(() -> l.sliceFor(TensorSpec.of("m.experts.1.w2", T, 8), 2, 0))
                .hasMessageContaining("has no dimension 1").hasMessageContaining("rule 1");
    }

    @Test
    void unknownLayoutsAndBadRulesFilesAreRefusedAtStartUpWithTheConfigPath() throws Exception {
        assertThatThrownBy(() -> settings("gpt-neox"))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.tp-layout")
                .hasMessageContaining("neither a built-in layout (none, llama) nor a rules file");
        Path both = dir.resolve("both.conf");
        Files.writeString(both, "rules = [ { match = \"a\", split = 0, replicate = true } ]");
        assertThatThrownBy(() -> settings(both.toString())).hasMessageContaining("exactly one of split");
        Path badRegex = dir.resolve("regex.conf");
        Files.writeString(badRegex, "rules = [ { match = \"(\", split = 0 } ]");
        assertThatThrownBy(() -> settings(badRegex.toString())).hasMessageContaining("not a regular expression");
        Path typo = dir.resolve("typo.conf");
        Files.writeString(typo, "rules = [ { match = \"a\", spilt = 0 } ]");
        assertThatThrownBy(() -> settings(typo.toString())).hasMessageContaining("unknown key 'spilt'");
        assertThat(settings("llama").tpLayout()).isSameAs(TpLayout.LLAMA);
        assertThat(settings("none").tpLayout().isNone()).isTrue();
    }

    @Test
    @Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD) // before the bound: compiling never ended
    void oversizeRulesFilesRulesListsAndPatternsAreRefusedNamingTheFileAndRule() throws Exception {
        // a 2,000,000-character pattern used to hang start-up in Pattern.compile
        Path huge = dir.resolve("huge.conf");
        Files.writeString(huge, "rules = [ { match = \"" + "a".repeat(2_000_000) + "\", split = 0 } ]");
        assertThatThrownBy(() -> settings(huge.toString()))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.tp-layout")
                .hasMessageContaining(huge.toString())
                .hasMessageContaining("more than the 1048576");
        Path longPattern = dir.resolve("long.conf");
        Files.writeString(longPattern, "rules = [ { match = \"a\", split = 0 }\n { match = \"" + "b".repeat(5000)
                + "\", split = 0 } ]");
        assertThatThrownBy(() -> settings(longPattern.toString()))
                .hasMessageContaining(longPattern + " rule 2")
                .hasMessageContaining("5000 characters long, more than the 4096 allowed");
        Path many = dir.resolve("many.conf");
        Files.writeString(many, "rules = [" + "{ match = \"x\", replicate = true }\n".repeat(10_001) + "]");
        assertThatThrownBy(() -> settings(many.toString()))
                .hasMessageContaining(many.toString())
                .hasMessageContaining("10001 rules, more than the 10000 allowed");
    }

    @Test
    void aFractionalSplitIsRefusedNotTruncated() throws Exception {
        Path frac = dir.resolve("frac.conf");
        Files.writeString(frac, "rules = [ { match = \"a\", replicate = true }\n { match = \"b\", split = 1.5 } ]");
        assertThatThrownBy(() -> settings(frac.toString()))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.tp-layout")
                .hasMessageContaining(frac + " rule 2")
                .hasMessageContaining("whole number 0..7; got '1.5'");
        Path word = dir.resolve("word.conf");
        Files.writeString(word, "rules = [ { match = \"b\", split = first } ]");
        assertThatThrownBy(() -> settings(word.toString())).hasMessageContaining("got 'first'");
        Path whole = dir.resolve("whole.conf");
        Files.writeString(whole, "rules = [ { match = \"b\", split = 1 } ]");
        assertThat(settings(whole.toString()).tpLayout().rules().get(0).split()).isEqualTo(1);
    }

    @Test
    void manyIndivisibleTensorsListAFewThenACount() {
        List<TensorSpec> specs = new java.util.ArrayList<>();
        for (int i = 0; i < 215; i++) {
            specs.add(TensorSpec.of("model.layers." + i + ".self_attn.q_proj.weight", T, 63, 64));
        }
        assertThatThrownBy(() -> TpLayout.LLAMA.plan(specs, 2, 0))
                .hasMessageContaining("model.layers.0.self_attn.q_proj.weight")
                .hasMessageContaining("... and 212 more")
                .hasMessageNotContaining("model.layers.3.self_attn")
                .satisfies(e -> assertThat(e.getMessage()).hasSizeLessThan(1000));
    }

    private static WeightLoaderSettings settings(String layout) {
        return WeightLoaderSettings.from(ConfigFactory.parseMap(Map.of("weight-loader.tp-layout", layout))
                .withFallback(ConfigFactory.defaultReference()).resolve());
    }
}
