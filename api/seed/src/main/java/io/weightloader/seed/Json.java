package io.weightloader.seed;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;

/**
 * weightloader's JSON mappers, one per configuration, shared (a mapper is costly to build and safe to share once
 * configured): never reconfigure one.
 */
public final class Json {
    /** Jackson's defaults: what a seed answers, request bodies. */
    public static final ObjectMapper MAPPER = new ObjectMapper();
    /**
     * A seed's answers as its clients read them: unknown fields ignored (a newer seed may add some), a null where a
     * number or a boolean belongs refused.
     */
    public static final ObjectMapper TOLERANT = new ObjectMapper()
            .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false)
            .configure(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES, true);
    /** Indented output, for files people read. */
    public static final ObjectMapper PRETTY = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private Json() {
    }
}
