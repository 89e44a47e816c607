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
 *
 * Every child must exit 0 (an exec that failed would be a faster, false floor): any
 * failure makes the program exit 1 without a number.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAMESPACES (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC)

static char stack[1 << 16];
static int go[2] = {-1, -1};
static int log_fd = -1;
static char line[2048];

static int child(void *arg) {
    (void)arg;
    char c;
    if (go[0] >= 0 && read(go[0], &c, 1) != 1)
        _exit(126);
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
    pid_t pid = clone(child, stack + sizeof stack, NAMESPACES | SIGCHLD, NULL);
    if (pid < 0) {
        perror("clone");
        exit(1);
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
    if (argc == 3 && strcmp(argv[1], "call") == 0)
        return one_call(argv[2]);
    if (argc == 4 && strcmp(argv[1], "batch") == 0 && atoi(argv[2]) > 0 && atoi(argv[3]) > 0)
        return batch(atoi(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: floor call LOG | floor batch WORKERS CALLS_EACH\n");
    return 2;
}
