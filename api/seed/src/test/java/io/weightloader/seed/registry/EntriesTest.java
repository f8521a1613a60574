package io.weightloader.seed.registry;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.api.config.RankKey;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class EntriesTest {
    private static final String M = "meta-llama/Llama-3.1-8B";
    private static final SourceEntry E = new SourceEntry("10.0.0.1:8400", M,
            SourceRegistryContract.fingerprint("g1", 1), true);
    private static final String PREFIX = Entries.rankPrefix(M, new RankKey(1, 0));

    private static SourceEntry parse(String key, String value) {
        return Entries.parse(PREFIX, key.getBytes(StandardCharsets.UTF_8), value.getBytes(StandardCharsets.UTF_8));
    }

    @Test
    void roundTrips() {
        assertThat(Entries.key(E)).isEqualTo("/weightloader/models/meta-llama%2FLlama-3.1-8B/1-0/10.0.0.1:8400");
        assertThat(parse(Entries.key(E), Entries.value(E))).isEqualTo(E);
    }

    @Test
    void refusesHostileKeysAndValues() {
        String k = Entries.key(E);
        String v = Entries.value(E);
        assertThatThrownBy(() -> parse(k, v.replace("\"ready\":true", "\"ready\":true,\"extra\":1")))
                .hasMessageContaining("unknown field 'extra'");
        assertThatThrownBy(() -> parse(k, v.replace("\"ready\":true,", ""))).hasMessageContaining("lacks 'ready'");
        assertThatThrownBy(() -> parse(k, v.replace("\"ready\":true", "\"ready\":\"yes\"")))
                .hasMessageContaining("ready");
        assertThatThrownBy(() -> parse(k, v.replace("\"tp\":1", "\"tp\":1.5"))).hasMessageContaining("'tp'");
        assertThatThrownBy(() -> parse(k, v.replace("\"tp\":1", "\"tp\":0"))).hasMessageContaining("differs");
        assertThatThrownBy(() -> parse(k, v.replace("10.0.0.1:8400", "10.0.0.2:8400")))
                .hasMessageContaining("differs from its key's");
        assertThatThrownBy(() -> parse(k, v.replace("\"tp_size\":2", "\"tp_size\":0"))).hasMessageContaining("tp_size");
        assertThatThrownBy(() -> parse(k, v.replace("\"version\":1", "\"version\":2"))).hasMessageContaining("version");
        assertThatThrownBy(() -> parse(k, v + "x")).hasMessageContaining("not JSON");
        assertThatThrownBy(() -> parse(k, "[1,2]")).hasMessageContaining("not a JSON object");
        assertThatThrownBy(() -> parse(k, v.replace("{\"version\":1,", "{\"version\":1,\"version\":1,")))
                .hasMessageContaining("not JSON");
        assertThatThrownBy(() -> parse(k, v.replace("\"g1\"", "\"g1\\u0000\""))).hasMessageContaining("generation");
        assertThatThrownBy(() -> parse(k, v.replace(SourceRegistryContract.NAMES, "abc")))
                .hasMessageContaining("names digest");
        assertThatThrownBy(() -> parse(k, " ".repeat(Entries.MAX_VALUE_BYTES + 1))).hasMessageContaining("4096");
        assertThatThrownBy(() -> parse(PREFIX + "x".repeat(Entries.MAX_KEY_BYTES), v)).hasMessageContaining("1024");
        assertThatThrownBy(() -> parse(PREFIX + "no-port", v)).hasMessageContaining("host:port");
        assertThatThrownBy(() -> parse(PREFIX + "h:99999", v)).hasMessageContaining("1..65535");
        assertThatThrownBy(() -> parse("/elsewhere/10.0.0.1:8400", v)).hasMessageContaining("outside");
        assertThatThrownBy(() -> parse(k, "[".repeat(100) + "]".repeat(100))).hasMessageContaining("JSON");
    }

    @Test
    void refusesBadModelIds() {
        for (String bad : new String[] {"", "a/../b", "/a", "a/", "a b", "x".repeat(201), "a\nb"}) {
            assertThatThrownBy(() -> SourceEntry.checkModelId(bad)).hasMessageContaining("model id");
        }
        assertThat(SourceEntry.checkModelId("llama-3.1-8b@v2")).isEqualTo("llama-3.1-8b@v2");
    }
}
