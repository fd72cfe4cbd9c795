/* Ways of moving bytes that ddshim either follows or must leave alone, for
 * tests/reliability/test_syscalls.py.
 *
 *   sys_passthru client MODE PORT NREQ APPFILE
 *   sys_passthru server MODE PORTFILE NREQ
 *
 * client: NREQ POST requests on one keep-alive connection to 127.0.0.1:PORT
 * (a RawServer answering "ok\n" with Content-Length: 3); every byte the
 * program sends goes to APPFILE too. MODE says how:
 *   sendfile  head with write(), body (a temporary file) with sendfile()
 *   splice    head with write(), body through a pipe with splice()
 *   stdio     the whole request with fprintf()/fwrite() on fdopen(fd, "r+"),
 *             the answer with fread()
 *   stdio-mixed  head with fprintf(), body with write(); the body is itself
 *             a request head, which must not get headers injected
 *   stdio-late   like write for all but the last request, then the last
 *             head with fprintf() on fdopen(fd) and its body (again a whole
 *             request head) with write(): a switch to stdio mid-connection
 *   dupfd-late, dupfd64-late  the same, the last head written to a second
 *             descriptor made with fcntl(F_DUPFD_CLOEXEC) (fcntl64 for the
 *             second), which ddshim does not follow
 *   mmsg      the whole request with sendmmsg(), the answer with recvmmsg()
 * server: listens on 127.0.0.1 (port written to PORTFILE), serves NREQ
 * requests on one connection; the answer's head goes out with write() (or
 * fprintf for stdio) and its 1000-byte body with MODE (sendfile, splice,
 * stdio, mmsg).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define BODY 5000
#define SBODY 1000

static char body[BODY], sbody[SBODY];
static FILE *appf;

static int body_file(const char *b, size_t n)
{
    char path[] = "/tmp/sys_passthru.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, b, n) != (ssize_t)n)
        exit(3);
    unlink(path);
    return fd;
}

static void write_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t r = write(fd, b, n);
        if (r <= 0) {
            perror("write");
            exit(3);
        }
        b += r;
        n -= (size_t)r;
    }
}

/* The 67-byte answer; 1 when it is the expected one. */
static int read_answer(int fd)
{
    char ans[128];
    size_t got = 0;
    while (got < 67) {
        ssize_t r = read(fd, ans + got, 67 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got == 67 && memcmp(ans + 64, "ok\n", 3) == 0;
}

static void send_body(const char *mode, int fd, const char *b, size_t n)
{
    if (strcmp(mode, "sendfile") == 0) {
        int f = body_file(b, n);
        off_t off = 0;
        while ((size_t)off < n)
            if (sendfile(fd, f, &off, n - (size_t)off) <= 0) {
                perror("sendfile");
                exit(3);
            }
        close(f);
    } else if (strcmp(mode, "splice") == 0) {
        int p[2];
        if (pipe(p) < 0)
            exit(3);
        size_t done = 0;
        while (done < n) {
            size_t piece = n - done < 4096 ? n - done : 4096;
            write_all(p[1], b + done, piece);
            size_t moved = 0;
            while (moved < piece) {
                ssize_t r = splice(p[0], NULL, fd, NULL, piece - moved, 0);
                if (r <= 0) {
                    perror("splice");
                    exit(3);
                }
                moved += (size_t)r;
            }
            done += piece;
        }
        close(p[0]);
        close(p[1]);
    } else {
        write_all(fd, b, n);
    }
}

static int client(const char *mode, int port, int nreq)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        return 3;
    }
    int late = strcmp(mode, "stdio-late") == 0;
    int dupfd = strcmp(mode, "dupfd-late") == 0 ? 1 : strcmp(mode, "dupfd64-late") == 0 ? 2 : 0;
    int stdio = strncmp(mode, "stdio", 5) == 0 && !late;
    FILE *f = stdio ? fdopen(fd, "r+") : NULL;
    if (stdio)
        setvbuf(f, NULL, _IOFBF, 1 << 16);
    int ok = 0;
    for (int i = 0; i < nreq; i++) {
        const char *b = body;
        size_t bl = BODY;
        char inner[256];
        if (late && i == nreq - 1) {
            f = fdopen(fd, "r+");
            setvbuf(f, NULL, _IOFBF, 1 << 16);
            mode = "stdio-mixed";
        }
        if (dupfd && i == nreq - 1) {
            int fd2 = dupfd == 1 ? fcntl(fd, F_DUPFD_CLOEXEC, 50) : fcntl64(fd, F_DUPFD_CLOEXEC, 50);
            if (fd2 < 0) {
                perror("fcntl");
                return 3;
            }
            bl = (size_t)snprintf(inner, sizeof inner, "GET /inner/%d HTTP/1.1\r\nHost: inner\r\n\r\n", i);
            char h2[256];
            int h2l = snprintf(h2, sizeof h2,
                               "POST /%s/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n\r\n", mode, i, bl);
            fwrite(h2, 1, (size_t)h2l, appf);
            fwrite(inner, 1, bl, appf);
            write_all(fd2, h2, (size_t)h2l); /* unseen by ddshim */
            write_all(fd, inner, bl);
            close(fd2);
            ok += read_answer(fd);
            continue;
        }
        if (strcmp(mode, "stdio-mixed") == 0) {
            /* A body that is itself a whole request head. */
            bl = (size_t)snprintf(inner, sizeof inner, "GET /inner/%d HTTP/1.1\r\nHost: inner\r\n\r\n", i);
            b = inner;
        }
        char head[256];
        int hl = snprintf(head, sizeof head,
                          "POST /%s/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n\r\n", mode, i, bl);
        fwrite(head, 1, (size_t)hl, appf);
        fwrite(b, 1, bl, appf);
        char ans[128];
        size_t got = 0;
        if (strcmp(mode, "stdio") == 0) {
            fprintf(f, "%s", head);
            fwrite(b, 1, bl, f);
            fflush(f);
            got = fread(ans, 1, 67, f);
        } else if (strcmp(mode, "stdio-mixed") == 0) {
            fprintf(f, "%s", head);
            fflush(f);
            write_all(fd, b, bl);
            while (got < 67) {
                ssize_t r = read(fd, ans + got, 67 - got);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
        } else if (strcmp(mode, "mmsg") == 0) {
            struct iovec v[2] = {{head, (size_t)hl}, {(void *)b, bl}};
            struct mmsghdr m = {.msg_hdr = {.msg_iov = v, .msg_iovlen = 2}};
            if (sendmmsg(fd, &m, 1, 0) != 1 || m.msg_len != (unsigned)hl + bl) {
                perror("sendmmsg");
                return 3;
            }
            while (got < 67) {
                struct iovec rv = {ans + got, 67 - got};
                struct mmsghdr rm = {.msg_hdr = {.msg_iov = &rv, .msg_iovlen = 1}};
                if (recvmmsg(fd, &rm, 1, 0, NULL) != 1 || rm.msg_len == 0)
                    break;
                got += rm.msg_len;
            }
        } else {
            write_all(fd, head, (size_t)hl);
            send_body(mode, fd, b, bl);
            while (got < 67) {
                ssize_t r = read(fd, ans + got, 67 - got);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
        }
        if (got == 67 && memcmp(ans + 64, "ok\n", 3) == 0)
            ok++;
    }
    if (f)
        fclose(f);
    else
        close(fd);
    printf("requests=%d answers=%d\n", nreq, ok);
    return ok == nreq ? 0 : 1;
}

static int server(const char *mode, const char *portfile, int nreq)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &sl) < 0)
        return 3;
    char tmpname[512];
    snprintf(tmpname, sizeof tmpname, "%s.tmp", portfile);
    FILE *pf = fopen(tmpname, "w");
    fprintf(pf, "%d", ntohs(a.sin_port));
    fclose(pf);
    rename(tmpname, portfile);
    int fd = accept(l, NULL, NULL);
    int stdio = strcmp(mode, "stdio") == 0;
    FILE *f = stdio ? fdopen(fd, "r+") : NULL;
    int served = 0;
    for (int i = 0; i < nreq; i++) {
        /* The head, byte by byte from stdio or in pieces from read(). */
        char head[4096];
        size_t n = 0;
        while (n < sizeof head - 1 && !(n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)) {
            if (stdio) {
                int c = fgetc(f);
                if (c == EOF)
                    break;
                head[n++] = (char)c;
            } else {
                ssize_t r = read(fd, head + n, 1);
                if (r <= 0)
                    break;
                n++;
            }
        }
        head[n] = '\0';
        if (n < 4)
            break;
        char *cl = strcasestr(head, "\r\ncontent-length:");
        long left = cl ? strtol(cl + 17, NULL, 10) : 0;
        char buf[8192];
        while (left > 0) {
            size_t want = left < (long)sizeof buf ? (size_t)left : sizeof buf;
            ssize_t r = stdio ? (ssize_t)fread(buf, 1, want, f) : read(fd, buf, want);
            if (r <= 0)
                break;
            left -= r;
        }
        char ah[128];
        int al = snprintf(ah, sizeof ah, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", SBODY);
        if (stdio) {
            fwrite(ah, 1, (size_t)al, f);
            fwrite(sbody, 1, SBODY, f);
            fflush(f);
        } else if (strcmp(mode, "mmsg") == 0) {
            struct iovec v[2] = {{ah, (size_t)al}, {sbody, SBODY}};
            struct mmsghdr m = {.msg_hdr = {.msg_iov = v, .msg_iovlen = 2}};
            if (sendmmsg(fd, &m, 1, 0) != 1)
                break;
        } else {
            write_all(fd, ah, (size_t)al);
            send_body(mode, fd, sbody, SBODY);
        }
        served++;
    }
    if (f)
        fclose(f);
    else
        close(fd);
    close(l);
    printf("served=%d\n", served);
    return served == nreq ? 0 : 1;
}

int main(int argc, char **argv)
{
    for (int i = 0; i < BODY; i++)
        body[i] = (char)("0123456789abcdef\r\n"[i % 18]);
    for (int i = 0; i < SBODY; i++)
        sbody[i] = (char)('A' + i % 26);
    if (argc == 6 && strcmp(argv[1], "client") == 0) {
        appf = fopen(argv[5], "wb");
        if (appf == NULL)
            return 2;
        int r = client(argv[2], atoi(argv[3]), atoi(argv[4]));
        fclose(appf);
        return r;
    }
    if (argc == 5 && strcmp(argv[1], "server") == 0)
        return server(argv[2], argv[3], atoi(argv[4]));
    fprintf(stderr, "usage: sys_passthru client MODE PORT NREQ APPFILE | server MODE PORTFILE NREQ\n");
    return 2;
}
