/*
 * test-linux-aio - the Linux AIO engine.
 *
 * The tests are those of test-io-uring.c, run against laio_co_submit();
 * instead of the io_uring-only short-read test, this build checks the
 * fdatasync fallback for files that refuse IOCB_CMD_FDSYNC.
 */
#define TEST_LIBAIO 1
#include "test-io-uring.c"
