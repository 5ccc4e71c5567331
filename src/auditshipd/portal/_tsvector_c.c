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
 * a string left open, a token of more than 2030 bytes (its lexeme ends with a hash). The
 * caller computes those in Python; nothing is guessed.
 *
 * The keyword text of a line is every value string (a string not followed by a colon)
 * and every number, in order; its tokens are the runs of ASCII letters and digits, lower
 * case. Token i (from 0) has position i + 1, at most 16383; a lexeme keeps its first 256
 * distinct positions.
 *
 * texts(lines) returns, per line, exactly event_rows.line_text(line) (the keyword text the
 * SQLite store indexes: "\n" and the value's JSON text, per value string and number), or
 * None where that function takes its reference path: a backslash, a number with a
 * fraction or an exponent, a string left open.
 *
 * rows(lines, tie_bits, access) and pg_rows(lines, access) return each line's row as the
 * SQLite store and the PostgreSQL store write it (see their sections below).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_POSITION 16383
#define MAX_TOKEN 2030 /* pg_sql._WHOLE: a longer token's lexeme is Python's */
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

/* Appends the tokens of s[0:n] (a value's text) at *count; out: the lower-cased bytes.
 * 0 for a token longer than MAX_TOKEN (the line is handed back), else 1. */
static int cut(const unsigned char *s, Py_ssize_t n, Scratch *sc, Py_ssize_t *count,
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
            return 0;
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
    return 1;
}

/* Byte order of the lexemes (a prefix first; lexemes hold no NUL, so the padded heads
 * compare as the bytes do), then position. */
static int cmp_token(const void *a, const void *b)
{
    const Token *x = a, *y = b;
    if (x->head != y->head)
        return x->head < y->head ? -1 : 1;
    size_t n = x->len < y->len ? x->len : y->len; /* the heads hold the first 8 bytes */
    int c = n > 8 ? memcmp(x->s + 8, y->s + 8, n - 8) : 0;
    if (c != 0)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return (int)x->pos - (int)y->pos;
}

/* Whether two tokens are the same lexeme (the heads hold the first 8 bytes). */
static int same_lexeme(const Token *x, const Token *y)
{
    return x->head == y->head && x->len == y->len &&
           (x->len <= 8 || memcmp(x->s + 8, y->s + 8, (size_t)x->len - 8) == 0);
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
 * A value's quotes are no token's bytes: cutting a string with them gives its tokens.
 * escapes: 0 when the caller has already found no backslash in the line. */
static int line_tokens(const unsigned char *s, Py_ssize_t n, Scratch *sc, Py_ssize_t *count,
                       int escapes)
{
    Py_ssize_t used = 0, at = 0, start, end;
    int found;
    unsigned char high = 0;
    *count = 0;
    for (Py_ssize_t k = 0; k < n; k++) /* no early exit: the compiler checks 16 bytes a step */
        high |= s[k];
    if (high >= 0x80 || (escapes && memchr(s, '\\', (size_t)n) != NULL))
        return 0;
    while ((found = next_value(s, n, &at, &start, &end)) > 0)
        if (!cut(s + start, end - start, sc, count, &used))
            return 0;
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
        while (j < count && same_lexeme(&t[j], &t[i])) {
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
        while (j < count && same_lexeme(&t[j], &t[i])) {
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
        if (line_tokens(s, len, &sc, &count, 1)) {
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
 * one newline and is at least 1 byte with its separator); its length, or -1 to hand back.
 * escapes: 0 when the caller has already found no backslash in the line. */
static Py_ssize_t line_text(const unsigned char *s, Py_ssize_t n, unsigned char *out,
                            int escapes)
{
    Py_ssize_t used = 0, at = 0, start, end;
    int found;
    if (escapes && memchr(s, '\\', (size_t)n) != NULL)
        return -1;
    while ((found = next_value(s, n, &at, &start, &end)) > 0) {
        out[used++] = '\n';
        memcpy(out + used, s + start, (size_t)(end - start));
        used += end - start;
    }
    return found == 0 ? used : -1;
}

/* A function over a list of stored lines (bytes), one result per line: ``each`` gets the
 * line and a scratch buffer of at least ``want(len)`` bytes and returns the line's item
 * (a new reference; NULL on an error). */
typedef struct {
    const char *name; /* the Python function's, for its TypeError */
    Py_ssize_t (*want)(Py_ssize_t len);
    PyObject *(*each)(PyObject *line, unsigned char *buf, void *ctx);
    void *ctx;
} PerLine;

static PyObject *per_line(PyObject *lines, const PerLine *how)
{
    if (!PyList_Check(lines)) {
        PyErr_Format(PyExc_TypeError, "%s() takes a list of bytes", how->name);
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
            PyErr_Format(PyExc_TypeError, "%s() takes a list of bytes", how->name);
            goto fail;
        }
        Py_ssize_t want = how->want(PyBytes_GET_SIZE(line));
        if (want > cap) {
            unsigned char *b = realloc(buf, (size_t)want);
            if (b == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            buf = b;
            cap = want;
        }
        item = how->each(line, buf, how->ctx);
        if (item == NULL)
            goto fail;
        PyList_SET_ITEM(result, i, item);
    }
    free(buf);
    return result;
fail:
    free(buf);
    Py_DECREF(result);
    return NULL;
}

static Py_ssize_t text_want(Py_ssize_t len)
{
    return len + len / 2 + 1;
}

static PyObject *text_of(PyObject *line, unsigned char *buf, void *ctx)
{
    (void)ctx;
    Py_ssize_t used = line_text((const unsigned char *)PyBytes_AS_STRING(line),
                                PyBytes_GET_SIZE(line), buf, 1);
    if (used < 0)
        Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8((const char *)buf, used, "replace");
}

static PyObject *py_texts(PyObject *self, PyObject *lines)
{
    (void)self;
    PerLine how = {"texts", text_want, text_of, NULL};
    return per_line(lines, &how);
}

/* ---- rows(lines, tie_bits, access_actions): the SQLite store's row of each line ------
 *
 * Per line, exactly what sqlite_ingest.prepare_rows builds in Python from
 * event_rows.event_row(line), as the tuple
 *
 *     (seq_base, id, occurred_at, action, actor, organization_slug, targets_json, body,
 *      key_terms, keyword_text)
 *
 * or None where this code does not answer for the line, which Python then takes: a
 * backslash (an escape), a raw control character, a value of a type the Python row
 * converts with str() (an id, action, e-mail, name or slug that is not a string or null),
 * an id missing or empty, an actor or target key outside ASCII (Unicode case folding), a
 * time not written as the journal writes it (YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z) or outside the
 * years 1900-2100, a field given twice, more than MAX_KEYS targets, nesting deeper than
 * MAX_DEPTH, a number with a fraction or an exponent (the keyword text), bytes that are
 * not JSON or not UTF-8. */

#define MAX_DEPTH 64
#define MAX_KEYS 64

typedef struct {
    const unsigned char *s;
    Py_ssize_t n;
} Span;

/* A party (actor or target) as event_rows._key reads it. */
typedef struct {
    Span email, name;
    int has_email, has_name; /* a string given (null and missing count as not) */
    int seen_email, seen_name;
} Party;

static uint32_t CRC32[256];

static uint32_t crc32_of(const unsigned char *s, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++)
        c = CRC32[(c ^ s[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void json_ws(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i)
{
    while (*i < n && (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\n' || s[*i] == '\r'))
        (*i)++;
}

/* A string at s[*i] (its opening quote) into out (without quotes); 0, or -1 to hand back.
 * The caller made sure the line has no backslash: the next quote closes the string. */
static int json_string(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, Span *out)
{
    if (*i >= n || s[*i] != '"')
        return -1;
    /* one pass to the closing quote (an event's strings are short: no call per string) */
    const unsigned char *p = s + *i + 1, *end = s + n, *quote = p;
    while (quote < end && *quote != '"') {
        if (*quote < 0x20)
            return -1;
        quote++;
    }
    if (quote == end)
        return -1;
    out->s = p;
    out->n = quote - p;
    *i = quote - s + 1;
    return 0;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* A JSON number at s[*i]: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i)
{
    Py_ssize_t k = *i;
    if (k < n && s[k] == '-')
        k++;
    if (k >= n || !is_digit(s[k]))
        return -1;
    if (s[k] == '0')
        k++;
    else
        while (k < n && is_digit(s[k]))
            k++;
    if (k < n && s[k] == '.') {
        k++;
        if (k >= n || !is_digit(s[k]))
            return -1;
        while (k < n && is_digit(s[k]))
            k++;
    }
    if (k < n && (s[k] == 'e' || s[k] == 'E')) {
        k++;
        if (k < n && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k >= n || !is_digit(s[k]))
            return -1;
        while (k < n && is_digit(s[k]))
            k++;
    }
    *i = k;
    return 0;
}

static int literal(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, const char *word,
                   Py_ssize_t len)
{
    if (n - *i < len || memcmp(s + *i, word, (size_t)len) != 0)
        return -1;
    *i += len;
    return 0;
}

#define json_literal(s, n, i, word) literal(s, n, i, word, (Py_ssize_t)sizeof(word) - 1)

/* At ``open``: 1 past it with members or elements to follow, 0 past an empty container,
 * -1 when s[*i] is not ``open``. */
static int json_open(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, unsigned char open,
                     unsigned char close)
{
    if (*i >= n || s[*i] != open)
        return -1;
    (*i)++;
    json_ws(s, n, i);
    if (*i < n && s[*i] == close) {
        (*i)++;
        return 0;
    }
    return 1;
}

/* After a member or element: 1 past a comma (more follow), 0 past ``close`` (the
 * container ends), -1 for anything else. */
static int json_next(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, unsigned char close)
{
    json_ws(s, n, i);
    if (*i < n && s[*i] == ',') {
        (*i)++;
        json_ws(s, n, i);
        return 1;
    }
    if (*i < n && s[*i] == close) {
        (*i)++;
        return 0;
    }
    return -1;
}

/* The members of the object at s[*i]; each member's value goes to member(), which reads
 * it (returning 0) or returns 1 to have it skipped; -1 hands the line back. */
typedef int (*Member)(void *ctx, Span key, const unsigned char *s, Py_ssize_t n,
                      Py_ssize_t *i);

static int json_object(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, int depth,
                       Member member, void *ctx);

static int skip_member(void *ctx, Span key, const unsigned char *s, Py_ssize_t n, Py_ssize_t *i)
{
    (void)ctx, (void)key, (void)s, (void)n, (void)i;
    return 1; /* skipped by json_object */
}

static int json_skip(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, int depth)
{
    Span ignored;
    if (*i >= n)
        return -1;
    switch (s[*i]) {
    case '"':
        return json_string(s, n, i, &ignored);
    case 't':
        return json_literal(s, n, i, "true");
    case 'f':
        return json_literal(s, n, i, "false");
    case 'n':
        return json_literal(s, n, i, "null");
    case '{':
        return json_object(s, n, i, depth, skip_member, NULL);
    case '[': {
        int any;
        if (depth >= MAX_DEPTH || (any = json_open(s, n, i, '[', ']')) <= 0)
            return depth >= MAX_DEPTH ? -1 : any;
        for (;;) {
            if (json_skip(s, n, i, depth + 1) < 0)
                return -1;
            int more = json_next(s, n, i, ']');
            if (more <= 0)
                return more;
        }
    }
    default:
        return json_number(s, n, i);
    }
}

/* Whether a key (or the text at s) is the literal word: its length first. */
#define IS_KEY(key, word) \
    ((key).n == (Py_ssize_t)sizeof(word) - 1 && memcmp((key).s, word, sizeof(word) - 1) == 0)

/* A string or null at s[*i]: 1 for a string (into out), 0 for null, -1 to hand back. */
static int string_or_null(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, Span *out)
{
    if (*i < n && s[*i] == 'n')
        return json_literal(s, n, i, "null") < 0 ? -1 : 0;
    return json_string(s, n, i, out) < 0 ? -1 : 1;
}

static int json_object(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, int depth,
                       Member member, void *ctx)
{
    Span key;
    int any;
    if (depth >= MAX_DEPTH || (any = json_open(s, n, i, '{', '}')) <= 0)
        return depth >= MAX_DEPTH ? -1 : any;
    for (;;) {
        if (json_string(s, n, i, &key) < 0)
            return -1;
        json_ws(s, n, i);
        if (*i >= n || s[*i] != ':')
            return -1;
        (*i)++;
        json_ws(s, n, i);
        int r = member(ctx, key, s, n, i);
        if (r < 0 || (r > 0 && json_skip(s, n, i, depth + 1) < 0))
            return -1;
        int more = json_next(s, n, i, '}');
        if (more <= 0)
            return more;
    }
}

static int party_member(void *ctx, Span key, const unsigned char *s, Py_ssize_t n,
                        Py_ssize_t *i)
{
    Party *p = ctx;
    int r;
    if (IS_KEY(key, "email")) {
        if (p->seen_email++)
            return -1;
        r = string_or_null(s, n, i, &p->email);
        p->has_email = r == 1;
        return r < 0 ? -1 : 0;
    }
    if (IS_KEY(key, "name")) {
        if (p->seen_name++)
            return -1;
        r = string_or_null(s, n, i, &p->name);
        p->has_name = r == 1;
        return r < 0 ? -1 : 0;
    }
    return 1;
}

/* A party's key (event_rows._key: the e-mail, else the name, stripped, lower case) into
 * out (at least the value's length); its length, or -1 to hand back (outside ASCII). */
static Py_ssize_t party_key(const Party *p, unsigned char *out)
{
    Span v = {NULL, 0};
    if (p->has_email && p->email.n > 0)
        v = p->email;
    else if (p->has_name && p->name.n > 0)
        v = p->name;
    Py_ssize_t a = 0, b = v.n;
    for (Py_ssize_t k = 0; k < v.n; k++)
        if (v.s[k] >= 0x80)
            return -1;
    while (a < b && v.s[a] == ' ') /* the only whitespace a string without escapes holds */
        a++;
    while (b > a && v.s[b - 1] == ' ')
        b--;
    for (Py_ssize_t k = a; k < b; k++)
        out[k - a] = LOWER[v.s[k]];
    return b - a;
}

typedef struct {
    Span id, action, time, slug;
    int seen_id, seen_action, seen_time, seen_actor, seen_org, seen_targets, seen_slug;
    int has_action, has_slug;
    Party actor;
    Party targets[MAX_KEYS];
    int ntargets;
} Head;

static int org_member(void *ctx, Span key, const unsigned char *s, Py_ssize_t n,
                      Py_ssize_t *i)
{
    Head *h = ctx;
    if (!IS_KEY(key, "slug"))
        return 1;
    if (h->seen_slug++)
        return -1;
    int r = string_or_null(s, n, i, &h->slug);
    h->has_slug = r == 1;
    return r < 0 ? -1 : 0;
}

static int head_member(void *ctx, Span key, const unsigned char *s, Py_ssize_t n,
                       Py_ssize_t *i)
{
    Head *h = ctx;
    int r;
    if (IS_KEY(key, "id")) {
        if (h->seen_id++ || json_string(s, n, i, &h->id) < 0 || h->id.n == 0)
            return -1;
        return 0;
    }
    if (IS_KEY(key, "action")) {
        if (h->seen_action++ || (r = string_or_null(s, n, i, &h->action)) < 0)
            return -1;
        h->has_action = r;
        return 0;
    }
    if (IS_KEY(key, "occurred_at")) {
        if (h->seen_time++ || json_string(s, n, i, &h->time) < 0)
            return -1;
        return 0;
    }
    if (IS_KEY(key, "actor")) {
        if (h->seen_actor++)
            return -1;
        if (*i < n && s[*i] == 'n')
            return json_literal(s, n, i, "null");
        return json_object(s, n, i, 1, party_member, &h->actor);
    }
    if (IS_KEY(key, "organization")) {
        if (h->seen_org++)
            return -1;
        if (*i < n && s[*i] == 'n')
            return json_literal(s, n, i, "null");
        return json_object(s, n, i, 1, org_member, h);
    }
    if (IS_KEY(key, "targets")) {
        if (h->seen_targets++)
            return -1;
        if (*i < n && s[*i] == 'n')
            return json_literal(s, n, i, "null");
        int any = json_open(s, n, i, '[', ']');
        if (any <= 0)
            return any;
        for (;;) {
            if (*i < n && s[*i] == 'n') {
                if (json_literal(s, n, i, "null") < 0)
                    return -1;
            } else {
                if (h->ntargets >= MAX_KEYS)
                    return -1;
                Party *p = &h->targets[h->ntargets++];
                memset(p, 0, sizeof *p);
                if (json_object(s, n, i, 2, party_member, p) < 0)
                    return -1;
            }
            int more = json_next(s, n, i, ']');
            if (more <= 0)
                return more;
        }
    }
    return 1;
}

static int two(const unsigned char *s)
{
    return (s[0] - '0') * 10 + (s[1] - '0');
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* A time as the journal writes it: its microseconds since the epoch and its stored text
 * (YYYY-MM-DDTHH:MM:SS.ffffffZ, 27 bytes, into text); 0, or -1 to hand back. */
static int canonical_time(Span t, int64_t *micros, char *text)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    const unsigned char *s = t.s;
    if (t.n != 20 && (t.n < 22 || t.n > 27))
        return -1;
    for (int k = 0; k < 19; k++) {
        if (shape[k] == 'd' ? !is_digit(s[k]) : s[k] != (unsigned char)shape[k])
            return -1;
    }
    if (s[t.n - 1] != 'Z')
        return -1;
    int frac_len = 0;
    int64_t frac = 0;
    if (t.n > 20) {
        if (s[19] != '.')
            return -1;
        frac_len = (int)t.n - 21;
        for (int k = 0; k < frac_len; k++) {
            if (!is_digit(s[20 + k]))
                return -1;
            frac = frac * 10 + (s[20 + k] - '0');
        }
        for (int k = frac_len; k < 6; k++)
            frac *= 10;
    }
    int year = two(s) * 100 + two(s + 2), month = two(s + 5), day = two(s + 8);
    int hour = two(s + 11), minute = two(s + 14), second = two(s + 17);
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1900 || year > 2100 || month < 1 || month > 12 || day < 1 || hour > 23 ||
        minute > 59 || second > 59)
        return -1;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > mdays[month - 1] + (month == 2 && leap))
        return -1;
    int64_t seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 +
                      second;
    *micros = seconds * 1000000 + frac;
    memcpy(text, s, 19);
    text[19] = '.';
    for (int k = 0; k < 6; k++)
        text[20 + k] = k < frac_len ? (char)s[20 + k] : '0';
    text[26] = 'Z';
    return 0;
}

static int cmp_key(const void *a, const void *b)
{
    const Span *x = a, *y = b;
    size_t n = x->n < y->n ? (size_t)x->n : (size_t)y->n;
    int c = memcmp(x->s, y->s, n);
    if (c != 0)
        return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

/* " " (unless first), kind, then the 8 hex digits of crc32(v), at out; the new end. */
static unsigned char *term(unsigned char *out, unsigned char kind, Span v, int first)
{
    static const char hex[] = "0123456789abcdef";
    uint32_t crc = crc32_of(v.s, v.n);
    if (!first)
        *out++ = ' ';
    *out++ = kind;
    for (int shift = 28; shift >= 0; shift -= 4)
        *out++ = (unsigned char)hex[(crc >> shift) & 0xF];
    return out;
}

static PyObject *span_str(Span v)
{
    return PyUnicode_DecodeUTF8((const char *)v.s, v.n, NULL);
}

/* What both stores' rows read from a line's head: the event's fields, its time, the actor's
 * key and the targets' keys (sorted, each once), the keys' bytes in a caller's buffer. */
typedef struct {
    Head h;
    int64_t micros;
    char when[27];
    Span actor;
    Span keys[MAX_KEYS];
    int nkeys;
    unsigned char *free; /* the buffer's first byte after the keys */
} Parsed;

/* Reads the head of s[0:n] into p, the keys into buf (at least n bytes); 0, or -1 to hand
 * the line back. */
static int parse_head(const unsigned char *s, Py_ssize_t n, unsigned char *buf, Parsed *p)
{
    Py_ssize_t i = 0;
    Head *h = &p->h;
    memset(h, 0, offsetof(Head, targets)); /* each target is cleared when read */
    h->ntargets = 0;
    if (memchr(s, '\\', (size_t)n) != NULL)
        return -1;
    json_ws(s, n, &i);
    if (json_object(s, n, &i, 0, head_member, h) < 0)
        return -1;
    json_ws(s, n, &i);
    if (i != n || !h->seen_id || !h->seen_time)
        return -1;
    if (canonical_time(h->time, &p->micros, p->when) < 0)
        return -1;
    unsigned char *at = buf;
    Py_ssize_t actor_len = party_key(&h->actor, at);
    if (actor_len < 0)
        return -1;
    p->actor.s = at;
    p->actor.n = actor_len;
    at += actor_len;
    int nkeys = 0;
    for (int k = 0; k < h->ntargets; k++) {
        Py_ssize_t len = party_key(&h->targets[k], at);
        if (len < 0)
            return -1;
        if (len > 0) {
            p->keys[nkeys].s = at;
            p->keys[nkeys++].n = len;
            at += len;
        }
    }
    qsort(p->keys, (size_t)nkeys, sizeof(Span), cmp_key);
    int unique = 0;
    for (int k = 0; k < nkeys; k++)
        if (unique == 0 || cmp_key(&p->keys[unique - 1], &p->keys[k]) != 0)
            p->keys[unique++] = p->keys[k];
    p->nkeys = unique;
    p->free = at;
    return 0;
}

/* The line as text, Py_None to hand it back (not UTF-8: Python raises the same error for
 * this line), NULL on an error. */
static PyObject *body_of(const unsigned char *s, Py_ssize_t n)
{
    PyObject *body = PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    if (body == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return body;
}

/* The event's action (an empty string for null or missing), and whether it is one of
 * ``access`` (0 or 1, -1 on an error) in *is_access. */
static PyObject *action_of(const Parsed *p, PyObject *access, int *is_access)
{
    PyObject *action = p->h.has_action == 1 ? span_str(p->h.action) : PyUnicode_New(0, 0);
    if (action == NULL)
        return NULL;
    *is_access = PySet_Contains(access, action);
    return action;
}

/* Builds a tuple of n new references; NULL (every item released) when one is NULL. */
static PyObject *tuple_of(PyObject **items, int n)
{
    PyObject *row = PyTuple_New(n);
    for (int k = 0; k < n; k++) {
        if (items[k] == NULL || row == NULL) {
            for (int j = 0; j < n; j++)
                Py_XDECREF(items[j]);
            Py_XDECREF(row);
            return NULL;
        }
    }
    for (int k = 0; k < n; k++)
        PyTuple_SET_ITEM(row, k, items[k]);
    return row;
}

static PyObject *slug_of(const Parsed *p)
{
    if (p->h.has_slug == 1)
        return span_str(p->h.slug);
    Py_RETURN_NONE;
}

/* The row tuple of one line (see above), Py_None to hand it back, NULL on an error.
 * buf: at least row_want(n) bytes: the keys, their JSON and terms, then the keyword text. */
static PyObject *row_of(PyObject *line, int tie_bits, PyObject *access, unsigned char *buf)
{
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(line);
    Py_ssize_t n = PyBytes_GET_SIZE(line);
    Parsed p;
    if (parse_head(s, n, buf, &p) < 0)
        Py_RETURN_NONE;
    /* after the keys: the targets' JSON, then the terms, then the keyword text */
    unsigned char *at = p.free, *json = at;
    *at++ = '[';
    for (int k = 0; k < p.nkeys; k++) {
        if (k)
            *at++ = ',';
        *at++ = '"';
        memcpy(at, p.keys[k].s, (size_t)p.keys[k].n);
        at += p.keys[k].n;
        *at++ = '"';
    }
    *at++ = ']';
    Span targets_json = {json, at - json};
    unsigned char *terms = at;
    at = term(at, 'i', p.h.id, 1);
    if (p.actor.n)
        at = term(at, 'a', p.actor, 0);
    for (int k = 0; k < p.nkeys; k++)
        at = term(at, 't', p.keys[k], 0);
    Span terms_span = {terms, at - terms};

    PyObject *body = body_of(s, n);
    if (body == NULL || body == Py_None)
        return body;
    int is_access;
    PyObject *action = action_of(&p, access, &is_access), *text = NULL;
    if (action == NULL) {
        Py_DECREF(body);
        return NULL;
    }
    if (is_access < 0) {
        text = NULL;
    } else if (is_access) {
        text = PyUnicode_New(0, 0);
    } else {
        Py_ssize_t used = line_text(s, n, at, 0); /* parse_head found no backslash */
        if (used < 0) {
            Py_DECREF(body);
            Py_DECREF(action);
            Py_RETURN_NONE;
        }
        text = PyUnicode_DecodeUTF8((const char *)at, used, "replace");
    }
    PyObject *items[10] = {
        PyLong_FromLongLong((long long)(p.micros * ((int64_t)1 << tie_bits))), /* before 1970: < 0 */
        span_str(p.h.id),
        PyUnicode_DecodeASCII(p.when, 27, NULL),
        action,
        PyUnicode_DecodeASCII((const char *)p.actor.s, p.actor.n, NULL),
        slug_of(&p),
        PyUnicode_DecodeASCII((const char *)targets_json.s, targets_json.n, NULL),
        body,
        PyUnicode_DecodeASCII((const char *)terms_span.s, terms_span.n, NULL),
        text,
    };
    return tuple_of(items, 10);
}

typedef struct {
    int tie_bits;
    PyObject *access;
} RowArgs;

static Py_ssize_t row_want(Py_ssize_t len)
{
    return 5 * len + 1024; /* see row_of */
}

static PyObject *row_item(PyObject *line, unsigned char *buf, void *ctx)
{
    RowArgs *a = ctx;
    return row_of(line, a->tie_bits, a->access, buf);
}

static PyObject *py_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *lines;
    RowArgs a;
    if (!PyArg_ParseTuple(args, "OiO!:rows", &lines, &a.tie_bits, &PyFrozenSet_Type,
                          &a.access))
        return NULL;
    if (a.tie_bits < 0 || a.tie_bits > 10) {
        PyErr_SetString(PyExc_ValueError, "rows(): tie_bits must be 0..10");
        return NULL;
    }
    PerLine how = {"rows", row_want, row_item, &a};
    return per_line(lines, &how);
}

/* ---- pg_rows(lines, access_actions): the PostgreSQL store's COPY record of each line --
 *
 * Per line, exactly pg_ingest.copy_records([event_rows.event_row(line, text=False)])[0]:
 *
 *     (id, occurred_at, action, actor, organization_slug, targets, search, body)
 *
 * occurred_at a datetime in UTC, targets a list of str, search the binary tsvector of the
 * line's keyword text (vectors() above; an empty one for an access action); or None where
 * rows() or vectors() hands the line back, which Python then takes. */

typedef struct {
    PyObject *access;
    Scratch sc;
} PgArgs;

static PyObject *pg_row_of(PyObject *line, unsigned char *buf, void *ctx)
{
    PgArgs *a = ctx;
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(line);
    Py_ssize_t n = PyBytes_GET_SIZE(line), count = 0;
    Parsed p;
    if (parse_head(s, n, buf, &p) < 0)
        Py_RETURN_NONE;
    int is_access;
    PyObject *action = action_of(&p, a->access, &is_access), *search;
    if (action == NULL)
        return NULL;
    if (is_access < 0) {
        search = NULL;
    } else if (is_access) {
        search = vector(&a->sc, 0);
    } else if (grow(&a->sc, n) < 0) {
        search = PyErr_NoMemory();
    } else if (line_tokens(s, n, &a->sc, &count, 0)) { /* parse_head found no backslash */
        search = vector(&a->sc, count);
    } else {
        Py_DECREF(action);
        Py_RETURN_NONE;
    }
    if (search == NULL) {
        Py_DECREF(action);
        return NULL;
    }
    PyObject *body = body_of(s, n);
    if (body == NULL || body == Py_None) {
        Py_DECREF(action);
        Py_DECREF(search);
        return body;
    }
    const char *w = p.when; /* YYYY-MM-DDTHH:MM:SS.ffffffZ */
    const unsigned char *u = (const unsigned char *)w;
    int micro = two(u + 20) * 10000 + two(u + 22) * 100 + two(u + 24);
    PyObject *when = PyDateTimeAPI->DateTime_FromDateAndTime(
        two(u) * 100 + two(u + 2), two(u + 5), two(u + 8), two(u + 11), two(u + 14),
        two(u + 17), micro, PyDateTime_TimeZone_UTC, PyDateTimeAPI->DateTimeType);
    PyObject *targets = PyList_New(p.nkeys);
    for (int k = 0; targets != NULL && k < p.nkeys; k++) {
        PyObject *key = PyUnicode_DecodeASCII((const char *)p.keys[k].s, p.keys[k].n, NULL);
        if (key == NULL)
            Py_CLEAR(targets);
        else
            PyList_SET_ITEM(targets, k, key);
    }
    PyObject *items[8] = {
        span_str(p.h.id),
        when,
        action,
        PyUnicode_DecodeASCII((const char *)p.actor.s, p.actor.n, NULL),
        slug_of(&p),
        targets,
        search,
        body,
    };
    return tuple_of(items, 8);
}

static Py_ssize_t pg_row_want(Py_ssize_t len)
{
    return len + 1; /* the keys (see parse_head) */
}

static PyObject *py_pg_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *lines;
    PgArgs a = {NULL, {NULL, 0, NULL, 0}};
    if (!PyArg_ParseTuple(args, "OO!:pg_rows", &lines, &PyFrozenSet_Type, &a.access))
        return NULL;
    PerLine how = {"pg_rows", pg_row_want, pg_row_of, &a};
    PyObject *result = per_line(lines, &how);
    free(a.sc.tokens);
    free(a.sc.text);
    return result;
}

static PyMethodDef methods[] = {
    {"vectors", py_vectors, METH_O,
     "The binary tsvector of each line's keyword text, or None where Python must answer."},
    {"texts", py_texts, METH_O,
     "Each line's keyword text (event_rows.line_text), or None where Python must answer."},
    {"rows", py_rows, METH_VARARGS,
     "rows(lines, tie_bits, access_actions): each line's SQLite row tuple, or None where "
     "Python must answer."},
    {"pg_rows", py_pg_rows, METH_VARARGS,
     "pg_rows(lines, access_actions): each line's PostgreSQL COPY record, or None where "
     "Python must answer."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tsvector_c",
                                    "Keyword texts and vectors, and both stores' rows, of event lines (portal/event_rows.py, portal/pg_vectors.py, portal/sqlite_ingest.py, portal/pg_ingest.py).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__tsvector_c(void)
{
    for (int c = 0; c < 256; c++) {
        int lower = c >= 'A' && c <= 'Z', word = lower || (c >= 'a' && c <= 'z') ||
                                                 (c >= '0' && c <= '9');
        IS_WORD[c] = (unsigned char)word;
        LOWER[c] = (unsigned char)(lower ? c + 32 : c);
        uint32_t crc = (uint32_t)c;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
        CRC32[c] = crc;
    }
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    return PyModule_Create(&module);
}
