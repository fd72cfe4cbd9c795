/* Unit tests for core/sql.c: SQL obfuscation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "sql.h"

static char *obf(const char *in)
{
    static char buf[DDS_SQL_MAX_OUTPUT + 16];
    size_t n = dds_sql_obfuscate(in, strlen(in), buf, sizeof buf);
    assert_int_equal(n, strlen(buf));
    return buf;
}

#define OBF(in, want) assert_string_equal(obf(in), want)

static void test_numbers(void **state)
{
    (void)state;
    OBF("SELECT 1", "SELECT ?");
    OBF("SELECT * FROM t WHERE a = 42 AND b = 3.14 AND c = .5 AND d = 1e5",
        "SELECT * FROM t WHERE a = ? AND b = ? AND c = ? AND d = ?");
    OBF("SELECT 1.5E-3, 2e+10, 7.", "SELECT ?, ?, ?");
    OBF("SELECT 0x1F, 0o17, 0b101, 1_000_000", "SELECT ?, ?, ?, ?");
    OBF("UPDATE t SET x = -3 WHERE y=-4.5 AND z IN (-1, +2)",
        "UPDATE t SET x = ? WHERE y=? AND z IN (?, ?)");
    /* A minus between operands is an operator; the number still goes. */
    OBF("SELECT a-3, a - 3, f(x)-1", "SELECT a-?, a - ?, f(x)-?");
    /* Digits inside identifiers are not numbers. */
    OBF("SELECT t1.c2 FROM tab3 AS t1", "SELECT t1.c2 FROM tab3 AS t1");
    OBF("SELECT x FROM t LIMIT 10 OFFSET 20", "SELECT x FROM t LIMIT ? OFFSET ?");
    OBF("SELECT 5::int, '5'::numeric(10,2)", "SELECT ?::int, ?::numeric(?,?)");
}

static void test_strings(void **state)
{
    (void)state;
    OBF("SELECT * FROM users WHERE name = 'alice'", "SELECT * FROM users WHERE name = ?");
    OBF("SELECT 'it''s a secret', ''", "SELECT ?, ?");
    OBF("SELECT E'it\\'s', e'a\\\\b', E'x''y'", "SELECT ?, ?, ?");
    OBF("SELECT B'0101', X'1F', N'nat', U&'d\\0061t\\+000061'", "SELECT ?, ?, ?, ?");
    OBF("SELECT E'\\'' AS q, 'ok'", "SELECT ? AS q, ?");
    /* A backslash whose meaning does not change the string's end is fine. */
    OBF("SELECT 'C:\\temp', 'a\\\\'", "SELECT ?, ?");
    OBF("SELECT DATE '2024-01-01', INTERVAL '1 day'", "SELECT DATE ?, INTERVAL ?");
    OBF("INSERT INTO t VALUES ('a', 1), ('b', 2)", "INSERT INTO t VALUES (?, ?), (?, ?)");
}

static void test_dollar_quotes(void **state)
{
    (void)state;
    OBF("SELECT $$secret$$", "SELECT ?");
    OBF("SELECT $tag$has $$ and 'quotes'$tag$, 1", "SELECT ?, ?");
    OBF("CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 42; END $body$ LANGUAGE plpgsql",
        "CREATE FUNCTION f() RETURNS int AS ? LANGUAGE plpgsql");
    OBF("SELECT $a$x$b$y$a$ FROM t", "SELECT ? FROM t");
    /* $ inside identifiers, and lone $. */
    OBF("SELECT a$b$ FROM t", "SELECT a$b$ FROM t");
}

static void test_booleans_null(void **state)
{
    (void)state;
    OBF("SELECT * FROM t WHERE a = TRUE AND b = false AND c IS NULL",
        "SELECT * FROM t WHERE a = ? AND b = ? AND c IS NULL");
    OBF("SELECT truex, xfalse", "SELECT truex, xfalse");
}

static void test_comments_and_whitespace(void **state)
{
    (void)state;
    OBF("  SELECT\t1 -- the answer 'x'\n  FROM\r\n\tt  ", "SELECT ? FROM t");
    OBF("SELECT /* one /* nested 'x' */ still comment */ a FROM t", "SELECT a FROM t");
    OBF("SELECT a/*c*/FROM t", "SELECT a FROM t");
    OBF("/* only a comment */", "");
    OBF("-- only a comment", "");
    OBF("SELECT 1 /* unterminated 'secret'", "SELECT ?");
    OBF("SELECT 5 - -3", "SELECT ? - ?");
}

static void test_identifiers_and_params(void **state)
{
    (void)state;
    OBF("SELECT \"Weird \"\"Col\"\" 1\" FROM \"my table\" WHERE id = 7",
        "SELECT \"Weird \"\"Col\"\" 1\" FROM \"my table\" WHERE id = ?");
    OBF("SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1");
    OBF("UPDATE t SET a = $1, b = $12 WHERE c = ?", "UPDATE t SET a = $1, b = $12 WHERE c = ?");
    OBF("SELECT U&\"d\\0061t\" FROM t", "SELECT U&\"d\\0061t\" FROM t");
    OBF("SELECT x FROM t WHERE y IN (1, 2, 3)", "SELECT x FROM t WHERE y IN (?, ?, ?)");
    OBF("SELECT données FROM tå WHERE é = 'ü'", "SELECT données FROM tå WHERE é = ?");
}

static void test_unterminated_never_leaks(void **state)
{
    (void)state;
    OBF("SELECT 'secret", "SELECT ?");
    OBF("SELECT E'secret\\' AND 1", "SELECT ?");
    OBF("SELECT $q$secret", "SELECT ?");
    OBF("SELECT \"secret FROM t WHERE a = 'b'", "SELECT ?");
    OBF("SELECT U&\"secret", "SELECT ?");
    /* A plain string whose end depends on standard_conforming_strings:
     * everything from it on is one literal. */
    OBF("SELECT 'abc\\', 'secret2' FROM t", "SELECT ?");
    OBF("SELECT 'a\\'b' , 'secret3'", "SELECT ?");
}

static void test_truncation(void **state)
{
    (void)state;
    /* A long statement: output bounded, ends with "...". */
    size_t n = 200000;
    char *in = malloc(n + 1);
    assert_non_null(in);
    memset(in, 'a', n);
    memcpy(in, "SELECT ", 7);
    in[n] = '\0';
    char *out = dds_sql_obfuscate_dup(in);
    assert_non_null(out);
    assert_int_equal(strlen(out), DDS_SQL_MAX_OUTPUT + 3);
    assert_memory_equal(out + DDS_SQL_MAX_OUTPUT, "...", 3);
    free(out);

    /* Literals past the input limit never show: a string cut by the limit is
     * unterminated. */
    memset(in, ' ', n);
    memcpy(in, "SELECT '", 8);
    memset(in + 8, 'S', n - 8);
    out = dds_sql_obfuscate_dup(in);
    assert_string_equal(out, "SELECT ?...");
    free(out);

    /* Many literals: the output stays short, no matter the input size. */
    for (size_t i = 0; i + 4 <= n; i += 4)
        memcpy(in + i, "'x',", 4);
    out = dds_sql_obfuscate_dup(in);
    assert_true(strlen(out) <= DDS_SQL_MAX_OUTPUT + 3);
    assert_null(strchr(out, 'x'));
    free(out);
    free(in);

    /* Small buffers: cut at a token, never half a multi-byte character. */
    char small[12];
    dds_sql_obfuscate("SELECT données", 15, small, sizeof small);
    assert_string_equal(small, "SELECT d...");
    dds_sql_obfuscate("SELECT éé", 11, small, 11);
    assert_string_equal(small, "SELECT ...");
    char tiny[2];
    dds_sql_obfuscate("SELECT 1", 8, tiny, sizeof tiny);
    assert_string_equal(tiny, "S");
    assert_int_equal(dds_sql_obfuscate("x", 1, tiny, 0), 0);
    /* Stops at a NUL; NULL in, empty out. */
    assert_int_equal(dds_sql_obfuscate("SELECT 1\0'leak'", 15, small, sizeof small), 8);
    assert_string_equal(small, "SELECT ?");
    assert_int_equal(dds_sql_obfuscate(NULL, 5, small, sizeof small), 0);
    assert_null(dds_sql_obfuscate_dup(NULL));
}

static void test_psycopg2_style(void **state)
{
    (void)state;
    /* What psycopg2 sends after client-side interpolation. */
    OBF("INSERT INTO secrets (k, v, b, d) VALUES ('key', 'canary-XYZ', '\\x00ff'::bytea, "
        "'2024-01-01T00:00:00'::timestamp)",
        "INSERT INTO secrets (k, v, b, d) VALUES (?, ?, ?::bytea, ?::timestamp)");
    OBF("SELECT * FROM t WHERE v = E'back\\\\slash'", "SELECT * FROM t WHERE v = ?");
    /* pgbench -M simple. */
    OBF("UPDATE pgbench_accounts SET abalance = abalance + -4213 WHERE aid = 81734;",
        "UPDATE pgbench_accounts SET abalance = abalance + ? WHERE aid = ?;");
    OBF("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 81734, -4213, "
        "CURRENT_TIMESTAMP);",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (?, ?, ?, ?, "
        "CURRENT_TIMESTAMP);");
}

static char *errmsg(const char *msg, const char *stmt)
{
    static char buf[256];
    size_t n = dds_sql_error_message(msg, stmt, buf, sizeof buf);
    assert_int_equal(n, strlen(buf));
    return buf;
}

static void test_error_messages(void **state)
{
    (void)state;
    /* Only the first line: LINE echoes the statement, DETAIL the data. */
    assert_string_equal(errmsg("ERROR:  division by zero\n", "SELECT ?/?"),
                        "ERROR:  division by zero");
    assert_string_equal(errmsg("ERROR:  syntax error at or near \"garbage\"\n"
                               "LINE 1: SELECT 'secret' garbage garbage\n                   ^\n",
                               "SELECT ? garbage garbage"),
                        "ERROR:  syntax error at or near \"garbage\"");
    /* Names the statement shows are kept. */
    assert_string_equal(errmsg("ERROR:  relation \"no_such_table\" does not exist\nLINE 1: x",
                               "SELECT * FROM no_such_table"),
                        "ERROR:  relation \"no_such_table\" does not exist");
    assert_string_equal(errmsg("ERROR:  column \"My Col\" does not exist",
                               "SELECT \"My Col\" FROM t"),
                        "ERROR:  column \"My Col\" does not exist");
    /* Values, parameters included, are not: from the first one on, `?`. */
    assert_string_equal(errmsg("ERROR:  invalid input syntax for type integer: \"s3cr3t\"\n",
                               "SELECT $1::int"),
                        "ERROR:  invalid input syntax for type integer: ?");
    assert_string_equal(errmsg("ERROR:  duplicate key value violates unique constraint "
                               "\"secrets_pkey\"\nDETAIL:  Key (k)=(s3cr3t) already exists.\n",
                               "INSERT INTO secrets VALUES (?, ?)"),
                        "ERROR:  duplicate key value violates unique constraint ?");
    /* A value equal to part of a name is still a value. */
    assert_string_equal(errmsg("ERROR:  invalid input syntax for type integer: \"secret\"",
                               "SELECT secrets.k FROM secrets WHERE k = ?"),
                        "ERROR:  invalid input syntax for type integer: ?");
    /* Known names are shown up to the first quoted part that is not one;
     * an unterminated quote is not one either. */
    assert_string_equal(errmsg("ERROR:  bad value: \"x\" leak \"y\"", "SELECT x FROM t"),
                        "ERROR:  bad value: \"x\" leak ?");
    assert_string_equal(errmsg("ERROR:  bad value: \"unterminated", "SELECT unterminated"),
                        "ERROR:  bad value: ?");
    assert_string_equal(errmsg(NULL, "x"), "");
    assert_string_equal(errmsg("ERROR:  x \"t\"", NULL), "ERROR:  x ?");
    /* Bounded. */
    char small[8];
    assert_int_equal(dds_sql_error_message("ERROR:  division by zero", "", small, sizeof small), 7);
    assert_string_equal(small, "ERROR: ");
    assert_int_equal(dds_sql_error_message("ERROR: \"t\" long", "SELECT t", small, sizeof small), 7);
    assert_string_equal(small, "ERROR: ");
    assert_int_equal(dds_sql_error_message("x", "", small, 0), 0);
}

/* ---- shapes ------------------------------------------------------------- */

static dds_sql_shape shape;

/* Obfuscate with a shape; the output must be what dds_sql_obfuscate gives. */
static int shape_of(const char *in)
{
    static char a[DDS_SQL_MAX_OUTPUT + 16], b[DDS_SQL_MAX_OUTPUT + 16];
    size_t na = dds_sql_obfuscate_shape(in, strlen(in), a, sizeof a, &shape);
    size_t nb = dds_sql_obfuscate(in, strlen(in), b, sizeof b);
    assert_int_equal(na, nb);
    assert_string_equal(a, b);
    return shape.ok;
}

static int matches(const char *in)
{
    return dds_sql_shape_match(shape.tmpl, shape.len, shape.cut, shape.ncuts, in, strlen(in));
}

static void test_shape_integers(void **state)
{
    (void)state;
    assert_true(shape_of("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"));
    assert_int_equal(shape.ncuts, 1);
    /* The template holds no digit of the literal. */
    assert_int_equal(shape.len, strlen("SELECT abalance FROM pgbench_accounts WHERE aid = ;"));
    assert_memory_equal(shape.tmpl, "SELECT abalance FROM pgbench_accounts WHERE aid = ;", shape.len);
    assert_true(matches("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"));
    assert_true(matches("SELECT abalance FROM pgbench_accounts WHERE aid = 7;"));
    assert_true(matches("SELECT abalance FROM pgbench_accounts WHERE aid = 000099999999;"));
    /* Anything else in place of the digits, or any other byte changed. */
    assert_false(matches("SELECT abalance FROM pgbench_accounts WHERE aid = ;"));
    assert_false(matches("SELECT abalance FROM pgbench_accounts WHERE aid = 1.5;"));
    assert_false(matches("SELECT abalance FROM pgbench_accounts WHERE aid = 1e5;"));
    assert_false(matches("SELECT abalance FROM pgbench_accounts WHERE aid = 0x1F;"));
    assert_false(matches("SELECT abalance FROM pgbench_accounts WHERE aid = 1_000;"));
    assert_false(matches("SELECT abalance FROM pgbench_accounts WHERE aid = '1';"));
    assert_false(matches("SELECT abalance FROM pgbench_accounts WHERE aid = 12a;"));
    assert_false(matches("SELECT abalance FROM pgbench_accounts WHERE aid = 12345; "));
    assert_false(matches("SELECT abalance FROM pgbench_accounts WHERE aid = 12345"));
    assert_false(matches("SELECT bbalance FROM pgbench_accounts WHERE aid = 12345;"));
    assert_false(matches(""));

    /* Several integers, signs, parameters, quoted names, TRUE/FALSE. */
    assert_true(shape_of("UPDATE \"T\" SET x = -3, y = $1 WHERE z IN (1,22, +333) AND f = true"));
    assert_int_equal(shape.ncuts, 4);
    assert_true(matches("UPDATE \"T\" SET x = -9, y = $1 WHERE z IN (4,5, +6) AND f = true"));
    assert_false(matches("UPDATE \"T\" SET x = -9, y = $2 WHERE z IN (4,5, +6) AND f = true"));
    /* No integer at all: the same text. */
    assert_true(shape_of("SELECT * FROM t WHERE a = $1"));
    assert_int_equal(shape.ncuts, 0);
    assert_true(matches("SELECT * FROM t WHERE a = $1"));
    assert_false(matches("SELECT * FROM t WHERE a = $12"));
    /* An integer at the very end. */
    assert_true(shape_of("SELECT x FROM t LIMIT 10"));
    assert_true(matches("SELECT x FROM t LIMIT 100000"));
    assert_false(matches("SELECT x FROM t LIMIT 10x"));
}

static void test_shape_refused(void **state)
{
    (void)state;
    /* Literals a shape would have to keep, or that another statement's
     * digits could read differently. */
    const char *no[] = {
        "SELECT 'a'",                  "SELECT E'a'",        "SELECT $$a$$",
        "SELECT $t$a$t$",              "SELECT 1.5",         "SELECT .5",
        "SELECT 5.",                   "SELECT 1e5",         "SELECT 0x1F",
        "SELECT 1_000",                "SELECT 12abc",       "SELECT 1..2",
        "SELECT 1 -- c",               "SELECT /* c */ 1",   "SELECT \"unterminated",
        "SELECT U&\"x",                "SELECT B'01'",       "SELECT 5$",
        "SELECT 1\xc3\xa9",
    };
    for (size_t k = 0; k < sizeof no / sizeof *no; k++) {
        if (shape_of(no[k]))
            fail_msg("shape for %s", no[k]);
    }
    /* Bounded: input size, number of integers, and a NUL inside. */
    char big[DDS_SQL_SHAPE_MAX_INPUT + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_false(shape_of(big));
    big[DDS_SQL_SHAPE_MAX_INPUT] = '\0';
    assert_true(shape_of(big));
    char many[512] = "SELECT 0";
    for (int k = 1; k <= DDS_SQL_SHAPE_MAX_CUTS; k++)
        strcat(many, ",1");
    assert_false(shape_of(many));
    char withnul[] = "SELECT 1\0 'x'";
    char out[64];
    dds_sql_obfuscate_shape(withnul, sizeof withnul - 1, out, sizeof out, &shape);
    assert_false(shape.ok);
    /* An output cut by the caller's buffer. */
    dds_sql_obfuscate_shape("SELECT 1 FROM a_long_table_name", 31, out, 16, &shape);
    assert_false(shape.ok);
}

/* Random statements from pieces that matter to the lexer; every statement
 * that matches a shape must obfuscate exactly as the shape's statement did,
 * and the shape's statement with other digit runs must match. */
static unsigned rnd_state = 12345;
static unsigned rnd(unsigned n)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) % n;
}

static void random_statement(char *buf, size_t cap)
{
    static const char *const piece[] = {
        "SELECT", "x", "t1", " ", "  ", "\n", "=", "-", "+", "(", ")", ",", ";", ".", "e",
        "E", "x", "_", "$", "$1", "0", "1", "42", "007", "0x", "'", "''", "\"", "\"q\"",
        "--", "/*", "*/", "true", "U&", "\xc3\xa9", "..", "1.5", "::int", "b", "o",
    };
    size_t len = 0, np = 1 + rnd(14);
    buf[0] = '\0';
    for (size_t k = 0; k < np; k++) {
        const char *p = piece[rnd(sizeof piece / sizeof *piece)];
        size_t pl = strlen(p);
        if (len + pl + 1 >= cap)
            break;
        memcpy(buf + len, p, pl + 1);
        len += pl;
    }
}

static void test_shape_random(void **state)
{
    (void)state;
    char a[128], v[160];
    static char oa[DDS_SQL_MAX_OUTPUT + 16], ov[DDS_SQL_MAX_OUTPUT + 16];
    int shaped = 0, matched = 0;
    for (int round = 0; round < 200000; round++) {
        random_statement(a, sizeof a);
        dds_sql_obfuscate_shape(a, strlen(a), oa, sizeof oa, &shape);
        if (shape.ok) {
            shaped++;
            /* The template never holds a literal's digits... */
            size_t t = 0;
            for (int k = 0; k < shape.ncuts; k++) {
                assert_true(shape.cut[k] >= t && shape.cut[k] <= shape.len);
                t = shape.cut[k];
            }
            /* ...and new digits in its cuts match, with the same result. */
            size_t vl = 0;
            t = 0;
            for (int k = 0; k < shape.ncuts; k++) {
                memcpy(v + vl, shape.tmpl + t, shape.cut[k] - t);
                vl += shape.cut[k] - t;
                t = shape.cut[k];
                for (unsigned d = 1 + rnd(3); d > 0; d--)
                    v[vl++] = (char)('0' + rnd(10));
            }
            memcpy(v + vl, shape.tmpl + t, shape.len - t);
            vl += shape.len - t;
            v[vl] = '\0';
            assert_true(dds_sql_shape_match(shape.tmpl, shape.len, shape.cut, shape.ncuts, v, vl));
            dds_sql_obfuscate(v, vl, ov, sizeof ov);
            assert_string_equal(ov, oa);
        }
        /* Any other statement: a match means the same result. */
        dds_sql_shape keep = shape;
        for (int m = 0; m < 4; m++) {
            random_statement(v, sizeof v);
            if (m == 0 && strlen(a) + 1 < sizeof v) {
                /* a itself with one byte changed, added or removed */
                strcpy(v, a);
                size_t l = strlen(v), at = rnd((unsigned)l + 1);
                int op = (int)rnd(3);
                if (op == 0 && at < l)
                    v[at] = "0123456789 ;x.'e_$-"[rnd(19)];
                else if (op == 1)
                    memmove(v + at + 1, v + at, l - at + 1), v[at] = (char)('0' + rnd(10));
                else if (at < l)
                    memmove(v + at, v + at + 1, l - at);
            }
            if (keep.ok && dds_sql_shape_match(keep.tmpl, keep.len, keep.cut, keep.ncuts, v, strlen(v))) {
                matched++;
                dds_sql_obfuscate(v, strlen(v), ov, sizeof ov);
                assert_string_equal(ov, oa);
            }
        }
    }
    /* The generator reaches both sides. */
    assert_true(shaped > 1000);
    assert_true(matched > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_dollar_quotes),
        cmocka_unit_test(test_booleans_null),
        cmocka_unit_test(test_comments_and_whitespace),
        cmocka_unit_test(test_identifiers_and_params),
        cmocka_unit_test(test_unterminated_never_leaks),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_psycopg2_style),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_shape_integers),
        cmocka_unit_test(test_shape_refused),
        cmocka_unit_test(test_shape_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
