/*
 * The floor under issue 7's targets: what the kernel alone charges for the parts of a
 * sandboxed, audited call that cannot be skipped, with none of upm's own work (no
 * config, no schema, no Landlock, no seccomp, no uid switch, no private directory,
 * no init process, no capture). bench/call.py and bench/batch.py build it with `cc`
 * and run it beside upm, so the tables show how close to the floor upm is.
 *
 *   floor call LOG    one call: a 2 KB line appended to LOG and fdatasync'd on a
 *                     thread while a child is cloned into new user, PID, network and
 *                     IPC namespaces; the child waits for the go, then execs /bin/true;
 *                     wait; a second line made durable. (upm overlaps its `started`
 *                     entry with the clone the same way.)
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
 * A last word `nonet` leaves the network namespace out of the clone (either mode): the
 * floor of a call that joins an existing empty namespace (upm's batch and `upm mcp`
 * share one per process), whose cost per call is a setns on the cloning thread, ~µs.
 *
 * Every child must exit 0 (an exec that failed would be a faster, false floor): any
 * failure makes the program exit 1 without a number.
 */
#define _GNU_SOURCE
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

static void add_rule(const char *path, uint64_t access) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        perror(path);
        exit(1);
    }
    struct ll_path_beneath pb = {S_ISDIR(st.st_mode) ? access : access & LL_FS_FILE_READ, fd};
    if (syscall(SYS_landlock_add_rule, ruleset_fd, 1 /* PATH_BENEATH */, &pb, 0) != 0) {
        perror("landlock_add_rule");
        exit(1);
    }
    close(fd);
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

static int child(void *arg) {
    (void)arg;
    char c;
    if (go[0] >= 0 && read(go[0], &c, 1) != 1)
        _exit(126);
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

static pid_t spawn(void) {
    if (layers)
        build_ruleset();
    pid_t pid = clone(child, stack + sizeof stack, namespaces | SIGCHLD, NULL);
    if (pid < 0) {
        perror("clone");
        exit(1);
    }
    if (layers)
        close(ruleset_fd);
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

static int one_call(const char *log) {
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (log_fd < 0 || pipe2(go, O_CLOEXEC) != 0) {
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
            for (int i = 0; i < n; i++)
                reap(spawn());
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

int main(int argc, char **argv) {
    if (argc > 3 && strcmp(argv[argc - 1], "nonet") == 0) {
        namespaces &= ~CLONE_NEWNET;
        argc--;
    }
    if (argc == 3 && strcmp(argv[1], "call") == 0)
        return one_call(argv[2]);
    if ((argc == 4 || (argc == 5 && strcmp(argv[4], "layers") == 0)) &&
        strcmp(argv[1], "batch") == 0 && atoi(argv[2]) > 0 && atoi(argv[3]) > 0) {
        if (argc == 5) {
            layers = 1;
            if (mkdir(home, 0755) != 0 && access(home, F_OK) != 0) {
                perror(home);
                return 1;
            }
            build_filter();
        }
        return batch(atoi(argv[2]), atoi(argv[3]));
    }
    fprintf(stderr, "usage: floor call LOG [nonet] | floor batch WORKERS CALLS_EACH [layers] [nonet]\n");
    return 2;
}
