package com.example.weightloader;

import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigList;
import com.typesafe.config.ConfigObject;
import com.typesafe.config.ConfigValue;
import com.typesafe.config.ConfigValueType;
import io.weightloader.api.DType;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.SettingsReader;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.spi.BackendContext;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * {@code weight-loader.backends.pattern}, read once with {@link SettingsReader}: every key up front, each bad value
 * an error naming its path, what is allowed and where it was set.
 */
record PatternSettings(int seed, List<TensorSpec> tensors) {
    private static final Set<String> TENSOR_KEYS = Set.of("name", "dtype", "shape");

    static PatternSettings from(BackendContext context) {
        SettingsReader r = new SettingsReader(context.config(), BackendContext.backendPath(PatternBackendProvider.NAME));
        return new PatternSettings(r.integer("seed", 0, 255), tensors(r));
    }

    /** {@code tensors}: a list of {@code { name, dtype, shape }}, names unique. */
    private static List<TensorSpec> tensors(SettingsReader r) {
        ConfigList list;
        try {
            list = r.config().getList(r.path("tensors"));
        } catch (ConfigException.Missing e) {
            throw r.error("tensors", "is missing (is this plugin's reference.conf on the class path?)");
        } catch (ConfigException.WrongType e) {
            throw r.error("tensors", "must be a list of { name, dtype, shape }");
        }
        List<TensorSpec> specs = new ArrayList<>();
        Map<String, Integer> seen = new HashMap<>();
        for (int i = 0; i < list.size(); i++) {
            String at = r.path("tensors") + "[" + i + "]";
            if (!(list.get(i) instanceof ConfigObject object)) {
                throw error(at, list.get(i), "must be { name, dtype, shape }");
            }
            for (String key : object.keySet()) {
                if (!TENSOR_KEYS.contains(key)) {
                    throw error(at + "." + key, object.get(key), "unknown setting (a tensor has name, dtype and"
                            + " shape)");
                }
            }
            String name = text(at, object, "name");
            if (name.isEmpty()) {
                throw error(at + ".name", object.get("name"), "must not be empty");
            }
            Integer first = seen.putIfAbsent(name, i);
            if (first != null) {
                throw error(at + ".name", object.get("name"), "names tensor '" + name + "' again (as tensors["
                        + first + "] does)");
            }
            DType dtype;
            try {
                dtype = DType.parse(text(at, object, "dtype"));
            } catch (IllegalArgumentException e) {
                throw error(at + ".dtype", object.get("dtype"), e.getMessage());
            }
            List<Long> shape = shape(at + ".shape", object);
            TensorSpec spec;
            try {
                spec = new TensorSpec(name, dtype, shape);
            } catch (IllegalArgumentException e) {
                throw error(at + ".shape", object.get("shape"), e.getMessage());
            }
            if (spec.byteSize() > Integer.MAX_VALUE) {
                throw error(at + ".shape", object.get("shape"), "gives " + spec.byteSize() + " bytes; a pattern"
                        + " tensor holds at most " + Integer.MAX_VALUE);
            }
            specs.add(spec);
        }
        return List.copyOf(specs);
    }

    private static String text(String at, ConfigObject object, String key) {
        ConfigValue v = object.get(key);
        if (v == null) {
            throw new WeightLoaderConfigException(at + "." + key, "is missing" + origin(object));
        }
        if (v.valueType() != ConfigValueType.STRING) {
            throw error(at + "." + key, v, "must be text; got " + v.render());
        }
        return ((String) v.unwrapped()).trim();
    }

    private static List<Long> shape(String at, ConfigObject object) {
        ConfigValue v = object.get("shape");
        if (v == null) {
            throw new WeightLoaderConfigException(at, "is missing" + origin(object));
        }
        if (!(v instanceof ConfigList dims)) {
            throw error(at, v, "must be a list of dimensions such as [2, 3]; got " + v.render());
        }
        List<Long> shape = new ArrayList<>();
        for (ConfigValue d : dims) {
            if (!(d.unwrapped() instanceof Number n) || n.doubleValue() != n.longValue() || n.longValue() < 0) {
                throw error(at, v, "must be whole numbers of 0 or more; got " + v.render());
            }
            shape.add(n.longValue());
        }
        return shape;
    }

    private static WeightLoaderConfigException error(String path, ConfigValue value, String problem) {
        return new WeightLoaderConfigException(path, problem + origin(value));
    }

    /** Where a value was set, as {@link SettingsReader#error} says it; nothing for this plugin's own default. */
    private static String origin(ConfigValue value) {
        String where = value.origin().description();
        return where.contains("reference.conf") ? "" : " (set in " + where + ")";
    }
}
