package io.weightloader.backend.te;

import io.weightloader.seed.Manifest;
import io.weightloader.seed.registry.Fingerprint;

/** A source a registry listed, its client and its manifest, checked against the fingerprint the registry lists. */
record ChosenSource(String address, TransferEngineBackend backend, Manifest manifest, Fingerprint fingerprint) {
}
