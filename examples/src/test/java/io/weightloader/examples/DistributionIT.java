package io.weightloader.examples;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What ships, run as a user runs it: the launcher of the distribution that {@code mvn package} built
 * ({@code examples/target/weightloader/bin/weightloader}), in its own processes, with only its {@code lib/}.
 * Runs in {@code mvn verify} after packaging; needs no GPU and no Mooncake.
 */
class DistributionIT {
    static final Path LAUNCHER = Path.of("target/weightloader/bin/weightloader").toAbsolutePath();
    static final Path FIXTURES = Path.of("../backend-local/src/test/resources/fixtures").toAbsolutePath();
    static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path tmp;
    private final List<Process> seeds = new ArrayList<>();
    private final List<Process> clients = new ArrayList<>();

    record Run(int exitCode, String out, String err) {
    }

    /** Runs the launcher to completion (bounded), with a clean environment for the settings it reads. */
    Run run(String... args) throws Exception {
        return runWith(Map.of(), args);
    }

    Run runWith(Map<String, String> env, String... args) throws Exception {
        return start(env, args).finish();
    }

    /** A launcher run in progress: its output so far can be watched while it runs. */
    record Started(Process process, Path out, Path err, String[] args) {
        String errSoFar() throws IOException {
            return Files.readString(err);
        }

        /** Waits (bounded) for it to exit. */
        Run finish() throws Exception {
            if (!process.waitFor(120, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                throw new AssertionError("weightloader " + String.join(" ", args) + " did not finish in 120 s; its"
                        + " stderr:\n" + errSoFar());
            }
            return new Run(process.exitValue(), Files.readString(out), Files.readString(err));
        }
    }

    private int runs;

    /** Starts the launcher, with a clean environment for the settings it reads; {@link Started#finish} waits for it. */
    Started start(Map<String, String> env, String... args) throws IOException {
        List<String> cmd = new ArrayList<>(List.of(LAUNCHER.toString()));
        cmd.addAll(List.of(args));
        int n = runs++;
        Path out = tmp.resolve("out-" + n + ".txt");
        Path err = tmp.resolve("err-" + n + ".txt");
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile());
        pb.environment().keySet().removeIf(k -> k.startsWith("WEIGHT_LOADER_") || k.startsWith("WEIGHTLOADER_"));
        pb.environment().putAll(env);
        Process p = pb.start();
        clients.add(p);
        return new Started(p, out, err, args);
    }

    /**
     * Waits until {@code condition} holds, polling every 50 ms, at most {@code seconds}: the way these tests wait for
     * a process to reach a state (never a fixed sleep, which a slow machine outlasts). Fails naming {@code what} and
     * the state {@code diagnosis} describes.
     */
    static void await(String what, long seconds, java.util.concurrent.Callable<Boolean> condition,
                      java.util.concurrent.Callable<String> diagnosis) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (!condition.call()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("waited " + seconds + " s for " + what + "; " + diagnosis.call());
            }
            Thread.sleep(50);
        }
    }

    /** Starts {@code weightloader seed ARGS} and waits (bounded) until it is serving; returns its port. */
    int seed(String... args) throws Exception {
        return startSeed(tmp, seeds, args).port();
    }

    /** A seed process of the distribution, its control-plane port and its log. */
    record Seed(Process process, int port, Path log) {
    }

    /**
     * Starts {@code weightloader seed ARGS} (files in {@code dir}, the process added to {@code started}) and waits,
     * bounded, until its ready file names its port.
     */
    static Seed startSeed(Path dir, List<Process> started, String... args) throws Exception {
        Path ready = dir.resolve("ready-" + started.size());
        Path log = dir.resolve("seed-" + started.size() + ".log");
        List<String> cmd = new ArrayList<>(List.of(LAUNCHER.toString(), "seed", "--port", "0", "--ready-file",
                ready.toString()));
        cmd.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile());
        pb.environment().keySet().removeIf(k -> k.startsWith("WEIGHT_LOADER_") || k.startsWith("WEIGHTLOADER_"));
        Process p = pb.start();
        started.add(p);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!Files.exists(ready) || Files.readString(ready).isBlank()) {
            if (!p.isAlive() || System.nanoTime() > deadline) {
                throw new AssertionError("seed did not start: " + Files.readString(log));
            }
            Thread.sleep(50);
        }
        return new Seed(p, Integer.parseInt(Files.readString(ready).trim()), log);
    }

    /** Lease renewals of the fake clients that hold a root busy ({@link #holdRoot}). */
    private final java.util.concurrent.ScheduledExecutorService renewals =
            java.util.concurrent.Executors.newSingleThreadScheduledExecutor(r -> {
                Thread t = new Thread(r, "test-lease-renewals");
                t.setDaemon(true);
                return t;
            });

    @AfterEach
    void stopSeeds() throws InterruptedException {
        renewals.shutdownNow();
        for (Process p : clients) {
            p.destroyForcibly(); // a client a failed test left running
        }
        for (Process p : seeds) {
            p.destroy();
            if (!p.waitFor(10, TimeUnit.SECONDS)) {
                p.destroyForcibly();
            }
        }
    }

    @Test
    void theDistributionIsALauncherWithEveryBackendAndAnArchive() throws IOException {
        assertThat(LAUNCHER).isExecutable();
        assertThat(Path.of("target/weightloader.tar.gz")).isRegularFile();
        Path lib = LAUNCHER.getParent().resolveSibling("lib");
        assertThat(lib.toFile().list())
                .anyMatch(n -> n.startsWith("weightloader-backend-nccl"))
                .anyMatch(n -> n.startsWith("weightloader-backend-transfer-engine"))
                .anyMatch(n -> n.startsWith("weightloader-backend-local"))
                .anyMatch(n -> n.startsWith("weightloader-benchmarks"))
                .anyMatch(n -> n.startsWith("weightloader-registry-etcd")) // weight-loader.directory = "etcd://..."
                .anyMatch(n -> n.startsWith("jetcd-core"));
        // the bench-* commands come from their own jar: the command line's holds no benchmark
        String[] cli = lib.toFile().list((d, n) -> n.startsWith("weightloader-examples"));
        assertThat(cli).hasSize(1);
        try (java.util.jar.JarFile jar = new java.util.jar.JarFile(lib.resolve(cli[0]).toFile())) {
            assertThat(jar.stream().map(java.util.jar.JarEntry::getName)).noneMatch(n -> n.contains("Bench"));
        }
        assertThat(LAUNCHER.getParent().resolveSibling("scripts").resolve("build-mooncake.sh")).isExecutable();
    }

    @Test
    void backendsListsEveryBackendWithItsCapabilitiesAndNativeParts() throws Exception {
        Run r = run("backends", "--json");
        assertThat(r.exitCode()).as(r.err()).isZero();
        JsonNode backends = JSON.readTree(r.out()).get("backends");
        Map<String, JsonNode> byName = new java.util.HashMap<>();
        backends.forEach(b -> byName.put(b.get("name").asText(), b));
        assertThat(byName).containsKeys("local", "transfer_engine", "nccl");
        assertThat(byName.get("nccl").get("disturbsSeed").asBoolean()).isTrue();
        assertThat(byName.get("nccl").get("readsFromSeed").asBoolean()).isTrue();
        assertThat(byName.get("transfer_engine").get("disturbsSeed").asBoolean()).isFalse();
        assertThat(byName.get("local").get("readsFromSeed").asBoolean()).isFalse();
        assertThat(byName.get("nccl").get("servesAsSeed").asBoolean()).isTrue();
        List<String> ncclParts = new ArrayList<>();
        byName.get("nccl").get("nativeParts").forEach(n -> ncclParts.add(n.get("name").asText()));
        assertThat(ncclParts).containsExactly("libcuda.so.1", "libcudart.so.13", "libnccl.so.2");
        assertThat(byName.get("transfer_engine").get("nativeParts").get(0).get("name").asText())
                .isEqualTo("libtransfer_engine.so");

        Run table = run("backends");
        assertThat(table.exitCode()).as(table.err()).isZero();
        assertThat(table.out()).contains("nccl").contains("transfer_engine").contains("local").contains("libnccl.so.2");
    }

    @Test
    void choosingNcclWithoutAGpuIsTheOneLineMissingLibraryError() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeFalse(Files.exists(Path.of("/dev/nvidia0")),
                "this machine has a GPU: the no-GPU error cannot be seen here");
        Run r = run("load", "--load-format", "remote_instance", "--remote-instance-weight-loader-seed-instance-ip",
                "127.0.0.1", "--remote-instance-weight-loader-seed-instance-service-port", "1",
                "--remote-instance-weight-loader-backend", "nccl", "--device", "cuda:0");
        assertThat(r.exitCode()).isEqualTo(1);
        assertThat(r.err().strip().lines()).hasSize(1);
        assertThat(r.err()).startsWith("weightloader: error:").contains("libcuda.so.1").doesNotContain("\tat ");
    }

    @Test
    void aTwoRankSeedServesBothRanksAndAClientLoadsRankOneByteExact() throws Exception {
        Path model = FIXTURES.resolve("sharded");
        int port = seed("--model-path", model.toString(), "--tp-size", "2");
        HttpResponse<String> info = HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create(
                "http://127.0.0.1:" + port + "/get_remote_instance_transfer_engine_info?rank=1"))
                .timeout(Duration.ofSeconds(10)).build(), HttpResponse.BodyHandlers.ofString());
        assertThat(info.statusCode()).as(info.body()).isEqualTo(200);
        assertThat(JSON.readTree(info.body()).get("rank").asInt()).isEqualTo(1);

        Path report = tmp.resolve("rank1.json");
        Run r = run("load", "--load-format", "remote_instance", "--remote-instance-weight-loader-seed-instance-ip",
                "127.0.0.1", "--remote-instance-weight-loader-seed-instance-service-port", String.valueOf(port),
                "--remote-instance-weight-loader-send-weights-group-ports", "[29601,29602]",
                "--tp-size", "2", "--tp-rank", "1", "--checksum", "sha256", "--report", report.toString());
        assertThat(r.exitCode()).as(r.err()).isZero();
        JsonNode json = JSON.readTree(report.toFile());
        assertThat(json.get("source").asText()).contains("rank tp1-pp0");
        assertByteExact(json);

        Path both = tmp.resolve("both.json");
        Run all = run("load", "--load-format", "remote_instance", "--remote-instance-weight-loader-seed-instance-ip",
                "127.0.0.1", "--remote-instance-weight-loader-seed-instance-service-port", String.valueOf(port),
                "--tp-size", "2", "--checksum", "sha256", "--report", both.toString());
        assertThat(all.exitCode()).as(all.err()).isZero();
        JsonNode ranks = JSON.readTree(both.toFile()).get("ranks");
        assertThat(ranks.fieldNames()).toIterable().containsExactly("tp0-pp0", "tp1-pp0");
        assertByteExact(ranks.get("tp0-pp0"));
        assertByteExact(ranks.get("tp1-pp0"));
    }

    private static void assertByteExact(JsonNode report) throws IOException {
        JsonNode expected = JSON.readTree(FIXTURES.resolve("expected.json").toFile()).get("files").get("sharded");
        assertThat(report.get("tensors").size()).isEqualTo(expected.size());
        for (JsonNode t : report.get("tensors")) {
            assertThat(t.get("sha256").asText()).as(t.get("name").asText())
                    .isEqualTo(expected.get(t.get("name").asText()).get("sha256").asText());
        }
    }

    @Test
    void aGpuSeedWithTheBuiltinEngineIsRefusedBeforeItLoadsAnything() throws Exception {
        Path missing = tmp.resolve("not-read.safetensors"); // never opened: the refusal comes first
        Run r = run("seed", "--model-path", missing.toString(), "--device", "cuda:0");
        assertThat(r.exitCode()).isEqualTo(2);
        assertThat(r.err()).contains("weight-loader.backends.transfer_engine.engine").contains("host memory only")
                .contains("--engine mooncake").contains("--serve nccl").doesNotContain("not-read");
    }

    @Test
    void aBadFallbackSettingIsRefusedAtStartNotAfterTheRemoteLoadFails() throws Exception {
        Path conf = tmp.resolve("bad.conf");
        Files.writeString(conf, "weight-loader.backends.local.threads = many\n", StandardCharsets.UTF_8);
        Run r = run("load", "--load-format", "remote_instance", "--remote-instance-weight-loader-seed-instance-ip",
                "127.0.0.1", "--remote-instance-weight-loader-seed-instance-service-port", "1",
                "--fallback", "local", "--model-path", FIXTURES.resolve("sharded").toString(),
                "--config", conf.toString());
        assertThat(r.exitCode()).isEqualTo(2);
        assertThat(r.err()).contains("weight-loader.backends.local.threads").doesNotContain("127.0.0.1:1");
    }

    @Test
    void whenJnaCannotLoadItsNativePartTheErrorIsOneLineThatSaysWhatToDo() throws Exception {
        // what a noexec temporary directory does to JNA, without remounting anything: no libjnidispatch anywhere
        Run r = runWith(Map.of("JAVA_OPTS", "-Djna.nounpack=true -Djna.nosys=true -Djna.boot.library.path=/nonexistent"),
                "load", "--model-path", FIXTURES.resolve("sharded").toString());
        assertThat(r.exitCode()).isEqualTo(1);
        assertThat(r.err().strip().lines()).hasSize(1);
        assertThat(r.err()).contains("JNA could not load its native library").contains("jna.tmpdir")
                .doesNotContain("\tat ");
    }

    @Test
    void everySourceOfSettingsIsCheckedSystemPropertiesToo() throws Exception {
        Path model = FIXTURES.resolve("sharded");
        Run bogus = runWith(Map.of("JAVA_OPTS", "-Dweight-loader.bogus=1"), "load", "--model-path", model.toString());
        assertThat(bogus.exitCode()).isEqualTo(2);
        assertThat(bogus.err()).contains("weight-loader.bogus").contains("unknown setting");
        Run declared = runWith(Map.of("JAVA_OPTS", "-Dweight-loader.backends.local.threads=3"), "load", "--model-path",
                model.toString());
        assertThat(declared.exitCode()).as(declared.err()).isZero();
        assertThat(declared.out()).contains("pread x3");
    }

    @Test
    void aSeedRefusesABadBindTokenOrPortBeforeItLoadsAnything() throws Exception {
        Path missing = tmp.resolve("never-read"); // a load would fail on it: the refusals must come first
        Run noToken = run("seed", "--model-path", missing.toString(), "--bind", "0.0.0.0", "--hostname", "seed.example");
        assertThat(noToken.exitCode()).isEqualTo(2);
        assertThat(noToken.err()).contains("weight-loader.remote-instance.token").doesNotContain("never-read");
        try (java.net.ServerSocket taken = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            Run busy = run("seed", "--model-path", missing.toString(), "--port", String.valueOf(taken.getLocalPort()));
            assertThat(busy.exitCode()).isEqualTo(1);
            assertThat(busy.err()).contains("cannot bind the seed control plane").doesNotContain("never-read");
        }
    }

    @Test
    void aSeedStoppedWithSigtermLetsTheLoadInFlightFinishAndTakesNoNewOne() throws Exception {
        Path model = tmp.resolve("model");
        assertThat(run("generate", "--out", model.toString(), "--size", "48MiB").exitCode()).isZero();
        // a grace long enough for this test's own requests (below) to keep the stopping seed up on a slow machine
        int port = seed("--model-path", model.toString(), "--config", write("weight-loader.seed.shutdown-grace = 60s"));
        Process seed = seeds.get(seeds.size() - 1);
        // a load in flight (this JVM, capped at 16 MiB/s: about 3 s) that has moved its first bytes when the seed is
        // told to stop; its manifest is held, so what it still needs is the engine and the final check
        com.typesafe.config.Config client = com.typesafe.config.ConfigFactory.parseString(
                "weight-loader { load-format = remote_instance, checksum = sha256\n"
                + " remote-instance { seed-instance-ip = \"127.0.0.1\", seed-instance-service-port = " + port + " }\n"
                + " backends.transfer_engine.bandwidth-limit = 16 MiB }");
        java.util.concurrent.CountDownLatch moving = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CompletableFuture<io.weightloader.api.LoadReport> inFlight;
        try (io.weightloader.host.WeightLoader loader = io.weightloader.host.WeightLoader.open(client);
             io.weightloader.memory.TensorArena arena = io.weightloader.memory.TensorArena.allocate(
                     io.weightloader.api.Device.CPU, loader.available())) {
            inFlight = java.util.concurrent.CompletableFuture.supplyAsync(() -> loader.load(
                    io.weightloader.api.LoadRequest.of(arena.destinations()).withProgress((done, total, t, n) -> {
                        if (done > 0) {
                            moving.countDown();
                        }
                    })));
            assertThat(moving.await(60, TimeUnit.SECONDS)).as("the load started moving bytes").isTrue();
            seed.destroy(); // SIGTERM
            // draining: the control plane answers any request but a load's final /v1/session with 503
            await("the seed to drain after SIGTERM (GET /v1/manifest answered 503)", 60,
                    () -> http(port, "/v1/manifest?tp=0", null).statusCode() == 503,
                    () -> "the seed is " + (seed.isAlive() ? "alive" : "gone") + "; its log:\n"
                            + Files.readString(tmp.resolve("seed-" + (seeds.size() - 1) + ".log")));
            // the late client is a JVM that can take seconds to start here; meanwhile the load in flight may finish
            // and the seed stop once no load has talked to it for a second. So the test talks to it as a load in
            // flight does (GET /v1/session) until the late client has its answer: the seed stays up (within its grace)
            java.util.concurrent.atomic.AtomicBoolean lateDone = new java.util.concurrent.atomic.AtomicBoolean();
            java.util.concurrent.CompletableFuture<Void> keepUp = java.util.concurrent.CompletableFuture.runAsync(() -> {
                try {
                    while (!lateDone.get()) {
                        HttpResponse<String> s = http(port, "/v1/session?tp=0", null);
                        if (s.statusCode() != 200) {
                            throw new IllegalStateException("/v1/session answered " + s.statusCode() + ": " + s.body());
                        }
                        Thread.sleep(200);
                    }
                } catch (Exception e) {
                    throw new IllegalStateException("the draining seed stopped answering /v1/session", e);
                }
            });
            Run late;
            try {
                late = run("load", "--load-format", "remote_instance",
                        "--remote-instance-weight-loader-seed-instance-ip", "127.0.0.1",
                        "--remote-instance-weight-loader-seed-instance-service-port", String.valueOf(port),
                        "--config", write("weight-loader.remote-instance.retries = 0"));
            } finally {
                lateDone.set(true);
            }
            keepUp.get(30, TimeUnit.SECONDS);
            io.weightloader.api.LoadReport report = inFlight.get(60, TimeUnit.SECONDS);
            assertThat(report.tensors()).allSatisfy(t -> assertThat(t.sha256()).isNotNull());
            assertThat(late.exitCode()).as(late.err()).isEqualTo(1);
            assertThat(late.err()).contains("shutting down");
        }
        assertThat(seed.waitFor(30, TimeUnit.SECONDS)).as("the seed stopped").isTrue();
        String log = Files.readString(tmp.resolve("seed-" + (seeds.size() - 1) + ".log"));
        assertThat(log).contains("seed stopping").contains("seed stopped");
    }

    /** GET or POST (with a JSON body) to a seed's control plane, with the token. */
    private static HttpResponse<String> http(int port, String path, String body) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                .timeout(Duration.ofSeconds(15)).header("Authorization", "Bearer tok");
        if (body != null) {
            b.POST(HttpRequest.BodyPublishers.ofString(body)).header("Content-Type", "application/json");
        }
        return HttpClient.newHttpClient().send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    private static JsonNode manifest(int port) throws Exception {
        HttpResponse<String> r = http(port, "/v1/manifest?tp=0", null);
        assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
        return JSON.readTree(r.body());
    }

    /**
     * Holds the root busy as a tree source: a client it assigned that has not said it is done, and renews its lease
     * (as a client that reads does) until the test ends.
     */
    private void holdRoot(int root, String client) throws Exception {
        HttpResponse<String> r = http(root, "/v1/source?tp=0&strategy=tree&client=" + client, null);
        assertThat(JSON.readTree(r.body()).get("address").asText()).isEqualTo("root");
        renewals.scheduleWithFixedDelay(() -> {
            try {
                http(root, "/v1/source/renew?tp=0", "{\"source\":\"root\",\"client\":\"" + client + "\"}");
            } catch (Exception e) {
                // the root stopped: the test is ending
            }
        }, 500, 500, TimeUnit.MILLISECONDS);
    }

    private String[] relayArgs(int root, String strategy) {
        return new String[] {"--load-format", "remote_instance", "--remote-instance-weight-loader-seed-instance-ip",
                "127.0.0.1", "--remote-instance-weight-loader-seed-instance-service-port", String.valueOf(root),
                "--token", "tok", "--source-strategy", strategy, "--checksum", "sha256"};
    }

    private Run loadFrom(int root, String strategy, Path report) throws Exception {
        return run("load", "--load-format", "remote_instance", "--remote-instance-weight-loader-seed-instance-ip",
                "127.0.0.1", "--remote-instance-weight-loader-seed-instance-service-port", String.valueOf(root),
                "--token", "tok", "--source-strategy", strategy, "--checksum", "sha256", "--report", report.toString());
    }

    @Test
    void relaysServeTheRootsGenerationAndChecksumsAndEachStrategyPicksItsSource() throws Exception {
        int root = seed("--model-path", FIXTURES.resolve("sharded").toString(), "--token", "tok");
        int a = seed(relayArgs(root, "chain"));
        int b = seed(relayArgs(root, "chain"));
        JsonNode rootManifest = manifest(root);
        for (int relay : new int[] {a, b}) {
            JsonNode m = manifest(relay);
            assertThat(m.get("generation").asText()).isEqualTo(rootManifest.get("generation").asText());
            for (int i = 0; i < m.get("tensors").size(); i++) {
                assertThat(m.get("tensors").get(i).get("sha256")).isEqualTo(rootManifest.get("tensors").get(i).get("sha256"));
            }
        }
        String relays = http(root, "/v1/relays?tp=0", null).body();
        assertThat(relays).contains("127.0.0.1:" + a).contains("127.0.0.1:" + b).doesNotContain("\"ready\":false");

        Path star = tmp.resolve("star.json");
        assertThat(loadFrom(root, "star", star).exitCode()).isZero();
        assertThat(JSON.readTree(star.toFile()).get("source").asText()).doesNotContain(" via ");
        assertByteExact(JSON.readTree(star.toFile()));

        // b asked after a, so a chain reads from b, the end (a plain client does not extend it)
        Path chain = tmp.resolve("chain.json");
        Run c = loadFrom(root, "chain", chain);
        assertThat(c.exitCode()).as(c.err()).isZero();
        assertThat(JSON.readTree(chain.toFile()).get("source").asText()).endsWith(" via 127.0.0.1:" + b);
        assertByteExact(JSON.readTree(chain.toFile()));

        // the root is busy: a tree client gets the first ready relay that serves no one
        holdRoot(root, "someone");
        Path tree = tmp.resolve("tree.json");
        Run t = loadFrom(root, "tree", tree);
        assertThat(t.exitCode()).as(t.err()).isZero();
        assertThat(JSON.readTree(tree.toFile()).get("source").asText()).endsWith(" via 127.0.0.1:" + a);
        assertByteExact(JSON.readTree(tree.toFile()));
    }

    @Test
    void aRelayKilledMidLoadIsReplacedByAnotherSourceAndTheLoadStillVerifiesAgainstTheRoot() throws Exception {
        Path model = tmp.resolve("model");
        assertThat(run("generate", "--out", model.toString(), "--size", "48MiB").exitCode()).isZero();
        int root = seed("--model-path", model.toString(), "--token", "tok");
        int relay = seed(relayArgs(root, "tree"));
        Process relayProcess = seeds.get(seeds.size() - 1);
        holdRoot(root, "someone"); // so the client is sent to the relay
        com.typesafe.config.Config client = com.typesafe.config.ConfigFactory.parseString(
                "weight-loader { load-format = remote_instance, checksum = none\n"
                + " remote-instance { seed-instance-ip = \"127.0.0.1\", seed-instance-service-port = " + root
                + ", token = tok, retries = 1 }\n backends.transfer_engine.source-strategy = tree\n"
                + " backends.transfer_engine.bandwidth-limit = 16 MiB }");
        java.util.concurrent.CountDownLatch moving = new java.util.concurrent.CountDownLatch(1);
        try (io.weightloader.host.WeightLoader loader = io.weightloader.host.WeightLoader.open(client);
             io.weightloader.memory.TensorArena arena = io.weightloader.memory.TensorArena.allocate(
                     io.weightloader.api.Device.CPU, loader.available())) {
            java.util.concurrent.CompletableFuture<io.weightloader.api.LoadReport> inFlight =
                    java.util.concurrent.CompletableFuture.supplyAsync(() -> loader.load(
                            io.weightloader.api.LoadRequest.of(arena.destinations()).withProgress((done, total, x, n) -> {
                                if (done > 8 << 20) {
                                    moving.countDown();
                                }
                            })));
            assertThat(moving.await(60, TimeUnit.SECONDS)).as("the load moved its first bytes").isTrue();
            relayProcess.destroyForcibly(); // SIGKILL: no goodbye to the root, connections cut mid-read
            io.weightloader.api.LoadReport report = inFlight.get(120, TimeUnit.SECONDS);
            assertThat(report.source()).endsWith(" via 127.0.0.1:" + relay + ", then root");
            // a source died: every tensor was checked against the root's checksums, though none were asked for
            JsonNode rootManifest = manifest(root);
            java.util.Map<String, String> published = new java.util.HashMap<>();
            rootManifest.get("tensors").forEach(e -> published.put(e.get("name").asText(), e.get("sha256").asText()));
            for (io.weightloader.api.TensorDestination d : arena.destinations()) {
                assertThat(io.weightloader.memory.Checksums.sha256(d.region(), d.byteSize())).as(d.spec().name())
                        .isEqualTo(published.get(d.spec().name()));
            }
        }
        // the dead relay's heartbeat stopped: the root drops it within its expiry (4 s)
        await("the root to drop the killed relay 127.0.0.1:" + relay, 15,
                () -> !http(root, "/v1/relays?tp=0", null).body().contains(":" + relay),
                () -> "the root's directory: " + http(root, "/v1/relays?tp=0", null).body());
    }

    @Test
    void aRelayOfAnotherGenerationIsRefusedByTheRootAndByTheClient() throws Exception {
        Path model = FIXTURES.resolve("sharded");
        int root = seed("--model-path", model.toString(), "--token", "tok");
        int other = seed("--model-path", model.toString(), "--token", "tok"); // same bytes, its own generation
        String generation = manifest(root).get("generation").asText();
        HttpResponse<String> honest = http(root, "/v1/relays?tp=0", "{\"address\":\"127.0.0.1:" + other
                + "\",\"generation\":\"" + manifest(other).get("generation").asText() + "\",\"ready\":true}");
        assertThat(honest.statusCode()).isEqualTo(409);
        assertThat(honest.body()).contains("serves generation").contains(generation);
        // one that lies to the root about its generation is caught by the client, which goes elsewhere. The lie is
        // repeated as a relay's heartbeat (Directory.HEARTBEAT_MILLIS) until the client has met it: registered once,
        // it would leave the directory after 4 s, before a client that starts slowly asks for a source
        String lie = "{\"address\":\"127.0.0.1:" + other + "\",\"generation\":\"" + generation + "\",\"ready\":true}";
        assertThat(http(root, "/v1/relays?tp=0", lie).statusCode()).isEqualTo(200);
        java.util.concurrent.atomic.AtomicBoolean beating = new java.util.concurrent.atomic.AtomicBoolean(true);
        java.util.concurrent.CompletableFuture<Void> heartbeat = java.util.concurrent.CompletableFuture.runAsync(() -> {
            try {
                while (beating.get()) {
                    HttpResponse<String> beat = http(root, "/v1/relays?tp=0", lie);
                    if (beat.statusCode() != 200) {
                        throw new IllegalStateException("the root refused the heartbeat: " + beat.body());
                    }
                    Thread.sleep(500);
                }
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        });
        holdRoot(root, "someone"); // the root busy: the tree client is sent to the lying relay first
        Path report = tmp.resolve("r.json");
        Started client = start(Map.of(), "load", "--load-format", "remote_instance",
                "--remote-instance-weight-loader-seed-instance-ip", "127.0.0.1",
                "--remote-instance-weight-loader-seed-instance-service-port", String.valueOf(root), "--token", "tok",
                "--source-strategy", "tree", "--checksum", "sha256", "--report", report.toString());
        try {
            await("the client to meet the lying relay 127.0.0.1:" + other + " and refuse it", 120,
                    () -> client.errSoFar().contains("127.0.0.1:" + other) && client.errSoFar().contains("serves generation")
                            || !client.process().isAlive() || heartbeat.isDone(),
                    () -> "the root's directory: " + http(root, "/v1/relays?tp=0", null).body()
                            + "; the client's stderr so far:\n" + client.errSoFar());
            assertThat(heartbeat).as("the relay's heartbeat").isNotDone();
        } finally {
            beating.set(false);
        }
        heartbeat.get(30, TimeUnit.SECONDS);
        // having excluded the relay, the client asks for any ready source at once (failover): the root, though busy
        Run r = client.finish();
        assertThat(r.exitCode()).as(r.err()).isZero();
        assertThat(r.err()).contains("127.0.0.1:" + other).contains("serves generation");
        assertThat(JSON.readTree(report.toFile()).get("source").asText()).doesNotContain(" via ");
        assertByteExact(JSON.readTree(report.toFile()));
    }

    private String write(String hocon) throws IOException {
        Path p = tmp.resolve("c" + System.nanoTime() + ".conf");
        Files.writeString(p, hocon);
        return p.toString();
    }
}
