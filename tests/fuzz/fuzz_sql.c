/* libFuzzer target for core/sql.c (SQL obfuscation).
 *
 *   mkdir -p build/fuzz tests/fuzz/corpus-out/sql
 *   clang -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
 *     -fno-sanitize-recover=undefined -std=gnu11 -I. -Icore \
 *     -o build/fuzz/fuzz_sql tests/fuzz/fuzz_sql.c core/sql.c
 *   build/fuzz/fuzz_sql -max_total_time=60 -max_len=4096 -timeout=10 tests/fuzz/corpus-out/sql
 *
 * Two properties, chosen by the first input byte:
 *  - any input: no crash; the output is NUL-terminated, no longer than the
 *    buffer, DDS_SQL_MAX_OUTPUT + 3 or the input; obfuscating it again changes
 *    nothing (when it was not cut); dds_sql_error_message stays within its
 *    buffer and the message's first line;
 *  - a statement `A <literal S> B` built from the input, with S quoted as a
 *    plain '' string, an E'' string or a $q$ dollar quote, and A, B free of
 *    quotes and comment openers: S never appears in the output, nor in what
 *    dds_sql_error_message keeps of a message quoting S. (Output tokens
 *    are separated by spaces and `?`, so a run of S — which has neither — could
 *    only come from A or B, which are checked not to contain it.)
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sql.h"

#include <stdio.h>
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s\n", #c); abort(); } } while (0)

static char out[DDS_SQL_MAX_OUTPUT + 16];
static char again[DDS_SQL_MAX_OUTPUT + 16];

static void any_input(const uint8_t *d, size_t n)
{
    size_t cap = n > 0 ? (size_t)d[0] * 23 % (sizeof out + 1) : sizeof out;
    memset(out, 'Z', sizeof out);
    size_t len = dds_sql_obfuscate((const char *)d, n, out, cap);
    if (cap == 0) {
        CHECK(len == 0 && out[0] == 'Z');
        return;
    }
    CHECK(len < cap && len <= DDS_SQL_MAX_OUTPUT + 3);
    CHECK(out[len] == '\0' && strlen(out) == len);
    CHECK(len <= n + 3); /* "..." when the buffer cut it */
    /* The error-message filter, with the input's two halves as message and
     * statement: bounded, and never longer than the message's first line. */
    char *msg = strndup((const char *)d, n / 2);
    char *stmt = strndup((const char *)d + n / 2, n - n / 2);
    CHECK(msg && stmt);
    size_t ml = dds_sql_error_message(msg, stmt, again, cap);
    CHECK(ml < cap && again[ml] == '\0' && ml <= strcspn(msg, "\r\n"));
    free(msg);
    free(stmt);
    if (cap == sizeof out && len < DDS_SQL_MAX_OUTPUT && n <= DDS_SQL_MAX_INPUT &&
        (len < 3 || memcmp(out + len - 3, "...", 3) != 0)) {
        size_t l2 = dds_sql_obfuscate(out, len, again, sizeof again);
        CHECK(l2 == len && memcmp(out, again, len) == 0);
    }
}

static int contains(const char *hay, size_t hn, const char *needle, size_t nn)
{
    return nn <= hn && memmem(hay, hn, needle, nn) != NULL;
}

static void literal_never_leaks(const uint8_t *d, size_t n)
{
    if (n < 4)
        return;
    int style = d[0] % 3;
    size_t a_len = d[1] % (n - 3 + 1), rest = n - 3 - a_len;
    size_t s_len = rest ? d[2] % (rest + 1) : 0;
    const char *src = (const char *)d + 3;
    size_t b_len = rest - s_len;
    if (s_len < 4)
        return;
    char *a = malloc(a_len + 1), *b = malloc(b_len + 1);
    const char *s = src + a_len;
    CHECK(a && b);
    for (size_t i = 0; i < a_len + b_len; i++) {
        char c = i < a_len ? src[i] : src[a_len + s_len + (i - a_len)];
        if (c == '\'' || c == '"' || c == '$' || c == '-' || c == '/' || c == '\0')
            c = 'x';
        (i < a_len ? a : b)[i < a_len ? i : i - a_len] = c;
    }
    int usable = !contains(a, a_len, s, s_len) && !contains(b, b_len, s, s_len) &&
                 !memchr(s, ' ', s_len) && !memchr(s, '?', s_len) && !memchr(s, '.', s_len) &&
                 !memchr(s, '\0', s_len) && !(style == 2 && contains(s, s_len, "$q$", 3));
    if (usable) {
        size_t cap = a_len + b_len + 2 * s_len + 16;
        char *stmt = malloc(cap);
        CHECK(stmt);
        size_t k = 0;
        memcpy(stmt + k, a, a_len), k += a_len;
        if (style == 2) {
            memcpy(stmt + k, " $q$", 4), k += 4;
            memcpy(stmt + k, s, s_len), k += s_len;
            memcpy(stmt + k, "$q$ ", 4), k += 4;
        } else {
            memcpy(stmt + k, style == 1 ? " E'" : " '", style == 1 ? 3 : 2), k += style == 1 ? 3 : 2;
            for (size_t i = 0; i < s_len; i++) {
                if (s[i] == '\'')
                    stmt[k++] = style == 1 ? '\\' : '\'';
                else if (s[i] == '\\' && style == 1)
                    stmt[k++] = '\\';
                stmt[k++] = s[i];
            }
            memcpy(stmt + k, "' ", 2), k += 2;
        }
        memcpy(stmt + k, b, b_len), k += b_len;
        size_t len = dds_sql_obfuscate(stmt, k, out, sizeof out);
        CHECK(!contains(out, len, s, s_len));
        /* The server quoting the value in an error message about it. */
        if (!memchr(s, '"', s_len) && !memchr(s, '\n', s_len) && !memchr(s, '\r', s_len)) {
            char *msg = malloc(s_len + 64);
            CHECK(msg);
            int ml = snprintf(msg, s_len + 64, "ERROR:  invalid input syntax: \"%.*s\"", (int)s_len, s);
            CHECK(ml > 0);
            size_t el = dds_sql_error_message(msg, out, again, sizeof again);
            CHECK(!contains(again, el, s, s_len));
            free(msg);
        }
        free(stmt);
    }
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n > 0 && (d[0] & 0x80))
        literal_never_leaks(d + 1, n - 1);
    else
        any_input(d, n);
    return 0;
}
