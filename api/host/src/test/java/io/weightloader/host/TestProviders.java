package io.weightloader.host;

import io.weightloader.api.Device;
import io.weightloader.api.spi.BackendCapabilities;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import java.util.EnumSet;

/** Providers for registry tests; each test lists the ones it wants in a services file of its own. */
public final class TestProviders {
    private TestProviders() {
    }

    public static class Alpha implements WeightLoaderBackendProvider {
        @Override
        public String name() {
            return "alpha";
        }

        @Override
        public BackendCapabilities capabilities() {
            return new BackendCapabilities(false, false, EnumSet.of(Device.Kind.CPU));
        }

        @Override
        public WeightLoaderBackend create(BackendContext context) {
            throw new IllegalStateException("alpha cannot start: no widgets");
        }
    }

    public static class AlphaAgain extends Alpha {
    }

    /** Registers memory that a memory saver's remap would leave dangling: no memory-saver capability. */
    public static class Registering extends Alpha {
        @Override
        public String name() {
            return "registering";
        }

        @Override
        public BackendCapabilities capabilities() {
            return BackendCapabilities.builder().devices(Device.Kind.CPU).memorySaver(false).build();
        }
    }

    public static class Beta extends Alpha {
        @Override
        public String name() {
            return "beta";
        }
    }

    public static class Broken extends Alpha {
        public Broken() {
            throw new IllegalStateException("broken on purpose");
        }
    }

    /** Built for a weightloader newer than this one. */
    public static class FromTheFuture extends Alpha {
        @Override
        public String name() {
            return "future";
        }

        @Override
        public int spiVersion() {
            return WeightLoaderBackendProvider.SPI_VERSION + 1;
        }
    }

    /** Built against an SPI whose capabilities() was different: the JVM throws at the call. */
    public static class Stale extends Alpha {
        @Override
        public String name() {
            return "stale";
        }

        @Override
        public BackendCapabilities capabilities() {
            throw new AbstractMethodError("com.example.Stale.capabilities()");
        }
    }

    /** Installed but not selected, with a bad setting of its own. */
    public static class Picky extends Alpha {
        @Override
        public String name() {
            return "picky";
        }

        @Override
        public void validateSettings(BackendContext context) {
            throw new io.weightloader.api.config.WeightLoaderConfigException("weight-loader.backends.picky.level",
                    "must be in 0..9; got 70000");
        }
    }
}
