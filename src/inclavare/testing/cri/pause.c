/* A pod's pause process for the project's CRI tests: it holds the pod's namespaces open and does nothing
 * else. It waits for signals synchronously: SIGINT or SIGTERM ends it with status 0; SIGCHLD reaps every
 * child that has exited (as PID 1 of a pod's PID namespace it inherits orphans). Built static, so the image
 * needs nothing but this file:  gcc -static -Os -o pause pause.c
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void nothing(int sig) { (void)sig; }

static void reap(void)
{
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid > 0)
            continue;
        if (pid < 0 && errno == EINTR)
            continue;
        return; /* 0: children left but none exited; -1 ECHILD: no children */
    }
}

int main(int argc, char **argv)
{
    static const int wanted[] = {SIGINT, SIGTERM, SIGCHLD};
    struct sigaction sa;
    sigset_t set;
    size_t i;

    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause (inclavare-containers test image)");
        return 0;
    }
    /* a handler, not SIG_DFL: the kernel drops default-action signals sent to a PID namespace's init */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = nothing;
    sigemptyset(&set);
    for (i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
        sigaddset(&set, wanted[i]);
        if (sigaction(wanted[i], &sa, NULL) != 0) {
            perror("pause: sigaction");
            return 1;
        }
    }
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
        perror("pause: sigprocmask");
        return 1;
    }
    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig < 0) {
            if (errno == EINTR)
                continue;
            perror("pause: sigwaitinfo");
            return 1;
        }
        if (sig == SIGCHLD)
            reap();
        else
            return 0;
    }
}
