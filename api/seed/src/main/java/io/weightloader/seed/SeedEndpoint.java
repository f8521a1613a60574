package io.weightloader.seed;

import java.util.Map;

/**
 * An extra control-plane endpoint contributed by a {@link SeedPublisher} (POST, token-checked like the rest).
 * The body is at most 1 MiB and must be treated as hostile.
 */
@FunctionalInterface
public interface SeedEndpoint {
    /** Handles one request; the reply is serialised as JSON with its status code. */
    Reply handle(Map<String, String> query, byte[] body);

    /** An answer: HTTP status and a JSON-serialisable body. */
    record Reply(int status, Object body) {
        public static Reply ok(Object body) {
            return new Reply(200, body);
        }

        public static Reply error(int status, String message) {
            return new Reply(status, Map.of("error", message));
        }
    }
}
