package io.weightloader.cli;

import java.util.concurrent.Callable;

/**
 * A {@code weightloader} subcommand that another jar of the distribution contributes (the benchmarks): a picocli
 * {@code @Command} class, public with a public no-argument constructor, listed in
 * {@code META-INF/services/io.weightloader.cli.CliSubcommand}. The command line finds these through
 * {@link java.util.ServiceLoader} and adds them after its own commands, so that the command line's jar neither
 * holds nor depends on them at compile time.
 */
public interface CliSubcommand extends Callable<Integer> {
    /** The launcher's main class, for a subcommand that starts another {@code weightloader} process. */
    String MAIN_CLASS = "io.weightloader.examples.WeightLoaderCli";
}
