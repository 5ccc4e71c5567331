/* The keyword vector of an event line in C, for the PostgreSQL store's binary COPY.
 *
 * vectors(lines) takes a list of redacted event lines (str or bytes, valid JSON objects as
 * the portal sink stores them) and returns, per line, exactly the bytes of
 *
 *     pg_sql.search_vector(event_rows.line_text(line))
 *
 * (the tsvector's binary form: the lexeme count, then each lexeme in byte order with NUL,
 * its position count and positions), or None for a line this code does not answer for:
 * one with a backslash (an escape), a byte outside ASCII (the reference tokenizer folds
 * Unicode), a number with a fraction or an exponent (its text may differ from Python's),
 * a string left open. The caller computes those in Python; nothing is guessed.
 *
 * The keyword text of a line is every value string (a string not followed by a colon)
 * and every number, in order; its tokens are the runs of ASCII letters and digits, lower
 * case, cut at 255 bytes. Token i (from 0) has position i + 1, at most 16383; a lexeme
 * keeps its first 256 distinct positions.
 *
 * texts(lines) returns, per line, exactly event_rows.line_text(line) (the keyword text the
 * SQLite store indexes: "\n" and the value's JSON text, per value string and number), or
 * None where that function takes its reference path: a backslash, a number with a
 * fraction or an exponent, a string left open.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_POSITION 16383
#define MAX_TOKEN 255
#define MAX_POSITIONS 256

typedef struct {
    uint64_t head;          /* the first 8 bytes, big-endian, NUL-padded: orders most pairs */
    const unsigned char *s; /* lower-cased bytes, in the scratch buffer */
    uint16_t len;
    uint16_t pos;
} Token;

typedef struct {
    Token *tokens;
    Py_ssize_t cap_tokens;
    unsigned char *text;
    Py_ssize_t cap_text;
} Scratch;

/* 1 for an ASCII letter or digit (a token's byte), 0 otherwise. */
static unsigned char LOWER[256];
static unsigned char IS_WORD[256];

static int grow(Scratch *sc, Py_ssize_t n)
{
    /* at most one token per two bytes (a separator between tokens), and n text bytes */
    Py_ssize_t want = n / 2 + 1;
    if (want > sc->cap_tokens) {
        Token *t = realloc(sc->tokens, (size_t)want * sizeof(Token));
        if (t == NULL)
            return -1;
        sc->tokens = t;
        sc->cap_tokens = want;
    }
    if (n + 1 > sc->cap_text) {
        unsigned char *b = realloc(sc->text, (size_t)n + 1);
        if (b == NULL)
            return -1;
        sc->text = b;
        sc->cap_text = n + 1;
    }
    return 0;
}

/* Appends the tokens of s[0:n] (a value's text) at *count; out: the lower-cased bytes. */
static void cut(const unsigned char *s, Py_ssize_t n, Scratch *sc, Py_ssize_t *count,
                Py_ssize_t *used)
{
    Py_ssize_t i = 0;
    while (i < n) {
        while (i < n && !IS_WORD[s[i]])
            i++;
        if (i >= n)
            break;
        Py_ssize_t start = i;
        while (i < n && IS_WORD[s[i]])
            i++;
        Py_ssize_t len = i - start;
        if (len > MAX_TOKEN)
            len = MAX_TOKEN;
        unsigned char *dst = sc->text + *used;
        for (Py_ssize_t k = 0; k < len; k++)
            dst[k] = LOWER[s[start + k]];
        Py_ssize_t index = *count;
        Token *t = &sc->tokens[index];
        uint64_t head = 0;
        for (Py_ssize_t k = 0; k < 8; k++)
            head = head << 8 | (k < len ? dst[k] : 0);
        t->head = head;
        t->s = dst;
        t->len = (uint16_t)len;
        t->pos = (uint16_t)(index + 1 > MAX_POSITION ? MAX_POSITION : index + 1);
        *used += len;
        *count = index + 1;
    }
}

/* Byte order of the lexemes (a prefix first; lexemes hold no NUL, so the padded heads
 * compare as the bytes do), then position. */
static int cmp_token(const void *a, const void *b)
{
    const Token *x = a, *y = b;
    if (x->head != y->head)
        return x->head < y->head ? -1 : 1;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c != 0)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return (int)x->pos - (int)y->pos;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The next value of a line's keyword text from s[*at:]: a value string (a string not
 * followed by a colon; quotes included) or a number, at s[*start:*end]. 1 when found,
 * 0 at the end of the line, -1 to hand the line back (a string left open, a number with a
 * fraction or an exponent, whose text Python may write differently: 1.50, 1e5). */
static int next_value(const unsigned char *s, Py_ssize_t n, Py_ssize_t *at, Py_ssize_t *start,
                      Py_ssize_t *end)
{
    Py_ssize_t i = *at;
    while (i < n) {
        unsigned char c = s[i];
        if (c == '"') {
            const unsigned char *quote = memchr(s + i + 1, '"', (size_t)(n - i - 1));
            if (quote == NULL)
                return -1;
            Py_ssize_t close = quote - s, k = close + 1;
            while (k < n && is_space(s[k]))
                k++;
            if (k < n && s[k] == ':') { /* a key */
                i = k + 1;
                continue;
            }
            *start = i;
            *end = *at = close + 1;
            return 1;
        } else if (c >= '0' && c <= '9') {
            Py_ssize_t k = i;
            while (k < n && ((s[k] >= '0' && s[k] <= '9') || s[k] == '-' || s[k] == '+' ||
                             s[k] == '.' || s[k] == 'e' || s[k] == 'E')) {
                if (s[k] == '.' || s[k] == 'e' || s[k] == 'E')
                    return -1;
                k++;
            }
            *start = i;
            *end = *at = k;
            return 1;
        } else {
            i++;
        }
    }
    *at = n;
    return 0;
}

/* The tokens of a line's keyword text; 1 when this code answers for it, 0 to hand back.
 * A value's quotes are no token's bytes: cutting a string with them gives its tokens. */
static int line_tokens(const unsigned char *s, Py_ssize_t n, Scratch *sc, Py_ssize_t *count)
{
    Py_ssize_t used = 0, at = 0, start, end;
    int found;
    *count = 0;
    for (Py_ssize_t k = 0; k < n; k++)
        if (s[k] >= 0x80 || s[k] == '\\')
            return 0;
    while ((found = next_value(s, n, &at, &start, &end)) > 0)
        cut(s + start, end - start, sc, count, &used);
    return found == 0;
}

static PyObject *vector(Scratch *sc, Py_ssize_t count)
{
    Token *t = sc->tokens;
    if (count > 64) {
        qsort(t, (size_t)count, sizeof(Token), cmp_token);
    } else { /* an event's few dozen tokens: insertion sort, no call per comparison */
        for (Py_ssize_t i = 1; i < count; i++) {
            Token key = t[i];
            Py_ssize_t j = i;
            while (j > 0 && (t[j - 1].head > key.head ||
                             (t[j - 1].head == key.head && cmp_token(&t[j - 1], &key) > 0))) {
                t[j] = t[j - 1];
                j--;
            }
            t[j] = key;
        }
    }
    /* first pass: the size; second: the bytes */
    Py_ssize_t size = 4, lexemes = 0;
    for (Py_ssize_t i = 0; i < count;) {
        Py_ssize_t j = i + 1, npos = 1;
        uint16_t last = t[i].pos;
        while (j < count && t[j].len == t[i].len && memcmp(t[j].s, t[i].s, t[i].len) == 0) {
            if (t[j].pos != last && npos < MAX_POSITIONS) {
                npos++;
                last = t[j].pos;
            }
            j++;
        }
        size += t[i].len + 3 + 2 * npos;
        lexemes++;
        i = j;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    o[0] = (unsigned char)(lexemes >> 24);
    o[1] = (unsigned char)(lexemes >> 16);
    o[2] = (unsigned char)(lexemes >> 8);
    o[3] = (unsigned char)lexemes;
    o += 4;
    for (Py_ssize_t i = 0; i < count;) {
        memcpy(o, t[i].s, t[i].len);
        o += t[i].len;
        *o++ = 0;
        unsigned char *npos_at = o;
        o += 2;
        Py_ssize_t j = i + 1, npos = 1;
        uint16_t last = t[i].pos;
        *o++ = (unsigned char)(last >> 8);
        *o++ = (unsigned char)last;
        while (j < count && t[j].len == t[i].len && memcmp(t[j].s, t[i].s, t[i].len) == 0) {
            if (t[j].pos != last && npos < MAX_POSITIONS) {
                npos++;
                last = t[j].pos;
                *o++ = (unsigned char)(last >> 8);
                *o++ = (unsigned char)last;
            }
            j++;
        }
        npos_at[0] = (unsigned char)(npos >> 8);
        npos_at[1] = (unsigned char)npos;
        i = j;
    }
    return out;
}

static PyObject *py_vectors(PyObject *self, PyObject *lines)
{
    (void)self;
    if (!PyList_Check(lines)) {
        PyErr_SetString(PyExc_TypeError, "vectors() takes a list of str or bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(lines);
    PyObject *result = PyList_New(n);
    if (result == NULL)
        return NULL;
    Scratch sc = {NULL, 0, NULL, 0};
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        const unsigned char *s;
        Py_ssize_t len;
        PyObject *item;
        if (PyUnicode_Check(line)) {
            if (PyUnicode_READY(line) < 0)
                goto fail;
            if (!PyUnicode_IS_ASCII(line)) {
                Py_INCREF(Py_None);
                PyList_SET_ITEM(result, i, Py_None);
                continue;
            }
            s = (const unsigned char *)PyUnicode_DATA(line);
            len = PyUnicode_GET_LENGTH(line);
        } else if (PyBytes_Check(line)) {
            s = (const unsigned char *)PyBytes_AS_STRING(line);
            len = PyBytes_GET_SIZE(line);
        } else {
            PyErr_SetString(PyExc_TypeError, "vectors() takes a list of str or bytes");
            goto fail;
        }
        if (grow(&sc, len) < 0) {
            PyErr_NoMemory();
            goto fail;
        }
        Py_ssize_t count;
        if (line_tokens(s, len, &sc, &count)) {
            item = vector(&sc, count);
            if (item == NULL)
                goto fail;
        } else {
            Py_INCREF(Py_None);
            item = Py_None;
        }
        PyList_SET_ITEM(result, i, item);
    }
    free(sc.tokens);
    free(sc.text);
    return result;
fail:
    free(sc.tokens);
    free(sc.text);
    Py_DECREF(result);
    return NULL;
}

/* The keyword text of s[0:n] into out (at least n + n / 2 + 1 bytes: each value adds
 * one newline and is at least 1 byte with its separator); its length, or -1 to hand back. */
static Py_ssize_t line_text(const unsigned char *s, Py_ssize_t n, unsigned char *out)
{
    Py_ssize_t used = 0, at = 0, start, end;
    int found;
    if (memchr(s, '\\', (size_t)n) != NULL)
        return -1;
    while ((found = next_value(s, n, &at, &start, &end)) > 0) {
        out[used++] = '\n';
        memcpy(out + used, s + start, (size_t)(end - start));
        used += end - start;
    }
    return found == 0 ? used : -1;
}

static PyObject *py_texts(PyObject *self, PyObject *lines)
{
    (void)self;
    if (!PyList_Check(lines)) {
        PyErr_SetString(PyExc_TypeError, "texts() takes a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(lines);
    PyObject *result = PyList_New(n);
    if (result == NULL)
        return NULL;
    unsigned char *buf = NULL;
    Py_ssize_t cap = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i), *item;
        if (!PyBytes_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "texts() takes a list of bytes");
            goto fail;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(line), want = len + len / 2 + 1;
        if (want > cap) {
            unsigned char *b = realloc(buf, (size_t)want);
            if (b == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            buf = b;
            cap = want;
        }
        Py_ssize_t used = line_text((const unsigned char *)PyBytes_AS_STRING(line), len, buf);
        if (used < 0) {
            Py_INCREF(Py_None);
            item = Py_None;
        } else {
            item = PyUnicode_DecodeUTF8((const char *)buf, used, "replace");
            if (item == NULL)
                goto fail;
        }
        PyList_SET_ITEM(result, i, item);
    }
    free(buf);
    return result;
fail:
    free(buf);
    Py_DECREF(result);
    return NULL;
}

static PyMethodDef methods[] = {
    {"vectors", py_vectors, METH_O,
     "The binary tsvector of each line's keyword text, or None where Python must answer."},
    {"texts", py_texts, METH_O,
     "Each line's keyword text (event_rows.line_text), or None where Python must answer."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tsvector_c",
                                    "Keyword texts and vectors of event lines (portal/event_rows.py, portal/pg_vectors.py).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__tsvector_c(void)
{
    for (int c = 0; c < 256; c++) {
        int lower = c >= 'A' && c <= 'Z', word = lower || (c >= 'a' && c <= 'z') ||
                                                 (c >= '0' && c <= '9');
        IS_WORD[c] = (unsigned char)word;
        LOWER[c] = (unsigned char)(lower ? c + 32 : c);
    }
    return PyModule_Create(&module);
}
