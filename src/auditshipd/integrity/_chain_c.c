/* The hash chain's hot loop in C: seal a run of encoded event lines.
 *
 * Writes exactly what integrity/chain.py's StreamChain.seal writes (the reference, and
 * the fallback when this extension is not built): for each line ``{...``
 *
 *   hash = SHA-256("<seq>\n<prev>\n{" + line[1:])   (hex)
 *   out  = {"integrity":{"seq":<seq>,"hash":"<hash>","prev":"<prev>"}[,]<line[1:]>
 *
 * A line that does not start with "{" or that mentions "integrity" (a member the
 * sealer must remove first) ends the run: the caller seals it in Python and calls
 * again from the next line, so the chain's order is never broken.
 *
 * SHA-256 is computed here (no OpenSSL headers needed to build): the SHA extensions
 * of x86-64 when the CPU has them (checked at import), else portable C. Both are
 * held to hashlib by tests/unit/test_integrity_chain_c.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_SHANI_BUILD 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void blocks_portable(uint32_t st[8], const uint8_t *p, size_t nblocks)
{
    uint32_t w[64];
    while (nblocks--) {
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
                   (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6],
                 h = st[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) +
                          K256[i] + w[i];
            uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        st[0] += a; st[1] += b; st[2] += c; st[3] += d;
        st[4] += e; st[5] += f; st[6] += g; st[7] += h;
        p += 64;
    }
}

#ifdef HAVE_SHANI_BUILD
/* Four rounds per step with the SHA extensions; the message schedule rotates through
 * m[0..3] (the layout of Intel's reference code, written as one loop). */
__attribute__((target("sha,sse4.1"))) static void blocks_shani(uint32_t st[8],
                                                               const uint8_t *p,
                                                               size_t nblocks)
{
    const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&st[0]);
    __m128i s1 = _mm_loadu_si128((const __m128i *)&st[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);            /* CDAB */
    s1 = _mm_shuffle_epi32(s1, 0x1B);              /* EFGH */
    __m128i s0 = _mm_alignr_epi8(tmp, s1, 8);      /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);           /* CDGH */
    while (nblocks--) {
        __m128i abef = s0, cdgh = s1, m[4], msg;
        for (int g = 0; g < 4; g++)
            m[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), mask);
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) {
            __m128i cur = m[g & 3];
            msg = _mm_add_epi32(cur, _mm_loadu_si128((const __m128i *)&K256[4 * g]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
            if (g >= 3 && g <= 14) {
                __m128i t = _mm_alignr_epi8(cur, m[(g + 3) & 3], 4);
                m[(g + 1) & 3] = _mm_sha256msg2_epu32(_mm_add_epi32(m[(g + 1) & 3], t), cur);
            }
            msg = _mm_shuffle_epi32(msg, 0x0E);
            s0 = _mm_sha256rnds2_epu32(s0, s1, msg);
            if (g >= 1 && g <= 12)
                m[(g + 3) & 3] = _mm_sha256msg1_epu32(m[(g + 3) & 3], cur);
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
        p += 64;
    }
    tmp = _mm_shuffle_epi32(s0, 0x1B);             /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);              /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xF0);           /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);              /* ABEF */
    _mm_storeu_si128((__m128i *)&st[0], s0);
    _mm_storeu_si128((__m128i *)&st[4], s1);
}

static int cpu_has_shani(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & (1u << 19)) || !(c & (1u << 9)))  /* SSE4.1, SSSE3 */
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b >> 29) & 1;                          /* SHA */
}
#endif

typedef void (*blocks_fn)(uint32_t *, const uint8_t *, size_t);
static blocks_fn blocks = blocks_portable;

typedef struct {
    uint32_t st[8];
    uint8_t buf[64];
    size_t buffered;
    uint64_t total;
} Sha256;

static void sha_init(Sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->st, iv, sizeof iv);
    s->buffered = 0;
    s->total = 0;
}

static void sha_update(Sha256 *s, const uint8_t *p, size_t n)
{
    s->total += n;
    if (s->buffered) {
        size_t take = 64 - s->buffered < n ? 64 - s->buffered : n;
        memcpy(s->buf + s->buffered, p, take);
        s->buffered += take;
        p += take;
        n -= take;
        if (s->buffered < 64)
            return;
        blocks(s->st, s->buf, 1);
        s->buffered = 0;
    }
    if (n >= 64) {
        blocks(s->st, p, n / 64);
        p += n & ~(size_t)63;
        n &= 63;
    }
    if (n) {
        memcpy(s->buf, p, n);
        s->buffered = n;
    }
}

static void sha_final(Sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->total * 8;
    uint8_t pad[72] = {0x80};
    size_t padlen = (s->buffered < 56 ? 56 : 120) - s->buffered;
    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(s, pad, padlen + 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->st[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->st[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->st[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->st[i];
    }
}

static void to_hex(const uint8_t d[32], char out[64])
{
    static const char hexd[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hexd[d[i] >> 4];
        out[2 * i + 1] = hexd[d[i] & 15];
    }
}

/* sha256_hex(data: bytes) -> bytes: hex digest (for the tests that hold it to hashlib). */
static PyObject *py_sha256_hex(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Sha256 s;
    uint8_t d[32];
    char hex[64];
    sha_init(&s);
    sha_update(&s, view.buf, (size_t)view.len);
    sha_final(&s, d);
    PyBuffer_Release(&view);
    to_hex(d, hex);
    return PyBytes_FromStringAndSize(hex, 64);
}

static const char SEAL_HEAD[] = "{\"integrity\":{\"seq\":";
static const char SEAL_HASH[] = ",\"hash\":\"";
static const char SEAL_PREV[] = "\",\"prev\":\"";
static const char SEAL_END[] = "\"}";

static int mentions_integrity(const char *p, Py_ssize_t n)
{
    static const char word[] = "\"integrity\"";
    const size_t wn = sizeof word - 1;
#ifdef __GLIBC__
    return memmem(p, (size_t)n, word, wn) != NULL;
#else
    const char *q = p, *end = p + n;
    while ((q = memchr(q, '"', (size_t)(end - q))) != NULL) {
        if ((size_t)(end - q) >= wn && memcmp(q, word, wn) == 0)
            return 1;
        q++;
    }
    return 0;
#endif
}

/* seal_run(lines, start, seq, head, out) -> (stop, seq, head)
 * Seals lines[start:] into ``out`` (a list) until a line it leaves to the caller
 * (returned as ``stop``; len(lines) when none). ``seq`` is the last sequence number
 * given, ``head`` its hash (hex bytes); the returned ones are after the run. */
static PyObject *py_seal_run(PyObject *self, PyObject *args)
{
    PyObject *lines, *head, *out;
    Py_ssize_t start;
    unsigned long long seq;
    if (!PyArg_ParseTuple(args, "O!nKO!O!", &PyList_Type, &lines, &start, &seq, &PyBytes_Type,
                          &head, &PyList_Type, &out))
        return NULL;
    if (PyBytes_GET_SIZE(head) > 64) {
        PyErr_SetString(PyExc_ValueError, "head must be at most 64 bytes (a hex SHA-256)");
        return NULL;
    }
    char prev[64];
    Py_ssize_t prevn = PyBytes_GET_SIZE(head);
    memcpy(prev, PyBytes_AS_STRING(head), (size_t)prevn);
    Py_ssize_t n = PyList_GET_SIZE(lines), i = start < 0 ? 0 : start;
    for (; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyBytes_Check(line))
            break;
        const char *p = PyBytes_AS_STRING(line);
        Py_ssize_t len = PyBytes_GET_SIZE(line);
        if (len == 0 || p[0] != '{' || mentions_integrity(p, len) || seq >= (1ULL << 62))
            break;
        const char *body = p + 1;
        Py_ssize_t bn = len - 1;
        seq++;
        char num[24];
        int numn = snprintf(num, sizeof num, "%llu", seq);
        Sha256 s;
        uint8_t d[32];
        char hex[64];
        sha_init(&s);
        sha_update(&s, (const uint8_t *)num, (size_t)numn);
        sha_update(&s, (const uint8_t *)"\n", 1);
        sha_update(&s, (const uint8_t *)prev, (size_t)prevn);
        sha_update(&s, (const uint8_t *)"\n{", 2);
        sha_update(&s, (const uint8_t *)body, (size_t)bn);
        sha_final(&s, d);
        to_hex(d, hex);
        int comma = !(bn > 0 && body[0] == '}');
        Py_ssize_t total = (Py_ssize_t)(sizeof SEAL_HEAD - 1) + numn +
                           (Py_ssize_t)(sizeof SEAL_HASH - 1) + 64 +
                           (Py_ssize_t)(sizeof SEAL_PREV - 1) + prevn +
                           (Py_ssize_t)(sizeof SEAL_END - 1) + comma + bn;
        PyObject *res = PyBytes_FromStringAndSize(NULL, total);
        if (res == NULL)
            return NULL;
        char *w = PyBytes_AS_STRING(res);
#define PUT(src, k) (memcpy(w, (src), (size_t)(k)), w += (k))
        PUT(SEAL_HEAD, sizeof SEAL_HEAD - 1);
        PUT(num, numn);
        PUT(SEAL_HASH, sizeof SEAL_HASH - 1);
        PUT(hex, 64);
        PUT(SEAL_PREV, sizeof SEAL_PREV - 1);
        PUT(prev, prevn);
        PUT(SEAL_END, sizeof SEAL_END - 1);
        if (comma)
            *w++ = ',';
        PUT(body, bn);
#undef PUT
        int rc = PyList_Append(out, res);
        Py_DECREF(res);
        if (rc < 0)
            return NULL;
        memcpy(prev, hex, 64);
        prevn = 64;
    }
    return Py_BuildValue("nKy#", i, seq, prev, prevn);
}

/* accelerated(on=None) -> bool: whether the SHA extensions are in use; ``on=False``
 * forces the portable code (tests run both), ``on=True`` uses them if the CPU has them. */
static PyObject *py_accelerated(PyObject *self, PyObject *args)
{
    PyObject *on = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &on))
        return NULL;
#ifdef HAVE_SHANI_BUILD
    if (on != Py_None) {
        int want = PyObject_IsTrue(on);
        if (want < 0)
            return NULL;
        blocks = want && cpu_has_shani() ? blocks_shani : blocks_portable;
    }
    return PyBool_FromLong(blocks == blocks_shani);
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"seal_run", py_seal_run, METH_VARARGS, "Seal a run of lines (see the module's source)."},
    {"sha256_hex", py_sha256_hex, METH_O, "SHA-256 of a bytes-like object, in hex."},
    {"accelerated", py_accelerated, METH_VARARGS, "Whether the SHA extensions are in use."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_chain_c",
                                    "The hash chain's hot loop (integrity/chain.py).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__chain_c(void)
{
#ifdef HAVE_SHANI_BUILD
    if (cpu_has_shani())
        blocks = blocks_shani;
#endif
    return PyModule_Create(&module);
}
