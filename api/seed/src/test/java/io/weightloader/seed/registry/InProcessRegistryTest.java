package io.weightloader.seed.registry;

class InProcessRegistryTest extends SourceRegistryContract {
    private final InProcessRegistry.Shared shared = new InProcessRegistry.Shared();

    @Override
    protected SourceRegistry openHandle() {
        return new InProcessRegistry(shared);
    }
}
