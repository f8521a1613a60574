package io.weightloader.api.config;

/** SGLang's --load-format values that this project understands. */
public enum LoadFormat {
    AUTO("auto"),
    SAFETENSORS("safetensors"),
    REMOTE_INSTANCE("remote_instance");

    private final String text;

    LoadFormat(String text) {
        this.text = text;
    }

    public String text() {
        return text;
    }

    static LoadFormat parse(String path, String value) {
        for (LoadFormat f : values()) {
            if (f.text.equals(value)) {
                return f;
            }
        }
        throw new WeightLoaderConfigException(path, "must be one of auto, safetensors, remote_instance; got '"
                + value + "'");
    }
}
