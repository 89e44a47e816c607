/*
 * The floor under issues 7 and 25's targets: what the kernel alone charges for the parts
 * of a sandboxed, audited call that cannot be skipped, with none of upm's own work (no
 * config, no schema, no init process, no capture, no result; by default no layers, no
 * uid switch and no mount namespace either: see `layers` and `full`). bench/call.py,
 * bench/batch.py and bench/targets.py build it with `cc` and run it beside upm, so the
 * tables show how close to the floor upm is.
 *
 *   floor call LOG    one call: a 2 KB line appended to LOG and fdatasync'd on a
 *                     thread while a child is cloned into new user, PID, network and
 *                     IPC namespaces; the child waits for the go, then execs /bin/true;
 *                     wait; a second line made durable. (upm overlaps its `started`
 *                     entry with the clone the same way.)
 *   floor call LOG layers | floor call LOG full
 *                     the same call with the layers, or with every guarantee (below).
 *   floor batch W N   W processes, each N times: clone into those namespaces, exec
 *                     /bin/true, wait. Prints calls per second.
 *   floor batch W N layers
 *                     the same, and each child also takes the kernel's share of the layers
 *                     the issue asks to keep on: a Landlock ruleset built per call (the
 *                     paths a dynamically linked /bin/true needs, a writable home; TCP and
 *                     scopes handled), no_new_privs, and a seccomp filter of upm's default
 *                     size (206 instructions, a linear list here). Still no uid maps, rlimits,
 *                     init process, working directory, audit entries or result.
 *
 *   floor batch W N full | floor batch W N LOG full durable
 *                     the layers, and the kernel's share of the rest of what issue 25 keeps
 *                     for every call: a mount namespace of its own whose every mount the
 *                     child makes read-only and private, a size-limited tmpfs home mounted
 *                     there (the new mount API, as upm's init does), uid and gid maps
 *                     written by the parent before the go, the capability bounding set
 *                     emptied (before the go, as upm's init does), the ten rlimits upm
 *                     sets (at most the current ones), a switch to uid and gid 65534.
 *                     With `durable`, also two 2 KB lines a call, at one fdatasync a call:
 *                     the `started` line is made durable before the go, and the
 *                     `finished` one, written after the reap, by the next call's
 *                     fdatasync (and a last one at the end), which is the most upm's group
 *                     commit can share (it must have the `finished` entry durable before
 *                     the result line, and measures 1.3-1.5 fdatasyncs a call). Still no
 *                     init process, capture, config, schema or result: what is left above
 *                     this is upm's own work.
 *
 * A last word `nonet` leaves the network namespace out of the clone (either mode): the
 * floor of a call that joins an existing empty namespace (upm's batch and `upm mcp`
 * share one per process), whose cost per call is a setns on the cloning thread, ~µs.
 *
 * Every child must exit 0 (an exec that failed would be a faster, false floor): any
 * failure makes the program exit 1 without a number.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int namespaces = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC;

static char stack[1 << 16];
static int go[2] = {-1, -1};
static int log_fd = -1;
static char line[2048];

/* The "layers" variant: set up in the parent per call, applied in the child. */
static int layers = 0;
static int ruleset_fd = -1;

/* The "full" variant (see above); `durable` adds the two lines per call. */
static int full = 0;
static int durable = 0;
static int full_go[2] = {-1, -1};
#define FILTER_LEN 206
static struct sock_filter filter[FILTER_LEN];
static struct sock_fprog prog = {FILTER_LEN, filter};
static const char *home = "/tmp/upm-floor-home";

/* Landlock's ABI 6 structures (the headers here may be older than the kernel). */
struct ll_ruleset_attr {
    uint64_t handled_access_fs, handled_access_net, scoped;
};
struct ll_path_beneath {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));
#define LL_FS_ALL ((1ULL << 16) - 1)
#define LL_FS_READ_EXEC (1ULL << 0 | 1ULL << 2 | 1ULL << 3) /* execute, read file, read dir */
#define LL_FS_FILE_READ (1ULL << 2)

/* Adds a rule; -1 (said on stderr) on failure. */
static int add_rule_to(const char *path, uint64_t access) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        return perror(path), -1;
    struct ll_path_beneath pb = {S_ISDIR(st.st_mode) ? access : access & LL_FS_FILE_READ, fd};
    if (syscall(SYS_landlock_add_rule, ruleset_fd, 1 /* PATH_BENEATH */, &pb, 0) != 0)
        return perror("landlock_add_rule"), -1;
    close(fd);
    return 0;
}

static void add_rule(const char *path, uint64_t access) {
    if (add_rule_to(path, access) != 0)
        exit(1);
}

static void build_ruleset(void) {
    struct ll_ruleset_attr attr = {LL_FS_ALL, 3 /* bind, connect TCP */, 3 /* unix, signal */};
    ruleset_fd = syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (ruleset_fd < 0) {
        perror("landlock_create_ruleset");
        exit(1);
    }
    const char *read_paths[] = {"/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache",
                                "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"};
    for (size_t i = 0; i < sizeof read_paths / sizeof *read_paths; i++)
        add_rule(read_paths[i], LL_FS_READ_EXEC);
    if (!full)
        add_rule(home, LL_FS_ALL);
}

static void build_filter(void) {
    int n = 0;
    filter[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    filter[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    filter[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    filter[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    /* 200 numbers no syscall has: refused with EPERM, the rest allowed. */
    for (int k = 0; k < 200; k++)
        filter[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 1000 + k, 200 - k, 0);
    filter[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    filter[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 1);
}

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
struct floor_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

/* In the child, in its new user and mount namespaces, before the layers: what upm's init
 * does for the host's view, the home, the credentials and the limits. */
static int drop_bounding_set(void) {
    int cap = 0;
    while (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0)
        cap++;
    /* Done only when the kernel knows no next capability. */
    return errno == EINVAL && cap > 0 ? 0 : -1;
}

static int full_setup(void) {
    struct floor_mount_attr ro = {0x1 /* RDONLY */, 0, 1 << 18 /* MS_PRIVATE */, 0};
    if (syscall(SYS_mount_setattr, AT_FDCWD, "/", 0x8000 /* AT_RECURSIVE */, &ro, sizeof ro) != 0)
        return perror("mount_setattr"), -1;
    int fs = syscall(SYS_fsopen, "tmpfs", 1);
    const char *opts[][2] = {{"size", "67108864"}, {"nr_inodes", "16384"}, {"mode", "0700"},
                             {"uid", "65534"}, {"gid", "65534"}};
    if (fs < 0)
        return perror("fsopen"), -1;
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++)
        if (syscall(SYS_fsconfig, fs, 1 /* SET_STRING */, opts[i][0], opts[i][1], 0) != 0)
            return perror("fsconfig"), -1;
    if (syscall(SYS_fsconfig, fs, 6 /* CMD_CREATE */, 0, 0, 0) != 0)
        return perror("fsconfig create"), -1;
    int mnt = syscall(SYS_fsmount, fs, 1, 0x2 | 0x4 /* NOSUID, NODEV */);
    if (mnt < 0 || syscall(SYS_move_mount, mnt, "", AT_FDCWD, home, 0x4 /* F_EMPTY_PATH */) != 0)
        return perror("fsmount"), -1;
    close(mnt);
    close(fs);
    if (add_rule_to(home, LL_FS_ALL) != 0)
        return -1;
    /* The ten upm sets, each at most the current hard limit (raising one would take
     * CAP_SYS_RESOURCE on the host). */
    struct {
        int resource;
        rlim_t value;
    } limits[] = {{RLIMIT_CPU, 60},          {RLIMIT_AS, 1UL << 30},    {RLIMIT_NPROC, 256},
                  {RLIMIT_FSIZE, 1UL << 26}, {RLIMIT_NOFILE, 256},      {RLIMIT_CORE, 0},
                  {RLIMIT_SIGPENDING, 256},  {RLIMIT_MSGQUEUE, 0},      {RLIMIT_RTPRIO, 0},
                  {RLIMIT_NICE, 0}};
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
        struct rlimit now, lim;
        if (getrlimit(limits[i].resource, &now) != 0)
            return perror("getrlimit"), -1;
        lim.rlim_cur = lim.rlim_max = limits[i].value < now.rlim_max ? limits[i].value : now.rlim_max;
        if (setrlimit(limits[i].resource, &lim) != 0)
            return perror("setrlimit"), -1;
    }
    /* Raw system calls: glibc's setresuid would wait for the parent's other threads. */
    if (syscall(SYS_setgroups, 0, NULL) != 0 || syscall(SYS_setresgid, 65534, 65534, 65534) != 0 ||
        syscall(SYS_setresuid, 65534, 65534, 65534) != 0)
        return perror("credentials"), -1;
    return 0;
}

static int child(void *arg) {
    (void)arg;
    char c;
    /* Only the parent writes a go: a parent that fails first leaves the child EOF. */
    if (go[1] >= 0)
        close(go[1]);
    if (full)
        close(full_go[1]);
    if (full && drop_bounding_set() != 0)
        _exit(123);
    if (go[0] >= 0 && read(go[0], &c, 1) != 1)
        _exit(126);
    if (full && (read(full_go[0], &c, 1) != 1 || full_setup() != 0))
        _exit(124);
    if (layers && (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
                   syscall(SYS_landlock_restrict_self, ruleset_fd, 0) != 0 ||
                   syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0))
        _exit(125);
    char *argv[] = {"/bin/true", NULL};
    char *envp[] = {NULL};
    execve("/bin/true", argv, envp);
    _exit(127);
}

static void durable_line(void) {
    if (write(log_fd, line, sizeof line) != (ssize_t)sizeof line || fdatasync(log_fd) != 0) {
        perror("audit line");
        exit(1);
    }
}

static void *durable_line_thread(void *arg) {
    (void)arg;
    durable_line();
    return NULL;
}

static void durable_line(void);

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        perror(path);
        exit(1);
    }
    close(fd);
}

static pid_t spawn(void) {
    if (layers)
        build_ruleset();
    if (full && pipe2(full_go, O_CLOEXEC) != 0) {
        perror("pipe2");
        exit(1);
    }
    pid_t pid = clone(child, stack + sizeof stack, namespaces | SIGCHLD, NULL);
    if (pid < 0) {
        perror("clone");
        exit(1);
    }
    if (layers)
        close(ruleset_fd);
    if (full) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
        write_file(path, "65534 65534 1\n");
        snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
        write_file(path, "65534 65534 1\n");
        if (durable)
            durable_line();
        close(full_go[0]);
        if (write(full_go[1], "g", 1) != 1) {
            perror("go");
            exit(1);
        }
        close(full_go[1]);
    }
    return pid;
}

/* Waits for `pid`; exits 1 unless it exited 0. */
static void reap(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "floor: child %d failed (status %#x)\n", (int)pid, status);
        exit(1);
    }
}

static int open_log(const char *log);

static int one_call(const char *log) {
    if (open_log(log) < 0 || pipe2(go, O_CLOEXEC) != 0) {
        perror("setup");
        return 1;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, durable_line_thread, NULL) != 0) {
        fprintf(stderr, "floor: pthread_create failed\n");
        return 1;
    }
    pid_t pid = spawn();
    pthread_join(t, NULL);
    if (write(go[1], "g", 1) != 1) {
        perror("go");
        return 1;
    }
    reap(pid);
    durable_line();
    return 0;
}

static int batch(int workers, int n) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int w = 0; w < workers; w++) {
        pid_t p = fork();
        if (p < 0) {
            perror("fork");
            return 1;
        }
        if (p == 0) {
            for (int i = 0; i < n; i++) {
                reap(spawn());
                /* The `finished` line: made durable by the next call's fdatasync. */
                if (durable && write(log_fd, line, sizeof line) != (ssize_t)sizeof line) {
                    perror("audit line");
                    _exit(1);
                }
            }
            if (durable && fdatasync(log_fd) != 0) {
                perror("fdatasync");
                _exit(1);
            }
            _exit(0);
        }
    }
    int status, failed = 0;
    while (wait(&status) > 0)
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    if (failed)
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%.1f\n", workers * n / s);
    return 0;
}

/* Turns on the layers (and with `full`, the rest of the guarantees) for every call. */
static int set_mode(const char *mode) {
    layers = 1;
    full = strcmp(mode, "full") == 0;
    if (!full && strcmp(mode, "layers") != 0)
        return -1;
    if (full)
        namespaces |= CLONE_NEWNS;
    if (mkdir(home, 0755) != 0 && access(home, F_OK) != 0) {
        perror(home);
        exit(1);
    }
    build_filter();
    return 0;
}

static int open_log(const char *log) {
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (log_fd < 0)
        perror(log);
    return log_fd;
}

int main(int argc, char **argv) {
    if (argc > 3 && strcmp(argv[argc - 1], "nonet") == 0) {
        namespaces &= ~CLONE_NEWNET;
        argc--;
    }
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "call") == 0) {
        /* floor call LOG [layers | full] */
        if (argc == 4 && set_mode(argv[3]) != 0)
            goto usage;
        return one_call(argv[2]);
    }
    if (argc < 4 || strcmp(argv[1], "batch") != 0 || atoi(argv[2]) <= 0 || atoi(argv[3]) <= 0)
        goto usage;
    if (argc == 7 && strcmp(argv[5], "full") == 0 && strcmp(argv[6], "durable") == 0) {
        /* floor batch W N LOG full durable */
        durable = 1;
        if (open_log(argv[4]) < 0)
            return 1;
        set_mode("full");
    } else if (argc == 5) {
        if (set_mode(argv[4]) != 0)
            goto usage;
    } else if (argc != 4) {
        goto usage;
    }
    return batch(atoi(argv[2]), atoi(argv[3]));
usage:
    fprintf(stderr, "usage: floor call LOG [layers | full] [nonet] | floor batch WORKERS CALLS_EACH "
                    "[layers | full | LOG full durable] [nonet]\n");
    return 2;
}
