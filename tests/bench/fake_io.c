/* fake_io.so — for tests/bench/passthrough.c only. Preloaded after ddshim
 * (LD_PRELOAD=libddshim.so:fake_io.so), it is what ddshim's dlsym(RTLD_NEXT)
 * finds for write() and send(). For the descriptors the benchmark registers
 * with fake_io_set() they return at once, as if the kernel had taken the
 * bytes; every other descriptor goes on to libc. What remains to time is
 * ddshim's hook alone, without a system call's microsecond of noise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define NFAKE 4
static int fake[NFAKE] = {-1, -1, -1, -1};

void fake_io_set(int i, int fd);
ssize_t fake_io_write(int fd, const void *buf, size_t len);
ssize_t fake_io_send(int fd, const void *buf, size_t len, int flags);

void fake_io_set(int i, int fd)
{
    if (i >= 0 && i < NFAKE)
        fake[i] = fd;
}

static int is_fake(int fd)
{
    return fd >= 0 && (fd == fake[0] || fd == fake[1] || fd == fake[2] || fd == fake[3]);
}

__attribute__((noinline)) ssize_t fake_io_write(int fd, const void *buf, size_t len)
{
    static ssize_t (*next)(int, const void *, size_t);
    if (is_fake(fd))
        return (ssize_t)len;
    if (next == NULL)
        next = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    return next(fd, buf, len);
}

__attribute__((noinline)) ssize_t fake_io_send(int fd, const void *buf, size_t len, int flags)
{
    static ssize_t (*next)(int, const void *, size_t, int);
    if (is_fake(fd))
        return (ssize_t)len;
    if (next == NULL)
        next = (ssize_t(*)(int, const void *, size_t, int))dlsym(RTLD_NEXT, "send");
    return next(fd, buf, len, flags);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    return fake_io_write(fd, buf, len);
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    return fake_io_send(fd, buf, len, flags);
}
