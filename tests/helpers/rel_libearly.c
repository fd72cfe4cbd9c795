// link: -shared
/* A shared library whose constructor makes an HTTP request, for
 * tests/reliability/test_loading.py. Preloaded next to ddshim
 * (LD_PRELOAD="rel_libearly:libddshim.so"), its send() and recv() resolve to
 * ddshim's hooks, and may run before ddshim's own constructor has.
 *
 * REL_EARLY_ADDR=HOST:PORT says where to send "GET /early"; the status line's
 * code, or an error, is written to the file REL_EARLY_OUT. Without
 * REL_EARLY_ADDR the library does nothing. Built as a shared object by the
 * Makefile's helper rule (the link line above). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((constructor)) static void rel_early_request(void)
{
    const char *addr = getenv("REL_EARLY_ADDR"), *out = getenv("REL_EARLY_OUT");
    if (addr == NULL || out == NULL)
        return;
    char host[64];
    snprintf(host, sizeof host, "%s", addr);
    char *colon = strchr(host, ':');
    if (colon == NULL)
        return;
    *colon = '\0';
    int port = atoi(colon + 1);
    char result[128] = "error";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        char req[256], ans[4096];
        int n = snprintf(req, sizeof req, "GET /early HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr);
        if (send(fd, req, (size_t)n, 0) == n) {
            size_t got = 0;
            ssize_t k;
            while (got < sizeof ans - 1 && (k = recv(fd, ans + got, sizeof ans - 1 - got, 0)) > 0)
                got += (size_t)k;
            if (got >= 12 && memcmp(ans, "HTTP/1.", 7) == 0)
                snprintf(result, sizeof result, "status %.3s", ans + 9);
        }
    }
    if (fd >= 0)
        close(fd);
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o >= 0) {
        if (write(o, result, strlen(result)) < 0)
            result[0] = '\0';
        close(o);
    }
}
