package io.weightloader.seed.registry;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.api.config.RankKey;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

/** An assignment's key and value, and the strict parsing of what a shared registry holds. */
class AssignmentsTest {
    private static final String M = "meta-llama/Llama-3.1-8B";
    private static final RankKey R = new RankKey(1, 0);
    private static final String PREFIX = Assignments.rankPrefix(M, R);
    private static final String K = Assignments.key(M, R, "10.0.0.1:8400");
    private static final String V = Assignments.value(M, "10.0.0.1:8400", "10.0.0.9:8400");

    private static Assignments.Held parse(String key, String value) {
        return Assignments.parse(PREFIX, key.getBytes(StandardCharsets.UTF_8), value.getBytes(StandardCharsets.UTF_8));
    }

    @Test
    void roundTripsApartFromTheEntries() {
        assertThat(K).isEqualTo("/weightloader/assignments/meta-llama%2FLlama-3.1-8B/1-0/10.0.0.1:8400")
                .doesNotStartWith(Entries.PREFIX);
        assertThat(V).isEqualTo("{\"version\":1,\"model_id\":\"meta-llama/Llama-3.1-8B\",\"source\":\"10.0.0.1:8400\","
                + "\"client\":\"10.0.0.9:8400\"}");
        assertThat(parse(K, V)).isEqualTo(new Assignments.Held("10.0.0.1:8400", "10.0.0.9:8400"));
    }

    @Test
    void refusesHostileKeysAndValues() {
        assertThatThrownBy(() -> parse(K, V.replace("}", ",\"x\":1}"))).hasMessageContaining("unknown field 'x'");
        assertThatThrownBy(() -> parse(K, V.replace(",\"client\":\"10.0.0.9:8400\"", "")))
                .hasMessageContaining("lacks 'client'");
        assertThatThrownBy(() -> parse(K, V.replace("\"10.0.0.9:8400\"", "\"a b\""))).hasMessageContaining("client id");
        assertThatThrownBy(() -> parse(K, V.replace("\"10.0.0.9:8400\"", "\"" + "c".repeat(301) + "\"")))
                .hasMessageContaining("client id");
        assertThatThrownBy(() -> parse(K, V.replace("\"source\":\"10.0.0.1:8400\"", "\"source\":\"10.0.0.2:8400\"")))
                .hasMessageContaining("differs from its key's");
        assertThatThrownBy(() -> parse(K, V.replace("Llama-3.1-8B\"", "Other\""))).hasMessageContaining("model id");
        assertThatThrownBy(() -> parse(K, V.replace("\"version\":1", "\"version\":2"))).hasMessageContaining("version");
        assertThatThrownBy(() -> parse(K, V.replace("{\"version\":1,", "{\"version\":1,\"version\":1,")))
                .hasMessageContaining("not JSON");
        assertThatThrownBy(() -> parse(K, "[1]")).hasMessageContaining("not a JSON object");
        assertThatThrownBy(() -> parse(K, " ".repeat(Entries.MAX_VALUE_BYTES + 1))).hasMessageContaining("4096");
        assertThatThrownBy(() -> parse(PREFIX + "x".repeat(Entries.MAX_KEY_BYTES), V)).hasMessageContaining("1024");
        assertThatThrownBy(() -> parse(PREFIX + "no-port", V)).hasMessageContaining("host:port");
        assertThatThrownBy(() -> parse(Entries.rankPrefix(M, R) + "10.0.0.1:8400", V)).hasMessageContaining("outside");
        assertThatThrownBy(() -> Assignments.checkClient("")).hasMessageContaining("client id");
    }
}
