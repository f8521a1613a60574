package io.weightloader.api;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigParseOptions;
import io.weightloader.api.config.WeightLoaderConfigException;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * How a model's tensors are shared among tensor-parallel ranks ({@code weight-loader.tp-layout}): ordered rules,
 * the first whose pattern matches a tensor's whole name decides: split on a dimension (rank r of N holds the r-th of
 * N equal parts of it) or replicate (every rank holds the whole tensor). A tensor no rule matches is replicated.
 *
 * <ul>
 *   <li>{@code none}: every rank holds whole tensors.</li>
 *   <li>{@code llama}: column-parallel (dim 0) {@code q_proj k_proj v_proj gate_proj up_proj} (weights and biases),
 *   {@code embed_tokens} and {@code lm_head}; row-parallel (dim 1) {@code o_proj down_proj} weights; the rest
 *   (norms, row-parallel biases) replicated.</li>
 *   <li>a rules file (HOCON or JSON): {@code rules = [ { match = "regex", split = 0 }, { match = "regex",
 *   replicate = true } ]}.</li>
 * </ul>
 */
public final class TpLayout {
    public static final String PATH = "weight-loader.tp-layout";
    /** Largest rules file read, in bytes: a layout is a handful of rules, not a data set. */
    public static final long MAX_FILE_BYTES = 1L << 20;
    /** Most rules in a file. */
    public static final int MAX_RULES = 10_000;
    /** Longest {@code match} pattern, in characters (compiling a pattern of millions of characters hangs start-up). */
    public static final int MAX_PATTERN_CHARS = 4096;
    /** Indivisible tensors named in {@link #plan}'s error before the rest are only counted. */
    static final int LISTED_PROBLEMS = 3;

    /** One rule: a pattern over the whole tensor name, and the dimension it splits, or -1 to replicate. */
    public record Rule(String match, int split, String origin) {
        public boolean replicates() {
            return split < 0;
        }

        @Override
        public String toString() {
            return "rule '" + match + "' -> " + (replicates() ? "replicate" : "split dim " + split) + " (" + origin + ")";
        }
    }

    public static final TpLayout NONE = new TpLayout("none", List.of());

    public static final TpLayout LLAMA = new TpLayout("llama", List.of(
            new Rule("(.+\\.)?(q_proj|k_proj|v_proj|gate_proj|up_proj)\\.(weight|bias)", 0, "llama, column-parallel"),
            new Rule("(.+\\.)?(o_proj|down_proj)\\.weight", 1, "llama, row-parallel"),
            new Rule("(.+\\.)?(embed_tokens|lm_head)\\.weight", 0, "llama, vocabulary-parallel")));

    private final String name;
    private final List<Rule> rules;
    private final List<Pattern> patterns;

    private TpLayout(String name, List<Rule> rules) {
        this.name = name;
        this.rules = List.copyOf(rules);
        this.patterns = rules.stream().map(r -> Pattern.compile(r.match())).toList();
    }

    /** The layout a setting names: {@code none}, {@code llama}, or a rules file's path. */
    public static TpLayout parse(String value) {
        String v = value == null ? "" : value.trim();
        if (v.isEmpty() || v.equals("none")) {
            return NONE;
        }
        if (v.equals("llama")) {
            return LLAMA;
        }
        Path file = Path.of(v);
        if (!Files.isRegularFile(file)) {
            throw new WeightLoaderConfigException(PATH, "'" + v + "' is neither a built-in layout (none, llama) nor"
                    + " a rules file (no regular file at " + file.toAbsolutePath() + ")");
        }
        return fromFile(file);
    }

    /** Reads a rules file: {@code rules = [ { match = "regex", split = DIM } | { match = "regex", replicate = true } ]}. */
    public static TpLayout fromFile(Path file) {
        long bytes;
        try {
            bytes = Files.size(file);
        } catch (IOException e) {
            throw new WeightLoaderConfigException(PATH, "rules file " + file + " cannot be read: " + e);
        }
        if (bytes > MAX_FILE_BYTES) {
            throw new WeightLoaderConfigException(PATH, "rules file " + file + " is " + bytes + " bytes, more than the "
                    + MAX_FILE_BYTES + " a rules file may have");
        }
        Config c;
        try {
            c = ConfigFactory.parseFile(file.toFile(), ConfigParseOptions.defaults().setAllowMissing(false)).resolve();
        } catch (ConfigException e) {
            throw new WeightLoaderConfigException(PATH, "rules file " + file + " cannot be read: " + e.getMessage());
        }
        if (!c.hasPath("rules")) {
            throw new WeightLoaderConfigException(PATH, "rules file " + file + " has no 'rules' list");
        }
        List<? extends Config> list;
        try {
            list = c.getConfigList("rules");
        } catch (ConfigException e) {
            throw new WeightLoaderConfigException(PATH, "rules file " + file + ": 'rules' must be a list of objects: "
                    + e.getMessage());
        }
        if (list.size() > MAX_RULES) {
            throw new WeightLoaderConfigException(PATH, "rules file " + file + " has " + list.size()
                    + " rules, more than the " + MAX_RULES + " allowed");
        }
        List<Rule> rules = new ArrayList<>();
        for (int i = 0; i < list.size(); i++) {
            Config r = list.get(i);
            String where = file + " rule " + (i + 1);
            for (String key : r.root().keySet()) {
                if (!key.equals("match") && !key.equals("split") && !key.equals("replicate")) {
                    throw new WeightLoaderConfigException(PATH, where + ": unknown key '" + key
                            + "' (a rule has match, and split or replicate)");
                }
            }
            String match;
            try {
                match = r.getString("match");
                if (match.length() > MAX_PATTERN_CHARS) {
                    throw new WeightLoaderConfigException(PATH, where + ": 'match' is " + match.length()
                            + " characters long, more than the " + MAX_PATTERN_CHARS + " allowed");
                }
                Pattern.compile(match);
            } catch (ConfigException e) {
                throw new WeightLoaderConfigException(PATH, where + ": 'match' (a regular expression over the whole"
                        + " tensor name) is required: " + e.getMessage());
            } catch (PatternSyntaxException e) {
                throw new WeightLoaderConfigException(PATH, where + ": 'match' is not a regular expression: "
                        + e.getDescription());
            }
            boolean split = r.hasPath("split");
            boolean replicate = r.hasPath("replicate");
            if (split == replicate) {
                throw new WeightLoaderConfigException(PATH, where + " ('" + match + "'): give exactly one of"
                        + " split = DIM or replicate = true");
            }
            try {
                if (split) {
                    Object given = r.getValue("split").unwrapped();
                    long dim;
                    try {
                        dim = new BigDecimal(String.valueOf(given).trim()).longValueExact();
                    } catch (NumberFormatException | ArithmeticException e) {
                        dim = -1;
                    }
                    if (dim < 0 || dim > 7) {
                        throw new WeightLoaderConfigException(PATH, where + " ('" + match + "'): split must be a"
                                + " dimension, a whole number 0..7; got '" + given + "'");
                    }
                    rules.add(new Rule(match, (int) dim, where));
                } else {
                    if (!r.getBoolean("replicate")) {
                        throw new WeightLoaderConfigException(PATH, where + " ('" + match + "'): replicate must be"
                                + " true (leave the rule out otherwise)");
                    }
                    rules.add(new Rule(match, -1, where));
                }
            } catch (ConfigException e) {
                throw new WeightLoaderConfigException(PATH, where + ": " + e.getMessage());
            }
        }
        return new TpLayout(file.toString(), rules);
    }

    /** {@code none}, {@code llama}, or the rules file's path. */
    public String name() {
        return name;
    }

    public boolean isNone() {
        return rules.isEmpty();
    }

    public List<Rule> rules() {
        return rules;
    }

    /** The first rule that matches the whole name, or null (the tensor is replicated). */
    public Rule ruleFor(String tensor) {
        for (int i = 0; i < rules.size(); i++) {
            if (patterns.get(i).matcher(tensor).matches()) {
                return rules.get(i);
            }
        }
        return null;
    }

    /**
     * What rank {@code rank} of {@code tpSize} holds of {@code spec}: the slice its rule gives (a whole-range slice at
     * tp-size 1, so a seed's manifest says how the tensor is split), or null when the tensor is replicated.
     *
     * @throws WeightLoaderConfigException naming the tensor, its shape and the rule when the rule's dimension does not
     *                                     exist or does not divide by the tp size
     */
    public TensorSlice sliceFor(TensorSpec spec, int tpSize, int rank) {
        Rule rule = ruleFor(spec.name());
        if (rule == null || rule.replicates()) {
            return null;
        }
        if (rule.split() >= spec.shape().size()) {
            throw new WeightLoaderConfigException(PATH, "tensor '" + spec.name() + "' of shape " + spec.shape()
                    + " has no dimension " + rule.split() + " to split, as " + rule + " says");
        }
        long extent = spec.shape().get(rule.split());
        if (extent % tpSize != 0) {
            throw new WeightLoaderConfigException(PATH, "tensor '" + spec.name() + "' of shape " + spec.shape()
                    + ": dimension " + rule.split() + " (" + extent + ") does not divide by tp-size " + tpSize
                    + " (" + rule + ")");
        }
        TensorSlice slice = TensorSlice.part(spec, rule.split(), tpSize, rank);
        try {
            slice.applyTo(spec); // whole bytes for packed dtypes
            SliceCopy.plan(spec, null, slice);
        } catch (IllegalArgumentException e) {
            throw new WeightLoaderConfigException(PATH, "tensor '" + spec.name() + "' of shape " + spec.shape()
                    + " cannot be split by " + rule + ": " + e.getMessage());
        }
        return slice;
    }

    /**
     * Every tensor's slice for rank {@code rank} of {@code tpSize} (null values: replicated), checking all of them
     * first: every indivisible tensor is listed in one error.
     */
    public Map<String, TensorSlice> plan(List<TensorSpec> specs, int tpSize, int rank) {
        Map<String, TensorSlice> out = new LinkedHashMap<>();
        List<String> problems = new ArrayList<>();
        for (TensorSpec s : specs) {
            try {
                out.put(s.name(), sliceFor(s, tpSize, rank));
            } catch (WeightLoaderConfigException e) {
                problems.add(e.problem());
            }
        }
        if (!problems.isEmpty()) {
            throw new WeightLoaderConfigException(PATH, "layout " + name + " cannot split the model over " + tpSize
                    + " rank(s): " + String.join("; ", problems.subList(0, Math.min(LISTED_PROBLEMS, problems.size())))
                    + (problems.size() > LISTED_PROBLEMS ? "; ... and " + (problems.size() - LISTED_PROBLEMS)
                    + " more" : ""));
        }
        return out;
    }

    /**
     * The destinations of a rank: tensor {@code full.get(i)}'s slice (or the whole tensor) held in {@code memory.get(i)}'s
     * region, e.g. an arena allocated for {@link #heldSpecs}.
     */
    public static List<TensorDestination> destinations(List<TensorSpec> full, List<TensorDestination> memory,
                                                       Map<String, TensorSlice> slices) {
        List<TensorDestination> out = new ArrayList<>();
        for (int i = 0; i < full.size(); i++) {
            out.add(new TensorDestination(full.get(i), memory.get(i).region(), slices.get(full.get(i).name())));
        }
        return out;
    }

    /** The specs a rank's memory must hold: each tensor's slice spec, or the whole spec when replicated. */
    public static List<TensorSpec> heldSpecs(List<TensorSpec> specs, Map<String, TensorSlice> slices) {
        List<TensorSpec> out = new ArrayList<>();
        for (TensorSpec s : specs) {
            TensorSlice sl = slices.get(s.name());
            out.add(sl == null ? s : sl.applyTo(s));
        }
        return out;
    }

    @Override
    public String toString() {
        return name;
    }
}
