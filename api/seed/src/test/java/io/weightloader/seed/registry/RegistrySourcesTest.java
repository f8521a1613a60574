package io.weightloader.seed.registry;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.seed.Manifest;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * How a client that knows only a model id picks what to load among a registry's entries (in-process registry): the
 * fingerprint most ready sources share, its sources in random order; every other entry skipped and named; a manifest
 * must have the fingerprint its entry lists.
 */
class RegistrySourcesTest {
    private static final RankKey R0 = new RankKey(0, 0);
    private final InProcessRegistry registry = new InProcessRegistry();

    @AfterEach
    void close() {
        registry.close();
    }

    private static Fingerprint fp(String generation, String sums) {
        return new Fingerprint(generation, 2, "llama", R0, SourceRegistryContract.NAMES, sums);
    }

    private void add(String address, Fingerprint f, boolean ready) {
        registry.register(new SourceEntry(address, "m", f, ready));
    }

    @Test
    void theFingerprintMostReadySourcesShareIsLoadedAndEveryOtherEntryIsSkippedNamingWhy() {
        Fingerprint g1 = fp("g1", SourceRegistryContract.SUMS);
        Fingerprint g2 = fp("g2", Fingerprint.sha256("other sums"));
        add("10.0.0.1:1", g1, true);
        add("10.0.0.2:1", g1, true);
        add("10.0.0.3:1", g2, true);
        add("10.0.0.4:1", g2, false);
        add("10.0.0.5:1", new Fingerprint("g1", 4, "llama", R0, SourceRegistryContract.NAMES,
                SourceRegistryContract.SUMS), true);
        add("10.0.0.6:1", fp("g1", ""), true);
        add("10.0.0.7:1", g1, true);

        RegistrySources.Candidates c = RegistrySources.find(registry, "m", R0, 2, "llama", "10.0.0.7:1");
        assertThat(c.fingerprint()).isEqualTo(g1);
        assertThat(RegistrySources.addresses(c.sources())).containsExactlyInAnyOrder("10.0.0.1:1", "10.0.0.2:1");
        assertThat(c.skipped()).hasSize(4).anySatisfy(s -> assertThat(s).startsWith("10.0.0.3:1: its fingerprint"
                        + " differs").contains("generation g2 (wanted g1)").contains("checksums digest"))
                .anySatisfy(s -> assertThat(s).startsWith("10.0.0.4:1: not ready"))
                .anySatisfy(s -> assertThat(s).startsWith("10.0.0.5:1: holds tp size 4"))
                .anySatisfy(s -> assertThat(s).startsWith("10.0.0.6:1: publishes no checksums"));
        assertThat(c.preferring("10.0.0.2:1").sources().get(0).address()).isEqualTo("10.0.0.2:1");
    }

    @Test
    void aTieGoesToOneFingerprintTheSameForEveryClient() {
        add("10.0.0.1:1", fp("b", SourceRegistryContract.SUMS), true);
        add("10.0.0.2:1", fp("a", SourceRegistryContract.SUMS), true);
        for (int i = 0; i < 5; i++) {
            assertThat(RegistrySources.find(registry, "m", R0, 2, "llama", null).fingerprint().generation())
                    .isEqualTo("a");
        }
    }

    @Test
    void noSourceToLoadFromIsAnErrorNamingTheRegistryTheModelAndWhatWasSkipped() {
        assertThatThrownBy(() -> RegistrySources.find(registry, "m", R0, 2, "llama", null))
                .isInstanceOf(WeightLoaderException.class).hasMessageContaining("in-process")
                .hasMessageContaining("model m rank tp0-pp0").hasMessageContaining("none is registered")
                .hasMessageContaining("weight-loader.model-id");
        add("10.0.0.1:1", fp("g1", SourceRegistryContract.SUMS), true);
        assertThatThrownBy(() -> RegistrySources.find(registry, "m", R0, 1, "none", null))
                .hasMessageContaining("10.0.0.1:1: holds tp size 2, layout llama; this client loads tp size 1");
    }

    @Test
    void aManifestMustHaveTheFingerprintItsEntryLists() {
        Manifest m = new Manifest(1, 0, 0, "g1", "builtin-tcp", "h:1", "cpu", null,
                List.of(new Manifest.Entry("w", "BF16", List.of(2L), 4, 4096, "a".repeat(64))), 1, "none");
        Fingerprint f = Fingerprint.of(m);
        assertThat(RegistrySources.check(m, f, "h:1", "in-process")).isSameAs(m);
        Fingerprint other = new Fingerprint("g1", 1, "none", R0, f.namesDigest(), "b".repeat(64));
        assertThatThrownBy(() -> RegistrySources.check(m, other, "h:1", "in-process"))
                .hasMessageContaining("source h:1 serves other weights than registry in-process lists for it")
                .hasMessageContaining("checksums digest " + f.checksumsDigest() + " (wanted " + "b".repeat(64));
    }

    @Test
    void aRegistryThatHoldsNoAssignmentsOrChainsRefusesTreeAndChainNamingItAndTheSetting() {
        SourceRegistry bare = new SourceRegistry() {
            @Override
            public String describe() {
                return "bare://x";
            }

            @Override
            public long ttlMillis() {
                return 1000;
            }

            @Override
            public Registration register(SourceEntry source) {
                return new Registration() {
                    @Override
                    public void update(boolean ready) {
                    }

                    @Override
                    public void close() {
                    }
                };
            }

            @Override
            public List<SourceEntry> listAll(String modelId, RankKey rank) {
                return List.of(new SourceEntry("10.0.0.1:1", "m", fp("g1", SourceRegistryContract.SUMS), true));
            }

            @Override
            public void close() {
            }
        };
        assertThatThrownBy(() -> RegistrySources.claim(bare, "m", R0, 2, "llama", null, "c", java.util.Set.of(),
                System.nanoTime() + 1_000_000_000L, "client"))
                .isInstanceOf(RegistryException.class).hasMessageContaining("bare://x")
                .hasMessageContaining("weight-loader.backends.transfer_engine.source-strategy = tree");
        assertThatThrownBy(() -> bare.chain("m", R0)).isInstanceOf(RegistryException.class)
                .hasMessageContaining("bare://x").hasMessageContaining("source-strategy = chain");
        SourceRegistry.Registration r = bare.register(new SourceEntry("10.0.0.2:1", "m",
                fp("g1", SourceRegistryContract.SUMS), false));
        assertThatThrownBy(r::joinChain).isInstanceOf(RegistryException.class)
                .hasMessageContaining("source-strategy = chain");
    }
}
