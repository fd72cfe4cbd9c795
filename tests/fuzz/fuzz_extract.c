/*
 * fuzz_extract.c — libFuzzer target for core/propagation.c.
 *
 * The input is a list of "name:value" header lines separated by '\n' (a '\r'
 * stays in the value: the parser never hands us one, but extraction must
 * survive it). The first byte picks the order of the four extraction styles
 * and extract_first. Whatever is extracted is then injected with every style,
 * and the properties checked are the ones the shim relies on: no crash, no
 * read outside the headers, the injected block always fits in
 * DDS_PROPAGATION_INJECT_MAX, every injected line is printable
 * "name: value\r\n" (no header injection from hostile input), and extracting
 * our own injection gives back the same trace id.
 *
 * Build and run for ~60 s, from the repository root:
 *
 *   mkdir -p build tests/fuzz/corpus-out/extract && clang -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Icore -I. tests/fuzz/fuzz_extract.c core/propagation.c -o build/fuzz_extract && build/fuzz_extract -max_total_time=60 -max_len=4096 tests/fuzz/corpus-out/extract tests/fuzz/corpus/extract
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "propagation.h"

#define MAX_HDRS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int all_styles[4] = {DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT, DDS_STYLE_B3MULTI,
                                  DDS_STYLE_B3};

static void check(int ok)
{
    if (!ok)
        abort();
}

/* Every line "name: value\r\n" with printable bytes only. */
static int parse_block(const char *b, size_t n, dds_hdr *out, int max)
{
    int nh = 0;
    size_t i = 0;
    while (i < n) {
        size_t s = i;
        while (i < n && b[i] != '\r') {
            check(b[i] >= 0x20 && b[i] <= 0x7e);
            i++;
        }
        check(i + 1 < n && b[i] == '\r' && b[i + 1] == '\n');
        const char *colon = memchr(b + s, ':', i - s);
        check(colon != NULL && colon[1] == ' ' && nh < max);
        out[nh].name = b + s;
        out[nh].name_len = (size_t)(colon - (b + s));
        out[nh].value = colon + 2;
        out[nh].value_len = i - (size_t)(colon + 2 - b);
        nh++;
        i += 2;
    }
    return nh;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    dds_config cfg;
    memset(&cfg, 0, sizeof cfg);
    /* One of the 24 orders of the four styles. */
    int pick = data[0] % 24, avail[4] = {0, 1, 2, 3}, left = 4;
    for (int i = 0; i < 4; i++) {
        int k = pick % left;
        pick /= left;
        cfg.extract.style[i] = all_styles[avail[k]];
        avail[k] = avail[--left];
    }
    cfg.extract.n = 4;
    cfg.extract_first = (data[0] / 24) & 1;
    cfg.extract_behavior = DDS_EXTRACT_CONTINUE;
    cfg.inject.n = 4;
    memcpy(cfg.inject.style, all_styles, sizeof all_styles);
    cfg.x_datadog_tags_max_length = 100000; /* the hard cap applies */

    /* Copy so that ASan sees reads past the end of the input. */
    size_t n = size - 1;
    char *text = malloc(n ? n : 1);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, n);
    dds_hdr h[MAX_HDRS];
    int nh = 0;
    size_t i = 0;
    while (i < n && nh < MAX_HDRS) {
        size_t e = i;
        while (e < n && text[e] != '\n')
            e++;
        const char *colon = memchr(text + i, ':', e - i);
        if (colon != NULL) {
            h[nh].name = text + i;
            h[nh].name_len = (size_t)(colon - (text + i));
            h[nh].value = colon + 1;
            h[nh].value_len = e - (size_t)(colon + 1 - text);
            nh++;
        }
        i = e + 1;
    }

    dds_trace_context ctx;
    int got = dds_propagation_extract(h, nh, &cfg, &ctx);
    check(strnlen(ctx.propagation_error, sizeof ctx.propagation_error) < sizeof ctx.propagation_error);
    check(strnlen(ctx.w3c_extraction_error, sizeof ctx.w3c_extraction_error) <
          sizeof ctx.w3c_extraction_error);
    if (got) {
        check((ctx.trace_id_hi | ctx.trace_id_lo) != 0);
        static dds_trace t;
        memset(&t, 0, sizeof t);
        t.trace_id_hi = ctx.trace_id_hi;
        t.trace_id_lo = ctx.trace_id_lo;
        /* As core/span.c keeps it: a right-sized copy (tags past ntags are
         * not there, so ASan catches a read of them), or the empty one. */
        dds_trace_context *kept = NULL;
        if (dds_context_has_extras(&ctx)) {
            kept = malloc(dds_context_size(&ctx));
            check(kept != NULL);
            memcpy(kept, &ctx, dds_context_size(&ctx));
        }
        t.ctx = kept ? kept : &dds_context_none;
        t.sampling.decided = 1;
        t.sampling.priority = ctx.has_priority ? ctx.priority : 1;
        t.sampling.mechanism = ctx.has_priority ? DDS_MECH_NONE : DDS_MECH_DEFAULT;
        char buf[DDS_PROPAGATION_INJECT_MAX];
        size_t bl = dds_propagation_inject(&t, 0x0123456789abcdefULL, &cfg, buf, sizeof buf);
        check(bl > 0);
        check(t.ctx->propagation_error[0] == '\0' ||
              strcmp(t.ctx->propagation_error, ctx.propagation_error) == 0);
        if (t.ctx != kept && t.ctx != &dds_context_none)
            free((void *)t.ctx); /* made by dds_trace_ctx_mut */
        free(kept);
        dds_hdr back[32];
        int nb = parse_block(buf, bl, back, 32);
        dds_trace_context again;
        check(dds_propagation_extract(back, nb, &cfg, &again) == 1);
        check(again.trace_id_hi == ctx.trace_id_hi && again.trace_id_lo == ctx.trace_id_lo);
        check(again.parent_id == 0x0123456789abcdefULL);
    } else {
        check(ctx.trace_id_lo == 0 && ctx.trace_id_hi == 0 && ctx.ntags == 0 && ctx.origin[0] == 0);
    }
    free(text);
    return 0;
}
