/*
 * test-error - Error objects: classes, messages, hints, propagation.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "test-util.h"
#include "blockd/error.h"
#include "blockd/log.h"

static void test_setg_generic(void **state)
{
    Error *err = NULL;

    (void)state;
    error_setg(&err, "bad value %d for '%s'", 42, "size");
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err), "bad value 42 for 'size'");
    assert_int_equal(error_get_class(err), ERROR_CLASS_GENERIC_ERROR);
    assert_string_equal(error_class_name(error_get_class(err)), "GenericError");
    assert_null(error_get_hint(err));
    error_free(err);
}

static void test_set_classes(void **state)
{
    static const struct {
        ErrorClass cls;
        const char *name;
    } cases[] = {
        { ERROR_CLASS_GENERIC_ERROR, "GenericError" },
        { ERROR_CLASS_COMMAND_NOT_FOUND, "CommandNotFound" },
        { ERROR_CLASS_DEVICE_NOT_ACTIVE, "DeviceNotActive" },
        { ERROR_CLASS_DEVICE_NOT_FOUND, "DeviceNotFound" },
        { ERROR_CLASS_KVM_MISSING_CAP, "KVMMissingCap" },
    };

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        Error *err = NULL;

        error_set(&err, cases[i].cls, "Device '%s' not found", "drive0");
        assert_non_null(err);
        assert_int_equal(error_get_class(err), cases[i].cls);
        assert_string_equal(error_class_name(cases[i].cls), cases[i].name);
        assert_string_equal(error_get_pretty(err), "Device 'drive0' not found");
        error_free(err);
    }
    /* Out-of-range classes are reported as generic errors. */
    assert_string_equal(error_class_name(ERROR_CLASS__MAX), "GenericError");
    assert_string_equal(error_class_name((ErrorClass)1000), "GenericError");
}

static void test_setg_errno(void **state)
{
    Error *err = NULL;
    char expected[256];

    (void)state;
    error_setg_errno(&err, ENOENT, "Could not open '%s'", "/nonexistent");
    assert_non_null(err);
    snprintf(expected, sizeof(expected), "Could not open '/nonexistent': %s",
             strerror(ENOENT));
    assert_string_equal(error_get_pretty(err), expected);
    assert_int_equal(error_get_class(err), ERROR_CLASS_GENERIC_ERROR);
    error_free(err);

    /* A different errno gives a different text. */
    err = NULL;
    error_setg_errno(&err, EACCES, "x");
    snprintf(expected, sizeof(expected), "x: %s", strerror(EACCES));
    assert_string_equal(error_get_pretty(err), expected);
    error_free(err);

    /* errno 0 appends nothing. */
    err = NULL;
    error_setg_errno(&err, 0, "plain");
    assert_string_equal(error_get_pretty(err), "plain");
    error_free(err);
}

static void test_prepend(void **state)
{
    Error *err = NULL;

    (void)state;
    error_setg(&err, "No space left");
    error_prepend(&err, "write failed: ");
    assert_string_equal(error_get_pretty(err), "write failed: No space left");
    error_prepend(&err, "job '%s': ", "j0");
    assert_string_equal(error_get_pretty(err), "job 'j0': write failed: No space left");
    error_free(err);

    /* No error, or no errp: nothing happens. */
    err = NULL;
    error_prepend(&err, "ignored: ");
    assert_null(err);
    error_prepend(NULL, "ignored: ");
}

static void test_append_hint(void **state)
{
    Error *err = NULL;

    (void)state;
    error_setg(&err, "Parameter 'size' expects a number");
    assert_null(error_get_hint(err));
    error_append_hint(&err, "Try %d or %s\n", 512, "1G");
    assert_string_equal(error_get_hint(err), "Try 512 or 1G\n");
    error_append_hint(&err, "See the manual\n");
    assert_string_equal(error_get_hint(err), "Try 512 or 1G\nSee the manual\n");
    /* The message itself is untouched. */
    assert_string_equal(error_get_pretty(err), "Parameter 'size' expects a number");
    error_free(err);

    err = NULL;
    error_append_hint(&err, "ignored");
    assert_null(err);
    error_append_hint(NULL, "ignored");
}

static void test_propagate(void **state)
{
    Error *dst = NULL, *first = NULL, *second = NULL;

    (void)state;
    /* Into an empty destination: moved, not copied. */
    error_setg(&first, "first");
    error_propagate(&dst, first);
    assert_ptr_equal(dst, first);
    assert_string_equal(error_get_pretty(dst), "first");

    /* The first error wins; the second is freed (ASan checks for leaks). */
    error_set(&second, ERROR_CLASS_DEVICE_NOT_FOUND, "second");
    error_propagate(&dst, second);
    assert_ptr_equal(dst, first);
    assert_string_equal(error_get_pretty(dst), "first");
    assert_int_equal(error_get_class(dst), ERROR_CLASS_GENERIC_ERROR);

    /* A NULL destination frees the error. */
    second = NULL;
    error_setg(&second, "dropped");
    error_propagate(NULL, second);

    /* Propagating no error changes nothing. */
    error_propagate(&dst, NULL);
    assert_ptr_equal(dst, first);

    error_free(dst);

    /* Propagating NULL into an empty destination leaves it empty. */
    dst = NULL;
    error_propagate(&dst, NULL);
    assert_null(dst);
}

static void test_copy(void **state)
{
    Error *err = NULL, *copy;

    (void)state;
    error_set(&err, ERROR_CLASS_DEVICE_NOT_ACTIVE, "inactive %s", "dev");
    error_append_hint(&err, "hint\n");
    copy = error_copy(err);
    assert_non_null(copy);
    assert_ptr_not_equal(copy, err);
    assert_ptr_not_equal(error_get_pretty(copy), error_get_pretty(err));
    assert_ptr_not_equal(error_get_hint(copy), error_get_hint(err));
    assert_string_equal(error_get_pretty(copy), "inactive dev");
    assert_string_equal(error_get_hint(copy), "hint\n");
    assert_int_equal(error_get_class(copy), ERROR_CLASS_DEVICE_NOT_ACTIVE);

    /* The copy is independent of the original. */
    error_prepend(&err, "changed: ");
    assert_string_equal(error_get_pretty(copy), "inactive dev");
    error_free(err);
    assert_string_equal(error_get_pretty(copy), "inactive dev");
    error_free(copy);

    /* Without a hint. */
    err = NULL;
    error_setg(&err, "no hint");
    copy = error_copy(err);
    assert_null(error_get_hint(copy));
    assert_string_equal(error_get_pretty(copy), "no hint");
    error_free(err);
    error_free(copy);
}

static void test_null_errp(void **state)
{
    Error *err = NULL;

    (void)state;
    error_setg(NULL, "ignored %d", 1);
    error_set(NULL, ERROR_CLASS_DEVICE_NOT_FOUND, "ignored");
    error_setg_errno(NULL, EIO, "ignored");
    error_free(NULL);
    error_clear(NULL);
    error_clear(&err);
    assert_null(err);

    error_setg(&err, "cleared");
    error_clear(&err);
    assert_null(err);
}

/* Run @fn in a child process; return its wait status. */
static int run_in_child(void (*fn)(void))
{
    int status;
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        /* Keep the expected failure message out of the test log. */
        int fd = open("/dev/null", O_WRONLY);

        signal(SIGABRT, SIG_DFL);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
        }
        fn();
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void set_abort(void)
{
    error_setg(&error_abort, "must abort");
}

static void set_fatal(void)
{
    error_setg(&error_fatal, "must exit");
}

static void set_twice(void)
{
    Error *err = NULL;
    error_setg(&err, "one");
    error_setg(&err, "two");
}

static void propagate_abort(void)
{
    Error *err = NULL;
    error_setg(&err, "propagated");
    error_propagate(&error_abort, err);
}

static void test_sentinels(void **state)
{
    int status;

    (void)state;
    status = run_in_child(set_abort);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);

    status = run_in_child(set_fatal);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);

    status = run_in_child(set_twice);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);

    status = run_in_child(propagate_abort);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void test_report_err(void **state)
{
    char path[] = "/tmp/test-error-XXXXXX";
    char buf[512] = "";
    int fd = mkstemp(path), saved;
    Error *err = NULL;
    ssize_t n;

    (void)state;
    assert_true(fd >= 0);
    unlink(path);
    log_set_program_name("unit");
    log_set_level(LOG_LEVEL_WARN);
    error_setg(&err, "disk '%s' is gone", "d0");
    error_append_hint(&err, "check the cable");

    fflush(stderr);
    saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    error_report_err(err);       /* frees err */
    error_report_err(NULL);      /* harmless */
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    log_set_program_name("blockd");

    n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, "unit: disk 'd0' is gone\ncheck the cable\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_setg_generic),
        cmocka_unit_test(test_set_classes),
        cmocka_unit_test(test_setg_errno),
        cmocka_unit_test(test_prepend),
        cmocka_unit_test(test_append_hint),
        cmocka_unit_test(test_propagate),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_null_errp),
        cmocka_unit_test(test_sentinels),
        cmocka_unit_test(test_report_err),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
