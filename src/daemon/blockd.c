/*
 * blockd.c - the daemon's entry point.
 *
 * For now it runs the main loop until SIGINT or SIGTERM; the command line
 * of qemu-storage-daemon grows here issue by issue.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "blockd/iothread.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "version.h"

static bool quit_requested;
static int signal_fd = -1;

static void signal_read(void *opaque)
{
    struct signalfd_siginfo info;

    (void)opaque;
    while (read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
        if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM ||
            info.ssi_signo == SIGHUP) {
            quit_requested = true;
        }
    }
}

static void setup_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    /* Handled through the event loop, never asynchronously. */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (signal_fd < 0) {
        error_report("signalfd: %s", strerror(errno));
        exit(1);
    }
    aio_set_fd_handler(main_aio_context(), signal_fd, signal_read, NULL, NULL, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void usage(void)
{
    printf("Usage: blockd [options]\n"
           "blockd " BLOCKD_VERSION " - a storage daemon compatible with qemu-storage-daemon\n\n"
           "  -h, --help       display this help and exit\n"
           "  -V, --version    output version information and exit\n");
}

int main(int argc, char **argv)
{
    log_set_program_name("blockd");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
            printf("blockd version " BLOCKD_VERSION "\n");
            return 0;
        }
        error_report("Unexpected argument: %s", argv[i]);
        return 1;
    }

    main_loop_init();
    setup_signals();
    printf("blockd " BLOCKD_VERSION " ready (pid %d)\n", (int)getpid());
    fflush(stdout);

    while (!quit_requested) {
        main_loop_wait(true);
    }

    iothread_destroy_all();
    aio_set_fd_handler(main_aio_context(), signal_fd, NULL, NULL, NULL, NULL);
    close(signal_fd);
    main_loop_cleanup();
    return 0;
}
