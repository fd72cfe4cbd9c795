/* A small HTTP/1.1 client driven by a list of actions, for the reliability
 * tests (tests/reliability). It makes requests with plain connect()/write()/
 * read() on loopback, then ends the way a test asks: return from main, exit,
 * _exit, a signal, abort, exit from a thread, after daemonizing, by exec...
 *
 *   rel_client HOST PORT ACTION...
 *
 *   get:PATH        one GET on a new connection ("Connection: close"), read to
 *                   EOF; prints "get PATH STATUS"
 *   gets:N:PATH     N such GETs; prints "gets N ok OK median_us M max_us X"
 *   raw:F1[,F2...]  on a new connection, send each file's bytes in one write
 *                   call (a short write is completed), shut down writing, read
 *                   to EOF; prints "raw SENT RECEIVED"
 *   hold:PATH       connect (the fd stays open, tracked) and keep it for the
 *                   next vfork/spawn/send action
 *   vfork:HOW       vfork; the child does HOW to the held fd (close, dup2,
 *                   closefrom, close_range), then execs /bin/true
 *   spawn:HOW       posix_spawn /bin/true with a file action HOW (close, dup2)
 *                   on the held fd
 *   send:PATH       a GET of PATH on the held connection; prints "send PATH STATUS"
 *   sleep:MS        sleep
 *   stdin           wait for one line on stdin
 *   tasks / fds     print "tasks N" / "fds N" (/proc/self/task, /proc/self/fd)
 *   rss             print "rss_kb N" (VmRSS)
 *   closeall:HOW    close every fd >= 3 (closefrom or close_range)
 *   daemon          fork, setsid, fork again (the two parents exit(0) and _exit(0)),
 *                   stdio to /dev/null, closefrom(3); the rest runs in the daemon
 *   touch:PATH      create PATH (a daemon says it is done)
 *   open:PATH       open (create, truncate) PATH for writing and keep it open:
 *                   after a closeall it takes the lowest free fd numbers
 *   putfile:TEXT    write TEXT to the file of the last open:
 *   exit:N _exit:N return:N
 *   thread_exit:N   a second thread calls exit(N) while main waits in pause()
 *   signal:SIG      raise(SIG) with its default action
 *   abort
 *   exec PROG ARGS  execvp the rest of the command line
 * Exit status: the one asked for, or 0 after the last action; 2 when an action
 * failed (a request that did not get an answer). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *host;
static int port;
static int held = -1;
static int file_fd = -1;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The status of the first response in buf, or -1. */
static int status_of(const char *buf, size_t n)
{
    int st = -1;
    if (n >= 12 && memcmp(buf, "HTTP/1.", 7) == 0)
        sscanf(buf + 9, "%3d", &st);
    return st;
}

/* Read to EOF (or, with want_one, until one Content-Length response is
 * complete); returns bytes read, -1 on error. */
static ssize_t read_answer(int fd, char *buf, size_t cap, int want_one)
{
    size_t n = 0;
    for (;;) {
        if (n == cap)
            return (ssize_t)n;
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            return (ssize_t)n;
        n += (size_t)k;
        if (want_one) {
            const char *end = memmem(buf, n, "\r\n\r\n", 4);
            const char *cl = memmem(buf, n, "Content-Length:", 15);
            if (end && cl && cl < end) {
                size_t body = (size_t)strtoul(cl + 15, NULL, 10);
                if (n >= (size_t)(end + 4 - buf) + body)
                    return (ssize_t)n;
            }
        }
    }
}

static int do_get_on(int fd, const char *path, int keep)
{
    char req[1024], ans[65536];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: rel_client\r\n%s\r\n",
                     path, host, port, keep ? "" : "Connection: close\r\n");
    if (write_all(fd, req, (size_t)n) < 0)
        return -1;
    ssize_t got = read_answer(fd, ans, sizeof ans, keep);
    return got > 0 ? status_of(ans, (size_t)got) : -1;
}

static int do_get(const char *path)
{
    int fd = dial();
    if (fd < 0)
        return -1;
    int st = do_get_on(fd, path, 0);
    close(fd);
    return st;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int do_gets(int count, const char *path)
{
    int64_t *lat = calloc((size_t)(count > 0 ? count : 1), sizeof *lat);
    int ok = 0;
    for (int i = 0; i < count; i++) {
        int64_t t0 = now_us();
        if (do_get(path) == 200)
            ok++;
        lat[i] = now_us() - t0;
    }
    qsort(lat, (size_t)count, sizeof *lat, cmp64);
    printf("gets %d ok %d median_us %lld max_us %lld\n", count, ok,
           (long long)(count ? lat[count / 2] : 0), (long long)(count ? lat[count - 1] : 0));
    free(lat);
    return ok == count ? 0 : -1;
}

static int do_raw(const char *files)
{
    static char data[1 << 20], ans[1 << 20];
    int fd = dial();
    if (fd < 0)
        return -1;
    char list[4096];
    snprintf(list, sizeof list, "%s", files);
    ssize_t sent = 0;
    int bad = 0;
    for (char *save = NULL, *f = strtok_r(list, ",", &save); f && !bad; f = strtok_r(NULL, ",", &save)) {
        int in = open(f, O_RDONLY);
        ssize_t len = in < 0 ? -1 : read(in, data, sizeof data);
        if (in >= 0)
            close(in);
        if (len < 0) {
            bad = 1;
            break;
        }
        ssize_t k = write(fd, data, (size_t)len); /* one call: the whole part visible at once */
        if (k < 0 || (k < len && write_all(fd, data + k, (size_t)(len - k)) < 0))
            bad = 1;
        sent += len;
    }
    shutdown(fd, SHUT_WR);
    ssize_t got = read_answer(fd, ans, sizeof ans, 0);
    close(fd);
    printf("raw %zd %zd\n", bad ? (ssize_t)-1 : sent, got);
    return bad || got <= 0 ? -1 : 0;
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static long rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static void close_all(const char *how)
{
    if (strcmp(how, "close_range") == 0)
        close_range(3, ~0U, 0);
    else
        closefrom(3);
}

static void apply_to_held(const char *how)
{
    if (strcmp(how, "close") == 0) {
        close(held);
    } else if (strcmp(how, "dup2") == 0) {
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, held);
    } else {
        close_all(how);
    }
}

static int do_vfork(const char *how)
{
    pid_t pid = vfork();
    if (pid == 0) {
        apply_to_held(how);
        char *argv[] = {"true", NULL};
        execve("/bin/true", argv, environ);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int do_spawn(const char *how)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (strcmp(how, "dup2") == 0)
        posix_spawn_file_actions_addopen(&fa, held, "/dev/null", O_RDWR, 0);
    else
        posix_spawn_file_actions_addclose(&fa, held);
    char *argv[] = {"true", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/true", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    int st = 0;
    if (rc != 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static void daemonize(void)
{
    fflush(stdout);
    pid_t p = fork();
    if (p < 0)
        exit(3);
    if (p > 0)
        exit(0); /* the launcher's child returns at once, as daemons do */
    setsid();
    p = fork();
    if (p < 0)
        _exit(3);
    if (p > 0)
        _exit(0);
    int nul = open("/dev/null", O_RDWR);
    dup2(nul, 0);
    dup2(nul, 1);
    dup2(nul, 2);
    closefrom(3);
}

static int exit_code;

static void *exit_thread(void *arg)
{
    (void)arg;
    exit(exit_code);
}

static int num(const char *a, const char *prefix)
{
    return atoi(a + strlen(prefix));
}

static int starts(const char *a, const char *prefix)
{
    return strncmp(a, prefix, strlen(prefix)) == 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: rel_client HOST PORT ACTION...\n");
        return 64;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    host = argv[1];
    port = atoi(argv[2]);
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        int rc = 0;
        if (starts(a, "get:")) {
            int st = do_get(a + 4);
            printf("get %s %d\n", a + 4, st);
            rc = st > 0 ? 0 : -1;
        } else if (starts(a, "gets:")) {
            char *path = strchr(a + 5, ':');
            rc = do_gets(atoi(a + 5), path ? path + 1 : "/");
        } else if (starts(a, "raw:")) {
            rc = do_raw(a + 4);
        } else if (starts(a, "hold:")) {
            held = dial();
            rc = held < 0 ? -1 : 0;
        } else if (starts(a, "vfork:")) {
            rc = do_vfork(a + 6);
        } else if (starts(a, "spawn:")) {
            rc = do_spawn(a + 6);
        } else if (starts(a, "send:")) {
            int st = do_get_on(held, a + 5, 1);
            printf("send %s %d\n", a + 5, st);
            rc = st > 0 ? 0 : -1;
        } else if (starts(a, "sleep:")) {
            usleep((useconds_t)num(a, "sleep:") * 1000);
        } else if (strcmp(a, "stdin") == 0) {
            char line[256];
            if (fgets(line, sizeof line, stdin) == NULL)
                rc = -1;
        } else if (strcmp(a, "tasks") == 0) {
            printf("tasks %d\n", count_dir("/proc/self/task"));
        } else if (strcmp(a, "fds") == 0) {
            printf("fds %d\n", count_dir("/proc/self/fd") - 1); /* minus opendir's own */
        } else if (strcmp(a, "rss") == 0) {
            printf("rss_kb %ld\n", rss_kb());
        } else if (starts(a, "closeall:")) {
            close_all(a + 9);
        } else if (strcmp(a, "daemon") == 0) {
            daemonize();
        } else if (starts(a, "open:")) {
            file_fd = open(a + 5, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            rc = file_fd < 0 ? -1 : 0;
        } else if (starts(a, "putfile:")) {
            rc = write_all(file_fd, a + 8, strlen(a + 8));
        } else if (starts(a, "touch:")) {
            close(open(a + 6, O_WRONLY | O_CREAT | O_TRUNC, 0644));
        } else if (starts(a, "exit:")) {
            exit(num(a, "exit:"));
        } else if (starts(a, "_exit:")) {
            fflush(stdout);
            _exit(num(a, "_exit:"));
        } else if (starts(a, "return:")) {
            return num(a, "return:");
        } else if (starts(a, "thread_exit:")) {
            pthread_t t;
            exit_code = num(a, "thread_exit:");
            pthread_create(&t, NULL, exit_thread, NULL);
            for (;;)
                pause();
        } else if (starts(a, "signal:")) {
            fflush(stdout);
            raise(num(a, "signal:"));
        } else if (strcmp(a, "abort") == 0) {
            fflush(stdout);
            abort();
        } else if (strcmp(a, "exec") == 0 && i + 1 < argc) {
            fflush(stdout);
            execvp(argv[i + 1], argv + i + 1);
            perror("execvp");
            return 127;
        } else {
            fprintf(stderr, "rel_client: unknown action %s\n", a);
            return 64;
        }
        if (rc != 0) {
            fprintf(stderr, "rel_client: %s failed\n", a);
            return 2;
        }
    }
    return 0;
}
