/* crust's seccomp probe: makes each syscall the default profile decides on, with raw syscall(2) so no
 * libc fallback hides the answer, and prints one line per call: "<name> ok" or "<name> <ERRNO>".
 * Built static by the test harness (conformance/src/probes.rs); runs in a container without a libc. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#ifndef CLONE_NEWUSER
#define CLONE_NEWUSER 0x10000000
#endif
#ifndef CLONE_NEWNET
#define CLONE_NEWNET 0x40000000
#endif
#ifndef AF_ALG
#define AF_ALG 38
#endif

static void report(const char *name, long r, int err) {
    printf("%s %s\n", name, r < 0 ? strerrorname_np(err) : "ok");
    fflush(stdout);
}

/* A child that a successful clone made exits at once; the parent reaps it. */
static long reap(long r) {
    if (r == 0)
        _exit(0);
    if (r > 0)
        waitpid((pid_t)r, NULL, __WALL);
    return r;
}

#define PROBE(name, call)                 \
    do {                                  \
        errno = 0;                        \
        long r_ = (long)(call);           \
        report(name, r_, errno);          \
    } while (0)

int main(int argc, char **argv) {
    uint64_t attr[64];
    memset(attr, 0, sizeof attr);

    PROBE("getpid", syscall(SYS_getpid));
    PROBE("clone", reap(syscall(SYS_clone, (long)SIGCHLD, 0L, 0L, 0L, 0L)));
    PROBE("clone_newuser_newnet",
          reap(syscall(SYS_clone, (long)(CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD), 0L, 0L, 0L, 0L)));
    {
        /* struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls */
        uint64_t ca[8] = {CLONE_NEWUSER, 0, 0, 0, SIGCHLD, 0, 0, 0};
        PROBE("clone3_newuser", reap(syscall(SYS_clone3, ca, sizeof ca)));
    }
    PROBE("io_uring_setup", syscall(SYS_io_uring_setup, 1L, attr));
    /* KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING */
    PROBE("keyctl", syscall(SYS_keyctl, 0L, -3L, 0L));
    PROBE("request_key", syscall(SYS_request_key, "user", "crust-probe-absent", 0L, 0L));
    /* BPF_MAP_CREATE with an empty attribute */
    PROBE("bpf", syscall(SYS_bpf, 0L, attr, 72L));
    /* a software event: PERF_TYPE_SOFTWARE, size 128, PERF_COUNT_SW_CPU_CLOCK, this process, any CPU */
    ((uint32_t *)attr)[0] = 1;
    ((uint32_t *)attr)[1] = 128;
    PROBE("perf_event_open", syscall(SYS_perf_event_open, attr, 0L, -1L, -1L, 0L));
    memset(attr, 0, sizeof attr);
    PROBE("userfaultfd", syscall(SYS_userfaultfd, 0L));
    PROBE("personality_query", syscall(SYS_personality, 0xffffffffL));
    PROBE("personality_addr_no_randomize", syscall(SYS_personality, 0x0040000L));
    PROBE("socket_unix", syscall(SYS_socket, (long)AF_UNIX, (long)SOCK_STREAM, 0L));
    PROBE("socket_alg", syscall(SYS_socket, (long)AF_ALG, (long)SOCK_SEQPACKET, 0L));
    PROBE("mkdir", syscall(SYS_mkdir, "/tmp/crust-probe-dir", 0755L));
    {
        int fd = open("/proc/self/ns/net", O_RDONLY);
        PROBE("setns", syscall(SYS_setns, (long)fd, (long)CLONE_NEWNET));
        if (fd >= 0)
            close(fd);
    }
    /* Last: a new user namespace, where allowed, changes what the calls after it would see. */
    PROBE("unshare_newuser", syscall(SYS_unshare, (long)CLONE_NEWUSER));
    (void)argc;
    (void)argv;
    return 0;
}
