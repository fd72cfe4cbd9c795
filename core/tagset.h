/*
 * tagset.h — tags shared by many spans, encoded once.
 *
 * A database client's span carries a handful of tags that are the same for
 * every command of its connection (db.system, component, span.kind, the
 * peer, the port, _dd.measured). Setting each of them on every span, and
 * encoding each again, was a large part of a span's cost on the writer. A
 * dds_tagset holds such tags once: built when the hook learns them (at
 * connect, or when the peer becomes known), immutable afterwards, with their
 * v0.4 msgpack encoding ready to copy (core/encode.c makes those bytes, with
 * the same functions as a span's own tags: same bytes, same UTF-8 repair and
 * caps). A span refers to at most one (dds_span_set_tagset, core/span.h);
 * its tags then count as the span's own — dds_span_get_meta/_metric see
 * them, sampling rules too — except that a tag the span sets itself wins,
 * and the encoder's reserved keys and process-wide tags treat them exactly as
 * if they had been set on the span.
 *
 * Threads: the reference count is atomic; everything else is written once,
 * before the set is shared.
 */
#ifndef DDS_TAGSET_H
#define DDS_TAGSET_H

#include <stddef.h>
#include <stdint.h>

/* What a tag set is built from: string tags (meta) and numeric ones
 * (metrics). key and val are copied. */
typedef struct dds_tag {
    const char *key;
    const char *val;
    size_t vlen;
} dds_tag;

typedef struct dds_tag_num {
    const char *key;
    double val;
} dds_tag_num;

/* One tag: its key, its value (a NUL-terminated copy for meta), its key's
 * bit (dds_key_bit) and where its encoded key/value pair lies in the set's
 * bytes (len 0: not sent — a non-finite metric, as for a span's own). */
typedef struct dds_tagset_ent {
    const char *key;
    const char *val;
    uint32_t vlen;
    double num;
    uint64_t bit;
    uint32_t off, len;
} dds_tagset_ent;

typedef struct dds_tagset {
    int refs;
    int nmeta, nmetrics;
    uint32_t nmeta_out, nmetrics_out; /* pairs in meta_bytes / metric_bytes */
    uint64_t keys, mkeys;             /* dds_key_bit of every meta / metric key */
    int meta_reserved;                /* a meta key the encoder may compute itself
                                       * (language, _dd.p.*...): it then emits entry
                                       * by entry, checking each */
    int metric_reserved;
    dds_tagset_ent *meta, *metrics;
    char *meta_bytes, *metric_bytes;  /* the pairs, encoded, one after the other */
    size_t meta_len, metric_len;
} dds_tagset;

/* A new set with one reference, or NULL when out of memory. A key given
 * twice keeps its last value (as setting it twice on a span would). */
dds_tagset *dds_tagset_new(const dds_tag *meta, int nmeta, const dds_tag_num *metrics,
                           int nmetrics);
/* The same tags set on one span, one by one (dds_span_set_meta_n and
 * dds_span_set_metric): for a hook whose tag set could not be made (out of
 * memory), from the same list it builds the set from. */
struct dds_span;
void dds_span_put_tags(struct dds_span *s, const dds_tag *meta, int nmeta, const dds_tag_num *metrics,
                       int nmetrics);

void dds_tagset_ref(dds_tagset *ts);
void dds_tagset_unref(dds_tagset *ts); /* NULL: nothing */

/* The entry of key, or NULL. */
const dds_tagset_ent *dds_tagset_find_meta(const dds_tagset *ts, const char *key, uint64_t bit);
const dds_tagset_ent *dds_tagset_find_metric(const dds_tagset *ts, const char *key, uint64_t bit);

/* core/encode.c: fill ts->meta_bytes / metric_bytes, the entries' off/len,
 * the _out counts and the _reserved flags from the entries. 0, or -1 when
 * out of memory. */
int dds_encode_tagset(dds_tagset *ts);

#endif
