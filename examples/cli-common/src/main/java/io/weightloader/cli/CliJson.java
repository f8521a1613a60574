package io.weightloader.cli;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import io.weightloader.api.LoadReport;
import io.weightloader.api.SourceReport;
import io.weightloader.api.TensorReport;

/** How the command line writes JSON (reports, {@code --json}): indented, reports with their derived values. */
public final class CliJson {
    /** The command line's one mapper. */
    public static final ObjectMapper MAPPER = JsonMapper.builder().enable(SerializationFeature.INDENT_OUTPUT)
            .addMixIn(LoadReport.class, LoadReportJson.class)
            .addMixIn(TensorReport.class, NoNulls.class).addMixIn(SourceReport.class, NoNulls.class).build();

    private CliJson() {
    }

    /** Tensor lines: a whole tensor has no slice field, an unchecked one no sha256; a source never dropped no failure. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    abstract static class NoNulls {
    }

    /** How reports are written as JSON (the SPI carries no Jackson annotations): derived values, no nulls. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    abstract static class LoadReportJson {
        @JsonProperty("tensorCount")
        abstract int tensorCount();

        @JsonProperty("gigabytesPerSecond")
        abstract double gigabytesPerSecond();
    }
}
