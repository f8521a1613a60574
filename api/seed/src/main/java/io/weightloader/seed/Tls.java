package io.weightloader.seed;

import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.Base64;
import java.util.Collection;
import java.util.Optional;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

/**
 * TLS for the control plane and the built-in engine, from the PEM files of {@code weight-loader.tls}: a seed's
 * certificate and key, a client's ca (and its own certificate when the seed asks for one). TLS 1.3 and 1.2 only.
 */
public final class Tls {
    private Tls() {
    }

    /** The context a seed serves with, or empty when it has no certificate (plain TCP). */
    public static Optional<SSLContext> forSeed(WeightLoaderSettings.Tls tls) {
        return tls.serves() ? Optional.of(context(tls)) : Optional.empty();
    }

    /** The context a client speaks with, or empty when it has no ca (plain TCP). */
    public static Optional<SSLContext> forClient(WeightLoaderSettings.Tls tls) {
        return tls.speaks() ? Optional.of(context(tls)) : Optional.empty();
    }

    /** The protocols allowed. */
    public static final String[] PROTOCOLS = {"TLSv1.3", "TLSv1.2"};

    private static SSLContext context(WeightLoaderSettings.Tls tls) {
        try {
            KeyManagerFactory kmf = null;
            if (tls.certificate().isPresent()) {
                Collection<? extends Certificate> chain = certificates(tls.certificate().get(), "weight-loader.tls.certificate");
                PrivateKey key = privateKey(tls.key().orElseThrow());
                KeyStore ks = KeyStore.getInstance("PKCS12");
                ks.load(null, null);
                ks.setKeyEntry("weightloader", key, new char[0], chain.toArray(new Certificate[0]));
                kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
                kmf.init(ks, new char[0]);
            }
            TrustManagerFactory tmf = null;
            if (tls.ca().isPresent()) {
                KeyStore ts = KeyStore.getInstance("PKCS12");
                ts.load(null, null);
                int i = 0;
                for (Certificate c : certificates(tls.ca().get(), "weight-loader.tls.ca")) {
                    ts.setCertificateEntry("ca-" + i++, c);
                }
                tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
                tmf.init(ts);
            }
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(kmf == null ? null : kmf.getKeyManagers(), tmf == null ? null : tmf.getTrustManagers(), null);
            return ctx;
        } catch (GeneralSecurityException | IOException e) {
            throw new WeightLoaderConfigException("weight-loader.tls", "cannot set up TLS from the PEM files: " + e, e);
        }
    }

    private static Collection<? extends Certificate> certificates(Path pem, String setting) throws IOException {
        try {
            Collection<? extends Certificate> c = CertificateFactory.getInstance("X.509")
                    .generateCertificates(new ByteArrayInputStream(Files.readAllBytes(pem)));
            if (c.isEmpty()) {
                throw new WeightLoaderConfigException(setting, pem + " holds no PEM certificate");
            }
            return c;
        } catch (java.security.cert.CertificateException e) {
            throw new WeightLoaderConfigException(setting, pem + " is not a PEM certificate: " + e.getMessage(), e);
        }
    }

    private static PrivateKey privateKey(Path pem) throws IOException {
        String text = Files.readString(pem, StandardCharsets.US_ASCII);
        int begin = text.indexOf("-----BEGIN PRIVATE KEY-----");
        int end = text.indexOf("-----END PRIVATE KEY-----");
        if (begin < 0 || end < begin) {
            throw new WeightLoaderConfigException("weight-loader.tls.key", pem + " holds no PKCS#8 key (\"BEGIN PRIVATE"
                    + " KEY\"); convert one with: openssl pkcs8 -topk8 -nocrypt -in KEY -out " + pem);
        }
        byte[] der = Base64.getMimeDecoder().decode(text.substring(begin + 27, end));
        for (String algorithm : new String[] {"EC", "RSA", "Ed25519"}) {
            try {
                return KeyFactory.getInstance(algorithm).generatePrivate(new PKCS8EncodedKeySpec(der));
            } catch (GeneralSecurityException e) {
                // try the next algorithm
            }
        }
        throw new WeightLoaderConfigException("weight-loader.tls.key", pem + " is not an EC, RSA or Ed25519 PKCS#8 key");
    }
}
