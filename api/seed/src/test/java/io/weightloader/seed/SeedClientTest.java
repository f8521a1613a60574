package io.weightloader.seed;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.weightloader.api.WeightLoaderException;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The control-plane client against a scripted server: retries, refusals, redirects, timeouts, headers. */
class SeedClientTest {
    private HttpServer server;
    private final AtomicInteger calls = new AtomicInteger();
    private final List<String> seen = new CopyOnWriteArrayList<>();

    private interface Script {
        void answer(HttpExchange ex, int call) throws Exception;
    }

    private SeedClient serve(Script script, Optional<String> token, Duration requestTimeout) throws IOException {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/", ex -> {
            try {
                byte[] body = ex.getRequestBody().readAllBytes();
                seen.add(ex.getRequestMethod() + " " + ex.getRequestURI() + " auth="
                        + ex.getRequestHeaders().getFirst("Authorization") + " body="
                        + new String(body, StandardCharsets.UTF_8));
                script.answer(ex, calls.incrementAndGet());
            } catch (Exception e) {
                throw new IOException(e);
            } finally {
                ex.close();
            }
        });
        server.start();
        return new SeedClient("127.0.0.1", server.getAddress().getPort(), token, Duration.ofSeconds(2),
                requestTimeout, 2);
    }

    private static void reply(HttpExchange ex, int status, String body) throws IOException {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        ex.sendResponseHeaders(status, b.length == 0 ? -1 : b.length);
        if (b.length > 0) {
            try (OutputStream os = ex.getResponseBody()) {
                os.write(b);
            }
        }
    }

    @AfterEach
    void stop() {
        if (server != null) {
            server.stop(0);
        }
    }

    @Test
    void transientFailuresAreRetriedAndTheTokenIsSent() throws Exception {
        SeedClient c = serve((ex, n) -> reply(ex, n < 3 ? 503 : 200, n < 3 ? "starting" : "{\"ok\":1}"),
                Optional.of("s3cret"), Duration.ofSeconds(2));
        assertThat(new String(c.get("/v1/x"), StandardCharsets.UTF_8)).isEqualTo("{\"ok\":1}");
        assertThat(calls).hasValue(3);
        assertThat(seen).allMatch(s -> s.startsWith("GET /v1/x auth=Bearer s3cret"));
    }

    @Test
    void aRefusalIsReportedAtOnceWithItsStatus() throws Exception {
        SeedClient c = serve((ex, n) -> reply(ex, 401, "missing or wrong token"), Optional.empty(),
                Duration.ofSeconds(2));
        assertThatThrownBy(() -> c.get("/v1/manifest?tp=0&pp=0"))
                .isInstanceOfSatisfying(SeedRefusedException.class, e -> assertThat(e.status()).isEqualTo(401))
                .hasMessageContaining("answered 401 to /v1/manifest?tp=0&pp=0")
                .hasMessageContaining("weight-loader.remote-instance.token");
        assertThat(calls).hasValue(1);
    }

    @Test
    void aRedirectIsNotFollowed() throws Exception {
        SeedClient c = serve((ex, n) -> {
            ex.getResponseHeaders().add("Location", "http://127.0.0.1:1/elsewhere");
            reply(ex, 302, "");
        }, Optional.of("s3cret"), Duration.ofSeconds(2));
        assertThatThrownBy(() -> c.get("/v1/session?tp=0&pp=0"))
                .isInstanceOfSatisfying(SeedRefusedException.class, e -> assertThat(e.status()).isEqualTo(302));
        assertThat(calls).hasValue(1);
    }

    @Test
    void aPostIsSentOnceAndRetriedOnlyOnTheStatusesAsked() throws Exception {
        SeedClient c = serve((ex, n) -> reply(ex, n == 1 ? 409 : 200, n == 1 ? "busy" : "{\"id\":7}"),
                Optional.empty(), Duration.ofSeconds(2));
        byte[] answer = c.post("/v1/nccl/send?tp=0&pp=0", "{\"a\":1}".getBytes(StandardCharsets.UTF_8), Set.of(409));
        assertThat(new String(answer, StandardCharsets.UTF_8)).isEqualTo("{\"id\":7}");
        assertThat(seen).containsExactly("POST /v1/nccl/send?tp=0&pp=0 auth=null body={\"a\":1}",
                "POST /v1/nccl/send?tp=0&pp=0 auth=null body={\"a\":1}");
        calls.set(0);
        assertThatThrownBy(() -> c.post("/v1/nccl/send?tp=0&pp=0", new byte[0], Set.of()))
                .isInstanceOfSatisfying(SeedRefusedException.class, e -> assertThat(e.status()).isEqualTo(409));
        assertThat(calls).hasValue(1);
    }

    @Test
    void aSeedThatDoesNotAnswerTimesOutOnEveryAttempt() throws Exception {
        SeedClient c = serve((ex, n) -> {
            Thread.sleep(1500);
            reply(ex, 200, "late");
        }, Optional.empty(), Duration.ofMillis(200));
        long t0 = System.nanoTime();
        assertThatThrownBy(() -> c.get("/v1/session?tp=0&pp=0"))
                .isInstanceOf(WeightLoaderException.class)
                .hasMessageContaining("cannot reach seed 127.0.0.1:")
                .hasMessageContaining("(after 3 attempts)");
        // three 200 ms timeouts and two back-offs, well under the server's 1.5 s per answer
        assertThat((System.nanoTime() - t0) / 1e9).isLessThan(1.5 * 3);
    }

    @Test
    void aSeedThatIsNotListeningNamesItsAddress() throws Exception {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        SeedClient c = new SeedClient("127.0.0.1", port, Optional.empty(), Duration.ofSeconds(1),
                Duration.ofSeconds(1), 1);
        assertThatThrownBy(() -> c.get("/health"))
                .hasMessageContaining("cannot reach seed 127.0.0.1:" + port + " for /health")
                .hasMessageContaining("(after 2 attempts)");
    }

    @Test
    void aSeedThatIsShuttingDownIsNotAskedAgain() throws Exception {
        SeedClient c = serve((ex, n) -> reply(ex, 503,
                "{\"error\":\"this seed is shutting down and takes no new loads\"}"), Optional.empty(),
                Duration.ofSeconds(2));
        assertThatThrownBy(() -> c.get("/v1/manifest?tp=0&pp=0")).isInstanceOf(SeedRefusedException.class)
                .hasMessageContaining("shutting down");
        assertThat(calls.get()).isEqualTo(1); // a seed that stops does not come back: retrying only delays the error
    }
}
