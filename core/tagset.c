/* See tagset.h. */
#include "tagset.h"
#include "span.h"

#include <stdlib.h>
#include <string.h>

/* The entry of key among ents[0..*n): the one there, or a new one whose key
 * is copied at *w (advanced past it) and whose bit joins *mask. */
static dds_tagset_ent *ent_for(dds_tagset_ent *ents, int *n, const char *key, char **w,
                               uint64_t *mask)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(ents[i].key, key) == 0)
            return &ents[i];
    dds_tagset_ent *e = &ents[(*n)++];
    size_t kl = strlen(key);
    memcpy(*w, key, kl + 1);
    e->key = *w;
    e->bit = dds_key_bit(*w);
    *w += kl + 1;
    *mask |= e->bit;
    return e;
}

dds_tagset *dds_tagset_new(const dds_tag *meta, int nmeta, const dds_tag_num *metrics,
                           int nmetrics)
{
    if (nmeta < 0 || nmetrics < 0 || (nmeta && meta == NULL) || (nmetrics && metrics == NULL))
        return NULL;
    /* One block: the header, the entries, then every key and value. */
    size_t strings = 0;
    for (int i = 0; i < nmeta; i++) {
        if (meta[i].key == NULL || meta[i].val == NULL || meta[i].vlen > UINT32_MAX)
            return NULL;
        strings += strlen(meta[i].key) + 1 + meta[i].vlen + 1;
    }
    for (int i = 0; i < nmetrics; i++) {
        if (metrics[i].key == NULL)
            return NULL;
        strings += strlen(metrics[i].key) + 1;
    }
    size_t head = sizeof(dds_tagset) + (size_t)(nmeta + nmetrics) * sizeof(dds_tagset_ent);
    dds_tagset *ts = calloc(1, head + strings);
    if (ts == NULL)
        return NULL;
    ts->refs = 1;
    ts->meta = (dds_tagset_ent *)(ts + 1);
    ts->metrics = ts->meta + nmeta;
    char *w = (char *)ts + head;
    for (int i = 0; i < nmeta; i++) {
        dds_tagset_ent *e = ent_for(ts->meta, &ts->nmeta, meta[i].key, &w, &ts->keys);
        memcpy(w, meta[i].val, meta[i].vlen);
        w[meta[i].vlen] = '\0';
        e->val = w;
        e->vlen = (uint32_t)meta[i].vlen;
        w += meta[i].vlen + 1;
    }
    for (int i = 0; i < nmetrics; i++)
        ent_for(ts->metrics, &ts->nmetrics, metrics[i].key, &w, &ts->mkeys)->num = metrics[i].val;
    if (dds_encode_tagset(ts) != 0) {
        dds_tagset_unref(ts);
        return NULL;
    }
    return ts;
}

void dds_span_put_tags(dds_span *s, const dds_tag *meta, int nmeta, const dds_tag_num *metrics,
                       int nmetrics)
{
    for (int i = 0; i < nmeta; i++)
        dds_span_set_meta_n(s, meta[i].key, meta[i].val, meta[i].vlen);
    for (int i = 0; i < nmetrics; i++)
        dds_span_set_metric(s, metrics[i].key, metrics[i].val);
}

void dds_tagset_ref(dds_tagset *ts)
{
    if (ts)
        __atomic_add_fetch(&ts->refs, 1, __ATOMIC_RELAXED);
}

void dds_tagset_unref(dds_tagset *ts)
{
    if (ts == NULL || __atomic_sub_fetch(&ts->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    free(ts->meta_bytes);
    free(ts->metric_bytes);
    free(ts);
}

static const dds_tagset_ent *find(const dds_tagset_ent *ents, int n, const char *key)
{
    for (int i = 0; i < n; i++) {
        const char *k = ents[i].key;
        if (k[0] == key[0] && strcmp(k, key) == 0)
            return &ents[i];
    }
    return NULL;
}

const dds_tagset_ent *dds_tagset_find_meta(const dds_tagset *ts, const char *key, uint64_t bit)
{
    return ts && (ts->keys & bit) ? find(ts->meta, ts->nmeta, key) : NULL;
}

const dds_tagset_ent *dds_tagset_find_metric(const dds_tagset *ts, const char *key, uint64_t bit)
{
    return ts && (ts->mkeys & bit) ? find(ts->metrics, ts->nmetrics, key) : NULL;
}
