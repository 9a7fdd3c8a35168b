/*
 * blockd.c - the daemon's entry point: options, main loop, shutdown.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockd/secret.h"
#include "blockd/tls.h"
#include "blockd/user-object.h"
#include "blockd/job-driver.h"
#include "blockd/block.h"
#include "blockd/block-global-state.h"
#include "blockd/chardev.h"
#include "blockd/export.h"
#include "blockd/iothread.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "cmdline.h"
#include "../monitor/monitor-internal.h"
#include "version.h"


static bool signal_quit;
static int signal_fd = -1;

static void signal_read(void *opaque)
{
    struct signalfd_siginfo info;

    (void)opaque;
    while (read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
        if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM ||
            info.ssi_signo == SIGHUP) {
            signal_quit = true;
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

static bool write_pidfile(const char *path)
{
    char buf[32];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());

    if (fd < 0 || write(fd, buf, len) != len) {
        error_report("Cannot write pid file '%s': %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    close(fd);
    return true;
}

/*
 * --daemonize: fork before anything is opened; the parent waits until the
 * child reports that it is set up (or failed), and exits with its status.
 */
static int daemonize_start(void)
{
    int pipefd[2];
    pid_t pid;
    char status = 1;

    if (pipe(pipefd) < 0) {
        error_report("pipe: %s", strerror(errno));
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        error_report("fork: %s", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        close(pipefd[1]);
        if (read(pipefd[0], &status, 1) != 1) {
            status = 1;
        }
        _exit(status);
    }
    close(pipefd[0]);
    setsid();
    return pipefd[1];
}

static void daemonize_finish(int fd)
{
    int null = open("/dev/null", O_RDWR);
    char ok = 0;

    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        close(null);
    }
    if (write(fd, &ok, 1) != 1) {
        /* The parent is gone: nothing to tell. */
    }
    close(fd);
}

static bool wants_daemonize(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--daemonize") == 0) {
            return true;
        }
    }
    return false;
}

int main(int argc, char **argv)
{
    DaemonOptions opts = { 0 };
    int daemon_fd = -1;

    log_set_program_name("blockd");
    if (wants_daemonize(argc, argv)) {
        daemon_fd = daemonize_start();
    }
    main_loop_init();
    bdrv_init();
    secret_objects_init();
    thread_context_init();
    tls_creds_init();
    authz_init();
    qmp_init_commands();
    setup_signals();
    cmdline_process(argc, argv, &opts);
    if (daemon_fd >= 0 && chardev_stdio_in_use()) {
        error_report("--chardev stdio: cannot use stdio with --daemonize");
        exit(1);
    }

    if (opts.pidfile && !write_pidfile(opts.pidfile)) {
        exit(1);
    }
    if (daemon_fd >= 0) {
        daemon_fd = (daemonize_finish(daemon_fd), -1);
    } else {
        /* Standard output may carry QMP (--chardev stdio): then stderr. */
        FILE *out = chardev_stdio_in_use() ? stderr : stdout;
        fprintf(out, "blockd " BLOCKD_VERSION " ready (pid %d)\n", (int)getpid());
        fflush(out);
    }

    while (!signal_quit && !qmp_quit_requested) {
        main_loop_wait(true);
    }

    /* Clean shutdown: cancel jobs (their filters leave the graph), stop
     * serving, end the exports (their requests complete), then monitors,
     * nodes (drained on close), iothreads. */
    job_cancel_sync_all();
    if (nbd_server_running()) {
        nbd_server_stop(NULL);
    }
    blk_exp_close_all();
    monitor_cleanup();
    chardev_free_all();
    qmp_block_cleanup();
    bdrv_close_all();
    user_object_delete_all();
    iothread_destroy_all();
    if (opts.pidfile) {
        unlink(opts.pidfile);
    }
    aio_set_fd_handler(main_aio_context(), signal_fd, NULL, NULL, NULL, NULL);
    close(signal_fd);
    main_loop_cleanup();
    return 0;
}
