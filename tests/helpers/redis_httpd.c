/* A tiny thread-per-connection HTTP/1.1 server whose handler uses Redis, for
 * the test that Redis spans are children of the server span.
 *
 *   redis_httpd PORTFILE REDIS_HOST REDIS_PORT NREQUESTS
 *
 * Listens on 127.0.0.1 (an ephemeral port, written to PORTFILE), serves
 * NREQUESTS connections, one pthread each: reads the request head, runs
 * INCR and GET on its own hiredis connection, answers 200 with a
 * Content-Length and Connection: close, then exits once all are answered.
 */
// link: -lhiredis
#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *redis_host;
static int redis_port;

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    char head[8192];
    size_t n = 0;
    while (n < sizeof head - 1) {
        ssize_t k = read(fd, head + n, sizeof head - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        head[n] = '\0';
        if (strstr(head, "\r\n\r\n"))
            break;
    }
    char path[256] = "/";
    sscanf(head, "%*s %255s", path);

    char body[512];
    redisContext *c = redisConnect(redis_host, redis_port);
    if (c == NULL || c->err) {
        snprintf(body, sizeof body, "redis error\n");
    } else {
        redisReply *a = redisCommand(c, "INCR hits:%s", path);
        redisReply *b = redisCommand(c, "GET hits:%s", path);
        snprintf(body, sizeof body, "%s hits=%lld get=%s\n", path, a ? a->integer : -1LL,
                 b && b->str ? b->str : "(nil)");
        freeReplyObject(a);
        freeReplyObject(b);
    }
    if (c)
        redisFree(c);

    char resp[1024];
    int len = snprintf(resp, sizeof resp,
                       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s",
                       strlen(body), body);
    for (int off = 0; off < len;) {
        ssize_t k = write(fd, resp + off, (size_t)(len - off));
        if (k <= 0)
            break;
        off += (int)k;
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5)
        return 2;
    redis_host = argv[2];
    redis_port = atoi(argv[3]);
    int nreq = atoi(argv[4]);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 64) != 0) {
        perror("listen");
        return 1;
    }
    socklen_t sl = sizeof sa;
    getsockname(ls, (struct sockaddr *)&sa, &sl);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return 1;
    fprintf(f, "%d\n", ntohs(sa.sin_port));
    fclose(f);
    rename(tmp, argv[1]);

    pthread_t *th = calloc((size_t)nreq, sizeof *th);
    for (int i = 0; i < nreq; i++) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            nreq = i;
            break;
        }
        pthread_create(&th[i], NULL, serve, (void *)(long)fd);
    }
    for (int i = 0; i < nreq; i++)
        pthread_join(th[i], NULL);
    free(th);
    close(ls);
    printf("served %d\n", nreq);
    return 0;
}
