/*
 * sql.h — SQL obfuscation: a statement's text with every literal replaced by `?`,
 * so that it can be a span's resource without carrying data out of the process.
 *
 * hooks/libpq.c calls it for every statement it traces, mostly on the writer
 * thread (deferred span work); the result becomes the resource of the postgresql.query span (the
 * Agent then runs its own obfuscator on top, wire spec §2.4). The lexer follows
 * PostgreSQL's: numbers (1, -3, 1.5e-3, 0x1F, 1_000), strings ('..' with ''
 * doubling, E'..' with backslash escapes, B'', X'', N'', U&''), dollar quotes
 * ($$..$$, $tag$..$tag$) and the keywords TRUE/FALSE become `?`; comments
 * (-- to the end of the line, and nested C-style blocks) are removed;
 * whitespace runs become one space; identifiers, "quoted identifiers", $1
 * parameters and NULL are kept.
 *
 * Never leaking matters more than a pretty result: anything the lexer cannot
 * close (an unterminated string, quoted identifier or dollar quote) and a plain
 * '..' string whose end depends on standard_conforming_strings (a \' inside)
 * turn the whole rest of the statement into a single `?`.
 *
 * Pure and bounded: linear time, no allocation (except _dup), at most
 * DDS_SQL_MAX_INPUT bytes of input are read and at most DDS_SQL_MAX_OUTPUT bytes
 * are produced; a statement cut by either limit ends with "...".
 */
#ifndef DDS_SQL_H
#define DDS_SQL_H

#include <stddef.h>

#define DDS_SQL_MAX_INPUT (64 * 1024)
/* The Agent truncates resources at 5000 characters anyway (wire spec §1.4). */
#define DDS_SQL_MAX_OUTPUT 5000

/* Obfuscate sql[0..len) (stops early at a NUL byte) into out, which gets a
 * NUL-terminated string of at most min(cap - 1, DDS_SQL_MAX_OUTPUT + 3) bytes.
 * Returns the length written. cap == 0 writes nothing. */
size_t dds_sql_obfuscate(const char *sql, size_t len, char *out, size_t cap);

/* Same for a NUL-terminated statement, into a malloc'd string (free() it).
 * NULL when sql is NULL or memory is short. */
char *dds_sql_obfuscate_dup(const char *sql);

/* The first line of a PostgreSQL error message ("ERROR:  ..."), made safe to
 * record next to the statement. The lines after it can quote the statement
 * with its literals (LINE 1: ...) or the data (DETAIL:  Key (k)=(...)), and the
 * first line itself quotes values ("invalid input syntax for type integer:
 * \"4111 1111...\""), parameters included: a "quoted" part is kept only when it
 * is a whole token of `statement` (the obfuscated text, which shows names but
 * no values: `relation "users" does not exist`); the first one that is not
 * becomes `?`, and so does everything after it. Writes a NUL-terminated string
 * of at most cap - 1 bytes; returns its length. */
size_t dds_sql_error_message(const char *msg, const char *statement, char *out, size_t cap);

/* A statement's shape: what lets the caller recognise the next statement that
 * differs from it only in its integer literals (a program that prints its
 * values into the SQL: pgbench -M simple, many C services) and reuse the
 * obfuscated text instead of running the obfuscator again.
 *
 * A shape is the statement with every integer literal (a run of decimal
 * digits) cut out, and where the cuts were. It holds no literal: only a
 * statement whose literals are all such integers gets one (no string, dollar
 * quote, other number, comment; at most DDS_SQL_SHAPE_MAX_CUTS integers, at
 * most DDS_SQL_SHAPE_MAX_INPUT bytes), and each integer is followed by a byte
 * that cannot continue a number (not a letter, digit, '_', '.', '$' or a byte
 * >= 0x80). Another statement matches when it is the same text with a
 * non-empty run of digits in place of each cut. Such a statement is read
 * token by token exactly as the shape's own statement was (a run of digits
 * followed by such a byte is one integer, whatever the digits), so it
 * obfuscates to exactly the same text: the match is a proof, not a guess. */
#define DDS_SQL_SHAPE_MAX_INPUT 1024
#define DDS_SQL_SHAPE_MAX_CUTS 32

typedef struct dds_sql_shape {
    int ok;                     /* 1: the statement has a shape (below) */
    int ncuts;
    size_t len;                 /* bytes of tmpl */
    unsigned short cut[DDS_SQL_SHAPE_MAX_CUTS]; /* offsets in tmpl, ascending */
    char tmpl[DDS_SQL_SHAPE_MAX_INPUT];         /* the statement without its integers */
} dds_sql_shape;

/* dds_sql_obfuscate, and the statement's shape into *shape (shape->ok says
 * whether it has one). */
size_t dds_sql_obfuscate_shape(const char *sql, size_t len, char *out, size_t cap,
                               dds_sql_shape *shape);

/* Does sql[0..len) have this shape (tmpl/len/cut/ncuts of a shape that was
 * ok)? Then dds_sql_obfuscate gives it the same text as the shape's statement. */
int dds_sql_shape_match(const char *tmpl, size_t tmpl_len, const unsigned short *cut, int ncuts,
                        const char *sql, size_t len);

#endif
