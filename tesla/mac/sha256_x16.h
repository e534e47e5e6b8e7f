/* tesla/mac/sha256_x16.h: HMAC-SHA-256 of many rows sixteen at a time with AVX-512
 * (included by _mac.c after the two-lane SHA-NI scheduler, whose lane type, block
 * builder and advance it reuses).
 *
 * SHA-256 (FIPS 180-4 §6.2.2) of sixteen independent messages: the state is eight zmm
 * registers, register j holding word Hj of the sixteen lanes; a step takes one 64-octet
 * block of each lane (16 loads, byte swap, a 16x16 transpose of 32-bit words in
 * registers, so register t holds W[t] of every lane), rotations by VPRORD, Ch / Maj and
 * the three-way XORs of the Sigma functions by VPTERNLOGD, K[t] broadcast.  Everything
 * here is compiled for AVX-512 through target attributes only: the module still loads
 * on CPUs without it, and x16_cpu() (CPUID and the OS-enabled ZMM state via XGETBV)
 * decides whether it may run.
 */
#ifndef TESLA_SHA256_X16_H
#define TESLA_SHA256_X16_H

#define X16_TARGET __attribute__((target("avx512f,avx512bw")))

/* imm8 of VPTERNLOGD: bit (a << 2 | b << 1 | c) of the result table */
#define TL_XOR3 0x96
#define TL_CH 0xCA  /* a ? b : c */
#define TL_MAJ 0xE8 /* majority */

X16_TARGET static inline __m512i x16_bsig0(__m512i a)
{
    return _mm512_ternarylogic_epi32(_mm512_ror_epi32(a, 2), _mm512_ror_epi32(a, 13),
                                     _mm512_ror_epi32(a, 22), TL_XOR3);
}

X16_TARGET static inline __m512i x16_bsig1(__m512i e)
{
    return _mm512_ternarylogic_epi32(_mm512_ror_epi32(e, 6), _mm512_ror_epi32(e, 11),
                                     _mm512_ror_epi32(e, 25), TL_XOR3);
}

X16_TARGET static inline __m512i x16_ssig0(__m512i x)
{
    return _mm512_ternarylogic_epi32(_mm512_ror_epi32(x, 7), _mm512_ror_epi32(x, 18),
                                     _mm512_srli_epi32(x, 3), TL_XOR3);
}

X16_TARGET static inline __m512i x16_ssig1(__m512i x)
{
    return _mm512_ternarylogic_epi32(_mm512_ror_epi32(x, 17), _mm512_ror_epi32(x, 19),
                                     _mm512_srli_epi32(x, 10), TL_XOR3);
}

/* Rows r[0..15] (row i: the sixteen words of lane i's block) into columns: r[t] then
 * holds word t of every lane.  Within 128-bit quarters, then across them. */
X16_TARGET static inline void x16_transpose(__m512i r[16])
{
    __m512i a[16], b[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* b[4i + c], quarter q: word c + 4q of rows 4i..4i+3 */
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    /* a 4x4 transpose of 128-bit quarters for each c */
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m512i t0 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x44);
        __m512i t1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xEE);
        __m512i t2 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x44);
        __m512i t3 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xEE);
        r[c] = _mm512_shuffle_i32x4(t0, t2, 0x88);
        r[c + 4] = _mm512_shuffle_i32x4(t0, t2, 0xDD);
        r[c + 8] = _mm512_shuffle_i32x4(t1, t3, 0x88);
        r[c + 12] = _mm512_shuffle_i32x4(t1, t3, 0xDD);
    }
}

/* K[t] in every lane, read as a memory operand of the add (filled at module init) */
static uint32_t K256x16[64][16] __attribute__((aligned(64)));

static void x16_init_k(void)
{
    for (int t = 0; t < 64; t++)
        for (int i = 0; i < 16; i++)
            K256x16[t][i] = K256[t];
}

/* One block of each of sixteen messages: lane i's block at p[i], its state in column i
 * of S (S[j][i] = word Hj of lane i; S 64-octet aligned).  Lanes in the mask outer
 * instead hash HMAC's outer block (RFC 2104) from the outer keyed state so[]: their
 * state is the inner digest, which is the block's first eight words as it stands,
 * then 0x80 and the length of key block and digest (FIPS 180-4 §5.1.1); p[i] unread. */
X16_TARGET static void sha256_x16(uint32_t S[8][16], const unsigned char *const p[16],
                                  __mmask16 outer, const uint32_t so[8])
{
    const __m512i BSWAP = _mm512_set_epi64(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL,
                                           0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL,
                                           0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL,
                                           0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m512i w[16], s[8];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        w[i] = _mm512_shuffle_epi8(_mm512_loadu_si512((const void *)p[i]), BSWAP);
    x16_transpose(w);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        s[j] = _mm512_load_si512((const void *)S[j]);
    if (outer) {
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            w[j] = _mm512_mask_mov_epi32(w[j], outer, s[j]);
            s[j] = _mm512_mask_mov_epi32(s[j], outer, _mm512_set1_epi32((int)so[j]));
            _mm512_store_si512((void *)S[j], s[j]); /* the state the block adds to */
        }
        w[8] = _mm512_mask_mov_epi32(w[8], outer, _mm512_set1_epi32((int)0x80000000u));
#pragma GCC unroll 6
        for (int j = 9; j < 15; j++)
            w[j] = _mm512_mask_mov_epi32(w[j], outer, _mm512_setzero_si512());
        w[15] = _mm512_mask_mov_epi32(w[15], outer, _mm512_set1_epi32((64 + 32) * 8));
    }
    /* round t with the eight working variables rotated by t: a = s[-t & 7], ... */
#pragma GCC unroll 64
    for (int t = 0; t < 64; t++) {
        __m512i *a = &s[(64 - t) & 7], *b = &s[(65 - t) & 7], *c = &s[(66 - t) & 7],
                *d = &s[(67 - t) & 7], *e = &s[(68 - t) & 7], *f = &s[(69 - t) & 7],
                *g = &s[(70 - t) & 7], *h = &s[(71 - t) & 7];
        if (t >= 16) /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16] */
            w[t & 15] = _mm512_add_epi32(
                _mm512_add_epi32(w[t & 15], x16_ssig1(w[(t - 2) & 15])),
                _mm512_add_epi32(w[(t - 7) & 15], x16_ssig0(w[(t - 15) & 15])));
        __m512i t1 = _mm512_add_epi32(
            _mm512_add_epi32(*h, x16_bsig1(*e)),
            _mm512_add_epi32(_mm512_ternarylogic_epi32(*e, *f, *g, TL_CH),
                             _mm512_add_epi32(w[t & 15], _mm512_load_si512((const void *)K256x16[t]))));
        __m512i t2 = _mm512_add_epi32(x16_bsig0(*a), _mm512_ternarylogic_epi32(*a, *b, *c, TL_MAJ));
        *d = _mm512_add_epi32(*d, t1); /* the new e */
        *h = _mm512_add_epi32(t1, t2); /* the new a */
    }
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        _mm512_store_si512((void *)S[j], /* the state before the block: read again */
                           _mm512_add_epi32(s[j], _mm512_load_si512((const void *)S[j])));
}

/* AVX-512F and BW in the CPU, and the opmask and ZMM state enabled by the OS (XCR0
 * bits 1, 2, 5, 6, 7). */
static int x16_cpu(void)
{
    unsigned a, b, c, d, lo, hi;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) /* OSXSAVE */
        return 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((b >> 16) & 1) || !((b >> 30) & 1)) /* AVX512F, AVX512BW */
        return 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 0xE6) == 0xE6;
}

/* ------------------------------------------------------- the sixteen-lane scheduler */

/* Lanes are kept busy while more than x16_tail of them have rows; then the rest finish
 * on SHA-NI two at a time.  Calls with fewer than x16_min_rows rows stay on SHA-NI. */
static int x16_ok = 0;       /* the CPU and OS allow it (module init) */
static int use_x16 = 0;      /* the sixteen-lane path is used (set_x16, TESLA_MAC_X16) */
#ifndef X16_DEFAULT
#define X16_DEFAULT 1 /* used by default where allowed (TESLA_MAC_X16 overrides) */
#endif
#ifndef X16_AHEAD
#define X16_AHEAD 128 /* octets prefetched ahead in a row */
#endif
static int x16_min_rows = 10; /* measured crossover: ~8 rows at 64 B and at 1400 B */
static int x16_tail = 6;     /* measured: 4-8 alike, 6 best at 20-24 rows */

static void x16_col_get(uint32_t S[8][16], int i, uint32_t h[8])
{
    for (int j = 0; j < 8; j++)
        h[j] = S[j][i];
}

static void x16_col_put(uint32_t S[8][16], int i, const uint32_t h[8])
{
    for (int j = 0; j < 8; j++)
        S[j][i] = h[j];
}

/* Lane i's digest (words H0..H7, big-endian) into o */
static void x16_put_digest(unsigned char *o, uint32_t S[8][16], int i)
{
    for (int j = 0; j < 8; j++) {
        uint32_t v = __builtin_bswap32(S[j][i]);
        memcpy(o + 4 * j, &v, 4);
    }
}

/* The lanes' rows to their end on SHA-NI, two lanes at a time (no new row is taken). */
static void x16_finish_ni(const hkey *h, nilane *a, nilane *b, mrow *rows, size_t nrows)
{
    size_t none = nrows;
    while (a->r || b->r) {
        if (a->r && b->r) {
            const unsigned char *pa = a->outer ? a->scr : nilane_block(a, h->dlen);
            const unsigned char *pb = b->outer ? b->scr : nilane_block(b, h->dlen);
            sha256_ni_x2(a->h, b->h, pa, pb);
            nilane_advance(a, h, rows, nrows, &none);
            nilane_advance(b, h, rows, nrows, &none);
        } else {
            nilane *x = a->r ? a : b;
            sha256_ni(x->h, x->outer ? x->scr : nilane_block(x, h->dlen), 1);
            nilane_advance(x, h, rows, nrows, &none);
        }
    }
}

/* The octets of [a, b) within the block at off, as a mask of the block's 64 */
static inline uint64_t x16_span(size_t a, size_t b, size_t off)
{
    size_t lo = a > off ? a - off : 0, hi = b < off + 64 ? b - off : 64;
    if (a >= b || b <= off || a >= off + 64)
        return 0;
    return (hi - lo == 64 ? ~0ULL : ((1ULL << (hi - lo)) - 1)) << lo;
}

/* The lane's next inner block, not in place (a zeroed field, or past the row's end):
 * built in registers (a masked load: octets outside the row are never read; fields
 * read as zeros, RFC 5776 §3.3.1; the 0x80 octet and the length of FIPS 180-4 §5.1.1,
 * the key block of RFC 2104 counted) and stored whole into the lane's scratch. */
X16_TARGET static const unsigned char *x16_block(nilane *L)
{
    const mrow *r = L->r;
    size_t off = 64 * L->blk;
    uint64_t keep = r->n <= off ? 0 : (r->n - off >= 64 ? ~0ULL : (1ULL << (r->n - off)) - 1);
    keep &= ~x16_span(r->a1, r->b1, off) & ~x16_span(r->a2, r->b2, off);
    __m512i v = _mm512_maskz_loadu_epi8(keep, (const void *)(r->p + off));
    if (r->n >= off && r->n < off + 64)
        v = _mm512_mask_mov_epi8(v, 1ULL << (r->n - off), _mm512_set1_epi8((char)0x80));
    if (L->blk + 1 == L->nb)
        v = _mm512_mask_mov_epi64(
            v, 0x80, _mm512_set1_epi64((long long)__builtin_bswap64((64 + (uint64_t)r->n) * 8)));
    _mm512_storeu_si512((void *)L->scr, v);
    return L->scr;
}

/* The end of the run of blocks from offset off (a multiple of 64) that are read in
 * place: whole blocks within the row holding no zeroed octet (off itself when the block
 * at off is not one). */
static size_t x16_run_end(const mrow *r, size_t off)
{
    size_t e = r->n / 64 * 64, f[2][2] = {{r->a1, r->b1}, {r->a2, r->b2}};
    for (int j = 0; j < 2; j++) {
        if (f[j][0] >= f[j][1] || f[j][1] <= off)
            continue;
        size_t fs = f[j][0] / 64 * 64;
        if (fs <= off)
            return off;
        if (fs < e)
            e = fs;
    }
    return e > off ? e : off;
}

/* HMAC-SHA-256 of the rows, sixteen lanes each taking the next row when its own is done
 * (inner blocks, then the outer hash's one block straight from the lane's state); a
 * lane without a row hashes a zero block whose result is never read. */
static void hmac_many_x16(const hkey *h, mrow *rows, size_t nrows)
{
    nilane L[16];
    uint32_t S[8][16] __attribute__((aligned(64)));
    const unsigned char *p[16];
    size_t next = 0, lim[16]; /* lim: the end of the lane's current in-place run */
    int active = 0;
    for (int i = 0; i < 16; i++) {
        L[i].r = NULL;
        if (next < nrows) {
            L[i].r = &rows[next++];
            L[i].blk = 0;
            L[i].nb = (L[i].r->n + 9 + 63) / 64;
            L[i].outer = 0;
            lim[i] = x16_run_end(L[i].r, 0);
            active++;
        }
        x16_col_put(S, i, h->si.h);
    }
    while (active > 0) {
        if (next >= nrows && active <= x16_tail) {
            nilane *rest[16];
            int k = 0;
            for (int i = 0; i < 16; i++)
                if (L[i].r) {
                    x16_col_get(S, i, L[i].h);
                    if (L[i].outer) { /* the inner digest: the outer block, the outer state */
                        nilane_block(&L[i], h->dlen);
                        memcpy(L[i].h, h->so.h, sizeof L[i].h);
                    }
                    rest[k++] = &L[i];
                }
            for (int i = 0; i < k; i += 2) {
                nilane idle = {.r = NULL};
                x16_finish_ni(h, rest[i], i + 1 < k ? rest[i + 1] : &idle, rows, nrows);
            }
            return;
        }
        __mmask16 om = 0;
        for (int i = 0; i < 16; i++) {
            nilane *x = &L[i];
            size_t off = 64 * x->blk;
            if (!x->r || x->outer) {
                p[i] = ZEROS;
                om |= (__mmask16)((x->r ? 1u : 0u) << i);
            } else if (off + 64 <= lim[i]) {
                p[i] = x->r->p + off;
                /* sixteen streams are more than the hardware prefetcher follows */
                __builtin_prefetch(p[i] + X16_AHEAD);
            } else {
                p[i] = x16_block(x);
                lim[i] = x16_run_end(x->r, off + 64);
            }
        }
        sha256_x16(S, p, om, h->so.h);
        for (int i = 0; i < 16; i++) {
            nilane *x = &L[i];
            if (!x->r)
                continue;
            if (!x->outer) { /* the outer block next when the inner hash ends */
                if (++x->blk == x->nb)
                    x->outer = 1;
                continue;
            }
            x16_put_digest(x->r->md, S, i);
            x->r = NULL;
            if (next < nrows) { /* the lane takes the next row */
                x->r = &rows[next++];
                x->blk = 0;
                x->nb = (x->r->n + 9 + 63) / 64;
                x->outer = 0;
                lim[i] = x16_run_end(x->r, 0);
                x16_col_put(S, i, h->si.h);
            } else
                active--;
        }
    }
}

#endif
