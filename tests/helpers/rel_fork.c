/* fork while spans flow, buffered spans across a fork, and a prefork pool, for
 * tests/reliability/test_fork_exec.py. Requests are plain GETs on loopback
 * ("Connection: close"), each one span under ddshim.
 *
 *   rel_fork HOST PORT stress FORKS THREADS
 *       THREADS threads make requests without pause while main forks FORKS
 *       times; children alternately make one request and exit(0), or _exit(0)
 *       at once. A child that has not ended within 10 s counts as hung (it is
 *       killed; exit status 3). Prints "parent_requests P child_requests C".
 *   rel_fork HOST PORT buffered K
 *       K requests (spans still queued), then three children: one exit(0)s,
 *       one makes a request and exit(0)s, one makes a request and _exit(0)s.
 *       Prints "parent_requests K child_requests 2".
 *   rel_fork HOST PORT initrace DELAY_US
 *       a thread makes the process's first request (so ddshim's lazy
 *       initialisation runs on that thread) while main forks DELAY_US after
 *       the thread started (with REL_SLOWINIT_OUT set: after that file got
 *       its first line, i.e. inside the initialisation rel_slowinit slows
 *       down); the child makes one request and exit(0)s. Exit
 *       status 3 if the child hung (10 s), 1 if a request failed.
 *   rel_fork HOST PORT prefork N
 *       one request, then N children that each make one request and wait;
 *       prints "pids P1 P2 ..." once all are ready, waits for a line on stdin,
 *       then lets them exit(0) and reaps them. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *host;
static int port;

static int get(const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    int st = -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        char req[256], ans[4096];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
                         path, host, port);
        if (write(fd, req, (size_t)n) == n) {
            size_t got = 0;
            ssize_t k;
            while (got < sizeof ans - 1 && (k = read(fd, ans + got, sizeof ans - 1 - got)) > 0)
                got += (size_t)k;
            if (got >= 12 && memcmp(ans, "HTTP/1.", 7) == 0)
                st = atoi(ans + 9);
        }
    }
    close(fd);
    return st;
}

/* Wait for pid up to ms; 0 = exited with status 0, 1 = other status, -1 = hung. */
static int reap(pid_t pid, int ms)
{
    for (int waited = 0; waited <= ms; waited += 5) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
        usleep(5000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static volatile int stop;
static long parent_requests;

static void *requester(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
        if (get("/parent") == 200)
            __atomic_add_fetch(&parent_requests, 1, __ATOMIC_RELAXED);
    return NULL;
}

static int stress(int forks, int nthreads)
{
    pthread_t t[64];
    if (nthreads > 64)
        nthreads = 64;
    for (int i = 0; i < nthreads; i++)
        pthread_create(&t[i], NULL, requester, NULL);
    int child_requests = 0, failed = 0, hung = 0;
    for (int i = 0; i < forks; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            if (i % 2 == 0)
                _exit(0);
            exit(get("/child") == 200 ? 0 : 1);
        }
        if (pid < 0) {
            failed++;
            continue;
        }
        int r = reap(pid, 10000);
        if (r < 0)
            hung++;
        else if (r > 0)
            failed++;
        else if (i % 2 == 1)
            child_requests++;
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    printf("parent_requests %ld child_requests %d failed %d hung %d\n", parent_requests,
           child_requests, failed, hung);
    return hung ? 3 : failed ? 1 : 0;
}

static int buffered(int k)
{
    int ok = 0;
    for (int i = 0; i < k; i++)
        ok += get("/before-fork") == 200;
    int bad = 0;
    for (int mode = 0; mode < 3; mode++) {
        pid_t pid = fork();
        if (pid == 0) {
            if (mode == 0)
                exit(0);
            int st = get(mode == 1 ? "/child-exit" : "/child-_exit");
            if (mode == 1)
                exit(st == 200 ? 0 : 1);
            _exit(st == 200 ? 0 : 1);
        }
        bad += pid < 0 || reap(pid, 10000) != 0;
    }
    printf("parent_requests %d child_requests 2 failed %d\n", ok, bad);
    return ok == k && bad == 0 ? 0 : 1;
}

static volatile int first_started;

static void *first_request(void *arg)
{
    __atomic_store_n(&first_started, 1, __ATOMIC_RELEASE);
    *(int *)arg = get("/first");
    return NULL;
}

static int initrace(int delay_us)
{
    pthread_t t;
    int first = -1;
    pthread_create(&t, NULL, first_request, &first);
    while (!__atomic_load_n(&first_started, __ATOMIC_ACQUIRE))
        ;
    /* With rel_slowinit preloaded: wait until the initialisation is inside
     * its slow part (the file gets a line), so the fork lands there. */
    const char *mark = getenv("REL_SLOWINIT_OUT");
    for (int i = 0; mark && i < 5000; i++) {
        struct stat st;
        if (stat(mark, &st) == 0 && st.st_size > 0)
            break;
        usleep(1000);
    }
    if (delay_us > 0)
        usleep((useconds_t)delay_us);
    pid_t pid = fork();
    if (pid == 0)
        exit(get("/child") == 200 ? 0 : 1);
    int r = pid < 0 ? 1 : reap(pid, 10000);
    pthread_join(t, NULL);
    printf("first %d child %s\n", first, r < 0 ? "hung" : r ? "failed" : "ok");
    return r < 0 ? 3 : (r || first != 200) ? 1 : 0;
}

static int prefork(int n)
{
    if (get("/master") != 200)
        return 1;
    int ready[2], release[2];
    if (pipe(ready) || pipe(release))
        return 1;
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            close(ready[0]);
            close(release[1]);
            char c = get("/worker") == 200 ? 'y' : 'n';
            if (write(ready[1], &c, 1) != 1)
                _exit(1);
            while (read(release[0], &c, 1) > 0) /* until the master closes it */
                ;
            exit(0);
        }
        pids[i] = pid;
    }
    close(ready[1]);
    close(release[0]);
    int good = 0;
    for (int i = 0; i < n; i++) {
        char c;
        if (read(ready[0], &c, 1) == 1 && c == 'y')
            good++;
    }
    printf("pids");
    for (int i = 0; i < n; i++)
        printf(" %d", (int)pids[i]);
    printf("\nready %d\n", good);
    fflush(stdout);
    char line[64];
    if (fgets(line, sizeof line, stdin) == NULL)
        good = -1;
    close(release[1]);
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += reap(pids[i], 10000) != 0;
    printf("reaped %d bad %d\n", n, bad);
    return good == n && bad == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: rel_fork HOST PORT stress|buffered|prefork ARGS\n");
        return 64;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    host = argv[1];
    port = atoi(argv[2]);
    if (strcmp(argv[3], "stress") == 0 && argc > 5)
        return stress(atoi(argv[4]), atoi(argv[5]));
    if (strcmp(argv[3], "buffered") == 0)
        return buffered(atoi(argv[4]));
    if (strcmp(argv[3], "initrace") == 0)
        return initrace(atoi(argv[4]));
    if (strcmp(argv[3], "prefork") == 0)
        return prefork(atoi(argv[4]));
    fprintf(stderr, "rel_fork: unknown mode %s\n", argv[3]);
    return 64;
}
