/* See sql.h. One pass over the statement; every scanner below moves forward
 * only, except the double scan of a plain '..' string (once as PostgreSQL reads
 * it with standard_conforming_strings on, once with it off), so the whole is
 * linear in the bytes read. */
#define _GNU_SOURCE
#include "sql.h"

#include <stdlib.h>
#include <string.h>

enum { TOK_NONE, TOK_WORD, TOK_VALUE, TOK_OP };

typedef struct out_buf {
    char *p;
    size_t len;
    size_t lim;  /* content bytes allowed; "..." may follow */
    int full;    /* a token did not fit: the output was cut */
    int space;   /* whitespace or a comment since the last token */
    int last;    /* TOK_* of the last token written */
} out_buf;

/* Byte classes, tabulated (one load per byte in the loops that run over
 * every byte of a statement): bit 1 space (SP HT LF CR FF VT), bit 2
 * PostgreSQL's ident_start (letters, '_', bytes >= 0x80, which are letters to
 * it), bit 4 ident_cont (ident_start, digits, '$'). */
enum { SQ_SPACE = 1, SQ_IDSTART = 2, SQ_IDCONT = 4 };
static const unsigned char sql_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0,
    0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 0, 0, 0, 0, 6,
    0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 0, 0, 0, 0, 0,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
};

static int is_space(unsigned char c) { return sql_class[c] & SQ_SPACE; }

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int is_xdigit(unsigned char c)
{
    return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static int is_ident_start(unsigned char c) { return sql_class[c] & SQ_IDSTART; }

static int is_ident_cont(unsigned char c) { return sql_class[c] & SQ_IDCONT; }

/* Drop a UTF-8 sequence left incomplete by a cut at the end of the buffer. */
static void trim_partial_utf8(out_buf *o)
{
    if (o->len == 0)
        return;
    size_t j = o->len - 1;
    while (j > 0 && ((unsigned char)o->p[j] & 0xC0) == 0x80 && o->len - j < 4)
        j--;
    unsigned char lead = (unsigned char)o->p[j];
    size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (lead >= 0xC0 && o->len - j < want)
        o->len = j;
}

static void emit(out_buf *o, const char *s, size_t n, int kind)
{
    if (o->full)
        return;
    int sp = o->space && o->len > 0;
    o->space = 0;
    if (o->len + (size_t)sp + n > o->lim) {
        /* Cut: keep what fits of a word or operator, never part of a `?`. */
        if (sp && o->len < o->lim)
            o->p[o->len++] = ' ';
        if (kind != TOK_VALUE) {
            size_t room = o->lim - o->len;
            memcpy(o->p + o->len, s, room < n ? room : n);
            o->len += room < n ? room : n;
            trim_partial_utf8(o);
        }
        o->full = 1;
        return;
    }
    if (sp)
        o->p[o->len++] = ' ';
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->last = kind;
}

/* Index just past the quote closing the '..' string whose opening quote is at
 * s[q], or 0 when it is not closed. backslash: a backslash escapes the next
 * byte (E'' strings, or plain strings with standard_conforming_strings off). */
static size_t string_end(const char *s, size_t n, size_t q, int backslash)
{
    size_t i = q + 1;
    while (i < n) {
        char c = s[i];
        if (backslash && c == '\\') {
            i += 2;
            continue;
        }
        if (c == '\'') {
            if (i + 1 < n && s[i + 1] == '\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i++;
    }
    return 0;
}

/* A plain string: its end must not depend on standard_conforming_strings,
 * which only the server knows. 0 when unterminated or ambiguous. */
static size_t plain_string_end(const char *s, size_t n, size_t q)
{
    size_t on = string_end(s, n, q, 0);
    if (on == 0 || memchr(s + q + 1, '\\', on - q - 1) == NULL)
        return on;
    return string_end(s, n, q, 1) == on ? on : 0;
}

static size_t number_end(const char *s, size_t n, size_t i)
{
    if (s[i] == '0' && i + 2 < n) {
        unsigned char b = (unsigned char)(s[i + 1] | 0x20);
        unsigned char d = (unsigned char)s[i + 2];
        int ok = (b == 'x' && is_xdigit(d)) || (b == 'o' && d >= '0' && d <= '7') ||
                 (b == 'b' && (d == '0' || d == '1'));
        if (ok) {
            i += 2;
            while (i < n && (is_xdigit((unsigned char)s[i]) || s[i] == '_'))
                i++;
            return i;
        }
    }
    while (i < n && (is_digit((unsigned char)s[i]) || s[i] == '_'))
        i++;
    if (i < n && s[i] == '.' && !(i + 1 < n && s[i + 1] == '.')) {
        i++;
        while (i < n && (is_digit((unsigned char)s[i]) || s[i] == '_'))
            i++;
    }
    if (i < n && (s[i] | 0x20) == 'e') {
        size_t j = i + 1;
        if (j < n && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j < n && is_digit((unsigned char)s[j])) {
            i = j;
            while (i < n && is_digit((unsigned char)s[i]))
                i++;
        }
    }
    return i;
}

static int starts_number(const char *s, size_t n, size_t i)
{
    return is_digit((unsigned char)s[i]) ||
           (s[i] == '.' && i + 1 < n && is_digit((unsigned char)s[i + 1]));
}

/* "..." quoted identifier at s[q]: index past its closing quote, or 0. */
static size_t quoted_ident_end(const char *s, size_t n, size_t q)
{
    for (size_t i = q + 1; i < n; i++) {
        if (s[i] == '"') {
            if (i + 1 < n && s[i + 1] == '"') {
                i++;
                continue;
            }
            return i + 1;
        }
    }
    return 0;
}

/* $tag$ opening at s[i]: its length, or 0 if s[i] does not open one. */
static size_t dollar_tag_len(const char *s, size_t n, size_t i)
{
    size_t j = i + 1;
    if (j < n && is_ident_start((unsigned char)s[j])) {
        j++;
        while (j < n && s[j] != '$' && is_ident_cont((unsigned char)s[j]))
            j++;
    }
    return j < n && s[j] == '$' ? j - i + 1 : 0;
}

static int word_is(const char *w, size_t len, const char *kw)
{
    size_t k = strlen(kw);
    if (len != k)
        return 0;
    for (size_t i = 0; i < k; i++)
        if ((w[i] | 0x20) != kw[i])
            return 0;
    return 1;
}

/* Building a shape (sql.h) alongside the obfuscation: the statement is
 * copied to the template up to each integer, the integer skipped. */
typedef struct shape_build {
    dds_sql_shape *sh; /* NULL: no shape wanted */
    size_t from;       /* statement bytes before this are in sh->tmpl or cut */
} shape_build;

/* Something that a shape cannot hold (a literal other than an integer, a
 * comment) or be sure of. */
static void shape_fail(shape_build *b)
{
    if (b->sh)
        b->sh->ok = 0;
}

/* The number s[ds..e) (digits from ds, a sign before it if any): cut from the
 * template when it is a run of digits that nothing could extend. */
static void shape_number(shape_build *b, const char *s, size_t n, size_t ds, size_t e)
{
    dds_sql_shape *sh = b->sh;
    if (sh == NULL || !sh->ok)
        return;
    for (size_t k = ds; k < e; k++)
        if (!is_digit((unsigned char)s[k])) {
            sh->ok = 0;
            return;
        }
    if ((e < n && (is_ident_cont((unsigned char)s[e]) || s[e] == '.')) ||
        sh->ncuts == DDS_SQL_SHAPE_MAX_CUTS) {
        sh->ok = 0;
        return;
    }
    memcpy(sh->tmpl + sh->len, s + b->from, ds - b->from);
    sh->len += ds - b->from;
    sh->cut[sh->ncuts++] = (unsigned short)sh->len;
    b->from = e;
}

/* The obfuscator; inlined into both entry points so that the plain one
 * carries no shape work (b.sh is a constant NULL there). */
static inline __attribute__((always_inline)) size_t
obfuscate(const char *sql, size_t len, char *out, size_t cap, dds_sql_shape *shape)
{
    shape_build b = {shape, 0};
    if (shape) {
        shape->ok = 1;
        shape->ncuts = 0;
        shape->len = 0;
    }
    if (cap == 0) {
        shape_fail(&b);
        return 0;
    }
    size_t total = cap - 1;
    if (total > DDS_SQL_MAX_OUTPUT + 3)
        total = DDS_SQL_MAX_OUTPUT + 3;
    out_buf o = {out, 0, total >= 3 ? total - 3 : total, 0, 0, TOK_NONE};

    const char *s = sql ? sql : "";
    size_t n = sql ? len : 0;
    int cut = 0;
    if (n > DDS_SQL_MAX_INPUT) {
        n = DDS_SQL_MAX_INPUT;
        cut = 1;
    }
    const char *nul = memchr(s, '\0', n);
    if (nul) {
        n = (size_t)(nul - s);
        cut = 0;
        shape_fail(&b);
    }
    if (n > DDS_SQL_SHAPE_MAX_INPUT)
        shape_fail(&b);

    size_t i = 0;
    int stop = 0; /* the rest could not be read safely: it became one `?` */
    while (i < n && !o.full && !stop) {
        unsigned char c = (unsigned char)s[i];
        if (is_space(c)) {
            o.space = 1;
            i++;
            continue;
        }
        if (c == '-' && i + 1 < n && s[i + 1] == '-') {
            i += 2;
            while (i < n && s[i] != '\n' && s[i] != '\r')
                i++;
            o.space = 1;
            shape_fail(&b);
            continue;
        }
        if (c == '/' && i + 1 < n && s[i + 1] == '*') {
            size_t depth = 1;
            i += 2;
            while (i < n && depth > 0) {
                if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
                    depth++;
                    i += 2;
                } else if (s[i] == '*' && i + 1 < n && s[i + 1] == '/') {
                    depth--;
                    i += 2;
                } else {
                    i++;
                }
            }
            o.space = 1;
            shape_fail(&b);
            continue;
        }
        if (c == '\'') {
            shape_fail(&b);
            size_t e = plain_string_end(s, n, i);
            emit(&o, "?", 1, TOK_VALUE);
            if (e == 0)
                stop = 1;
            i = e;
            continue;
        }
        if (c == '"') {
            size_t e = quoted_ident_end(s, n, i);
            if (e == 0) {
                emit(&o, "?", 1, TOK_VALUE);
                shape_fail(&b);
                stop = 1;
            } else {
                emit(&o, s + i, e - i, TOK_WORD);
                i = e;
            }
            continue;
        }
        if (c == '$') {
            if (i + 1 < n && is_digit((unsigned char)s[i + 1])) { /* $1: a parameter */
                size_t e = i + 1;
                while (e < n && is_digit((unsigned char)s[e]))
                    e++;
                emit(&o, s + i, e - i, TOK_VALUE);
                i = e;
                continue;
            }
            size_t tl = dollar_tag_len(s, n, i);
            if (tl > 0) {
                shape_fail(&b);
                const char *close = memmem(s + i + tl, n - i - tl, s + i, tl);
                emit(&o, "?", 1, TOK_VALUE);
                if (close == NULL)
                    stop = 1;
                else
                    i = (size_t)(close - s) + tl;
                continue;
            }
            emit(&o, "$", 1, TOK_OP);
            i++;
            continue;
        }
        if ((c == '-' || c == '+') && i + 1 < n && starts_number(s, n, i + 1) &&
            (o.last == TOK_NONE || o.last == TOK_OP)) {
            /* A sign after an operator, '(' or ',' belongs to the number. */
            size_t e = number_end(s, n, i + 1);
            if (shape)
                shape_number(&b, s, n, i + 1, e);
            i = e;
            emit(&o, "?", 1, TOK_VALUE);
            continue;
        }
        if (starts_number(s, n, i)) {
            size_t e = number_end(s, n, i);
            if (shape)
                shape_number(&b, s, n, i, e);
            i = e;
            emit(&o, "?", 1, TOK_VALUE);
            continue;
        }
        if (is_ident_start(c)) {
            size_t e = i + 1;
            while (e < n && is_ident_cont((unsigned char)s[e]))
                e++;
            size_t wl = e - i;
            unsigned char lc = (unsigned char)(c | 0x20);
            size_t q = 0; /* a string literal's opening quote after a prefix */
            int escaped = 0;
            if (wl == 1 && e < n && s[e] == '\'' &&
                (lc == 'e' || lc == 'b' || lc == 'x' || lc == 'n')) {
                q = e;
                escaped = lc == 'e';
            } else if (wl == 1 && lc == 'u' && e + 1 < n && s[e] == '&' && s[e + 1] == '\'') {
                q = e + 1;
            } else if (wl == 1 && lc == 'u' && e + 1 < n && s[e] == '&' && s[e + 1] == '"') {
                size_t qe = quoted_ident_end(s, n, e + 1);
                if (qe == 0) {
                    emit(&o, "?", 1, TOK_VALUE);
                    shape_fail(&b);
                    stop = 1;
                } else {
                    emit(&o, s + i, qe - i, TOK_WORD);
                    i = qe;
                }
                continue;
            }
            if (q) {
                shape_fail(&b);
                size_t se = escaped ? string_end(s, n, q, 1) : plain_string_end(s, n, q);
                emit(&o, "?", 1, TOK_VALUE);
                if (se == 0)
                    stop = 1;
                i = se;
                continue;
            }
            if (word_is(s + i, wl, "true") || word_is(s + i, wl, "false"))
                emit(&o, "?", 1, TOK_VALUE);
            else
                emit(&o, s + i, wl, TOK_WORD);
            i = e;
            continue;
        }
        emit(&o, s + i, 1, c == ')' || c == ']' || c == '?' ? TOK_VALUE : TOK_OP);
        i++;
    }

    if ((o.full || cut) && total >= 3 && o.len + 3 <= total) {
        memcpy(o.p + o.len, "...", 3);
        o.len += 3;
    }
    out[o.len] = '\0';
    if (shape && shape->ok) {
        if (o.full || cut || stop) {
            shape->ok = 0;
        } else {
            memcpy(shape->tmpl + shape->len, s + b.from, n - b.from);
            shape->len += n - b.from;
        }
    }
    return o.len;
}

size_t dds_sql_obfuscate(const char *sql, size_t len, char *out, size_t cap)
{
    return obfuscate(sql, len, out, cap, NULL);
}

size_t dds_sql_obfuscate_shape(const char *sql, size_t len, char *out, size_t cap,
                               dds_sql_shape *shape)
{
    return obfuscate(sql, len, out, cap, shape);
}

int dds_sql_shape_match(const char *tmpl, size_t tmpl_len, const unsigned short *cut, int ncuts,
                        const char *sql, size_t len)
{
    if (len > DDS_SQL_SHAPE_MAX_INPUT)
        return 0;
    size_t j = 0, t = 0;
    for (int k = 0; k < ncuts; k++) {
        size_t seg = cut[k] - t;
        if (len - j < seg || memcmp(sql + j, tmpl + t, seg) != 0)
            return 0;
        j += seg;
        t += seg;
        size_t d = j;
        while (j < len && is_digit((unsigned char)sql[j]))
            j++;
        if (j == d)
            return 0;
    }
    return len - j == tmpl_len - t && memcmp(sql + j, tmpl + t, len - j) == 0;
}

char *dds_sql_obfuscate_dup(const char *sql)
{
    if (sql == NULL)
        return NULL;
    size_t len = strnlen(sql, DDS_SQL_MAX_INPUT + 1);
    size_t cap = (len < DDS_SQL_MAX_OUTPUT ? len : DDS_SQL_MAX_OUTPUT) + 4;
    char *out = malloc(cap);
    if (out != NULL)
        dds_sql_obfuscate(sql, len, out, cap);
    return out;
}

/* Is w[0..n) a whole token of stmt: not inside a longer identifier? */
static int is_token_of(const char *stmt, const char *w, size_t n)
{
    if (n == 0 || stmt == NULL)
        return 0;
    size_t sl = strlen(stmt);
    for (const char *p = stmt; (p = memmem(p, sl - (size_t)(p - stmt), w, n)) != NULL; p++) {
        int before = p > stmt && is_ident_cont((unsigned char)p[-1]);
        int after = p[n] != '\0' && is_ident_cont((unsigned char)p[n]);
        if (!before && !after)
            return 1;
    }
    return 0;
}

size_t dds_sql_error_message(const char *msg, const char *statement, char *out, size_t cap)
{
    if (cap == 0)
        return 0;
    size_t o = 0, i = 0;
    const char *m = msg ? msg : "";
    while (m[i] && m[i] != '\n' && m[i] != '\r' && o < cap - 1) {
        if (m[i] != '"') {
            out[o++] = m[i++];
            continue;
        }
        size_t e = i + 1;
        while (m[e] && m[e] != '"' && m[e] != '\n' && m[e] != '\r')
            e++;
        if (m[e] == '"' && is_token_of(statement, m + i + 1, e - i - 1) && o + (e + 1 - i) < cap) {
            memcpy(out + o, m + i, e + 1 - i);
            o += e + 1 - i;
            i = e + 1;
            continue;
        }
        /* A value, or something that cannot be told from one: stop here. */
        if (o + 1 < cap)
            out[o++] = '?';
        break;
    }
    out[o] = '\0';
    return o;
}
