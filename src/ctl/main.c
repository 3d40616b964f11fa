/*
 * bjctl: drive blockjobd (or qemu-storage-daemon) over QMP.
 *
 * Options may come before or after the command; each command checks the
 * ones that apply to it.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "ctl/units.h"
#include "util/alloc.h"

static const char usage_text[] =
"Usage: bjctl [--socket PATH] [--json] COMMAND [ARGS] [OPTIONS]\n"
"\n"
"Drives blockjobd or qemu-storage-daemon over its QMP socket.\n"
"\n"
"Jobs and nodes:\n"
"  list                      table of jobs: id, type, status, progress, speed,\n"
"                            ready, error\n"
"  info JOB                  one job in detail\n"
"  nodes [--all]             block nodes with their backing chains\n"
"                            (--all: implicit '#' nodes too)\n"
"  events [--count N] [--timeout S]\n"
"                            print events as they arrive, one a line\n"
"Starting jobs:\n"
"  backup NODE --to TARGET [--sync full|top|none|incremental|bitmap]\n"
"         [--bitmap NAME] [--bitmap-mode on-success|always|never]\n"
"         (sync defaults to incremental when --bitmap is given)\n"
"  mirror NODE --to TARGET [--sync full|top|none] [--pivot]\n"
"  pull NODE [--base NODE]            (block-stream)\n"
"  commit NODE [--top NODE] [--base NODE] [--pivot]\n"
"    --job-id ID     the job's id (default: TYPE-NODE, made unique)\n"
"    --speed RATE    bytes/s limit, with units: 512K, 50M, 1G (0: none)\n"
"    --wait          stay until the job ends (a mirror or active commit:\n"
"                    until READY, or with --pivot until it has pivoted)\n"
"    --verbose       with --wait: progress bar (percent, rate, time left) on\n"
"                    a terminal, a plain line a second otherwise\n"
"    --pivot         mirror/active commit: complete at READY (implies --wait)\n"
"Controlling jobs:\n"
"  pause JOB | resume JOB | complete JOB | speed JOB RATE\n"
"  abort JOB [--async] [--pivot] [--timeout SECONDS]\n"
"    waits until the job is gone and says how it ended; --async returns once\n"
"    the daemon accepted the cancel; --pivot completes a READY mirror or\n"
"    active commit instead (refused, changing nothing, when not READY)\n"
"Dirty bitmaps:\n"
"  bitmap list [NODE] [--all]  table of bitmaps: node, name, granularity,\n"
"                            dirty bytes, status\n"
"  bitmap add NODE NAME [--granularity SIZE] [--persistent] [--disabled]\n"
"  bitmap remove|clear|enable|disable NODE NAME\n"
"  bitmap merge NODE NAME SOURCE...   SOURCE: a bitmap NAME on NODE, or\n"
"                            SRCNODE:NAME on another node\n"
"  bitmap sha256 NODE NAME   the bitmap's checksum (x-debug command)\n"
"\n"
"Options:\n"
"  -s, --socket PATH        QMP socket (default: $BJCTL_SOCKET)\n"
"  -j, --json               machine-readable output\n"
"      --connect-timeout S  connect/greeting/reply timeout (default 30)\n"
"      --poll               watch jobs by polling query-jobs, not events\n"
"  -h, --help               this text\n"
"\n"
"Exit status:\n"
"  0  success (abort: the job was cancelled, or pivoted with --pivot)\n"
"  1  the daemon refused the command, or the job failed (message shown)\n"
"  2  usage error\n"
"  3  the daemon is not reachable, or the connection was lost\n"
"  4  abort: the job completed before the cancel took effect\n"
"  5  --timeout expired; the job was left to finish on its own\n"
"  6  --wait: the job was cancelled (by someone else)\n";

enum {
    OPT_TO = 256, OPT_SYNC, OPT_BITMAP, OPT_BITMAP_MODE, OPT_BASE, OPT_TOP,
    OPT_SPEED, OPT_WAIT, OPT_ASYNC, OPT_PIVOT, OPT_TIMEOUT, OPT_JOB_ID,
    OPT_POLL, OPT_ALL, OPT_COUNT, OPT_CONNECT_TIMEOUT, OPT_GRANULARITY,
    OPT_PERSISTENT, OPT_DISABLED,
};

static const struct option long_opts[] = {
    { "socket", required_argument, NULL, 's' },
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { "verbose", no_argument, NULL, 'v' },
    { "to", required_argument, NULL, OPT_TO },
    { "sync", required_argument, NULL, OPT_SYNC },
    { "bitmap", required_argument, NULL, OPT_BITMAP },
    { "bitmap-mode", required_argument, NULL, OPT_BITMAP_MODE },
    { "base", required_argument, NULL, OPT_BASE },
    { "top", required_argument, NULL, OPT_TOP },
    { "speed", required_argument, NULL, OPT_SPEED },
    { "wait", no_argument, NULL, OPT_WAIT },
    { "async", no_argument, NULL, OPT_ASYNC },
    { "pivot", no_argument, NULL, OPT_PIVOT },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "job-id", required_argument, NULL, OPT_JOB_ID },
    { "poll", no_argument, NULL, OPT_POLL },
    { "all", no_argument, NULL, OPT_ALL },
    { "count", required_argument, NULL, OPT_COUNT },
    { "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
    { "granularity", required_argument, NULL, OPT_GRANULARITY },
    { "persistent", no_argument, NULL, OPT_PERSISTENT },
    { "disabled", no_argument, NULL, OPT_DISABLED },
    { NULL, 0, NULL, 0 },
};

static int usage_error(const char *fmt, const char *arg)
{
    fputs("bjctl: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'bjctl --help' for more information.\n", stderr);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    Ctl ctl = { .connect_timeout_ms = 30000 };
    const char *cmd;
    double secs;
    int c;

    bj_alloc_init_jansson();
    ctl.socket = getenv("BJCTL_SOCKET");
    while ((c = getopt_long(argc, argv, "s:jhv", long_opts, NULL)) != -1) {
        switch (c) {
        case 's': ctl.socket = optarg; break;
        case 'j': ctl.json = true; break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK;
        case 'v': ctl.verbose = true; break;
        case OPT_TO: ctl.to = optarg; break;
        case OPT_SYNC: ctl.sync = optarg; break;
        case OPT_BITMAP: ctl.bitmap = optarg; break;
        case OPT_BITMAP_MODE: ctl.mode = optarg; break;
        case OPT_BASE: ctl.base = optarg; break;
        case OPT_TOP: ctl.top = optarg; break;
        case OPT_WAIT: ctl.wait = true; break;
        case OPT_ASYNC: ctl.async = true; break;
        case OPT_PIVOT: ctl.pivot = true; break;
        case OPT_JOB_ID: ctl.job_id = optarg; break;
        case OPT_POLL: ctl.poll = true; break;
        case OPT_ALL: ctl.all = true; break;
        case OPT_PERSISTENT: ctl.persistent = true; break;
        case OPT_DISABLED: ctl.disabled = true; break;
        case OPT_GRANULARITY:
            if (!units_parse_size(optarg, &ctl.granularity) ||
                ctl.granularity <= 0 || ctl.granularity > UINT32_MAX) {
                return usage_error("invalid granularity '%s' (bytes, e.g. "
                                   "64K)", optarg);
            }
            ctl.has_granularity = true;
            break;
        case OPT_SPEED:
            if (!units_parse_size(optarg, &ctl.speed)) {
                return usage_error("invalid speed '%s' (bytes/s, e.g. 512K, "
                                   "50M, 1G)", optarg);
            }
            ctl.has_speed = true;
            break;
        case OPT_TIMEOUT:
            if (!units_parse_seconds(optarg, &ctl.timeout)) {
                return usage_error("invalid timeout '%s' (seconds)", optarg);
            }
            ctl.has_timeout = true;
            break;
        case OPT_CONNECT_TIMEOUT:
            if (!units_parse_seconds(optarg, &secs) || secs < 0.001) {
                return usage_error("invalid timeout '%s' (seconds)", optarg);
            }
            ctl.connect_timeout_ms = (int)(secs * 1000);
            break;
        case OPT_COUNT: {
            char *end;
            ctl.count = strtol(optarg, &end, 10);
            if (*end || ctl.count < 0) {
                return usage_error("invalid count '%s'", optarg);
            }
            break;
        }
        default:
            fputs("Try 'bjctl --help' for more information.\n", stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        return usage_error("%s", "no command given");
    }
    cmd = argv[optind];
    ctl.args = argv + optind + 1;
    ctl.nargs = argc - optind - 1;
    if (!ctl.socket || !*ctl.socket) {
        return usage_error("%s", "no socket: use --socket PATH or set "
                           "BJCTL_SOCKET");
    }

    if (strcmp(cmd, "list") == 0) {
        return cmd_list(&ctl);
    } else if (strcmp(cmd, "info") == 0) {
        return cmd_info(&ctl);
    } else if (strcmp(cmd, "nodes") == 0) {
        return cmd_nodes(&ctl);
    } else if (strcmp(cmd, "events") == 0) {
        return cmd_events(&ctl);
    } else if (strcmp(cmd, "backup") == 0 || strcmp(cmd, "mirror") == 0 ||
               strcmp(cmd, "pull") == 0 || strcmp(cmd, "commit") == 0) {
        return cmd_start(&ctl, cmd);
    } else if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0 ||
               strcmp(cmd, "speed") == 0 || strcmp(cmd, "complete") == 0) {
        return cmd_control(&ctl, cmd);
    } else if (strcmp(cmd, "abort") == 0) {
        return cmd_abort(&ctl);
    } else if (strcmp(cmd, "bitmap") == 0) {
        return cmd_bitmap(&ctl);
    }
    return usage_error("unknown command '%s'", cmd);
}
