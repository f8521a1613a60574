package io.weightloader.examples;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.typesafe.config.ConfigException;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.cli.CliJson;
import io.weightloader.cli.CliSubcommand;
import java.io.PrintWriter;
import java.util.Map;
import java.util.ServiceLoader;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.ParseResult;
import picocli.CommandLine.ScopeType;
import picocli.CommandLine.Spec;

/**
 * The {@code weightloader} command line: {@code demo}, {@code inspect}, {@code load}, {@code seed}, {@code backends},
 * {@code generate}, and the subcommands other jars contribute through {@link CliSubcommand} (the {@code bench-*}
 * commands of {@code weightloader-benchmarks}). It parses flags, calls the library (the host layer) and prints.
 *
 * <p>Every failure prints one line, {@code weightloader: error: <message>}, on stderr (with the stack trace
 * only under {@code --verbose}) and gives exit code 2 for usage errors (bad flags, bad settings) or 1 for
 * failures to load. {@link #commandLine()} builds the command for in-process use (tests, embedding); only
 * {@link #main} ever exits the JVM.
 */
@Command(name = "weightloader", mixinStandardHelpOptions = true,
        versionProvider = WeightLoaderCli.Version.class,
        description = "Load model weights from a safetensors checkpoint or from a running seed instance.",
        subcommands = {DemoCommand.class, InspectCommand.class, LoadCommand.class, SeedCommand.class, BackendsCommand.class,
                GenerateCommand.class})
public final class WeightLoaderCli implements Runnable {
    /** Exit code of a failed load (any error that is not a usage error). */
    public static final int EXIT_FAILURE = 1;
    /** Exit code of a usage error: unknown flag, bad value, bad setting. */
    public static final int EXIT_USAGE = 2;

    static final ObjectMapper JSON = CliJson.MAPPER;

    @Spec
    CommandSpec spec;

    @Option(names = "--verbose", scope = ScopeType.INHERIT,
            description = "More output: INFO logs, every tensor, and stack traces with errors.")
    boolean verbose;

    @Override
    public void run() {
        throw new ParameterException(spec.commandLine(), "a command is required: demo, inspect, load, seed, "
                + "backends, generate, bench-local, bench-remote or bench-gpu");
    }

    /** The command with its error handling, writing to {@link CommandLine#getOut()} / {@code getErr()}. */
    public static CommandLine commandLine() {
        CommandLine cli = new CommandLine(new WeightLoaderCli());
        // the bench-* commands live in the benchmarks jar (weightloader-benchmarks), found on the class path
        for (CliSubcommand extra : ServiceLoader.load(CliSubcommand.class, WeightLoaderCli.class.getClassLoader())) {
            cli.addSubcommand(extra);
        }
        cli.addSubcommand(new CommandLine.HelpCommand());
        cli.setParameterExceptionHandler(WeightLoaderCli::usageError);
        cli.setExecutionExceptionHandler((ex, cmd, parseResult) -> {
            PrintWriter err = cmd.getErr();
            err.println("weightloader: error: " + (ex instanceof WeightLoaderConfigException
                    ? withFlags(describe(ex), cmd.getCommandSpec()) : describe(ex)));
            if (verbose(parseResult)) {
                ex.printStackTrace(err);
            }
            err.flush();
            return isUsage(ex) ? EXIT_USAGE : EXIT_FAILURE;
        });
        return cli;
    }

    /** Held: java.util.logging keeps only weak references to its loggers, and their levels with them. */
    private static final java.util.logging.Logger GRPC_LOG = java.util.logging.Logger.getLogger("io.grpc");

    public static void main(String[] args) {
        boolean verbose = java.util.Arrays.asList(args).contains("--verbose");
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", verbose ? "info" : "warn");
        }
        // gRPC (under the etcd registry) logs through java.util.logging: its start-up notes are not news here
        GRPC_LOG.setLevel(verbose ? java.util.logging.Level.INFO : java.util.logging.Level.WARNING);
        // the seed's own lifecycle (stopping, stopped after how long) is news at INFO, not a warning
        System.getProperties().putIfAbsent("org.slf4j.simpleLogger.log." + SeedCommand.class.getName(), "info");
        System.exit(commandLine().execute(args));
    }

    private static int usageError(ParameterException ex, String[] args) {
        CommandLine cmd = ex.getCommandLine();
        PrintWriter err = cmd.getErr();
        String help = cmd.getCommandSpec().qualifiedName() + " --help";
        err.println("weightloader: error: " + ex.getMessage() + " (see '" + help + "')");
        if (verbose(cmd.getParseResult())) {
            ex.printStackTrace(err);
        }
        err.flush();
        return EXIT_USAGE;
    }

    private static boolean isUsage(Throwable ex) {
        return ex instanceof WeightLoaderConfigException || ex instanceof ConfigException;
    }

    /** True when {@code --verbose} was given to the command or any subcommand on the line. */
    static boolean verbose(ParseResult parseResult) {
        for (ParseResult p = parseResult; p != null; p = p.subcommand()) {
            if (p.hasMatchedOption("--verbose")) {
                return true;
            }
        }
        return false;
    }

    /** Whether {@code --verbose} was given, as seen from any command of the line. */
    static boolean verbose(CommandSpec spec) {
        return verbose(spec.root().commandLine().getParseResult());
    }

    private static final java.util.regex.Pattern CONFIG_PATH =
            java.util.regex.Pattern.compile("weight-loader(?:\\.[A-Za-z0-9_-]+)+");

    /**
     * A setting's error names its config path; on the command line the flag that sets it is named beside it, at the
     * path's first mention ({@code weight-loader.seed.allow-plain-token (--allow-plain-token)}), unless the message
     * names that flag already. The flags are those of {@code command} whose description names the path.
     */
    static String withFlags(String message, CommandSpec command) {
        Map<String, String> flags = new java.util.HashMap<>();
        for (picocli.CommandLine.Model.OptionSpec o : command.options()) {
            java.util.regex.Matcher m = CONFIG_PATH.matcher(String.join(" ", o.description()));
            if (m.find()) {
                flags.putIfAbsent(m.group(), o.names()[0]);
            }
        }
        java.util.regex.Matcher m = CONFIG_PATH.matcher(message);
        StringBuilder out = new StringBuilder();
        java.util.Set<String> named = new java.util.HashSet<>();
        while (m.find()) {
            String path = m.group();
            String flag = flags.get(path);
            boolean joined = m.end() < message.length() && message.charAt(m.end()) == '/'; // bind-address/service-port
            String text = path;
            if (flag != null && !joined && named.add(path)
                    && !java.util.regex.Pattern.compile("(?<![\\w-])" + flag + "(?![\\w-])").matcher(message).find()) {
                text = path + " (" + flag + ")";
            }
            m.appendReplacement(out, java.util.regex.Matcher.quoteReplacement(text));
        }
        m.appendTail(out);
        return out.toString();
    }

    /** One line saying what went wrong, naming the file where there is one. */
    static String describe(Throwable e) {
        if (e instanceof NoSuchFileException n) {
            return "no such file or directory: " + n.getFile();
        }
        if (e instanceof AccessDeniedException a) {
            return "permission denied: " + a.getFile();
        }
        if (e instanceof FileSystemException f) {
            return f.getMessage();
        }
        String m = e.getMessage();
        if (m == null || m.isBlank()) {
            return e.getClass().getSimpleName() + (e.getCause() != null ? ": " + describe(e.getCause()) : "");
        }
        return m.replace('\n', ' ');
    }

    /** Version from the jar manifest, when there is one. */
    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = WeightLoaderCli.class.getPackage().getImplementationVersion();
            return new String[] {"weightloader " + (v != null ? v : "(development build)"),
                    "Java " + System.getProperty("java.version") + " (" + System.getProperty("java.vm.name") + ") at "
                            + System.getProperty("java.home")};
        }
    }
}
