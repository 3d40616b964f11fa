/*
 * bjctl: drive blockjobd (or qemu-storage-daemon) over QMP.
 *
 * Options may come before or after the command; each command checks the
 * ones that apply to it.
 */
#include <ctype.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
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
"    --speed RATE    bytes/s limit with a unit: 512K, 50M, 1G, 100B (0: none;\n"
"                    a bare number is refused)\n"
"    --bandwidth N   the limit in N MiB/s (as virsh means it)\n"
"    --wait          stay until the job ends (a mirror or active commit:\n"
"                    until READY, or with --pivot until it has pivoted);\n"
"                    Ctrl-C aborts the job\n"
"    --timeout S     --wait at most S seconds, then abort the job\n"
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
"Block nodes:\n"
"  node add NAME --driver qcow2|raw|file --file PATH [--backing NODE|none]\n"
"           [--read-only]     a format node over a file node (blockdev-add)\n"
"  node add SPEC             SPEC: blockdev-add's JSON object, or\n"
"                            KEY=VALUE,... with dotted keys (file.filename=)\n"
"  node remove NAME          blockdev-del (its file node goes with it)\n"
"Images:\n"
"  image create PATH --format qcow2|raw --size SIZE [--backing FILE\n"
"           [--backing-format F]] [--cluster-size SIZE] [--verbose]\n"
"                            qemu-img create done by the daemon\n"
"                            (blockdev-create jobs, waited for, dismissed)\n"
"NBD exports (the daemon must run an NBD server):\n"
"  export add NODE [--name N] [--writable] [--bitmap B]... [--allocation-depth]\n"
"                            block-export-add; its id is its name N\n"
"                            (default: NODE)\n"
"  export remove ID          block-export-del, waiting until it is gone\n"
"  export list               table of exports: id, type, node, status\n"
"Pull-mode backup (fleecing):\n"
"  fleece start NODE --file PATH [--name N] [--bitmap B]...\n"
"           [--next-bitmap NEW [--persistent]] [--allocation-depth]\n"
"                            export NODE as it is now, read-only, as N\n"
"                            (default: fleece-NODE), PATH the scratch image;\n"
"                            B frozen and published, NEW started, both at\n"
"                            that instant\n"
"  fleece stop N             remove the export, its job, node and scratch image\n"
"\n"
"Options:\n"
"  -s, --socket PATH        QMP socket (default: $BJCTL_SOCKET)\n"
"  -j, --json               one JSON object a line on stdout, errors too\n"
"                           ({\"error\": {\"class\", \"desc\"}, \"exit\": N})\n"
"      --connect-timeout S  connect/greeting/reply timeout (default 30)\n"
"      --poll               watch jobs by polling query-jobs, not events\n"
"  -h, --help               this text; 'bjctl COMMAND --help': that command's\n"
"      --version            print bjctl's version\n"
"\n"
"Exit status:\n"
"  0  success (abort: the job was cancelled, or pivoted with --pivot)\n"
"  1  the daemon refused the command, or the job failed (message shown)\n"
"  2  usage error\n"
"  3  the daemon is not reachable, or the connection was lost\n"
"  4  abort: the job completed before the cancel took effect\n"
"  5  --timeout expired: abort left the job to finish on its own; a start\n"
"     command aborted the job\n"
"  6  --wait: the job was cancelled (by someone else)\n"
"  7  --wait: interrupted (Ctrl-C); the job was aborted\n";

#define START_OPTS \
"  --job-id ID     the job's id (default: TYPE-NODE, made unique)\n" \
"  --speed RATE    bytes/s limit with a unit: 512K, 50M, 1G, 100B (0: none;\n" \
"                  a bare number is refused: bytes or MiB/s?)\n" \
"  --bandwidth N   the limit in MiB/s, a whole number (virsh's meaning)\n" \
"  --wait          stay until the job ends (a mirror or active commit:\n" \
"                  until READY, or with --pivot until it has pivoted);\n" \
"                  Ctrl-C aborts the job (exit 7)\n" \
"  --timeout S     implies --wait; aborts the job after S seconds (exit 5)\n" \
"  --verbose       with --wait: progress bar (percent, rate, time left) on\n" \
"                  a terminal, a plain line a second otherwise\n" \
"  --poll          watch the job by polling query-jobs, not events\n"

/* Each command: its positional arguments (max -1: any) and its help. */
typedef struct CmdSpec {
    const char *name;
    int min_args, max_args;
    const char *help;
} CmdSpec;

static const CmdSpec cmd_specs[] = {
    { "list", 0, 0,
      "Usage: bjctl list\n"
      "Table of jobs: id, type, status, progress, speed, ready, error.\n" },
    { "info", 1, 1,
      "Usage: bjctl info JOB\n"
      "One job in detail.\n" },
    { "nodes", 0, 0,
      "Usage: bjctl nodes [--all]\n"
      "Block nodes with their backing chains.\n"
      "  --all           implicit '#' nodes too\n" },
    { "events", 0, 0,
      "Usage: bjctl events [--count N] [--timeout S]\n"
      "Prints events as they arrive, one a line.\n"
      "  --count N       stop after N events\n"
      "  --timeout S     stop after S seconds\n" },
    { "backup", 1, 1,
      "Usage: bjctl backup NODE --to TARGET [OPTIONS]\n"
      "Starts a blockdev-backup job from NODE to the node TARGET.\n"
      "  --to TARGET     the target node (required)\n"
      "  --sync MODE     full|top|none|incremental|bitmap (default: full,\n"
      "                  incremental when --bitmap is given)\n"
      "  --bitmap NAME   the dirty bitmap for incremental/bitmap sync\n"
      "  --bitmap-mode M on-success|always|never\n"
      START_OPTS },
    { "mirror", 1, 1,
      "Usage: bjctl mirror NODE --to TARGET [OPTIONS]\n"
      "Starts a blockdev-mirror job from NODE to the node TARGET.\n"
      "  --to TARGET     the target node (required)\n"
      "  --sync MODE     full|top|none (default: full)\n"
      "  --pivot         complete at READY (implies --wait)\n"
      START_OPTS },
    { "pull", 1, 1,
      "Usage: bjctl pull NODE [--base NODE] [OPTIONS]\n"
      "Starts a block-stream job into NODE.\n"
      "  --base NODE     stop pulling at this backing node\n"
      START_OPTS },
    { "commit", 1, 1,
      "Usage: bjctl commit NODE [--top NODE] [--base NODE] [OPTIONS]\n"
      "Starts a block-commit job in NODE's chain.\n"
      "  --top NODE      the top of the range (default: NODE: active commit)\n"
      "  --base NODE     the node committed into\n"
      "  --pivot         active commit: complete at READY (implies --wait)\n"
      START_OPTS },
    { "pause", 1, 1, "Usage: bjctl pause JOB\nPauses the job.\n" },
    { "resume", 1, 1, "Usage: bjctl resume JOB\nResumes a paused job.\n" },
    { "complete", 1, 1,
      "Usage: bjctl complete JOB\n"
      "Completes a READY mirror or active commit (pivots to the target).\n" },
    { "speed", 1, 2,
      "Usage: bjctl speed JOB RATE\n"
      "       bjctl speed JOB --bandwidth N\n"
      "Sets the job's speed limit: RATE in bytes/s with a unit: 512K, 50M, "
      "1G,\n100B (0: unlimited; a bare number is refused), or N MiB/s.\n" },
    { "abort", 1, 1,
      "Usage: bjctl abort JOB [--async] [--pivot] [--timeout SECONDS]\n"
      "Cancels the job, waits until it is gone and says how it ended.\n"
      "  --async         return once the daemon accepted the cancel\n"
      "  --pivot         complete a READY mirror or active commit instead\n"
      "                  (refused, changing nothing, when not READY)\n"
      "  --timeout S     give up waiting after S seconds (exit 5)\n" },
    { "bitmap", 1, -1,
      "Usage: bjctl bitmap list [NODE] [--all]\n"
      "       bjctl bitmap add NODE NAME [--granularity SIZE] [--persistent]"
      " [--disabled]\n"
      "       bjctl bitmap remove|clear|enable|disable NODE NAME\n"
      "       bjctl bitmap merge NODE NAME SOURCE...\n"
      "       bjctl bitmap sha256 NODE NAME\n"
      "Dirty bitmaps.  SOURCE: a bitmap NAME on NODE, or SRCNODE:NAME.\n"
      "  --all           list: implicit '#' nodes too\n"
      "  --granularity SIZE  add: bytes per bit, e.g. 64K\n"
      "  --persistent    add: stored in the qcow2 image\n"
      "  --disabled      add: not recording\n" },
    { "node", 1, 2,
      "Usage: bjctl node add NAME --driver qcow2|raw|file --file PATH\n"
      "                         [--backing NODE|none] [--read-only]\n"
      "       bjctl node add SPEC\n"
      "       bjctl node remove NAME\n"
      "Adds a block node (blockdev-add) or removes one (blockdev-del).\n"
      "add NAME opens PATH as a file node and, for qcow2 and raw, a format\n"
      "node NAME over it; remove drops that file node with it.\n"
      "  --driver D      qcow2, raw or file\n"
      "  --file PATH     the image file\n"
      "  --backing NODE  qcow2: NODE as the backing node (an overlay);\n"
      "                  none: no backing, whatever the header says\n"
      "  --read-only     open read-only\n"
      "SPEC, for any driver: blockdev-add's arguments as a JSON object, or\n"
      "KEY=VALUE,... with dotted keys for nested objects, e.g.\n"
      "driver=null-co,node-name=n1,size=1048576 (digits give a number,\n"
      "true/false a boolean).  It must name the node (node-name).\n" },
    { "image", 1, 2,
      "Usage: bjctl image create PATH --format qcow2|raw --size SIZE\n"
      "                          [--backing FILE [--backing-format F]]\n"
      "                          [--cluster-size SIZE] [--verbose]\n"
      "Creates an image file as qemu-img create would, but by the daemon:\n"
      "blockdev-create jobs, each waited for and dismissed.  A relative\n"
      "PATH is taken from bjctl's working directory.\n"
      "  --format F      qcow2 or raw\n"
      "  --size SIZE     the virtual size, e.g. 10G (required)\n"
      "  --backing FILE  qcow2: the backing file written in the header\n"
      "  --backing-format F  the backing file's format\n"
      "  --cluster-size SIZE  qcow2: e.g. 64K\n"
      "  --verbose       progress of the jobs on stderr (--json: stdout)\n" },
    { "export", 1, 2,
      "Usage: bjctl export add NODE [--name N] [--writable] [--bitmap B]...\n"
      "                        [--allocation-depth]\n"
      "       bjctl export remove ID\n"
      "       bjctl export list\n"
      "NBD exports of block nodes (block-export-add type nbd, block-export-del,\n"
      "query-block-exports).  The daemon must run an NBD server (its\n"
      "--nbd-server option, or QMP nbd-server-start).  An export's id is its\n"
      "NBD name.  remove waits until the export is gone (at most the connect\n"
      "timeout; while clients stay connected it says it is shutting down).\n"
      "  --name N        the export's name and id (default: NODE)\n"
      "  --writable      clients may write\n"
      "  --bitmap B      publish NODE's dirty bitmap B (as qemu:dirty-bitmap:B);\n"
      "                  may be given several times\n"
      "  --allocation-depth  publish qemu:allocation-depth\n" },
    { "fleece", 1, 2,
      "Usage: bjctl fleece start NODE --file PATH [--name N] [--bitmap B]...\n"
      "                          [--next-bitmap NEW [--persistent]]\n"
      "                          [--allocation-depth]\n"
      "       bjctl fleece stop N\n"
      "Pull-mode backup: a read-only NBD export N of NODE as it was when the\n"
      "fleece started, however the guest writes on.  start creates PATH, a\n"
      "qcow2 overlay of NODE, and runs a backup job sync=none from NODE into\n"
      "it (what the guest overwrites is copied there first), in one\n"
      "transaction with the bitmap changes; N is the\n"
      "export's name and id, the overlay's node name and the job's id.  stop\n"
      "removes the export (refused while a client is connected), the job,\n"
      "the node and PATH.  start undoes its steps when one fails.\n"
      "  --file PATH     the scratch image to create (required; must not exist)\n"
      "  --name N        the fleece's name (default: fleece-NODE)\n"
      "  --bitmap B      NODE's dirty bitmap B: disabled at that instant (so\n"
      "                  it marks what changed up to it) and published as\n"
      "                  qemu:dirty-bitmap:B; may be repeated\n"
      "  --next-bitmap NEW  add bitmap NEW to NODE at that instant, for the\n"
      "                  next incremental backup\n"
      "  --persistent    NEW is stored in the image\n"
      "  --allocation-depth  publish qemu:allocation-depth\n" },
};

static const CmdSpec *find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof(cmd_specs) / sizeof(cmd_specs[0]); i++) {
        if (strcmp(cmd_specs[i].name, name) == 0) {
            return &cmd_specs[i];
        }
    }
    return NULL;
}

enum {
    OPT_TO = 256, OPT_SYNC, OPT_BITMAP, OPT_BITMAP_MODE, OPT_BASE, OPT_TOP,
    OPT_SPEED, OPT_WAIT, OPT_ASYNC, OPT_PIVOT, OPT_TIMEOUT, OPT_JOB_ID,
    OPT_POLL, OPT_ALL, OPT_COUNT, OPT_CONNECT_TIMEOUT, OPT_GRANULARITY,
    OPT_PERSISTENT, OPT_DISABLED, OPT_VERSION, OPT_BANDWIDTH,
    OPT_DRIVER, OPT_FILE, OPT_BACKING, OPT_READ_ONLY, OPT_FORMAT, OPT_SIZE,
    OPT_BACKING_FORMAT, OPT_CLUSTER_SIZE, OPT_NAME, OPT_WRITABLE,
    OPT_ALLOCATION_DEPTH, OPT_NEXT_BITMAP,
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
    { "version", no_argument, NULL, OPT_VERSION },
    { "bandwidth", required_argument, NULL, OPT_BANDWIDTH },
    { "driver", required_argument, NULL, OPT_DRIVER },
    { "file", required_argument, NULL, OPT_FILE },
    { "backing", required_argument, NULL, OPT_BACKING },
    { "read-only", no_argument, NULL, OPT_READ_ONLY },
    { "format", required_argument, NULL, OPT_FORMAT },
    { "size", required_argument, NULL, OPT_SIZE },
    { "backing-format", required_argument, NULL, OPT_BACKING_FORMAT },
    { "cluster-size", required_argument, NULL, OPT_CLUSTER_SIZE },
    { "name", required_argument, NULL, OPT_NAME },
    { "writable", no_argument, NULL, OPT_WRITABLE },
    { "allocation-depth", no_argument, NULL, OPT_ALLOCATION_DEPTH },
    { "next-bitmap", required_argument, NULL, OPT_NEXT_BITMAP },
    { NULL, 0, NULL, 0 },
};

/* "bjctl: MSG" and where to read more; cmd: that command's help. */
static int usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    const char *msg;

    va_start(ap, fmt);
    msg = ctl_vnote(fmt, ap);
    va_end(ap);
    fprintf(stderr, "bjctl: %s\nTry 'bjctl%s%s --help' for more "
            "information.\n", msg, cmd ? " " : "", cmd ? cmd : "");
    return EXIT_USAGE;
}

/* Parses and runs the command; main adds the --json error object. */
static int run(int argc, char **argv, Ctl *ctlp)
{
    static char **bitmap_args;
    Ctl ctl = *ctlp;
    const char *cmd;
    const CmdSpec *spec;
    bool help = false;
    double secs;
    int c;

    bj_alloc_init_jansson();
    ctl.socket = getenv("BJCTL_SOCKET");
    while ((c = getopt_long(argc, argv, "s:jhv", long_opts, NULL)) != -1) {
        switch (c) {
        case 's': ctl.socket = optarg; break;
        case 'j': ctl.json = ctlp->json = true; break;
        case 'h': help = true; break;
        case OPT_VERSION:
            printf("bjctl version " BLOCKJOBD_VERSION "\n");
            return EXIT_OK;
        case 'v': ctl.verbose = true; break;
        case OPT_TO: ctl.to = optarg; break;
        case OPT_SYNC: ctl.sync = optarg; break;
        case OPT_BITMAP:
            /* export add takes several; no more than argc in any case.
             * Static, so still reachable at exit. */
            if (!bitmap_args) {
                bitmap_args = bj_malloc(argc * sizeof(*bitmap_args));
            }
            bitmap_args[ctl.nbitmaps++] = optarg;
            ctl.bitmaps = bitmap_args;
            ctl.bitmap = optarg;
            break;
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
        case OPT_DRIVER: ctl.driver = optarg; break;
        case OPT_FILE: ctl.file = optarg; break;
        case OPT_BACKING: ctl.backing = optarg; break;
        case OPT_READ_ONLY: ctl.read_only = true; break;
        case OPT_FORMAT: ctl.format = optarg; break;
        case OPT_NAME: ctl.export_name = optarg; break;
        case OPT_WRITABLE: ctl.writable = true; break;
        case OPT_ALLOCATION_DEPTH: ctl.allocation_depth = true; break;
        case OPT_NEXT_BITMAP: ctl.next_bitmap = optarg; break;
        case OPT_BACKING_FORMAT: ctl.backing_format = optarg; break;
        case OPT_SIZE:
            if (!units_parse_size(optarg, &ctl.size) || ctl.size < 0) {
                return usage_error(NULL, "invalid size '%s' (bytes, e.g. "
                                   "10G)", optarg);
            }
            ctl.has_size = true;
            break;
        case OPT_CLUSTER_SIZE:
        case OPT_GRANULARITY: {
            /* both a block size: bytes, 1 to 4G */
            bool gran = c == OPT_GRANULARITY;
            int64_t *v = gran ? &ctl.granularity : &ctl.cluster_size;

            if (!units_parse_size(optarg, v) || *v <= 0 || *v > UINT32_MAX) {
                return usage_error(NULL, "invalid %s '%s' (bytes, e.g. 64K)",
                                   gran ? "granularity" : "cluster size",
                                   optarg);
            }
            *(gran ? &ctl.has_granularity : &ctl.has_cluster_size) = true;
            break;
        }
        case OPT_SPEED:
            if (!ctl_parse_rate(optarg, &ctl.speed)) {
                fputs("Try 'bjctl --help' for more information.\n", stderr);
                return EXIT_USAGE;    /* the message is kept for --json */
            }
            ctl.has_speed = true;
            break;
        case OPT_BANDWIDTH: {
            char *end;
            long long mib = strtoll(optarg, &end, 10);

            if (!isdigit((unsigned char)*optarg) || *end ||
                mib > INT64_MAX / (1024 * 1024)) {
                return usage_error(NULL, "invalid bandwidth '%s' (MiB/s, a "
                                   "whole number)", optarg);
            }
            ctl.bw_speed = mib * 1024 * 1024;
            ctl.has_bandwidth = true;
            break;
        }
        case OPT_TIMEOUT:
            if (!units_parse_seconds(optarg, &ctl.timeout)) {
                return usage_error(NULL, "invalid timeout '%s' (seconds)",
                                   optarg);
            }
            ctl.has_timeout = true;
            break;
        case OPT_CONNECT_TIMEOUT:
            if (!units_parse_seconds(optarg, &secs) || secs < 0.001) {
                return usage_error(NULL, "invalid timeout '%s' (seconds)",
                                   optarg);
            }
            ctl.connect_timeout_ms = (int)(secs * 1000);
            break;
        case OPT_COUNT: {
            char *end;
            ctl.count = strtol(optarg, &end, 10);
            if (*end || ctl.count < 0) {
                return usage_error(NULL, "invalid count '%s'", optarg);
            }
            break;
        }
        default:               /* getopt said what is wrong */
            return usage_error(NULL, "invalid option '%s'",
                               argv[optind - 1]);
        }
    }
    if (ctl.has_bandwidth) {
        if (ctl.has_speed) {
            return usage_error(NULL, "%s", "--speed and --bandwidth both "
                               "say the speed: give one");
        }
        ctl.speed = ctl.bw_speed;
        ctl.has_speed = true;
    }
    if (optind >= argc) {
        if (help) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        }
        return usage_error(NULL, "%s", "no command given");
    }
    cmd = argv[optind];
    ctl.args = argv + optind + 1;
    ctl.nargs = argc - optind - 1;
    spec = find_cmd(cmd);
    if (!spec) {
        return usage_error(NULL, "unknown command '%s'", cmd);
    }
    if (help) {
        fputs(spec->help, stdout);
        return EXIT_OK;
    }
    if (spec->max_args == 0 && ctl.nargs > 0) {
        return usage_error(cmd, "%s: unexpected argument '%s' (%s takes no "
                           "arguments)", cmd, ctl.args[0], cmd);
    }
    if (spec->max_args > 0 && ctl.nargs > spec->max_args) {
        return usage_error(cmd, "%s: unexpected argument '%s' (%s takes %d "
                           "argument%s)", cmd, ctl.args[spec->max_args], cmd,
                           spec->max_args, spec->max_args == 1 ? "" : "s");
    }
    if (!ctl.socket || !*ctl.socket) {
        return usage_error(NULL, "%s", "no socket: use --socket PATH or set "
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
    } else if (strcmp(cmd, "node") == 0) {
        return cmd_node(&ctl);
    } else if (strcmp(cmd, "image") == 0) {
        return cmd_image(&ctl);
    } else if (strcmp(cmd, "export") == 0) {
        return cmd_export(&ctl);
    } else if (strcmp(cmd, "fleece") == 0) {
        return cmd_fleece(&ctl);
    }
    return usage_error(NULL, "unknown command '%s'", cmd); /* not reached */
}

int main(int argc, char **argv)
{
    Ctl ctl = { .connect_timeout_ms = 30000 };
    int rc;

    /* known before any option is parsed: a usage error is JSON too */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0) {
            ctl.json = true;
        }
    }
    rc = run(argc, argv, &ctl);
    if (ctl.json && rc != EXIT_OK) {
        ctl_print_error_json(rc);
    }
    return rc;
}
