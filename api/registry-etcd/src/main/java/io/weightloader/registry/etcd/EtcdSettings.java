package io.weightloader.registry.etcd;

import com.typesafe.config.Config;
import io.weightloader.api.config.SettingsReader;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.seed.registry.Registries;
import io.weightloader.seed.registry.SourceEntry;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * {@code weight-loader.directory = "etcd://host:port[,host:port...]"} and {@code weight-loader.registry.etcd.*}, read
 * and checked up front.
 */
record EtcdSettings(String directory, List<String> endpoints, Duration leaseTtl, Duration connectTimeout,
                    Duration requestTimeout, Optional<Path> ca, Optional<Path> certificate, Optional<Path> key,
                    Optional<String> authority, Optional<String> user, Optional<String> password) {
    static final String BASE = "weight-loader.registry.etcd";

    boolean tls() {
        return ca.isPresent();
    }

    static EtcdSettings read(String directory, Config config) {
        String rest = directory.substring("etcd://".length());
        List<String> endpoints = new ArrayList<>();
        for (String e : rest.split(",", -1)) {
            try {
                endpoints.add(SourceEntry.checkAddress(e.trim()));
            } catch (IllegalArgumentException x) {
                throw new WeightLoaderConfigException(Registries.DIRECTORY, "must be etcd://host:port[,host:port...];"
                        + " " + x.getMessage());
            }
        }
        SettingsReader r = new SettingsReader(config, BASE);
        Duration ttl = r.duration("lease-ttl", Duration.ofSeconds(2), Duration.ofMinutes(5));
        Duration connect = r.duration("connect-timeout", Duration.ofMillis(100), Duration.ofMinutes(5));
        Duration request = r.duration("request-timeout", Duration.ofMillis(100), Duration.ofMinutes(5));
        Optional<Path> ca = file(r, "ca");
        Optional<Path> cert = file(r, "certificate");
        Optional<Path> key = file(r, "key");
        if (cert.isPresent() != key.isPresent()) {
            throw r.error(cert.isPresent() ? "key" : "certificate", "certificate and key go together: set both or"
                    + " neither");
        }
        if (cert.isPresent() && ca.isEmpty()) {
            throw r.error("ca", "a client certificate is sent over TLS only: set ca (the CA that signed etcd's"
                    + " server certificate)");
        }
        Optional<String> user = r.optionalString("user");
        Optional<String> password = r.optionalString("password");
        if (user.isPresent() != password.isPresent()) {
            throw r.error(user.isPresent() ? "password" : "user", "user and password go together: set both or"
                    + " neither");
        }
        return new EtcdSettings(directory, endpoints, ttl, connect, request, ca, cert, key,
                r.optionalString("authority"), user, password);
    }

    private static Optional<Path> file(SettingsReader r, String key) {
        Optional<String> v = r.optionalString(key);
        if (v.isEmpty()) {
            return Optional.empty();
        }
        Path p = Path.of(v.get());
        if (!Files.isReadable(p)) {
            throw r.error(key, "no readable file at " + p.toAbsolutePath());
        }
        return Optional.of(p);
    }
}
