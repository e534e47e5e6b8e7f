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

static int hmac_one(hkey *h, const unsigned char *p, size_t n, unsigned char *out)
{
    return h_start(h) && h_update(h, p, n) && hmac_finish(h, out);
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
    hkey h = {0};
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
    Py_BEGIN_ALLOW_THREADS
    ok = hkey_init(&h, alg, key.buf, (size_t)key.len) == 0;
    unsigned char *o = out.buf;
    const unsigned char *b = buf.buf;
    for (Py_ssize_t k = 0; ok && k < n; k++)
        ok = hmac_one(&h, b + s[k], (size_t)l[k], o + k * dlen);
    hkey_free(&h);
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
"          gmac_len, out)\n--\n\n"
"out[k] = HMAC(key, datagram k) over arena[offsets[k]:offsets[k] + lengths[k]] with\n"
"its mac_len octets at mac_offsets[k] and gmac_len octets at gmac_offsets[k] (both\n"
"relative to the datagram; -1: no field) read as zeros (RFC 5776 §3.3.1); nothing is\n"
"written into the arena.  ValueError if a datagram is outside the arena or a field\n"
"outside its datagram (nothing hashed then).");

static PyObject *mac_arena(PyObject *self, PyObject *args)
{
    int alg;
    Py_ssize_t mlen, glen;
    Py_buffer key, arena, of = {0}, ln = {0}, mo = {0}, go = {0}, out = {0};
    PyObject *ofo, *lno, *moo, *goo, *outo;
    if (!PyArg_ParseTuple(args, "iy*y*OOOnOnO", &alg, &key, &arena, &ofo, &lno, &moo, &mlen,
                          &goo, &glen, &outo))
        return NULL;
    PyObject *ret = NULL;
    hkey h = {0};
    Py_ssize_t n = -1, outn = -1;
    if (get_alg(alg) < 0 || get_array(ofo, &of, 0, 8, &n, "offsets") < 0)
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
    Py_BEGIN_ALLOW_THREADS
    ok = hkey_init(&h, alg, key.buf, (size_t)key.len) == 0;
    unsigned char *o = out.buf;
    const unsigned char *b = arena.buf;
    for (Py_ssize_t k = 0; ok && k < n; k++) {
        size_t a1 = 0, b1 = 0, a2 = 0, b2 = 0;
        if (m[k] >= 0) { a1 = (size_t)m[k]; b1 = a1 + (size_t)mlen; }
        if (g[k] >= 0) { a2 = (size_t)g[k]; b2 = a2 + (size_t)glen; }
        ok = hmac_zeroed(&h, b + s[k], (size_t)l[k], a1, b1, a2, b2, o + k * dlen);
    }
    hkey_free(&h);
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


PyDoc_STRVAR(verify_arena_doc,
"verify_arena(alg, key, arena, offsets, lengths, mac_offsets, mac_len, gmac_offsets,\n"
"             gmac_len, tags, ok, cut=True) -> list\n--\n\n"
"mac_arena's HMAC of every datagram (the MAC and Group MAC fields read as zeros), then\n"
"tags[k] = its mac_len-octet MAC field as received, ok[k] = the HMAC truncated to\n"
"mac_len equals it; returns the octets of the ok datagrams as bytes, in order, each cut\n"
"right after it was hashed (64 datagrams at a time: hashed without the GIL, cut with\n"
"it); cut=False: an empty list, all hashed in one stretch without the GIL.  ValueError\n"
"if a datagram is outside the arena or a field outside its datagram\n"
"(nothing hashed then).");

#define VERIFY_CHUNK 64

static PyObject *verify_arena(PyObject *self, PyObject *args)
{
    int alg;
    Py_ssize_t mlen, glen;
    Py_buffer key, arena, of = {0}, ln = {0}, mo = {0}, go = {0}, tg = {0}, okb = {0};
    PyObject *ofo, *lno, *moo, *goo, *tgo, *oko;
    int do_cut = 1;
    if (!PyArg_ParseTuple(args, "iy*y*OOOnOnOO|p", &alg, &key, &arena, &ofo, &lno, &moo, &mlen,
                          &goo, &glen, &tgo, &oko, &do_cut))
        return NULL;
    PyObject *ret = NULL, *lst = NULL;
    hkey h = {0};
    int keyed = 0;
    Py_ssize_t n = -1, tn = -1;
    if (get_alg(alg) < 0 || get_array(ofo, &of, 0, 8, &n, "offsets") < 0)
        goto done;
    if (get_array(lno, &ln, 0, 8, &n, "lengths") < 0
        || get_array(moo, &mo, 0, 8, &n, "mac_offsets") < 0
        || get_array(goo, &go, 0, 8, &n, "gmac_offsets") < 0
        || get_array(tgo, &tg, 1, 1, &tn, "tags") < 0
        || get_array(oko, &okb, 1, 1, &n, "ok") < 0)
        goto done;
    int dlen = EVP_MD_get_size(mds[alg]);
    if (mlen < 1 || mlen > dlen || glen < 0 || tn != n * mlen) {
        PyErr_SetString(PyExc_ValueError, "bad field length, or tags not mac_len octets per datagram");
        goto done;
    }
    const int64_t *s = of.buf, *l = ln.buf, *m = mo.buf, *g = go.buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (s[k] < 0 || l[k] < 0 || s[k] > arena.len || l[k] > arena.len - s[k]) {
            PyErr_Format(PyExc_ValueError, "datagram %zd outside the arena", k);
            goto done;
        }
        if (m[k] < 0 || m[k] > l[k] || mlen > l[k] - m[k]
            || (g[k] != -1 && (g[k] < 0 || g[k] > l[k] || glen > l[k] - g[k]))) {
            PyErr_Format(PyExc_ValueError, "datagram %zd: a field outside the datagram", k);
            goto done;
        }
    }
    lst = PyList_New(0);
    if (lst == NULL)
        goto done;
    const unsigned char *b = arena.buf;
    unsigned char *tags = tg.buf, *okp = okb.buf;
    int fine = 1;
    Py_BEGIN_ALLOW_THREADS
    fine = hkey_init(&h, alg, key.buf, (size_t)key.len) == 0;
    Py_END_ALLOW_THREADS
    keyed = 1;
    /* without the cut: one stretch without the GIL (a background thread then never
     * waits for it) */
    Py_ssize_t chunk = do_cut ? VERIFY_CHUNK : (n > 0 ? n : 1);
    for (Py_ssize_t k0 = 0; fine && k0 < n; k0 += chunk) {
        Py_ssize_t k1 = k0 + chunk < n ? k0 + chunk : n;
        Py_BEGIN_ALLOW_THREADS
        unsigned char md[EVP_MAX_MD_SIZE];
        for (Py_ssize_t k = k0; fine && k < k1; k++) {
            size_t a2 = 0, b2 = 0;
            if (g[k] >= 0) { a2 = (size_t)g[k]; b2 = a2 + (size_t)glen; }
            const unsigned char *p = b + s[k];
            fine = hmac_zeroed(&h, p, (size_t)l[k], (size_t)m[k], (size_t)(m[k] + mlen), a2, b2, md);
            memcpy(tags + k * mlen, p + m[k], (size_t)mlen);
            okp[k] = fine && memcmp(md, p + m[k], (size_t)mlen) == 0;
        }
        Py_END_ALLOW_THREADS
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
    unsigned char md[EVP_MAX_MD_SIZE];
    for (Py_ssize_t k = 0; ok && k < n; k++) {
        const unsigned char *p = hs.items[k].p;
        size_t len = (size_t)hs.items[k].n, e = (size_t)p[hb] * 4;
        int j = kd[k];
        size_t Lj = (size_t)L[j], pl = (size_t)plen[j];
        unsigned char *o = dst[k];
        if (k + 1 < n) { /* the next datagram is read from memory while this one is hashed */
            const unsigned char *q = hs.items[k + 1].p;
            for (Py_ssize_t off = 0; off < hs.items[k + 1].n; off += 64)
                __builtin_prefetch(q + off, 0, 3);
        }
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
        ok = hmac_one(&h, o, len + Lj, md);
        memcpy(o + e + pl, md, (size_t)km);
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
"lane(pkts, width, lens, k0, n, times, cls, clsv, slots, bounds, keys, arenas, srcs,\n"
"     budget, overhead, rows, rslot) -> (m, reason, which)\n--\n\n"
"The receiver's lane (tesla.core.receiver) over datagrams k0..n-1: pkts a sequence of bytes\n"
"or buffers (width < 0), or the rows of a recvmmsg slab (a C-contiguous buffer of rows\n"
"of width octets, lens[k] octets used).  Datagram k is taken while: it has a known\n"
"layout class c (length >= cls[c,0], clsv[c,j] at the cls[c,5+j] octets), its interval\n"
"index (4 octets at cls[c,1] + 4) is slot s's interval slots[s,0], bounds[s,0] <=\n"
"times[k] < bounds[s,1], its disclosed key (class Type 1 / 4) equals keys[s,0 / 1]\n"
"(slots[s,4 / 5]: known), its NORM (source, sequence) is newer than the source's\n"
"highest accepted in srcs (row 0: (1, 0) for NORM, else (0, 0); then rows (source,\n"
"highest)), the slot has room for a packet\n"
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
    PyObject *seq, *lno, *tmo, *clo, *cvo, *slo, *bdo, *kyo, *aro, *sro, *rwo, *rso;
    Py_ssize_t width, k0, n, overhead;
    long long budget;
    if (!PyArg_ParseTuple(args, "OnOnnOOOOOOOOLnOO", &seq, &width, &lno, &k0, &n, &tmo, &clo,
                          &cvo, &slo, &bdo, &kyo, &aro, &sro, &budget, &overhead, &rwo, &rso))
        return NULL;
    PyObject *ret = NULL;
    Py_buffer tm = {0}, cl = {0}, cv = {0}, sl = {0}, bd = {0}, ky = {0}, sr = {0}, rw = {0},
              rs = {0}, slab = {0}, ln = {0};
    Py_buffer ar[8];
    Py_ssize_t nar = 0;
    heldseq hs = {0};
    Py_ssize_t m = 0, which = -1;
    int reason = 0;
    const unsigned char *c3[8] = {0};  /* per slot: its first Type 3 commitment (in the arena) */
    Py_ssize_t cn = -1, cvn = -1, sn = -1, bn = -1, kn = -1, srn = -1, rwn = -1, rsn = -1, tn = -1;
    if (k0 < 0 || n < k0) {
        PyErr_SetString(PyExc_ValueError, "bad datagram range");
        goto done;
    }
    if (get_farray(tmo, &tm, &tn, "times") < 0 || tn < n)
        goto bad_times;
    if (get_array(clo, &cl, 0, 8, &cn, "cls") < 0 || get_array(cvo, &cv, 0, 1, &cvn, "clsv") < 0
        || get_array(slo, &sl, 1, 8, &sn, "slots") < 0 || get_farray(bdo, &bd, &bn, "bounds") < 0
        || get_array(kyo, &ky, 0, 1, &kn, "keys") < 0 || get_array(sro, &sr, 0, 8, &srn, "srcs") < 0
        || get_array(rwo, &rw, 1, 8, &rwn, "rows") < 0 || get_array(rso, &rs, 1, 8, &rsn, "rslot") < 0)
        goto done;
    Py_ssize_t nc = cn / (5 + LANE_COLS), ns = sn / 6, nsrc = -1;
    if (cn % (5 + LANE_COLS) || cvn != nc * LANE_COLS || sn % 6 || bn != 2 * ns
        || (ns && kn % (2 * ns)) || (!ns && kn) || srn % 2 || srn < 2 || rwn < 4 * (n - k0)
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
    /* srcs row 0: (1, 0) for NORM (then rows 1.. are the sources), else (0, 0) */
    const int64_t *SR = (const int64_t *)sr.buf + 2;
    if (((const int64_t *)sr.buf)[0] == 1)
        nsrc = srn / 2 - 1;
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
            if (nsrc >= 0) {  /* NORM (RFC 5776 §6.2.2): newer than the highest accepted */
                uint32_t src = ((uint32_t)p[4] << 24) | (p[5] << 16) | (p[6] << 8) | p[7];
                int64_t sq = (p[2] << 8) | p[3];
                Py_ssize_t q = 0;
                while (q < nsrc && SR[2 * q] != (int64_t)src)
                    q++;
                if (q < nsrc && ((SR[2 * q + 1] - sq) & 0xFFFF) < 0x8000)
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
    Py_buffer *all[] = {&tm, &cl, &cv, &sl, &bd, &ky, &sr, &rw, &rs, &slab, &ln};
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

static PyMethodDef methods[] = {
    {"sha_ni", sha_ni, METH_NOARGS,
     "Whether HMAC-SHA-1 and -SHA-256 run on the CPU's SHA instructions (else OpenSSL EVP)."},
    {"set_sha_ni", set_sha_ni, METH_O,
     "Use the SHA-instruction path for SHA-1/-256 where the CPU has it (True) or EVP (False);\n"
     "returns whether it is used.  Not to be called while a loop runs."},
    {"hmac_rows", hmac_rows, METH_VARARGS, hmac_rows_doc},
    {"mac_arena", mac_arena, METH_VARARGS, mac_arena_doc},
    {"verify_arena", verify_arena, METH_VARARGS, verify_arena_doc},
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
#endif
    return PyModule_Create(&moddef);
}
