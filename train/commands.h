/* The mnemo CLI's subcommands. Each lives in its own cmd_<name>.c, parses its options (with
 * cli_util.h), calls the library, prints what it returns, and returns a process exit code
 * (0 ok, 1 failure, 2 usage error); only main() exits. */
#ifndef MN_COMMANDS_H
#define MN_COMMANDS_H

typedef struct {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
} mn_command;

int cmd_bench(int argc, char **argv);
int cmd_bench_ops(int argc, char **argv);
int cmd_bench_update(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_episodes(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_shard(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_import_gpt2(int argc, char **argv);
int cmd_export_hf(int argc, char **argv);
int cmd_sessions(int argc, char **argv);
int cmd_eval(int argc, char **argv);

#endif
