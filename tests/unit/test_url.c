/* Unit tests for core/url.c: query redaction with Datadog's default
 * expression, http.url assembly, resource quantization. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "url.h"

static int setup(void **state)
{
    (void)state;
    assert_int_equal(dds_url_init(NULL), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dds_url_shutdown();
    return 0;
}

static const char *redact(const char *q)
{
    static char out[8192];
    dds_url_redact_query(out, sizeof out, q, strlen(q));
    return out;
}

static const char *url(const char *scheme, const char *host, const char *peer, int port,
                       const char *target)
{
    static char out[8192];
    dds_url_build(out, sizeof out, scheme, host, host ? strlen(host) : 0, peer, port, target,
                  target ? strlen(target) : 0);
    return out;
}

static const char *res(const char *method, const char *target)
{
    static char out[8192];
    dds_url_resource(out, sizeof out, method, target, strlen(target));
    return out;
}

/* Expected values were checked against Python's re.sub with the same
 * expression (the reference tracer's own behaviour). */
static void test_default_redaction(void **state)
{
    (void)state;
    assert_string_equal(redact("token=abc&password=x&api_key=123&page=2"),
                        "<redacted>&<redacted>&<redacted>&page=2");
    assert_string_equal(redact("page=2&sort=asc&q=hello+world"), "page=2&sort=asc&q=hello+world");
    assert_string_equal(redact("application_key=123"), "<redacted>");
    assert_string_equal(redact("key=1&monkey=2"), "key=1&monkey=2");
    assert_string_equal(redact("PassWord=hunter2&x=1"), "<redacted>&x=1");
    assert_string_equal(redact("old_pwd=a&new-password2=b"), "<redacted>&<redacted>");
    assert_string_equal(redact("signature=abc&X-Amz-Signature=def"), "<redacted>&X-Amz-<redacted>");
    assert_string_equal(redact("access_key_id=AKIA&secret=s"), "<redacted>&<redacted>");
    assert_string_equal(redact("authorization%3DBasic"), "<redacted>");
    assert_string_equal(redact("h=Bearer%20abc.def-1&x=2"), "h=<redacted>&x=2");
    assert_string_equal(redact("h=bearer abc"), "h=<redacted>");
    assert_string_equal(redact("gh=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789&x=1"),
                        "gh=<redacted>&x=1");
    assert_string_equal(
        redact("jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc_DEF-123&x=1"),
        "jwt=<redacted>&x=1");
    assert_string_equal(redact("json={%22token%22:%20%22abc%22}&ok=1"), "json={<redacted>}&ok=1");
    assert_string_equal(redact(""), "");
}

static void test_long_query_redacted_whole(void **state)
{
    (void)state;
    char *q = malloc(DDS_URL_MAX_QUERY + 2);
    memset(q, 'a', DDS_URL_MAX_QUERY + 1);
    q[DDS_URL_MAX_QUERY + 1] = '\0';
    assert_string_equal(redact(q), "<redacted>");
    q[DDS_URL_MAX_QUERY] = '\0'; /* exactly at the cap: matched normally */
    assert_int_equal(strlen(redact(q)), DDS_URL_MAX_QUERY);
    /* A repeated group over ~4 KiB needs more than PCRE2's default JIT stack;
     * the answer must still be the reference's (no match here), not a limit. */
    memcpy(q, "eyJ", 3);
    assert_int_equal(strlen(redact(q)), DDS_URL_MAX_QUERY);
    memcpy(q, "x=ssh-rsa ", 10); /* and a real match over the same length */
    assert_string_equal(redact(q), "x=<redacted>");
    free(q);
}

static void test_custom_and_off(void **state)
{
    (void)state;
    assert_int_equal(dds_url_init(""), 0);
    assert_string_equal(redact("password=x&application_key=123"), "password=x&application_key=123");
    assert_string_equal(url("http", "h", NULL, 0, "/p?token=1"), "http://h/p?token=1");

    assert_int_equal(dds_url_init("ssn=\\d{3}-\\d{2}-\\d{4}"), 0);
    assert_string_equal(redact("ssn=123-45-6789&password=x"), "<redacted>&password=x");

    /* does not compile: -1, and the default applies */
    assert_int_equal(dds_url_init("(unclosed"), -1);
    assert_string_equal(redact("password=x&a=1"), "<redacted>&a=1");

    /* ".*" redacts the whole query once; empty matches hide nothing */
    assert_int_equal(dds_url_init(".*"), 0);
    assert_string_equal(redact("a=1&b=2"), "<redacted>");
    assert_int_equal(dds_url_init("x*"), 0);
    assert_string_equal(redact("axxb"), "a<redacted>b");

    /* a pattern matching thousands of times: past the call budget the whole
     * query goes, rather than thousands of markers */
    assert_int_equal(dds_url_init("a"), 0);
    {
        char q[2100];
        memset(q, 'a', 2000);
        q[2000] = '\0';
        assert_string_equal(redact(q), "<redacted>");
        assert_string_equal(redact("bab"), "b<redacted>b");
    }

    /* catastrophic backtracking: the limit trips, everything is hidden */
    assert_int_equal(dds_url_init("(a+)+$"), 0);
    {
        char q[200];
        memset(q, 'a', 150);
        q[150] = '!';
        q[151] = '\0';
        assert_string_equal(redact(q), "<redacted>");
    }
    assert_int_equal(dds_url_init(NULL), 0);
}

static void test_lazy_default(void **state)
{
    (void)state;
    /* Before any init (or after shutdown) the default still protects: either
     * the lazy default or a full redaction, never the raw secret. */
    dds_url_shutdown();
    const char *r = redact("password=x");
    assert_null(strstr(r, "password=x"));
    assert_int_equal(dds_url_init(NULL), 0);
}

static void test_build(void **state)
{
    (void)state;
    assert_string_equal(url("http", "example.com", "10.0.0.1", 80, "/a/b?q=1&token=x#frag"),
                        "http://example.com/a/b?q=1&<redacted>");
    assert_string_equal(url("http", "example.com:8080", NULL, 0, "/"), "http://example.com:8080/");
    assert_string_equal(url(NULL, NULL, "10.0.0.1", 80, "/x"), "http://10.0.0.1/x");
    assert_string_equal(url("http", NULL, "10.0.0.1", 8080, "/x"), "http://10.0.0.1:8080/x");
    assert_string_equal(url("https", NULL, "10.0.0.1", 443, "/x"), "https://10.0.0.1/x");
    assert_string_equal(url("https", NULL, "10.0.0.1", 80, "/x"), "https://10.0.0.1:80/x");
    assert_string_equal(url("http", NULL, "::1", 8126, "/v0.4/traces"), "http://[::1]:8126/v0.4/traces");
    assert_string_equal(url("http", NULL, "h", 0, "/x"), "http://h/x");
    /* userinfo never appears, from any source */
    assert_string_equal(url("http", "h", NULL, 0, "http://user:pw@Example.com:81/p?token=1#f"),
                        "http://Example.com:81/p?<redacted>");
    assert_string_equal(url("http", NULL, NULL, 0, "HTTPS://u@h"), "https://h");
    assert_string_equal(url("http", "user:pw@h", NULL, 0, "/p"), "http://h/p");
    assert_string_equal(url("http", NULL, NULL, 0, "http://a@b@h/x"), "http://h/x");
    /* empty query, fragment only */
    assert_string_equal(url("http", "h", NULL, 0, "/p?"), "http://h/p");
    assert_string_equal(url("http", "h", NULL, 0, "/p#a?b"), "http://h/p");
    /* CONNECT and OPTIONS * */
    assert_string_equal(url("http", NULL, "1.2.3.4", 3128, "example.com:443"), "http://example.com:443");
    assert_string_equal(url("http", "example.com:443", NULL, 0, "example.com:443"),
                        "http://example.com:443");
    assert_string_equal(url("http", "h", NULL, 0, "*"), "http://h");
    /* truncation is always NUL-terminated and never longer than cap - 1 */
    {
        char small[10];
        size_t n = dds_url_build(small, sizeof small, "http", "example.com", 11, NULL, 0, "/abc", 4);
        assert_int_equal(n, 9);
        assert_string_equal(small, "http://ex");
        assert_int_equal(dds_url_build(small, 0, "http", "h", 1, NULL, 0, "/", 1), 0);
    }
}

static void test_resource(void **state)
{
    (void)state;
    assert_string_equal(res("GET", "/users/123/orders/456?x=1"), "GET /users/?/orders/?");
    assert_string_equal(res("GET", "/"), "GET /");
    assert_string_equal(res("GET", "?a=1"), "GET ?a=1"); /* not a path: as is */
    assert_string_equal(res("POST", "/api/v1/items"), "POST /api/v1/items");
    assert_string_equal(res("GET", "/u/123e4567-e89b-12d3-a456-426614174000/x"), "GET /u/?/x");
    assert_string_equal(res("GET", "/obj/5f2b8c1e9d3a4b6c7d8e9f01"), "GET /obj/?");
    assert_string_equal(res("GET", "/obj/deadbeef"), "GET /obj/deadbeef");   /* no digit */
    assert_string_equal(res("GET", "/obj/a1b2c"), "GET /obj/a1b2c");         /* too short */
    assert_string_equal(res("GET", "/obj/a1b2c3"), "GET /obj/?");
    assert_string_equal(res("GET", "/day/2024-01-31"), "GET /day/?");
    assert_string_equal(res("GET", "/tok/AbCdEfGhIjKlMnOpQrSt1"), "GET /tok/?");
    assert_string_equal(res("GET", "/tok/AbCdEfGhIjKlMnOpQrS1"), "GET /tok/?");   /* 20 */
    assert_string_equal(res("GET", "/tok/AbCdEfGhIjKlMnOpQr1"), "GET /tok/AbCdEfGhIjKlMnOpQr1"); /* 19 */
    assert_string_equal(res("GET", "/a-very-long-descriptive-slug-name"),
                        "GET /a-very-long-descriptive-slug-name");
    assert_string_equal(res("GET", "/arch/x86_64/v2"), "GET /arch/x86_64/v2");
    assert_string_equal(res("GET", "/users/john@example.com"), "GET /users/?");
    assert_string_equal(res("GET", "/files/My%20Doc.pdf"), "GET /files/?");
    assert_string_equal(res("GET", "/a//b/"), "GET /a//b/");
    assert_string_equal(res("GET", "/7"), "GET /?");
    assert_string_equal(res("DELETE", "http://user:pw@h:80/items/99?x#y"), "DELETE /items/?");
    assert_string_equal(res("GET", "http://h"), "GET /");
    assert_string_equal(res("GET", "http://h?q=1"), "GET /");
    assert_string_equal(res("OPTIONS", "*"), "OPTIONS *");
    assert_string_equal(res("CONNECT", "example.com:443"), "CONNECT example.com:443");
    assert_string_equal(res(NULL, "/x/1"), "/x/?");
    assert_string_equal(res("", "/x/1"), "/x/?");
    {
        char small[8];
        dds_url_resource(small, sizeof small, "GET", "/users/1", 8);
        assert_string_equal(small, "GET /us");
    }
}

/* Many threads redacting at once give the same answers (run under TSan too). */
static void *redact_worker(void *arg)
{
    int i;
    (void)arg;
    for (i = 0; i < 2000; i++) {
        char out[256];
        const char *q = (i & 1) ? "a=1&password=secret&b=2" : "api_key=xyz&page=3";
        dds_url_redact_query(out, sizeof out, q, strlen(q));
        if (strcmp(out, (i & 1) ? "a=1&<redacted>&b=2" : "<redacted>&page=3") != 0)
            return (void *)1;
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t t[8];
    int i;
    for (i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&t[i], NULL, redact_worker, NULL), 0);
    for (i = 0; i < 8; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_default_redaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_query_redacted_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_custom_and_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lazy_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resource, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
