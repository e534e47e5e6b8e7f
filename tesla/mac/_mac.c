/* tesla.mac._mac: the native MAC kernel of tesla.mac.kernel (HMAC, RFC 2104, over many rows).
 *
 * Python limited API (abi3, 3.11+) only: datagrams are read with PyBytes_AsStringAndSize
 * or the buffer protocol, never through object internals.  Hashing goes through
 * OpenSSL's public EVP digest API: the key pads are absorbed once into two EVP_MD_CTX
 * (RFC 2104 §4 "precomputation"), then per row the inner state is copied
 * (EVP_MD_CTX_copy_ex), the row absorbed and finished, and the same done with the
 * outer state over the inner digest.  SHA-1 and SHA-256 on x86-64 CPUs with the SHA
 * extensions: our own over those instructions instead (below).  No struct size or
 * layout of OpenSSL or CPython is assumed.  Every row and field is checked against its
 * buffer before any hashing; the loops run without the GIL, with every buffer held
 * (exported) for their duration.
 */
#define PY_SSIZE_T_CLEAN
#define Py_LIMITED_API 0x030B0000
#include <Python.h>

#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>

/* TESLA PRF/MAC registry values 0..4 (RFC 5776 §5) */
static const char *const MD_NAMES[5] = {"SHA1", "SHA224", "SHA256", "SHA384", "SHA512"};
static EVP_MD *mds[5]; /* fetched once at module init */

#define MAX_BLOCK 256 /* every digest here has a block of 64 or 128 octets */
/* fields whose blocks end within this many octets are zeroed in a stack copy */
#define SCRATCH 2048

/* ---------------------------------------------------- SHA-1 and SHA-256 with SHA-NI
 * On x86-64 CPUs with the SHA extensions, HMAC-SHA-256 (TESLA's default) and HMAC-SHA-1
 * run on our own SHA-256 / SHA-1 (FIPS 180-4) over the CPU's SHA instructions: the keyed
 * states are then plain word arrays of ours, copied per row without the EVP layer's
 * per-copy allocation.  Elsewhere (and for SHA-224/384/512) the EVP path below is used.  The known-answer
 * check of tesla.mac.kernel covers whichever path is active; set_sha_ni(False)
 * forces EVP. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHANI 1

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* nb 64-octet blocks into the state (words H0..H7) */
__attribute__((target("sha,sse4.1,ssse3")))
static void sha256_ni(uint32_t st[8], const unsigned char *p, size_t nb)
{
    const __m128i MASK = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&st[0]), 0xB1); /* CDAB */
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&st[4]), 0x1B); /* EFGH */
    __m128i s0 = _mm_alignr_epi8(t, s1, 8);    /* ABEF */
    s1 = _mm_blend_epi16(s1, t, 0xF0);         /* CDGH */
    while (nb--) {
        __m128i a0 = s0, c0 = s1, w[4], m;
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) {
            if (i < 4) {
                w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), MASK);
            } else { /* W[t] from W[t-16], W[t-15], W[t-7], W[t-2] (FIPS 180-4 §6.2.2) */
                __m128i x = _mm_add_epi32(_mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]),
                                          _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
                w[i & 3] = _mm_sha256msg2_epu32(x, w[(i + 3) & 3]);
            }
            m = _mm_add_epi32(w[i & 3], _mm_loadu_si128((const __m128i *)&K256[4 * i]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
        }
        s0 = _mm_add_epi32(s0, a0);
        s1 = _mm_add_epi32(s1, c0);
        p += 64;
    }
    t = _mm_shuffle_epi32(s0, 0x1B);      /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);     /* DCHG */
    s0 = _mm_blend_epi16(t, s1, 0xF0);    /* DCBA */
    s1 = _mm_alignr_epi8(s1, t, 8);       /* HGFE */
    _mm_storeu_si128((__m128i *)&st[0], s0);
    _mm_storeu_si128((__m128i *)&st[4], s1);
}

/* nb 64-octet blocks into the SHA-1 state (words H0..H4) */
__attribute__((target("sha,sse4.1,ssse3")))
static void sha1_ni(uint32_t st[5], const unsigned char *p, size_t nb)
{
    const __m128i MASK = _mm_set_epi64x(0x0001020304050607ULL, 0x08090a0b0c0d0e0fULL);
    __m128i abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)st), 0x1B);
    __m128i e0 = _mm_set_epi32((int)st[4], 0, 0, 0);
    while (nb--) {
        __m128i abcd0 = abcd, e00 = e0, w[4], e[2];
        e[0] = e0;
        e[1] = e0;
#pragma GCC unroll 20
        for (int i = 0; i < 20; i++) { /* 4 rounds each (FIPS 180-4 §6.1.2) */
            int c = i & 1;
            if (i < 4) {
                w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), MASK);
            } else { /* W[t] = ROTL1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16]) */
                w[i & 3] = _mm_sha1msg2_epu32(
                    _mm_xor_si128(_mm_sha1msg1_epu32(w[i & 3], w[(i + 1) & 3]), w[(i + 2) & 3]),
                    w[(i + 3) & 3]);
            }
            e[c] = i == 0 ? _mm_add_epi32(e[0], w[0]) : _mm_sha1nexte_epu32(e[c], w[i & 3]);
            e[c ^ 1] = abcd;
            switch (i / 5) {
            case 0: abcd = _mm_sha1rnds4_epu32(abcd, e[c], 0); break;
            case 1: abcd = _mm_sha1rnds4_epu32(abcd, e[c], 1); break;
            case 2: abcd = _mm_sha1rnds4_epu32(abcd, e[c], 2); break;
            default: abcd = _mm_sha1rnds4_epu32(abcd, e[c], 3); break;
            }
        }
        e0 = _mm_sha1nexte_epu32(e[0], e00);
        abcd = _mm_add_epi32(abcd, abcd0);
        p += 64;
    }
    _mm_storeu_si128((__m128i *)st, _mm_shuffle_epi32(abcd, 0x1B));
    st[4] = (uint32_t)_mm_extract_epi32(e0, 3);
}

/* One block of each of two independent messages, their rounds interleaved: one
 * SHA256RNDS2 chain is bound by the instruction's latency, two chains fill the
 * pipeline (the multi-buffer idea).  States as in sha256_ni (words H0..H7). */
__attribute__((target("sha,sse4.1,ssse3")))
static void sha256_ni_x2(uint32_t sa[8], uint32_t sb[8], const unsigned char *pa,
                         const unsigned char *pb)
{
    const __m128i MASK = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i ta = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&sa[0]), 0xB1);
    __m128i a1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&sa[4]), 0x1B);
    __m128i a0 = _mm_alignr_epi8(ta, a1, 8);
    a1 = _mm_blend_epi16(a1, ta, 0xF0);
    __m128i tb = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&sb[0]), 0xB1);
    __m128i b1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&sb[4]), 0x1B);
    __m128i b0 = _mm_alignr_epi8(tb, b1, 8);
    b1 = _mm_blend_epi16(b1, tb, 0xF0);
    __m128i sa0 = a0, sa1 = a1, sb0 = b0, sb1 = b1, wa[4], wb[4], ma, mb;
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
        if (i < 4) {
            wa[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pa + 16 * i)), MASK);
            wb[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pb + 16 * i)), MASK);
        } else {
            __m128i xa = _mm_add_epi32(_mm_sha256msg1_epu32(wa[i & 3], wa[(i + 1) & 3]),
                                       _mm_alignr_epi8(wa[(i + 3) & 3], wa[(i + 2) & 3], 4));
            __m128i xb = _mm_add_epi32(_mm_sha256msg1_epu32(wb[i & 3], wb[(i + 1) & 3]),
                                       _mm_alignr_epi8(wb[(i + 3) & 3], wb[(i + 2) & 3], 4));
            wa[i & 3] = _mm_sha256msg2_epu32(xa, wa[(i + 3) & 3]);
            wb[i & 3] = _mm_sha256msg2_epu32(xb, wb[(i + 3) & 3]);
        }
        __m128i k = _mm_loadu_si128((const __m128i *)&K256[4 * i]);
        ma = _mm_add_epi32(wa[i & 3], k);
        mb = _mm_add_epi32(wb[i & 3], k);
        a1 = _mm_sha256rnds2_epu32(a1, a0, ma);
        b1 = _mm_sha256rnds2_epu32(b1, b0, mb);
        a0 = _mm_sha256rnds2_epu32(a0, a1, _mm_shuffle_epi32(ma, 0x0E));
        b0 = _mm_sha256rnds2_epu32(b0, b1, _mm_shuffle_epi32(mb, 0x0E));
    }
    a0 = _mm_add_epi32(a0, sa0);
    a1 = _mm_add_epi32(a1, sa1);
    b0 = _mm_add_epi32(b0, sb0);
    b1 = _mm_add_epi32(b1, sb1);
    ta = _mm_shuffle_epi32(a0, 0x1B);
    a1 = _mm_shuffle_epi32(a1, 0xB1);
    _mm_storeu_si128((__m128i *)&sa[0], _mm_blend_epi16(ta, a1, 0xF0));
    _mm_storeu_si128((__m128i *)&sa[4], _mm_alignr_epi8(a1, ta, 8));
    tb = _mm_shuffle_epi32(b0, 0x1B);
    b1 = _mm_shuffle_epi32(b1, 0xB1);
    _mm_storeu_si128((__m128i *)&sb[0], _mm_blend_epi16(tb, b1, 0xF0));
    _mm_storeu_si128((__m128i *)&sb[4], _mm_alignr_epi8(b1, tb, 8));
}

/* SHA-1 the same way: one block of each of two messages (states: words H0..H4) */
__attribute__((target("sha,sse4.1,ssse3")))
static void sha1_ni_x2(uint32_t sa[5], uint32_t sb[5], const unsigned char *pa,
                       const unsigned char *pb)
{
    const __m128i MASK = _mm_set_epi64x(0x0001020304050607ULL, 0x08090a0b0c0d0e0fULL);
    __m128i aa = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)sa), 0x1B);
    __m128i ab = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)sb), 0x1B);
    __m128i ea0 = _mm_set_epi32((int)sa[4], 0, 0, 0), eb0 = _mm_set_epi32((int)sb[4], 0, 0, 0);
    __m128i aa0 = aa, ab0 = ab, wa[4], wb[4], ea[2], eb[2];
    ea[0] = ea[1] = ea0;
    eb[0] = eb[1] = eb0;
#pragma GCC unroll 20
    for (int i = 0; i < 20; i++) {
        int c = i & 1;
        if (i < 4) {
            wa[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pa + 16 * i)), MASK);
            wb[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pb + 16 * i)), MASK);
        } else {
            wa[i & 3] = _mm_sha1msg2_epu32(
                _mm_xor_si128(_mm_sha1msg1_epu32(wa[i & 3], wa[(i + 1) & 3]), wa[(i + 2) & 3]),
                wa[(i + 3) & 3]);
            wb[i & 3] = _mm_sha1msg2_epu32(
                _mm_xor_si128(_mm_sha1msg1_epu32(wb[i & 3], wb[(i + 1) & 3]), wb[(i + 2) & 3]),
                wb[(i + 3) & 3]);
        }
        ea[c] = i == 0 ? _mm_add_epi32(ea[0], wa[0]) : _mm_sha1nexte_epu32(ea[c], wa[i & 3]);
        eb[c] = i == 0 ? _mm_add_epi32(eb[0], wb[0]) : _mm_sha1nexte_epu32(eb[c], wb[i & 3]);
        ea[c ^ 1] = aa;
        eb[c ^ 1] = ab;
        switch (i / 5) {
        case 0:
            aa = _mm_sha1rnds4_epu32(aa, ea[c], 0);
            ab = _mm_sha1rnds4_epu32(ab, eb[c], 0);
            break;
        case 1:
            aa = _mm_sha1rnds4_epu32(aa, ea[c], 1);
            ab = _mm_sha1rnds4_epu32(ab, eb[c], 1);
            break;
        case 2:
            aa = _mm_sha1rnds4_epu32(aa, ea[c], 2);
            ab = _mm_sha1rnds4_epu32(ab, eb[c], 2);
            break;
        default:
            aa = _mm_sha1rnds4_epu32(aa, ea[c], 3);
            ab = _mm_sha1rnds4_epu32(ab, eb[c], 3);
            break;
        }
    }
    ea0 = _mm_sha1nexte_epu32(ea[0], ea0);
    eb0 = _mm_sha1nexte_epu32(eb[0], eb0);
    _mm_storeu_si128((__m128i *)sa, _mm_shuffle_epi32(_mm_add_epi32(aa, aa0), 0x1B));
    _mm_storeu_si128((__m128i *)sb, _mm_shuffle_epi32(_mm_add_epi32(ab, ab0), 0x1B));
    sa[4] = (uint32_t)_mm_extract_epi32(ea0, 3);
    sb[4] = (uint32_t)_mm_extract_epi32(eb0, 3);
}

static int cpu_has_shani(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 9)) || !(c & (1u << 19)))
        return 0; /* SSSE3, SSE4.1 */
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1; /* SHA */
}
#endif

static int use_shani = 0; /* set at module init from CPUID */

typedef struct {
    uint32_t h[8];     /* SHA-256: H0..H7; SHA-1: H0..H4 */
    uint64_t len;      /* octets absorbed */
    unsigned char buf[64];
    size_t num;        /* octets waiting in buf */
    int sha1;
} shs;

static void shs_blocks(shs *c, const unsigned char *p, size_t nb)
{
#ifdef HAVE_SHANI
    if (c->sha1)
        sha1_ni(c->h, p, nb);
    else
        sha256_ni(c->h, p, nb);
#else
    (void)c; (void)p; (void)nb;
#endif
}

static void shs_init(shs *c, int sha1)
{
    static const uint32_t IV256[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    static const uint32_t IV1[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    memset(c, 0, sizeof *c);
    c->sha1 = sha1;
    if (sha1)
        memcpy(c->h, IV1, sizeof IV1);
    else
        memcpy(c->h, IV256, sizeof IV256);
}

static void shs_update(shs *c, const unsigned char *p, size_t n)
{
    c->len += n;
    if (c->num) {
        size_t m = 64 - c->num < n ? 64 - c->num : n;
        memcpy(c->buf + c->num, p, m);
        c->num += m;
        p += m;
        n -= m;
        if (c->num < 64)
            return;
        shs_blocks(c, c->buf, 1);
        c->num = 0;
    }
    if (n >= 64) {
        shs_blocks(c, p, n / 64);
        p += n / 64 * 64;
        n %= 64;
    }
    if (n) {
        memcpy(c->buf, p, n);
        c->num = n;
    }
}

/* the digest (20 or 32 octets) into out; the state is spent */
static void shs_final(shs *c, unsigned char *out)
{
    uint64_t bits = c->len * 8;
    c->buf[c->num++] = 0x80;
    if (c->num > 56) {
        memset(c->buf + c->num, 0, 64 - c->num);
        shs_blocks(c, c->buf, 1);
        c->num = 0;
    }
    memset(c->buf + c->num, 0, 56 - c->num);
    for (int j = 0; j < 8; j++)
        c->buf[63 - j] = (unsigned char)(bits >> (8 * j));
    shs_blocks(c, c->buf, 1);
    for (int j = 0; j < (c->sha1 ? 5 : 8); j++) {
        out[4 * j] = (unsigned char)(c->h[j] >> 24);
        out[4 * j + 1] = (unsigned char)(c->h[j] >> 16);
        out[4 * j + 2] = (unsigned char)(c->h[j] >> 8);
        out[4 * j + 3] = (unsigned char)c->h[j];
    }
}

/* ------------------------------------------------------------------ HMAC core */
typedef struct {
    EVP_MD_CTX *i, *o, *w; /* EVP path: inner and outer keyed states, work state */
    int dlen, block;
    int ni;                /* SHA-NI path (SHA-1, SHA-256): the same three */
    shs si, so, sw;
} hkey;

static void hkey_free(hkey *h)
{
    EVP_MD_CTX_free(h->i);
    EVP_MD_CTX_free(h->o);
    EVP_MD_CTX_free(h->w);
    h->i = h->o = h->w = NULL;
}

/* The keyed states of HMAC (RFC 2104 §2); 0 on success.  Runs without the GIL. */
static int hkey_init(hkey *h, int alg, const unsigned char *key, size_t klen)
{
    unsigned char kb[EVP_MAX_MD_SIZE], pad[MAX_BLOCK];
    unsigned int kl = 0;
    const EVP_MD *md = mds[alg];
    h->dlen = EVP_MD_get_size(md);
    h->block = EVP_MD_get_block_size(md);
    h->ni = (alg == 0 || alg == 2) && use_shani;
    if (h->block <= 0 || h->block > MAX_BLOCK || h->dlen <= 0 || h->dlen > EVP_MAX_MD_SIZE)
        goto fail;
    if (klen > (size_t)h->block) { /* a key longer than a block is hashed first */
        if (!EVP_Digest(key, klen, kb, &kl, md, NULL))
            goto fail;
        key = kb;
        klen = kl;
    }
    for (int j = 0; j < h->block; j++)
        pad[j] = (unsigned char)(((size_t)j < klen ? key[j] : 0) ^ 0x36);
    if (h->ni) {
        shs_init(&h->si, alg == 0);
        h->so = h->si;
        shs_update(&h->si, pad, 64);
        for (int j = 0; j < 64; j++)
            pad[j] ^= 0x36 ^ 0x5c;
        shs_update(&h->so, pad, 64);
        return 0;
    }
    h->i = EVP_MD_CTX_new();
    h->o = EVP_MD_CTX_new();
    h->w = EVP_MD_CTX_new();
    if (!h->i || !h->o || !h->w)
        goto fail;
    if (!EVP_DigestInit_ex(h->i, md, NULL) || !EVP_DigestUpdate(h->i, pad, h->block))
        goto fail;
    for (int j = 0; j < h->block; j++)
        pad[j] ^= 0x36 ^ 0x5c;
    if (!EVP_DigestInit_ex(h->o, md, NULL) || !EVP_DigestUpdate(h->o, pad, h->block))
        goto fail;
    if (!EVP_DigestInit_ex(h->w, md, NULL))
        goto fail;
    return 0;
fail:
    hkey_free(h);
    return -1;
}

static int h_start(hkey *h)
{
    if (h->ni) {
        h->sw = h->si;
        return 1;
    }
    return EVP_MD_CTX_copy_ex(h->w, h->i);
}

static int h_update(hkey *h, const unsigned char *p, size_t n)
{
    if (h->ni) {
        shs_update(&h->sw, p, n);
        return 1;
    }
    return EVP_DigestUpdate(h->w, p, n);
}

/* Finish the inner hash in the work state, then the outer one into out (dlen octets). */
static int hmac_finish(hkey *h, unsigned char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    if (h->ni) {
        shs_final(&h->sw, md);
        h->sw = h->so;
        shs_update(&h->sw, md, (size_t)h->dlen);
        shs_final(&h->sw, out);
        return 1;
    }
    return EVP_DigestFinal_ex(h->w, md, NULL) && EVP_MD_CTX_copy_ex(h->w, h->o)
        && EVP_DigestUpdate(h->w, md, (size_t)h->dlen) && EVP_DigestFinal_ex(h->w, out, NULL);
}

static const unsigned char ZEROS[256];

static int update_zeros(hkey *h, size_t n)
{
    while (n) {
        size_t m = n < sizeof ZEROS ? n : sizeof ZEROS;
        if (!h_update(h, ZEROS, m))
            return 0;
        n -= m;
    }
    return 1;
}

/* HMAC of p[0:n] with p[a1:b1] and p[a2:b2] read as zeros (empty ranges: a == b; the
 * ranges may overlap; all within [0, n]).  Nothing is written into p. */
static int hmac_zeroed(hkey *h, const unsigned char *p, size_t n, size_t a1, size_t b1,
                       size_t a2, size_t b2, unsigned char *out)
{
    size_t fe = b1 > b2 ? b1 : b2;
    if (!h_start(h))
        return 0;
    if (fe == 0)
        return h_update(h, p, n) && hmac_finish(h, out);
    size_t blk = (size_t)h->block, cut = (fe + blk - 1) / blk * blk;
    if (cut > n)
        cut = n;
    if (cut <= SCRATCH) {
        /* the whole blocks holding the fields, copied with the fields zeroed: the rest
         * is absorbed in place, block-aligned */
        unsigned char s[SCRATCH];
        memcpy(s, p, cut);
        memset(s + a1, 0, b1 - a1);
        memset(s + a2, 0, b2 - a2);
        if (!h_update(h, s, cut))
            return 0;
        return (cut == n || h_update(h, p + cut, n - cut)) && hmac_finish(h, out);
    }
    /* far fields: data and zero runs in order (the non-empty ranges sorted, overlapping
     * or touching ones merged) */
    size_t ra[2], rb[2];
    int nr = 0;
    if (a1 < b1) { ra[nr] = a1; rb[nr++] = b1; }
    if (a2 < b2) { ra[nr] = a2; rb[nr++] = b2; }
    if (nr == 2 && ra[1] < ra[0]) {
        size_t t = ra[0]; ra[0] = ra[1]; ra[1] = t;
        t = rb[0]; rb[0] = rb[1]; rb[1] = t;
    }
    if (nr == 2 && ra[1] <= rb[0]) {
        if (rb[1] > rb[0])
            rb[0] = rb[1];
        nr = 1;
    }
    size_t pos = 0;
    for (int r = 0; r < nr; r++) {
        if (ra[r] > pos && !h_update(h, p + pos, ra[r] - pos))
            return 0;
        if (!update_zeros(h, rb[r] - ra[r]))
            return 0;
        pos = rb[r];
    }
    return (pos == n || h_update(h, p + pos, n - pos)) && hmac_finish(h, out);
}

/* ------------------------------------------------------------------ many rows at once */

/* One row of a batch: HMAC of p[0:n] with p[a1:b1] and p[a2:b2] read as zeros (empty
 * ranges: a == b), the digest into md. */
typedef struct {
    const unsigned char *p;
    size_t n, a1, b1, a2, b2;
    unsigned char md[EVP_MAX_MD_SIZE];
} mrow;

#ifdef HAVE_SHANI
/* A lane of the two-message scheduler: the row it hashes, the next block, and the one
 * 64-octet scratch block for blocks that are not taken in place (a zeroed field, the
 * padding, the outer hash's block). */
typedef struct {
    uint32_t h[8];
    mrow *r;     /* NULL: idle */
    size_t blk;  /* next block of the inner message */
    size_t nb;   /* blocks of the inner message after the key block: data and padding */
    int outer;   /* 1: the outer hash's one block is next */
    unsigned char scr[64];
} nilane;

static void put_be32(unsigned char *o, const uint32_t *h, int words)
{
    for (int j = 0; j < words; j++) {
        o[4 * j] = (unsigned char)(h[j] >> 24);
        o[4 * j + 1] = (unsigned char)(h[j] >> 16);
        o[4 * j + 2] = (unsigned char)(h[j] >> 8);
        o[4 * j + 3] = (unsigned char)h[j];
    }
}

static void put_bitlen(unsigned char *blk, uint64_t octets)
{
    uint64_t bits = octets * 8;
    for (int j = 0; j < 8; j++)
        blk[63 - j] = (unsigned char)(bits >> (8 * j));
}

static int overlaps(size_t a, size_t b, size_t off)
{
    return a < b && a < off + 64 && b > off;
}

/* The lane's next block: in place when it lies within the row and holds no zeroed
 * octet, else built in the lane's scratch (fields zeroed, FIPS 180-4 §5.1.1 padding;
 * the length counts the key block of RFC 2104 too). */
static const unsigned char *nilane_block(nilane *L, int dlen)
{
    mrow *r = L->r;
    if (L->outer) {
        put_be32(L->scr, L->h, dlen / 4);
        L->scr[dlen] = 0x80;
        memset(L->scr + dlen + 1, 0, 63 - (size_t)dlen);
        put_bitlen(L->scr, 64 + (uint64_t)dlen);
        return L->scr;
    }
    size_t off = 64 * L->blk;
    if (off + 64 <= r->n && !overlaps(r->a1, r->b1, off) && !overlaps(r->a2, r->b2, off))
        return r->p + off;
    size_t c = r->n > off ? (r->n - off < 64 ? r->n - off : 64) : 0;
    memcpy(L->scr, r->p + off, c);
    memset(L->scr + c, 0, 64 - c);
    size_t rg[2][2] = {{r->a1, r->b1}, {r->a2, r->b2}};
    for (int j = 0; j < 2; j++) {
        size_t lo = rg[j][0] > off ? rg[j][0] : off, hi = rg[j][1] < off + 64 ? rg[j][1] : off + 64;
        if (lo < hi)
            memset(L->scr + (lo - off), 0, hi - lo);
    }
    if (r->n >= off && r->n < off + 64)
        L->scr[r->n - off] = 0x80;
    if (L->blk + 1 == L->nb)
        put_bitlen(L->scr, 64 + (uint64_t)r->n);
    return L->scr;
}

/* After a block: the next one, the switch to the outer hash, or the row done (then the
 * lane takes rows[*next] if any). */
static void nilane_advance(nilane *L, const hkey *h, mrow *rows, size_t nrows, size_t *next)
{
    int words = h->dlen / 4;
    if (!L->outer) {
        if (++L->blk < L->nb)
            return;
        L->outer = 1;
        nilane_block(L, h->dlen); /* the inner digest into the scratch before the state goes */
        memcpy(L->h, h->so.h, sizeof L->h);
        return;
    }
    put_be32(L->r->md, L->h, words);
    L->r = NULL;
    if (*next < nrows) {
        L->r = &rows[(*next)++];
        memcpy(L->h, h->si.h, sizeof L->h);
        L->blk = 0;
        L->nb = (L->r->n + 9 + 63) / 64;
        L->outer = 0;
    }
}

/* HMAC-SHA-1 / -256 of the rows, two at a time: two lanes, each taking the next row
 * when its own is done, so rows of any lengths keep both busy; a lone lane runs the
 * one-message function. */
static void hmac_many_ni(const hkey *h, mrow *rows, size_t nrows)
{
    nilane L[2];
    size_t next = 0;
    int sha1 = h->si.sha1;
    for (int j = 0; j < 2; j++) {
        L[j].r = NULL;
        if (next < nrows) {
            L[j].r = &rows[next++];
            memcpy(L[j].h, h->si.h, sizeof L[j].h);
            L[j].blk = 0;
            L[j].nb = (L[j].r->n + 9 + 63) / 64;
            L[j].outer = 0;
        }
    }
    for (;;) {
        nilane *x = L[0].r ? &L[0] : (L[1].r ? &L[1] : NULL);
        if (x == NULL)
            return;
        if (L[0].r && L[1].r) {
            const unsigned char *p0, *p1;
            if (L[0].outer) /* the outer block is built when the inner hash ends */
                p0 = L[0].scr;
            else
                p0 = nilane_block(&L[0], h->dlen);
            p1 = L[1].outer ? L[1].scr : nilane_block(&L[1], h->dlen);
            if (sha1)
                sha1_ni_x2(L[0].h, L[1].h, p0, p1);
            else
                sha256_ni_x2(L[0].h, L[1].h, p0, p1);
            nilane_advance(&L[0], h, rows, nrows, &next);
            nilane_advance(&L[1], h, rows, nrows, &next);
        } else {
            const unsigned char *p = x->outer ? x->scr : nilane_block(x, h->dlen);
            if (sha1)
                sha1_ni(x->h, p, 1);
            else
                sha256_ni(x->h, p, 1);
            nilane_advance(x, h, rows, nrows, &next);
        }
    }
}

#include "sha256_x16.h" /* HMAC-SHA-256 sixteen rows at a time on AVX-512 */
#endif

/* Every row's HMAC into its md; 0 if a libcrypto call failed.  Runs without the GIL. */
static int hmac_many(hkey *h, mrow *rows, size_t nrows)
{
#ifdef HAVE_SHANI
    if (h->ni) {
        if (use_x16 && !h->si.sha1 && nrows >= (size_t)x16_min_rows)
            hmac_many_x16(h, rows, nrows);
        else
            hmac_many_ni(h, rows, nrows);
        return 1;
    }
#endif
    for (size_t k = 0; k < nrows; k++) {
        mrow *r = &rows[k];
        if (!hmac_zeroed(h, r->p, r->n, r->a1, r->b1, r->a2, r->b2, r->md))
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ rows of a call, in threads */
#include <pthread.h>

#define ROWS_AT_ONCE 64 /* rows hashed per hmac_many call (on the stack) */
#define JOB_CHUNK 32    /* rows a thread takes at a time */
#define MAX_THREADS 16

/* The rows of one mac_arena / verify_arena / hmac_rows call: row k is b[s[k]:s[k] +
 * l[k]] with mlen octets at m[k] and glen at g[k] read as zeros (m, g NULL or -1: no
 * field).  out: its full digest at out + k * dlen; else (verify) tags[k] = the MAC field
 * as received and okp[k] = the digest's first mlen octets equal it. */
typedef struct {
    int alg;
    const unsigned char *key;
    size_t klen;
    const unsigned char *b;
    const int64_t *s, *l, *m, *g;
    size_t mlen, glen;
    Py_ssize_t n;
    unsigned char *out;
    int dlen;
    unsigned char *tags, *okp;
    Py_ssize_t next; /* the next row not taken (atomic) */
    Py_ssize_t fin;  /* rows hashed (atomic) */
    int fail;        /* a libcrypto call failed (atomic) */
} rowjob;

/* Rows k0..k1-1 with the keyed state h; 0 if a libcrypto call failed. */
static int rowjob_rows(rowjob *j, hkey *h, Py_ssize_t k0, Py_ssize_t k1)
{
    mrow rows[ROWS_AT_ONCE];
    while (k0 < k1) {
        size_t c = (size_t)(k1 - k0 < ROWS_AT_ONCE ? k1 - k0 : ROWS_AT_ONCE);
        for (size_t i = 0; i < c; i++) {
            Py_ssize_t k = k0 + (Py_ssize_t)i;
            mrow *r = &rows[i];
            r->p = j->b + j->s[k];
            r->n = (size_t)j->l[k];
            r->a1 = r->b1 = r->a2 = r->b2 = 0;
            if (j->m && j->m[k] >= 0) {
                r->a1 = (size_t)j->m[k];
                r->b1 = r->a1 + j->mlen;
            }
            if (j->g && j->g[k] >= 0) {
                r->a2 = (size_t)j->g[k];
                r->b2 = r->a2 + j->glen;
            }
        }
        if (!hmac_many(h, rows, c))
            return 0;
        for (size_t i = 0; i < c; i++) {
            Py_ssize_t k = k0 + (Py_ssize_t)i;
            if (j->out) {
                memcpy(j->out + k * j->dlen, rows[i].md, (size_t)j->dlen);
                continue;
            }
            const unsigned char *f = rows[i].p + j->m[k];
            memcpy(j->tags + k * (Py_ssize_t)j->mlen, f, j->mlen);
            j->okp[k] = memcmp(rows[i].md, f, j->mlen) == 0;
        }
        k0 += (Py_ssize_t)c;
    }
    return 1;
}

/* A thread's share: chunks of JOB_CHUNK rows taken from the shared counter until none
 * is left, with its own keyed state (nothing allocated per row). */
static void *rowjob_run(void *arg)
{
    rowjob *j = arg;
    hkey h = {0};
    if (hkey_init(&h, j->alg, j->key, j->klen) != 0) {
        __atomic_store_n(&j->fail, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    for (;;) {
        Py_ssize_t k0 = __atomic_fetch_add(&j->next, JOB_CHUNK, __ATOMIC_RELAXED);
        if (k0 >= j->n || __atomic_load_n(&j->fail, __ATOMIC_RELAXED))
            break;
        Py_ssize_t k1 = k0 + JOB_CHUNK < j->n ? k0 + JOB_CHUNK : j->n;
        if (!rowjob_rows(j, &h, k0, k1))
            __atomic_store_n(&j->fail, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&j->fin, k1 - k0, __ATOMIC_RELEASE);
    }
    hkey_free(&h);
    return NULL;
}

/* All rows of the job in nthreads threads (this one and nthreads - 1 started here; fewer
 * when there are few rows or a thread cannot be started).  Runs without the GIL; 0 if a
 * libcrypto call failed. */
static int rowjob_go(rowjob *j, int nthreads)
{
    pthread_t t[MAX_THREADS];
    int started = 0;
    Py_ssize_t most = (j->n + JOB_CHUNK - 1) / JOB_CHUNK;
    if (nthreads > most)
        nthreads = (int)most;
    j->next = 0;
    j->fin = 0;
    j->fail = 0;
    for (int i = 1; i < nthreads; i++) {
        if (pthread_create(&t[started], NULL, rowjob_run, j) != 0)
            break; /* the threads already started and this one do all rows */
        started++;
    }
    rowjob_run(j);
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    return !j->fail;
}

/* nthreads argument: 1..MAX_THREADS */
static int get_nthreads(int nthreads)
{
    if (nthreads < 1 || nthreads > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "nthreads must be 1..%d", MAX_THREADS);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ argument helpers */

static int get_alg(int alg)
{
    if (alg < 0 || alg > 4 || mds[alg] == NULL) {
        PyErr_Format(PyExc_ValueError, "unknown TESLA MAC/PRF hash %d", alg);
        return -1;
    }
    return 0;
}

/* A C-contiguous buffer of n items of itemsize octets (n < 0: any count, set it). */
static int get_array(PyObject *o, Py_buffer *v, int writable, Py_ssize_t itemsize,
                     Py_ssize_t *n, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, v, flags) < 0)
        return -1;
    if (v->itemsize != itemsize || (itemsize == 8 && v->format != NULL
            && strchr("qlQL", v->format[strlen(v->format) - 1]) == NULL)
        || (itemsize == 8 && v->format != NULL && strchr(v->format, '>') != NULL)) {
        PyErr_Format(PyExc_TypeError, "%s: expected an array of %zd-octet %s", what, itemsize,
                     itemsize == 8 ? "integers (int64)" : "items");
        PyBuffer_Release(v);
        return -1;
    }
    Py_ssize_t cnt = v->len / itemsize;
    if (*n >= 0 && cnt != *n) {
        PyErr_Format(PyExc_ValueError, "%s: %zd items, expected %zd", what, cnt, *n);
        PyBuffer_Release(v);
        return -1;
    }
    *n = cnt;
    return 0;
}

/* One held datagram of a sequence: its octets and what keeps them alive. */
typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
    PyObject *obj;  /* a reference (bytes), or NULL when view holds the export */
    Py_buffer *view;
} held;

typedef struct {
    held *items;
    Py_buffer *views; /* allocated on the first item that is not bytes */
    Py_ssize_t n, nviews;
} heldseq;

static void heldseq_release(heldseq *s)
{
    for (Py_ssize_t k = 0; k < s->n; k++) {
        if (s->items[k].view)
            PyBuffer_Release(s->items[k].view);
        Py_XDECREF(s->items[k].obj);
    }
    PyMem_Free(s->items);
    PyMem_Free(s->views);
    s->items = NULL;
    s->views = NULL;
    s->n = 0;
}

/* Hold seq[lo:hi] (bytes or any C-contiguous buffer).  Returns -1 with all held, the
 * index (from lo) of the first item that is neither (nothing held), or -2 on an error
 * (exception set). */
static Py_ssize_t heldseq_get(heldseq *s, PyObject *seq, Py_ssize_t lo, Py_ssize_t hi)
{
    s->items = NULL;
    s->views = NULL;
    s->n = 0;
    s->nviews = 0;
    Py_ssize_t len = PySequence_Size(seq);
    if (len < 0)
        return -2;
    if (lo < 0 || hi > len || lo > hi) {
        PyErr_SetString(PyExc_ValueError, "row range outside the sequence");
        return -2;
    }
    Py_ssize_t n = hi - lo;
    s->items = PyMem_Calloc(n ? (size_t)n : 1, sizeof(held));
    if (!s->items) {
        PyErr_NoMemory();
        return -2;
    }
    int is_list = PyList_Check(seq), is_tuple = PyTuple_Check(seq);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *it;
        if (is_list) {
            it = PyList_GetItem(seq, lo + k);
            Py_XINCREF(it);
        } else if (is_tuple) {
            it = PyTuple_GetItem(seq, lo + k);
            Py_XINCREF(it);
        } else {
            it = PySequence_GetItem(seq, lo + k);
        }
        if (it == NULL) {
            heldseq_release(s);
            return -2;
        }
        held *h = &s->items[k];
        if (PyBytes_Check(it)) {
            char *p;
            if (PyBytes_AsStringAndSize(it, &p, &h->n) < 0) {
                Py_DECREF(it);
                heldseq_release(s);
                return -2;
            }
            h->p = (const unsigned char *)p;
            h->obj = it;
            s->n = k + 1;
            continue;
        }
        if (!PyObject_CheckBuffer(it)) {
            Py_DECREF(it);
            heldseq_release(s);
            return k;
        }
        if (s->views == NULL) {
            s->views = PyMem_Calloc((size_t)(n - k), sizeof(Py_buffer));
            if (!s->views) {
                Py_DECREF(it);
                heldseq_release(s);
                PyErr_NoMemory();
                return -2;
            }
        }
        Py_buffer *v = &s->views[s->nviews];
        int r = PyObject_GetBuffer(it, v, PyBUF_C_CONTIGUOUS);
        Py_DECREF(it);  /* the export holds the object */
        if (r < 0) {
            PyErr_Clear();
            heldseq_release(s);
            return k;
        }
        s->nviews++;
        h->view = v;
        h->p = v->buf;
        h->n = v->len;
        s->n = k + 1;
    }
    return -1;
}


/* A C-contiguous buffer of float64 (n set to the count). */
static int get_farray(PyObject *o, Py_buffer *v, Py_ssize_t *n, const char *what)
{
    if (PyObject_GetBuffer(o, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (v->itemsize != 8 || v->format == NULL || strcmp(v->format, "d") != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected an array of float64", what);
        PyBuffer_Release(v);
        return -1;
    }
    *n = v->len / 8;
    return 0;
}

/* ------------------------------------------------------------------ entry points */

PyDoc_STRVAR(hmac_rows_doc,
"hmac_rows(alg, key, buf, starts, lens, out)\n--\n\n"
"out[k] = HMAC(key, buf[starts[k]:starts[k] + lens[k]]) for every row (full digests,\n"
"out a writable C-contiguous buffer of n * digest size octets); ValueError if a row\n"
"is outside buf (nothing hashed then).");

static PyObject *hmac_rows(PyObject *self, PyObject *args)
{
    int alg;
    Py_buffer key, buf, st = {0}, ln = {0}, out = {0};
    PyObject *sto, *lno, *outo;
    if (!PyArg_ParseTuple(args, "iy*y*OOO", &alg, &key, &buf, &sto, &lno, &outo))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = -1, outn = -1;
    if (get_alg(alg) < 0 || get_array(sto, &st, 0, 8, &n, "starts") < 0)
        goto done;
    if (get_array(lno, &ln, 0, 8, &n, "lens") < 0 || get_array(outo, &out, 1, 1, &outn, "out") < 0)
        goto done;
    const int64_t *s = st.buf, *l = ln.buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (s[k] < 0 || l[k] < 0 || s[k] > buf.len || l[k] > buf.len - s[k]) {
            PyErr_Format(PyExc_ValueError, "row %zd outside the buffer", k);
            goto done;
        }
    }
    int dlen = EVP_MD_get_size(mds[alg]);
    if (outn != n * dlen) {
        PyErr_SetString(PyExc_ValueError, "out: one digest per row");
        goto done;
    }
    int ok = 1;
    rowjob j = {.alg = alg, .key = key.buf, .klen = (size_t)key.len, .b = buf.buf, .s = s,
                .l = l, .n = n, .out = out.buf, .dlen = dlen};
    Py_BEGIN_ALLOW_THREADS
    ok = rowjob_go(&j, 1);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto digest call failed");
        goto done;
    }
    ret = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&buf);
    if (st.obj) PyBuffer_Release(&st);
    if (ln.obj) PyBuffer_Release(&ln);
    if (out.obj) PyBuffer_Release(&out);
    return ret;
}

PyDoc_STRVAR(mac_arena_doc,
"mac_arena(alg, key, arena, offsets, lengths, mac_offsets, mac_len, gmac_offsets,\n"
"          gmac_len, out, nthreads=1)\n--\n\n"
"out[k] = HMAC(key, datagram k) over arena[offsets[k]:offsets[k] + lengths[k]] with\n"
"its mac_len octets at mac_offsets[k] and gmac_len octets at gmac_offsets[k] (both\n"
"relative to the datagram; -1: no field) read as zeros (RFC 5776 §3.3.1); nothing is\n"
"written into the arena.  ValueError if a datagram is outside the arena or a field\n"
"outside its datagram (nothing hashed then).  nthreads > 1: the datagrams shared among\n"
"that many threads (this one included), the same result.");

static PyObject *mac_arena(PyObject *self, PyObject *args)
{
    int alg;
    Py_ssize_t mlen, glen;
    Py_buffer key, arena, of = {0}, ln = {0}, mo = {0}, go = {0}, out = {0};
    PyObject *ofo, *lno, *moo, *goo, *outo;
    int nthreads = 1;
    if (!PyArg_ParseTuple(args, "iy*y*OOOnOnO|i", &alg, &key, &arena, &ofo, &lno, &moo, &mlen,
                          &goo, &glen, &outo, &nthreads))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = -1, outn = -1;
    if (get_nthreads(nthreads) < 0 || get_alg(alg) < 0 || get_array(ofo, &of, 0, 8, &n, "offsets") < 0)
        goto done;
    if (get_array(lno, &ln, 0, 8, &n, "lengths") < 0
        || get_array(moo, &mo, 0, 8, &n, "mac_offsets") < 0
        || get_array(goo, &go, 0, 8, &n, "gmac_offsets") < 0
        || get_array(outo, &out, 1, 1, &outn, "out") < 0)
        goto done;
    if (mlen < 0 || glen < 0) {
        PyErr_SetString(PyExc_ValueError, "negative field length");
        goto done;
    }
    const int64_t *s = of.buf, *l = ln.buf, *m = mo.buf, *g = go.buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (s[k] < 0 || l[k] < 0 || s[k] > arena.len || l[k] > arena.len - s[k]) {
            PyErr_Format(PyExc_ValueError, "datagram %zd outside the arena", k);
            goto done;
        }
        if ((m[k] != -1 && (m[k] < 0 || m[k] > l[k] || mlen > l[k] - m[k]))
            || (g[k] != -1 && (g[k] < 0 || g[k] > l[k] || glen > l[k] - g[k]))) {
            PyErr_Format(PyExc_ValueError, "datagram %zd: a field outside the datagram", k);
            goto done;
        }
    }
    int dlen = EVP_MD_get_size(mds[alg]);
    if (outn != n * dlen) {
        PyErr_SetString(PyExc_ValueError, "out: one digest per datagram");
        goto done;
    }
    int ok = 1;
    rowjob j = {.alg = alg, .key = key.buf, .klen = (size_t)key.len, .b = arena.buf, .s = s,
                .l = l, .m = m, .g = g, .mlen = (size_t)mlen, .glen = (size_t)glen, .n = n,
                .out = out.buf, .dlen = dlen};
    Py_BEGIN_ALLOW_THREADS
    ok = rowjob_go(&j, nthreads);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto digest call failed");
        goto done;
    }
    ret = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&arena);
    if (of.obj) PyBuffer_Release(&of);
    if (ln.obj) PyBuffer_Release(&ln);
    if (mo.obj) PyBuffer_Release(&mo);
    if (go.obj) PyBuffer_Release(&go);
    if (out.obj) PyBuffer_Release(&out);
    return ret;
}


/* verify_arena's and start_job's argument check: every datagram inside the arena (alen
 * octets), its MAC field (mlen octets at m[k], 1 <= mlen <= the digest size) and Group MAC
 * field (glen at g[k], -1: none) inside it, tn tag octets = n * mlen; -1 with ValueError. */
static int check_verify_rows(int alg, const int64_t *s, const int64_t *l, const int64_t *m,
                             const int64_t *g, Py_ssize_t n, Py_ssize_t alen, Py_ssize_t mlen,
                             Py_ssize_t glen, Py_ssize_t tn)
{
    if (mlen < 1 || mlen > EVP_MD_get_size(mds[alg]) || glen < 0 || tn != n * mlen) {
        PyErr_SetString(PyExc_ValueError, "bad field length, or tags not mac_len octets per datagram");
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        if (s[k] < 0 || l[k] < 0 || s[k] > alen || l[k] > alen - s[k]) {
            PyErr_Format(PyExc_ValueError, "datagram %zd outside the arena", k);
            return -1;
        }
        if (m[k] < 0 || m[k] > l[k] || mlen > l[k] - m[k]
            || (g[k] != -1 && (g[k] < 0 || g[k] > l[k] || glen > l[k] - g[k]))) {
            PyErr_Format(PyExc_ValueError, "datagram %zd: a field outside the datagram", k);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(verify_arena_doc,
"verify_arena(alg, key, arena, offsets, lengths, mac_offsets, mac_len, gmac_offsets,\n"
"             gmac_len, tags, ok, cut=True, nthreads=1) -> list\n--\n\n"
"mac_arena's HMAC of every datagram (the MAC and Group MAC fields read as zeros), then\n"
"tags[k] = its mac_len-octet MAC field as received, ok[k] = the HMAC truncated to\n"
"mac_len equals it; returns the octets of the ok datagrams as bytes, in order, each cut\n"
"right after it was hashed (64 datagrams at a time: hashed without the GIL, cut with\n"
"it); cut=False: an empty list, all hashed in one stretch without the GIL.  ValueError\n"
"if a datagram is outside the arena or a field outside its datagram\n"
"(nothing hashed then).  nthreads > 1: the hashing shared among that many threads (this\n"
"one included) without the GIL, then the cut; the same result.");

#define VERIFY_CHUNK 64

static PyObject *verify_arena(PyObject *self, PyObject *args)
{
    int alg;
    Py_ssize_t mlen, glen;
    Py_buffer key, arena, of = {0}, ln = {0}, mo = {0}, go = {0}, tg = {0}, okb = {0};
    PyObject *ofo, *lno, *moo, *goo, *tgo, *oko;
    int do_cut = 1, nthreads = 1;
    if (!PyArg_ParseTuple(args, "iy*y*OOOnOnOO|pi", &alg, &key, &arena, &ofo, &lno, &moo, &mlen,
                          &goo, &glen, &tgo, &oko, &do_cut, &nthreads))
        return NULL;
    PyObject *ret = NULL, *lst = NULL;
    hkey h = {0};
    int keyed = 0;
    Py_ssize_t n = -1, tn = -1;
    if (get_nthreads(nthreads) < 0 || get_alg(alg) < 0 || get_array(ofo, &of, 0, 8, &n, "offsets") < 0)
        goto done;
    if (get_array(lno, &ln, 0, 8, &n, "lengths") < 0
        || get_array(moo, &mo, 0, 8, &n, "mac_offsets") < 0
        || get_array(goo, &go, 0, 8, &n, "gmac_offsets") < 0
        || get_array(tgo, &tg, 1, 1, &tn, "tags") < 0
        || get_array(oko, &okb, 1, 1, &n, "ok") < 0)
        goto done;
    const int64_t *s = of.buf, *l = ln.buf, *m = mo.buf, *g = go.buf;
    if (check_verify_rows(alg, s, l, m, g, n, arena.len, mlen, glen, tn) < 0)
        goto done;
    lst = PyList_New(0);
    if (lst == NULL)
        goto done;
    const unsigned char *b = arena.buf;
    unsigned char *tags = tg.buf, *okp = okb.buf;
    int fine = 1;
    rowjob j = {.alg = alg, .key = key.buf, .klen = (size_t)key.len, .b = b, .s = s, .l = l,
                .m = m, .g = g, .mlen = (size_t)mlen, .glen = (size_t)glen, .n = n,
                .tags = tags, .okp = okp};
    /* several threads, or no cut: all hashed in one stretch without the GIL (a
     * background thread then never waits for it), then cut; else 64 datagrams at a time */
    int at_once = nthreads > 1 || !do_cut;
    Py_BEGIN_ALLOW_THREADS
    if (at_once)
        fine = rowjob_go(&j, nthreads);
    else
        fine = hkey_init(&h, alg, key.buf, (size_t)key.len) == 0;
    Py_END_ALLOW_THREADS
    keyed = !at_once;
    Py_ssize_t chunk = at_once ? (n > 0 ? n : 1) : VERIFY_CHUNK;
    for (Py_ssize_t k0 = 0; fine && k0 < n; k0 += chunk) {
        Py_ssize_t k1 = k0 + chunk < n ? k0 + chunk : n;
        if (!at_once) {
            Py_BEGIN_ALLOW_THREADS
            fine = rowjob_rows(&j, &h, k0, k1);
            Py_END_ALLOW_THREADS
        }
        for (Py_ssize_t k = k0; fine && do_cut && k < k1; k++) {
            if (!okp[k])
                continue;
            PyObject *d = PyBytes_FromStringAndSize((const char *)b + s[k], l[k]);
            if (d == NULL || PyList_Append(lst, d) < 0) {
                Py_XDECREF(d);
                goto done;
            }
            Py_DECREF(d);
        }
    }
    if (!fine) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto digest call failed");
        goto done;
    }
    ret = lst;
    lst = NULL;
done:
    if (keyed)
        hkey_free(&h);
    Py_XDECREF(lst);
    PyBuffer_Release(&key);
    PyBuffer_Release(&arena);
    Py_buffer *all[] = {&of, &ln, &mo, &go, &tg, &okb};
    for (size_t j = 0; j < sizeof all / sizeof all[0]; j++)
        if (all[j]->obj)
            PyBuffer_Release(all[j]);
    return ret;
}

/* ------------------------------------------------------------------ verify jobs */

/* verify_arena's hashing (no cut) running in native threads started here, while the
 * caller goes on with the GIL; the caller finishes it when it needs the result, taking
 * the rows those threads have not taken instead of waiting (the row counter hands each
 * chunk to one thread).  No Python thread and no GIL hand-over on the way. */
#define VJOB_NAME "tesla.mac._mac.vjob"

typedef struct {
    rowjob j;
    Py_buffer key, arena, of, ln, mo, go, tg, okb;
    pthread_t t[MAX_THREADS];
    int started; /* threads started and not joined */
} vjob;

static void vjob_join(vjob *v)
{
    for (int i = 0; i < v->started; i++)
        pthread_join(v->t[i], NULL);
    v->started = 0;
}

static void vjob_free(PyObject *cap)
{
    vjob *v = PyCapsule_GetPointer(cap, VJOB_NAME);
    if (v == NULL) {
        PyErr_Clear();
        return;
    }
    if (v->started) { /* dropped unfinished: its threads still read the buffers */
        Py_BEGIN_ALLOW_THREADS
        vjob_join(v);
        Py_END_ALLOW_THREADS
    }
    Py_buffer *all[] = {&v->key, &v->arena, &v->of, &v->ln, &v->mo, &v->go, &v->tg, &v->okb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->obj)
            PyBuffer_Release(all[i]);
    PyMem_Free(v);
}

static vjob *vjob_get(PyObject *cap)
{
    return PyCapsule_GetPointer(cap, VJOB_NAME);
}

PyDoc_STRVAR(start_job_doc,
"start_job(alg, key, arena, offsets, lengths, mac_offsets, mac_len, gmac_offsets,\n"
"          gmac_len, tags, ok, nthreads) -> job\n--\n\n"
"verify_arena's hashing without the cut, started in nthreads native threads (0: none,\n"
"finish_job does it all); returns at once.  The arguments are checked first\n"
"(ValueError as verify_arena's, nothing started) and held, buffers included, until the\n"
"job is freed (which waits for its threads).  tags and ok are written by those threads:\n"
"read them only after finish_job.");

static PyObject *start_job(PyObject *self, PyObject *args)
{
    int alg, nthreads;
    Py_ssize_t mlen, glen;
    PyObject *ofo, *lno, *moo, *goo, *tgo, *oko;
    vjob *v = PyMem_Calloc(1, sizeof *v);
    if (v == NULL)
        return PyErr_NoMemory();
    if (!PyArg_ParseTuple(args, "iy*y*OOOnOnOOi", &alg, &v->key, &v->arena, &ofo, &lno, &moo,
                          &mlen, &goo, &glen, &tgo, &oko, &nthreads)) {
        PyMem_Free(v);
        return NULL;
    }
    PyObject *cap = PyCapsule_New(v, VJOB_NAME, vjob_free); /* owns v and its buffers now */
    if (cap == NULL) {
        PyBuffer_Release(&v->key);
        PyBuffer_Release(&v->arena);
        PyMem_Free(v);
        return NULL;
    }
    Py_ssize_t n = -1, tn = -1;
    if (nthreads < 0 || nthreads > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "nthreads must be 0..%d", MAX_THREADS);
        goto fail;
    }
    if (get_alg(alg) < 0 || get_array(ofo, &v->of, 0, 8, &n, "offsets") < 0
        || get_array(lno, &v->ln, 0, 8, &n, "lengths") < 0
        || get_array(moo, &v->mo, 0, 8, &n, "mac_offsets") < 0
        || get_array(goo, &v->go, 0, 8, &n, "gmac_offsets") < 0
        || get_array(tgo, &v->tg, 1, 1, &tn, "tags") < 0
        || get_array(oko, &v->okb, 1, 1, &n, "ok") < 0)
        goto fail;
    const int64_t *s = v->of.buf, *l = v->ln.buf, *m = v->mo.buf, *g = v->go.buf;
    if (check_verify_rows(alg, s, l, m, g, n, v->arena.len, mlen, glen, tn) < 0)
        goto fail;
    v->j = (rowjob){.alg = alg, .key = v->key.buf, .klen = (size_t)v->key.len, .b = v->arena.buf,
                    .s = s, .l = l, .m = m, .g = g, .mlen = (size_t)mlen, .glen = (size_t)glen,
                    .n = n, .tags = v->tg.buf, .okp = v->okb.buf};
    Py_ssize_t most = (n + JOB_CHUNK - 1) / JOB_CHUNK;
    for (int i = 0; i < nthreads && i < most; i++) {
        if (pthread_create(&v->t[v->started], NULL, rowjob_run, &v->j) != 0)
            break; /* finish_job takes what no thread took */
        v->started++;
    }
    return cap;
fail:
    Py_DECREF(cap);
    return NULL;
}

PyDoc_STRVAR(job_done_doc,
"job_done(job) -> bool\n--\n\n"
"Whether every row of the job is hashed (or a libcrypto call failed): finish_job would\n"
"not wait.");

static PyObject *job_done(PyObject *self, PyObject *cap)
{
    vjob *v = vjob_get(cap);
    if (v == NULL)
        return NULL;
    return PyBool_FromLong(__atomic_load_n(&v->j.fin, __ATOMIC_ACQUIRE) >= v->j.n
                           || __atomic_load_n(&v->j.fail, __ATOMIC_RELAXED));
}

PyDoc_STRVAR(finish_job_doc,
"finish_job(job)\n--\n\n"
"Hash the rows of the job no thread has taken (in this thread, without the GIL), then\n"
"wait for its threads; tags and ok are complete after it.  RuntimeError if a libcrypto\n"
"call failed.  Again on a finished job: returns at once.");

static PyObject *finish_job(PyObject *self, PyObject *cap)
{
    vjob *v = vjob_get(cap);
    if (v == NULL)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rowjob_run(&v->j);
    vjob_join(v);
    Py_END_ALLOW_THREADS
    if (__atomic_load_n(&v->j.fail, __ATOMIC_RELAXED)) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto digest call failed");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ key chains */

PyDoc_STRVAR(chain_walk_doc,
"chain_walk(alg, key, n, msg, every) -> bytes\n--\n\n"
"The key chain below key = K_n (RFC 4082 §3.2, RFC 5776 §3.1.2.1): K_{t-1} = HMAC(K_t,\n"
"msg), full digests, t = n..1.  Returns K_t for t = 0, every, 2*every, ... below n, in\n"
"that order, back to back (digest size each); the keys between are computed and\n"
"forgotten.  Without the GIL; ValueError on n < 0, every < 1 or a bad hash.");

static PyObject *chain_walk(PyObject *self, PyObject *args)
{
    int alg;
    Py_buffer key, msg;
    Py_ssize_t n, every;
    if (!PyArg_ParseTuple(args, "iy*ny*n", &alg, &key, &n, &msg, &every))
        return NULL;
    PyObject *ret = NULL;
    if (get_alg(alg) < 0)
        goto done;
    if (n < 0 || every < 1) {
        PyErr_SetString(PyExc_ValueError, "chain_walk: n >= 0 and every >= 1");
        goto done;
    }
    int dlen = EVP_MD_get_size(mds[alg]);
    Py_ssize_t count = n ? (n - 1) / every + 1 : 0;
    ret = PyBytes_FromStringAndSize(NULL, count * dlen);
    if (ret == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AsString(ret);
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    unsigned char k[EVP_MAX_MD_SIZE];
    const unsigned char *kp = key.buf;
    size_t kl = (size_t)key.len;
    for (Py_ssize_t t = n - 1; ok && t >= 0; t--) {
        hkey h = {0};
        ok = hkey_init(&h, alg, kp, kl) == 0 && h_start(&h)
             && h_update(&h, msg.buf, (size_t)msg.len) && hmac_finish(&h, k);
        hkey_free(&h);
        kp = k;
        kl = (size_t)dlen;
        if (ok && t % every == 0)
            memcpy(out + (t / every) * dlen, k, (size_t)dlen);
    }
    Py_END_ALLOW_THREADS
    if (!ok) {
        Py_CLEAR(ret);
        PyErr_SetString(PyExc_RuntimeError, "libcrypto digest call failed");
    }
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&msg);
    return ret;
}

PyDoc_STRVAR(heads_doc,
"heads(pkts, rows, lens) -> int\n--\n\n"
"lens[k] = len(pkts[k]); rows (n * width octets) gets the first width octets of each\n"
"(zero-filled).  Returns -1, or the index of the first item that is not a buffer.");

static PyObject *heads(PyObject *self, PyObject *args)
{
    PyObject *seq, *rwo, *lno;
    Py_buffer rw = {0}, ln = {0};
    if (!PyArg_ParseTuple(args, "OOO", &seq, &rwo, &lno))
        return NULL;
    PyObject *ret = NULL;
    heldseq hs = {0};
    Py_ssize_t n = PySequence_Size(seq), rn = -1;
    if (n < 0 || get_array(lno, &ln, 1, 8, &n, "lens") < 0 || get_array(rwo, &rw, 1, 1, &rn, "rows") < 0)
        goto done;
    if ((n && rn % n) || (!n && rn)) {
        PyErr_SetString(PyExc_ValueError, "rows: one row of equal width per datagram");
        goto done;
    }
    Py_ssize_t W = n ? rn / n : 0;
    Py_ssize_t bad = heldseq_get(&hs, seq, 0, n);
    if (bad == -2)
        goto done;
    if (bad < 0) {
        unsigned char *r = rw.buf;
        int64_t *lens = ln.buf;
        for (Py_ssize_t k = 0; k < n; k++) {
            Py_ssize_t L = hs.items[k].n, c = L < W ? L : W;
            lens[k] = L;
            memcpy(r + k * W, hs.items[k].p, (size_t)c);
            memset(r + k * W + c, 0, (size_t)(W - c));
        }
    }
    ret = PyLong_FromSsize_t(bad);
done:
    heldseq_release(&hs);
    if (rw.obj) PyBuffer_Release(&rw);
    if (ln.obj) PyBuffer_Release(&ln);
    return ret;
}

PyDoc_STRVAR(pack_doc,
"pack(pkts, dst, starts) -> int\n--\n\n"
"dst[starts[k]:starts[k] + len(pkts[k])] = pkts[k] for every k; ValueError (nothing\n"
"written) if one would not fit in dst.  Returns -1, or the index of the first item that\n"
"is not a buffer (nothing written).");

static PyObject *pack(PyObject *self, PyObject *args)
{
    PyObject *seq, *dso, *sto;
    Py_buffer ds = {0}, st = {0};
    if (!PyArg_ParseTuple(args, "OOO", &seq, &dso, &sto))
        return NULL;
    PyObject *ret = NULL;
    heldseq hs = {0};
    Py_ssize_t n = PySequence_Size(seq), dn = -1;
    if (n < 0 || get_array(sto, &st, 0, 8, &n, "starts") < 0 || get_array(dso, &ds, 1, 1, &dn, "dst") < 0)
        goto done;
    Py_ssize_t bad = heldseq_get(&hs, seq, 0, n);
    if (bad == -2)
        goto done;
    if (bad < 0) {
        const int64_t *s = st.buf;
        for (Py_ssize_t k = 0; k < n; k++) {
            if (s[k] < 0 || s[k] > dn || hs.items[k].n > dn - s[k]) {
                PyErr_Format(PyExc_ValueError, "datagram %zd outside the buffer", k);
                goto done;
            }
        }
        unsigned char *d = ds.buf;
        for (Py_ssize_t k = 0; k < n; k++)
            memcpy(d + s[k], hs.items[k].p, (size_t)hs.items[k].n);
    }
    ret = PyLong_FromSsize_t(bad);
done:
    heldseq_release(&hs);
    if (ds.obj) PyBuffer_Release(&ds);
    if (st.obj) PyBuffer_Release(&st);
    return ret;
}

/* ------------------------------------------------------------------ sender: seal */

#define SEAL_MAX_PREFIX 8

PyDoc_STRVAR(seal_doc,
"seal(alg, key, pkts, hb, prefixes, kinds, mac_len, seq0, out, starts, lens)\n--\n\n"
"The TESLA sender's tag (RFC 5776 §3.3.1, §3.4): each datagram k of pkts gets the\n"
"EXT_AUTH octets prefixes[kinds[k]], a mac_len-octet MAC field and zero padding to a\n"
"32-bit boundary inserted right after its header (the header length, in 32-bit words at\n"
"octet hb, increased by as many words); with seq0 >= 0 (NORM) octets 2-3 are set to\n"
"(seq0 + k) mod 2^16; then the MAC field is set to the first mac_len octets of\n"
"HMAC(key, datagram with the MAC field zero).  No Group MAC.  out None: returns the\n"
"datagrams as a list of bytes.  Else the datagrams are written back to back into out (a\n"
"writable buffer) from offset 0, their offsets and lengths into starts and lens\n"
"(writable int64 arrays of len(pkts) items), and the octets written are returned; if\n"
"out is too short, -(octets needed) is returned and nothing written into out.\n"
"ValueError (nothing written) on a header length that does not fit its datagram or\n"
"would exceed 255 words.");

static PyObject *seal(PyObject *self, PyObject *args)
{
    int alg, hb;
    long long seq0;
    Py_ssize_t km;
    Py_buffer key, kinds, out = {0}, st = {0}, lnb = {0};
    PyObject *seq, *pfo, *outo, *sto, *lno;
    if (!PyArg_ParseTuple(args, "iy*OiOy*nLOOO", &alg, &key, &seq, &hb, &pfo, &kinds, &km, &seq0,
                          &outo, &sto, &lno))
        return NULL;
    PyObject *ret = NULL, *lst = NULL;
    heldseq hs = {0};
    hkey h = {0};
    unsigned char **dst = NULL;
    const unsigned char *pre[SEAL_MAX_PREFIX];
    Py_ssize_t plen[SEAL_MAX_PREFIX], L[SEAL_MAX_PREFIX];
    Py_ssize_t np = 0, n = 0;
    if (get_alg(alg) < 0)
        goto done;
    if (!PyTuple_Check(pfo) || (np = PyTuple_Size(pfo)) < 1 || np > SEAL_MAX_PREFIX) {
        PyErr_SetString(PyExc_TypeError, "prefixes: a tuple of 1..8 bytes");
        goto done;
    }
    int dlen = EVP_MD_get_size(mds[alg]);
    if (km < 0 || km > dlen || hb < 0 || hb > 3) {
        PyErr_SetString(PyExc_ValueError, "mac_len or hb out of range");
        goto done;
    }
    for (Py_ssize_t j = 0; j < np; j++) {
        char *q;
        PyObject *it = PyTuple_GetItem(pfo, j);
        if (it == NULL || !PyBytes_Check(it) || PyBytes_AsStringAndSize(it, &q, &plen[j]) < 0) {
            PyErr_SetString(PyExc_TypeError, "prefixes: a tuple of bytes");
            goto done;
        }
        pre[j] = (const unsigned char *)q;
        L[j] = (plen[j] + km + 3) / 4 * 4;
    }
    Py_ssize_t nseq = PySequence_Size(seq);
    if (nseq < 0)
        goto done;
    Py_ssize_t bad = heldseq_get(&hs, seq, 0, nseq);
    if (bad == -2)
        goto done;
    if (bad >= 0) {
        PyErr_Format(PyExc_TypeError, "datagram %zd is not a buffer", bad);
        goto done;
    }
    n = hs.n;
    if (kinds.len != n) {
        PyErr_SetString(PyExc_ValueError, "kinds: one octet per datagram");
        goto done;
    }
    const unsigned char *kd = kinds.buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        const held *d = &hs.items[k];
        if (kd[k] >= np) {
            PyErr_Format(PyExc_ValueError, "datagram %zd: kind outside prefixes", k);
            goto done;
        }
        Py_ssize_t e = d->n > hb ? (Py_ssize_t)d->p[hb] * 4 : 0;
        if (e <= hb || e > d->n || (seq0 >= 0 && e < 4)) {
            PyErr_Format(PyExc_ValueError, "datagram %zd: header length does not fit the packet", k);
            goto done;
        }
        if (d->p[hb] + L[kd[k]] / 4 > 255) {
            PyErr_Format(PyExc_ValueError,
                         "datagram %zd: header would exceed 255 words with the EXT_AUTH", k);
            goto done;
        }
    }
    dst = PyMem_Calloc(n ? (size_t)n : 1, sizeof *dst);
    if (dst == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = 0;
    if (outo == Py_None) {
        lst = PyList_New(n);
        if (lst == NULL)
            goto done;
        for (Py_ssize_t k = 0; k < n; k++) {
            PyObject *b = PyBytes_FromStringAndSize(NULL, hs.items[k].n + L[kd[k]]);
            if (b == NULL)
                goto done;
            dst[k] = (unsigned char *)PyBytes_AsString(b);
            PyList_SetItem(lst, k, b); /* steals b */
        }
    } else {
        Py_ssize_t on = -1, sn = n, ln_ = n;
        if (get_array(outo, &out, 1, 1, &on, "out") < 0 || get_array(sto, &st, 1, 8, &sn, "starts") < 0
            || get_array(lno, &lnb, 1, 8, &ln_, "lens") < 0)
            goto done;
        int64_t *s = st.buf, *l = lnb.buf;
        for (Py_ssize_t k = 0; k < n; k++) {
            s[k] = total;
            l[k] = hs.items[k].n + L[kd[k]];
            total += l[k];
        }
        if (total > on) {
            ret = PyLong_FromSsize_t(-total);
            goto done;
        }
        for (Py_ssize_t k = 0; k < n; k++)
            dst[k] = (unsigned char *)out.buf + s[k];
    }
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    ok = hkey_init(&h, alg, key.buf, (size_t)key.len) == 0;
    /* ROWS_AT_ONCE datagrams built (MAC field zero), hashed two at a time (hmac_many),
     * their MAC fields set */
    mrow rows[ROWS_AT_ONCE];
    for (Py_ssize_t k0 = 0; ok && k0 < n; k0 += ROWS_AT_ONCE) {
        Py_ssize_t c = n - k0 < ROWS_AT_ONCE ? n - k0 : ROWS_AT_ONCE;
        for (Py_ssize_t i = 0; i < c; i++) {
            Py_ssize_t k = k0 + i;
            const unsigned char *p = hs.items[k].p;
            size_t len = (size_t)hs.items[k].n, e = (size_t)p[hb] * 4;
            int j = kd[k];
            size_t Lj = (size_t)L[j], pl = (size_t)plen[j];
            unsigned char *o = dst[k];
            memcpy(o, p, e);
            o[hb] = (unsigned char)(p[hb] + Lj / 4);
            if (seq0 >= 0) {
                unsigned v = (unsigned)((seq0 + k) & 0xFFFF);
                o[2] = (unsigned char)(v >> 8);
                o[3] = (unsigned char)v;
            }
            memcpy(o + e, pre[j], pl);
            memset(o + e + pl, 0, Lj - pl);
            memcpy(o + e + Lj, p + e, len - e);
            mrow *r = &rows[i];
            r->p = o;
            r->n = len + Lj;
            r->a1 = r->b1 = r->a2 = r->b2 = 0;
        }
        ok = hmac_many(&h, rows, (size_t)c);
        for (Py_ssize_t i = 0; ok && i < c; i++) {
            Py_ssize_t k = k0 + i;
            size_t e = (size_t)hs.items[k].p[hb] * 4, pl = (size_t)plen[kd[k]];
            memcpy(dst[k] + e + pl, rows[i].md, (size_t)km);
        }
    }
    hkey_free(&h);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto digest call failed");
        goto done;
    }
    if (lst != NULL) {
        ret = lst;
        lst = NULL;
    } else {
        ret = PyLong_FromSsize_t(total);
    }
done:
    Py_XDECREF(lst);
    PyMem_Free(dst);
    heldseq_release(&hs);
    PyBuffer_Release(&key);
    PyBuffer_Release(&kinds);
    if (out.obj) PyBuffer_Release(&out);
    if (st.obj) PyBuffer_Release(&st);
    if (lnb.obj) PyBuffer_Release(&lnb);
    return ret;
}

PyDoc_STRVAR(lane_doc,
"lane(pkts, width, lens, k0, n, times, cls, clsv, slots, bounds, keys, arenas,\n"
"     budget, overhead, rows, rslot) -> (m, reason, which)\n--\n\n"
"The receiver's lane (tesla.core.receiver) over datagrams k0..n-1: pkts a sequence of bytes\n"
"or buffers (width < 0), or the rows of a recvmmsg slab (a C-contiguous buffer of rows\n"
"of width octets, lens[k] octets used).  Datagram k is taken while: it has a known\n"
"layout class c (length >= cls[c,0], clsv[c,j] at the cls[c,5+j] octets), its interval\n"
"index (4 octets at cls[c,1] + 4) is slot s's interval slots[s,0], bounds[s,0] <=\n"
"times[k] < bounds[s,1], its disclosed key (class Type 1 / 4) equals keys[s,0 / 1]\n"
"(slots[s,4 / 5]: known), the slot has room for a packet\n"
"(slots[s,1]) and the byte budget for length + overhead; then it is copied to\n"
"arenas[s] at slots[s,3] (< slots[s,2], the arena capacity) and rows[m] = (start, length,\n"
"MAC offset cls[c,3], -1), rslot[m] = s | c << 8 | e << 16, e = 1 when class c is Type 3\n"
"and the datagram's commitment (kp octets after the interval index) equals that of slot s's\n"
"first Type 3 datagram of this call.  Returns how many (m) and why it stopped:\n"
"0 the end, 1 datagram k0 + m is not for the lane, 2 slot `which` has no room for it,\n"
"3 datagram k0 + m has no known layout class.  slots[:, 1] and [:, 3] are updated.");

#define LANE_COLS 32
#define LANE_CHUNK 64

static PyObject *lane(PyObject *self, PyObject *args)
{
    PyObject *seq, *lno, *tmo, *clo, *cvo, *slo, *bdo, *kyo, *aro, *rwo, *rso;
    Py_ssize_t width, k0, n, overhead;
    long long budget;
    if (!PyArg_ParseTuple(args, "OnOnnOOOOOOOLnOO", &seq, &width, &lno, &k0, &n, &tmo, &clo,
                          &cvo, &slo, &bdo, &kyo, &aro, &budget, &overhead, &rwo, &rso))
        return NULL;
    PyObject *ret = NULL;
    Py_buffer tm = {0}, cl = {0}, cv = {0}, sl = {0}, bd = {0}, ky = {0}, rw = {0},
              rs = {0}, slab = {0}, ln = {0};
    Py_buffer ar[8];
    Py_ssize_t nar = 0;
    heldseq hs = {0};
    Py_ssize_t m = 0, which = -1;
    int reason = 0;
    const unsigned char *c3[8] = {0};  /* per slot: its first Type 3 commitment (in the arena) */
    Py_ssize_t cn = -1, cvn = -1, sn = -1, bn = -1, kn = -1, rwn = -1, rsn = -1, tn = -1;
    if (k0 < 0 || n < k0) {
        PyErr_SetString(PyExc_ValueError, "bad datagram range");
        goto done;
    }
    if (get_farray(tmo, &tm, &tn, "times") < 0 || tn < n)
        goto bad_times;
    if (get_array(clo, &cl, 0, 8, &cn, "cls") < 0 || get_array(cvo, &cv, 0, 1, &cvn, "clsv") < 0
        || get_array(slo, &sl, 1, 8, &sn, "slots") < 0 || get_farray(bdo, &bd, &bn, "bounds") < 0
        || get_array(kyo, &ky, 0, 1, &kn, "keys") < 0
        || get_array(rwo, &rw, 1, 8, &rwn, "rows") < 0 || get_array(rso, &rs, 1, 8, &rsn, "rslot") < 0)
        goto done;
    Py_ssize_t nc = cn / (5 + LANE_COLS), ns = sn / 6;
    if (cn % (5 + LANE_COLS) || cvn != nc * LANE_COLS || sn % 6 || bn != 2 * ns
        || (ns && kn % (2 * ns)) || (!ns && kn) || rwn < 4 * (n - k0)
        || rsn < n - k0 || ns > 8 || !PyTuple_Check(aro) || PyTuple_Size(aro) != ns) {
        PyErr_SetString(PyExc_ValueError, "lane: inconsistent table shapes");
        goto done;
    }
    Py_ssize_t kp = ns ? kn / (2 * ns) : 0;
    const int64_t *C = cl.buf, *S0 = sl.buf;
    const unsigned char *CV = cv.buf;
    for (Py_ssize_t c = 0; c < nc; c++) {  /* every octet a class reads lies before its end */
        const int64_t *r = C + c * (5 + LANE_COLS);
        if (r[0] < 8 || r[1] < 0 || r[1] + 8 + (r[2] == 2 ? 0 : kp) > r[0] || r[3] < 0 || r[3] > r[0]
            || r[4] < 0 || r[4] > LANE_COLS) {
            PyErr_SetString(PyExc_ValueError, "lane: bad layout class");
            goto done;
        }
        for (int64_t j = 0; j < r[4]; j++)
            if (r[5 + j] < 0 || r[5 + j] >= r[0]) {
                PyErr_SetString(PyExc_ValueError, "lane: layout octet beyond the header");
                goto done;
            }
    }
    for (Py_ssize_t s = 0; s < ns; s++) {
        if (PyObject_GetBuffer(PyTuple_GetItem(aro, s), &ar[s], PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
            goto done;
        nar = s + 1;
        if (S0[6 * s + 2] < 0 || S0[6 * s + 2] > ar[s].len || S0[6 * s + 3] < 0
            || S0[6 * s + 3] > S0[6 * s + 2]) {
            PyErr_SetString(PyExc_ValueError, "lane: arena use beyond its buffer");
            goto done;
        }
    }
    const unsigned char *sbase = NULL;
    const int64_t *L = NULL;
    if (width >= 0) {
        Py_ssize_t lnn = -1;
        if (PyObject_GetBuffer(seq, &slab, PyBUF_C_CONTIGUOUS) < 0
            || get_array(lno, &ln, 0, 8, &lnn, "lens") < 0)
            goto done;
        if (width < 1 || lnn < n || slab.len / width < n) {
            PyErr_SetString(PyExc_ValueError, "lane: slab smaller than the datagram range");
            goto done;
        }
        L = ln.buf;
        for (Py_ssize_t k = k0; k < n; k++)
            if (L[k] < 0 || L[k] > width) {
                PyErr_SetString(PyExc_ValueError, "lane: datagram longer than its slab row");
                goto done;
            }
        sbase = slab.buf;
    }
    const double *T = tm.buf, *B = bd.buf;
    int64_t *S = sl.buf, *R = rw.buf, *RS = rs.buf;
    const unsigned char *K = ky.buf;
    Py_ssize_t k = k0;
    reason = 0;
    while (k < n && reason == 0) {
        Py_ssize_t hi = k + LANE_CHUNK < n ? k + LANE_CHUNK : n;
        if (width < 0) {
            heldseq_release(&hs);
            Py_ssize_t badk = heldseq_get(&hs, seq, k, hi);
            if (badk == -2)
                goto done;
            if (badk >= 0) {  /* not a buffer: the scalar path decides it */
                if (badk == 0 || heldseq_get(&hs, seq, k, k + badk) != -1) {
                    if (PyErr_Occurred())
                        goto done;
                    reason = 1;
                    break;
                }
                hi = k + badk;
            }
        }
        Py_ssize_t k1 = k;
        Py_BEGIN_ALLOW_THREADS
        for (; k < hi; k++) {
            const unsigned char *p;
            int64_t Lk;
            if (width >= 0) {
                p = sbase + k * width;
                Lk = L[k];
            } else {
                p = hs.items[k - k1].p;
                Lk = hs.items[k - k1].n;
            }
            const int64_t *r = NULL;
            for (Py_ssize_t c = 0; c < nc; c++) {
                const int64_t *q = C + c * (5 + LANE_COLS);
                if (Lk < q[0])
                    continue;
                const unsigned char *v = CV + c * LANE_COLS;
                int64_t j = 0;
                while (j < q[4] && p[q[5 + j]] == v[j])
                    j++;
                if (j == q[4]) {
                    r = q;
                    break;
                }
            }
            if (r == NULL) {
                reason = 3;
                break;
            }
            int64_t off = r[1], typ = r[2];
            const unsigned char *ip = p + off + 4;
            int64_t iv = ((int64_t)ip[0] << 24) | (ip[1] << 16) | (ip[2] << 8) | ip[3];
            Py_ssize_t s = 0;
            while (s < ns && S[6 * s] != iv)
                s++;
            reason = 1;
            if (s == ns || !(B[2 * s] <= T[k] && T[k] < B[2 * s + 1]) || S[6 * s + 1] <= 0)
                break;
            if (typ == 1 || typ == 4) {
                int e = typ == 1 ? 0 : 1;
                if (!S[6 * s + 4 + e] || memcmp(p + off + 8, K + (2 * s + e) * kp, (size_t)kp))
                    break;
            }
            if (Lk + overhead > budget)
                break;
            if (S[6 * s + 3] + Lk > S[6 * s + 2]) {
                reason = 2;
                which = s;
                break;
            }
            reason = 0;
            memcpy((unsigned char *)ar[s].buf + S[6 * s + 3], p, (size_t)Lk);
            int64_t *o = R + 4 * m;
            o[0] = S[6 * s + 3];
            o[1] = Lk;
            o[2] = r[3];
            o[3] = -1;
            int64_t same = 0;
            if (typ == 3) {
                const unsigned char *cm = (const unsigned char *)ar[s].buf + S[6 * s + 3] + off + 8;
                if (c3[s] == NULL)
                    c3[s] = cm;
                else
                    same = memcmp(cm, c3[s], (size_t)kp) == 0;
            }
            RS[m] = s | ((r - C) / (5 + LANE_COLS)) << 8 | same << 16;
            m++;
            S[6 * s + 3] += Lk;
            S[6 * s + 1] -= 1;
            budget -= Lk + overhead;
        }
        Py_END_ALLOW_THREADS
    }
    ret = Py_BuildValue("nin", m, reason, which);
    goto done;
bad_times:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "lane: fewer arrival times than datagrams");
done:
    heldseq_release(&hs);
    for (Py_ssize_t s = 0; s < nar; s++)
        PyBuffer_Release(&ar[s]);
    Py_buffer *all[] = {&tm, &cl, &cv, &sl, &bd, &ky, &rw, &rs, &slab, &ln};
    for (size_t j = 0; j < sizeof all / sizeof all[0]; j++)
        if (all[j]->obj)
            PyBuffer_Release(all[j]);
    return ret;
}

PyDoc_STRVAR(digest_size_doc, "digest_size(alg) -> int\n--\n\nOctets of the hash's output.");

static PyObject *digest_size(PyObject *self, PyObject *arg)
{
    long alg = PyLong_AsLong(arg);
    if (alg == -1 && PyErr_Occurred())
        return NULL;
    if (get_alg((int)alg) < 0)
        return NULL;
    return PyLong_FromLong(EVP_MD_get_size(mds[alg]));
}

static PyObject *openssl_version(PyObject *self, PyObject *noarg)
{
    return PyUnicode_FromString(OpenSSL_version(OPENSSL_VERSION));
}

static PyObject *sha_ni(PyObject *self, PyObject *noarg)
{
    return PyBool_FromLong(use_shani);
}

static PyObject *set_sha_ni(PyObject *self, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
#ifdef HAVE_SHANI
    use_shani = on && cpu_has_shani();
#endif
    return PyBool_FromLong(use_shani);
}

static PyObject *x16(PyObject *self, PyObject *noarg)
{
#ifdef HAVE_SHANI
    return PyBool_FromLong(use_x16 && use_shani);
#else
    return PyBool_FromLong(0);
#endif
}

static PyObject *set_x16(PyObject *self, PyObject *args)
{
    int on, min_rows = -1, tail = -1;
    if (!PyArg_ParseTuple(args, "p|ii", &on, &min_rows, &tail))
        return NULL;
#ifdef HAVE_SHANI
    use_x16 = on && x16_ok;
    if (min_rows >= 0)
        x16_min_rows = min_rows;
    if (tail >= 0)
        x16_tail = tail > 16 ? 16 : tail;
    return PyBool_FromLong(use_x16 && use_shani);
#else
    return PyBool_FromLong(0);
#endif
}

static PyMethodDef methods[] = {
    {"x16", x16, METH_NOARGS,
     "Whether HMAC-SHA-256 calls of enough rows run sixteen rows at a time on AVX-512."},
    {"set_x16", set_x16, METH_VARARGS,
     "set_x16(on, min_rows=-1, tail=-1): use the AVX-512 sixteen-lane path for HMAC-SHA-256\n"
     "where the CPU and OS allow it and SHA-NI is on (rows of a call >= min_rows; lanes\n"
     "left to SHA-NI at the end <= tail; -1 keeps each); returns whether it is used."},
    {"sha_ni", sha_ni, METH_NOARGS,
     "Whether HMAC-SHA-1 and -SHA-256 run on the CPU's SHA instructions (else OpenSSL EVP)."},
    {"set_sha_ni", set_sha_ni, METH_O,
     "Use the SHA-instruction path for SHA-1/-256 where the CPU has it (True) or EVP (False);\n"
     "returns whether it is used.  Not to be called while a loop runs."},
    {"hmac_rows", hmac_rows, METH_VARARGS, hmac_rows_doc},
    {"mac_arena", mac_arena, METH_VARARGS, mac_arena_doc},
    {"verify_arena", verify_arena, METH_VARARGS, verify_arena_doc},
    {"start_job", start_job, METH_VARARGS, start_job_doc},
    {"chain_walk", chain_walk, METH_VARARGS, chain_walk_doc},
    {"job_done", job_done, METH_O, job_done_doc},
    {"finish_job", finish_job, METH_O, finish_job_doc},
    {"heads", heads, METH_VARARGS, heads_doc},
    {"pack", pack, METH_VARARGS, pack_doc},
    {"seal", seal, METH_VARARGS, seal_doc},
    {"lane", lane, METH_VARARGS, lane_doc},
    {"digest_size", digest_size, METH_O, digest_size_doc},
    {"openssl_version", openssl_version, METH_NOARGS, "The libcrypto version string."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "tesla.mac._mac",
    "Native HMAC loops of tesla.mac.kernel (OpenSSL EVP, limited API).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__mac(void)
{
    for (int a = 0; a < 5; a++) {
        if (mds[a] == NULL)
            mds[a] = EVP_MD_fetch(NULL, MD_NAMES[a], NULL);
        if (mds[a] == NULL) {
            PyErr_Format(PyExc_ImportError, "libcrypto has no %s digest", MD_NAMES[a]);
            return NULL;
        }
    }
#ifdef HAVE_SHANI
    use_shani = cpu_has_shani();
    x16_ok = x16_cpu();
    x16_init_k();
    { /* TESLA_MAC_X16=1 / 0: the sixteen-lane path on / off (default: X16_DEFAULT) */
        const char *e = getenv("TESLA_MAC_X16");
        int on = X16_DEFAULT;
        if (e && *e)
            on = strcmp(e, "0") && strcasecmp(e, "no") && strcasecmp(e, "off") && strcasecmp(e, "false");
        use_x16 = x16_ok && on;
    }
#endif
    return PyModule_Create(&moddef);
}
