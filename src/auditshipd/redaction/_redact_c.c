/*
 * auditshipd.redaction._redact_c: the C tier of the redaction fast path (see redaction/fastpath.py).
 *
 * One journal line in, the redacted event out as compact JSON bytes, in one pass over
 * the line's bytes, with no Python object built for the fields the policy drops, the
 * kept plain strings and integers or the keys already classified. The policy reaches C
 * as a tree of allowed fields (built once per policy by redaction/fastpath.py): explicit fields
 * come out in the policy's order (as msgspec writes the Structs of the Python tier),
 * free-form maps (metadata.*) in the line's order with the entries under id-named keys
 * deleted at any depth, and every string checked for the prefilter of the built-in id
 * patterns (needs_check).
 *
 * The C tier only ever answers for lines whose output it can write byte for byte as
 * encode(redactor(decode(line))) would. For anything else it returns None and the
 * Python tiers answer (with the error or the quarantine reason when there is one):
 * escapes in keys or required fields, surrogate escapes, invalid UTF-8, integers of more
 * than 18 digits or -0 in kept values, out-of-range floats, duplicate keys, a missing or
 * empty required field, a value of an unexpected type for its place in the policy,
 * nesting deeper than MAX_DEPTH, invalid JSON, keys the Python classifier would rename,
 * and a map or list under a key whose value is hashed.
 *
 * What stays in Python: classifying a key the first time it is seen (cached here),
 * redacting a string that has a run of 16 id characters (a string found unchanged is
 * cached here too), a string value with backslash escapes (decoded, checked and
 * re-encoded by msgspec), a kept float (parsed by float(), written by msgspec), a kept
 * integer of 16 to 18 digits or a kept float that is a whole number of 1e15 or more
 * (IdRedactor.number: an id, or kept as it is), and hashing
 * the value of an id-named key (action "hash").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define K_LEAF 0
#define K_STRUCT 1
#define K_LIST 2
#define K_MAP 3
#define K_REQ 4
#define K_VERSION 5

#define MAX_ITEMS 64
#define MAX_DEPTH 64
#define MAX_MAP_KEYS 64
#define RUN 16
#define TABLE_CAP 8192 /* slots; at most half are used, then the table is emptied */
/* No cache entry is longer (bytes): with TABLE_CAP / 2 entries a table stays under 1 MiB
 * whatever the input. Equal to redact_policy.CACHE_ITEM_MAX (a test checks). */
#define CACHE_ITEM_MAX 256

/* Results of the emitters. */
#define OK 0
#define ERR (-1)     /* a Python exception is set */
#define GIVE_UP 1    /* the Python tiers answer for this line */
#define DROPPED 2    /* the value goes (a string the action removes whole) */
#define MORE 3       /* next_member: a comma, another member follows */

/* Key kinds, as the Python kind_of callback returns them. */
#define KEY_KEEP 0
#define KEY_DELETE 1
#define KEY_GIVE_UP 2
#define KEY_MASK 3
#define KEY_HASH 4

typedef struct Node Node;

typedef struct {
    char *key;
    Py_ssize_t klen;
    char *head; /* "key": */
    Py_ssize_t hlen;
    int kind;
    Node *sub;
} Item;

struct Node {
    int n;
    Item *items;
};

typedef struct {
    char *key;
    Py_ssize_t len;
    uint64_t hash;
    int value;
} Slot;

typedef struct {
    Slot *slots;
    Py_ssize_t used;
} Table;

typedef struct {
    PyObject_HEAD
    Node *root;
    PyObject *kind_of;    /* key: str -> KEY_* */
    PyObject *redact_str; /* text: str -> str | drop */
    PyObject *encode;     /* str -> bytes (msgspec's encoder) */
    PyObject *drop;       /* the sentinel redact_str returns for "remove the string" */
    PyObject *mask_json;  /* bytes written for the value of a KEY_MASK key */
    PyObject *id_value;   /* text: str -> str, the value written for a KEY_HASH key */
    PyObject *escaped;    /* raw JSON string with escapes: bytes -> encoded bytes | drop */
    PyObject *number;     /* an int of 16+ digits or a whole float of 1e15+ -> itself | str | drop */
    Table keys;
    Table clean;
} Plan;

typedef struct {
    char *p;
    Py_ssize_t len;
    Py_ssize_t cap;
    char local[2048];
} Buf;

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} Src;

/* The characters of the prefilter run: [A-Za-z0-9_~+/=-]. */
static unsigned char RUN_CLASS[256];
/* Where a string scan stops: the closing quote, a backslash, a raw control character. */
static unsigned char STR_STOP[256];

static void init_class(void) {
    const char *chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_~+/=-";
    for (const char *c = chars; *c; c++)
        RUN_CLASS[(unsigned char)*c] = 1;
    for (int c = 0; c < 0x20; c++)
        STR_STOP[c] = 1;
    STR_STOP['"'] = STR_STOP['\\'] = 1;
}

/* -- output buffer ---------------------------------------------------------------- */

static int buf_grow(Buf *b, Py_ssize_t need) {
    Py_ssize_t cap = b->cap;
    while (cap < b->len + need)
        cap *= 2;
    char *p;
    if (b->p == b->local) {
        p = PyMem_Malloc(cap);
        if (p != NULL)
            memcpy(p, b->p, b->len);
    } else {
        p = PyMem_Realloc(b->p, cap);
    }
    if (p == NULL) {
        PyErr_NoMemory();
        return ERR;
    }
    b->p = p;
    b->cap = cap;
    return OK;
}

static inline int put(Buf *b, const void *data, Py_ssize_t n) {
    if (b->len + n > b->cap && buf_grow(b, n) != OK)
        return ERR;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return OK;
}

static inline int put_char(Buf *b, char c) {
    if (b->len + 1 > b->cap && buf_grow(b, 1) != OK)
        return ERR;
    b->p[b->len++] = c;
    return OK;
}

/* -- caches: byte strings -> small ints -------------------------------------------- */

static uint64_t fnv1a(const unsigned char *s, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void table_clear(Table *t) {
    if (t->slots == NULL)
        return;
    for (Py_ssize_t i = 0; i < TABLE_CAP; i++) {
        PyMem_Free(t->slots[i].key);
        t->slots[i].key = NULL;
    }
    t->used = 0;
}

static void table_free(Table *t) {
    table_clear(t);
    PyMem_Free(t->slots);
    t->slots = NULL;
}

/* The value stored for s, or -1. */
static int table_get(Table *t, const unsigned char *s, Py_ssize_t n, uint64_t h) {
    size_t i = (size_t)h & (TABLE_CAP - 1);
    for (;;) {
        Slot *slot = &t->slots[i];
        if (slot->key == NULL)
            return -1;
        if (slot->hash == h && slot->len == n && memcmp(slot->key, s, n) == 0)
            return slot->value;
        i = (i + 1) & (TABLE_CAP - 1);
    }
}

static int table_put(Table *t, const unsigned char *s, Py_ssize_t n, uint64_t h, int value) {
    if (n > CACHE_ITEM_MAX)
        return OK; /* not cached: the table is bounded in bytes, not only in entries */
    if (t->used >= TABLE_CAP / 2)
        table_clear(t);
    char *copy = PyMem_Malloc(n ? n : 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return ERR;
    }
    memcpy(copy, s, n);
    size_t i = (size_t)h & (TABLE_CAP - 1);
    while (t->slots[i].key != NULL)
        i = (i + 1) & (TABLE_CAP - 1);
    t->slots[i].key = copy;
    t->slots[i].len = n;
    t->slots[i].hash = h;
    t->slots[i].value = value;
    t->used++;
    return OK;
}

/* -- JSON scanning (strict; anything unusual gives up) ------------------------------- */

static inline void skip_ws(Src *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* At an opening '{' or '[': consumed; 1 when the container is empty (its closer consumed too). */
static inline int open_container(Src *s, unsigned char close) {
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 1;
    }
    return 0;
}

/* After a member: MORE after a comma, OK at the closer (consumed), GIVE_UP otherwise. */
static inline int next_member(Src *s, unsigned char close) {
    skip_ws(s);
    if (s->p < s->end && *s->p == ',') {
        s->p++;
        skip_ws(s);
        return MORE;
    }
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return OK;
    }
    return GIVE_UP;
}

/* After a key: the ':' and the spaces around it. */
static inline int colon(Src *s) {
    skip_ws(s);
    if (s->p >= s->end || *s->p != ':')
        return GIVE_UP;
    s->p++;
    skip_ws(s);
    return OK;
}

static inline int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The first stop character (STR_STOP) at or after q, or end: eight bytes at a time (a
 * zero byte after xor with '"' or '\\', a byte below 0x20; bytes >= 0x80 never match;
 * little-endian: the lowest flagged byte comes first), the last few byte by byte. */
static inline const unsigned char *find_stop(const unsigned char *q, const unsigned char *end) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - q >= 8) {
        uint64_t w, quote, slash, hit;
        memcpy(&w, q, 8);
        quote = w ^ (ones * '"');
        slash = w ^ (ones * '\\');
        hit = (((quote - ones) & ~quote) | ((slash - ones) & ~slash) | ((w - ones * 0x20) & ~w)) & highs;
        if (hit) /* the lowest flagged byte is exact (false flags only follow a true one) */
            return q + (__builtin_ctzll(hit) >> 3);
        q += 8;
    }
#endif
    while (q < end && !STR_STOP[*q])
        q++;
    return q;
}

/* At '"': the string's raw content (between the quotes); *escaped when it holds a
 * backslash escape (checked: \" \\ \/ \b \f \n \r \t \uXXXX, no surrogate halves). */
static int scan_string_esc(Src *s, const unsigned char **start, Py_ssize_t *len, int *escaped) {
    const unsigned char *p = s->p + 1;
    const unsigned char *q = p;
    *escaped = 0;
    for (;;) {
        q = find_stop(q, s->end);
        if (q >= s->end || *q == '"')
            break;
        if (*q < 0x20)
            return GIVE_UP; /* a raw control character: invalid JSON */
        *escaped = 1; /* a backslash */
        if (q + 1 >= s->end)
            return GIVE_UP;
        unsigned char e = q[1];
        if (e == 'u') {
            if (s->end - q < 6)
                return GIVE_UP;
            int code = 0;
            for (int i = 2; i < 6; i++) {
                int v = hex_value(q[i]);
                if (v < 0)
                    return GIVE_UP;
                code = code * 16 + v;
            }
            if (code >= 0xD800 && code <= 0xDFFF)
                return GIVE_UP; /* a surrogate half: the Python tiers decide */
            q += 6;
        } else if (e != 0 && strchr("\"\\/bfnrt", e)) {
            q += 2;
        } else {
            return GIVE_UP;
        }
    }
    if (q >= s->end)
        return GIVE_UP;
    *start = p;
    *len = q - p;
    s->p = q + 1;
    return OK;
}

/* At '"': a string written as it is (a key, a required field): escapes give up. */
static inline int scan_string(Src *s, const unsigned char **start, Py_ssize_t *len) {
    int escaped;
    int rc = scan_string_esc(s, start, len, &escaped);
    return rc == OK && escaped ? GIVE_UP : rc;
}

/* What a JSON number is, for writing it: */
#define NUM_INT 0   /* -?(0|[1-9][0-9]*), at most 15 digits, not -0: msgspec writes it as it is */
#define NUM_FLOAT 1 /* a fraction or an exponent: msgspec writes the shortest repr of the double */
#define NUM_OTHER 2 /* -0 or an integer of 19+ digits: left to the Python tiers */
#define NUM_LONG 3  /* an integer of 16 to 18 digits: maybe an id (IdRedactor.number) */
#define LONG_DIGITS 16 /* IdRedactor.BIG_INT = 10**15: the smallest such integer */
#define LONG_FLOAT 1e15 /* the same bound for a float that is a whole number (IdRedactor.number) */

static int scan_number(Src *s, int *form) {
    const unsigned char *p = s->p, *end = s->end;
    int neg = 0;
    *form = NUM_INT;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    const unsigned char *digits = p;
    if (p >= end || *p < '0' || *p > '9')
        return GIVE_UP;
    if (*p == '0') {
        p++;
    } else {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    Py_ssize_t ndigits = p - digits;
    if (ndigits > 18 || (neg && ndigits == 1 && digits[0] == '0'))
        *form = NUM_OTHER;
    else if (ndigits >= LONG_DIGITS)
        *form = NUM_LONG;
    if (p < end && *p == '.') {
        *form = NUM_FLOAT;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return GIVE_UP;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *form = NUM_FLOAT;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return GIVE_UP;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    s->p = p;
    return OK;
}

static inline int scan_literal(Src *s) {
    Py_ssize_t left = s->end - s->p;
    if (left >= 4 && memcmp(s->p, "true", 4) == 0) {
        s->p += 4;
        return OK;
    }
    if (left >= 5 && memcmp(s->p, "false", 5) == 0) {
        s->p += 5;
        return OK;
    }
    if (left >= 4 && memcmp(s->p, "null", 4) == 0) {
        s->p += 4;
        return OK;
    }
    return GIVE_UP;
}

static int skip_value(Src *s, int depth) {
    const unsigned char *start;
    Py_ssize_t len;
    int form, rc, escaped;
    if (s->p >= s->end)
        return GIVE_UP;
    switch (*s->p) {
    case '"':
        return scan_string_esc(s, &start, &len, &escaped);
    case '{':
        if (depth >= MAX_DEPTH)
            return GIVE_UP;
        if (open_container(s, '}'))
            return OK;
        do {
            if (s->p >= s->end || *s->p != '"')
                return GIVE_UP;
            if ((rc = scan_string_esc(s, &start, &len, &escaped)) != OK || (rc = colon(s)) != OK ||
                (rc = skip_value(s, depth + 1)) != OK)
                return rc;
        } while ((rc = next_member(s, '}')) == MORE);
        return rc;
    case '[':
        if (depth >= MAX_DEPTH)
            return GIVE_UP;
        if (open_container(s, ']'))
            return OK;
        do {
            if ((rc = skip_value(s, depth + 1)) != OK)
                return rc;
        } while ((rc = next_member(s, ']')) == MORE);
        return rc;
    case 't':
    case 'f':
    case 'n':
        return scan_literal(s);
    default:
        return scan_number(s, &form);
    }
}

/* -- emitting ------------------------------------------------------------------------ */

/* The prefilter of the built-in id patterns (redact_policy._PREFILTER): a run of RUN
 * characters of RUN_CLASS, or a URL's userinfo ("://", then "@" before any whitespace,
 * '/', '?' or '#'). A string without either goes out as it is; one with either goes to
 * Python's _redact_str. (Python's \s also stops at a few non-ASCII spaces: C then sends a
 * few more strings to Python, which gives them back unchanged.) */
static int needs_check(const unsigned char *s, Py_ssize_t n) {
    int run = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (RUN_CLASS[s[i]]) {
            if (++run >= RUN)
                return 1;
        } else {
            run = 0;
            if (s[i] == ':' && i + 2 < n && s[i + 1] == '/' && s[i + 2] == '/') {
                for (Py_ssize_t j = i + 3; j < n; j++) {
                    unsigned char c = s[j];
                    if (c == '@')
                        return 1;
                    if (c == '/' || c == '?' || c == '#' || c == ' ' || (c >= 0x09 && c <= 0x0d))
                        break;
                }
            }
        }
    }
    return 0;
}

/* func(the UTF-8 text of start[0:len]): a new reference, or NULL with an exception set. */
static PyObject *call_with_text(PyObject *func, const unsigned char *start, Py_ssize_t len) {
    PyObject *text = PyUnicode_DecodeUTF8((const char *)start, len, NULL);
    if (text == NULL)
        return NULL;
    PyObject *out = PyObject_CallOneArg(func, text);
    Py_DECREF(text);
    return out;
}

/* Writes out (a str or float from Python) as msgspec encodes it; steals the reference. */
static int put_encoded(Plan *plan, Buf *b, PyObject *out) {
    PyObject *encoded = PyObject_CallOneArg(plan->encode, out);
    Py_DECREF(out);
    if (encoded == NULL)
        return ERR;
    if (!PyBytes_Check(encoded)) {
        Py_DECREF(encoded);
        PyErr_SetString(PyExc_TypeError, "encode() must return bytes");
        return ERR;
    }
    int rc = put(b, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    return rc;
}

/* At '"': a string value, checked for ids; DROPPED when the action removes it whole. */
static int emit_string(Plan *plan, Src *s, Buf *b) {
    const unsigned char *start;
    Py_ssize_t len;
    int escaped;
    int rc = scan_string_esc(s, &start, &len, &escaped);
    if (rc != OK)
        return rc;
    if (escaped) { /* Python decodes it, checks it and writes it as msgspec does */
        PyObject *raw = PyBytes_FromStringAndSize((const char *)start - 1, len + 2);
        if (raw == NULL)
            return ERR;
        PyObject *out = PyObject_CallOneArg(plan->escaped, raw);
        Py_DECREF(raw);
        if (out == NULL) {
            PyErr_Clear(); /* not a string msgspec takes: the Python tiers say why */
            return GIVE_UP;
        }
        if (out == plan->drop) {
            Py_DECREF(out);
            return DROPPED;
        }
        if (!PyBytes_Check(out)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, "escaped() must return bytes or drop");
            return ERR;
        }
        rc = put(b, PyBytes_AS_STRING(out), PyBytes_GET_SIZE(out));
        Py_DECREF(out);
        return rc;
    }
    if (needs_check(start, len)) {
        uint64_t h = fnv1a(start, len);
        if (table_get(&plan->clean, start, len, h) < 0) {
            PyObject *text = PyUnicode_DecodeUTF8((const char *)start, len, NULL);
            if (text == NULL)
                return ERR;
            PyObject *out = PyObject_CallOneArg(plan->redact_str, text);
            if (out == NULL) {
                Py_DECREF(text);
                return ERR;
            }
            if (out == plan->drop) {
                Py_DECREF(text);
                Py_DECREF(out);
                return DROPPED;
            }
            int same = PyUnicode_Check(out) ? PyUnicode_Compare(out, text) : 1;
            Py_DECREF(text);
            if (same == -1 && PyErr_Occurred()) {
                Py_DECREF(out);
                return ERR;
            }
            if (same != 0)
                return put_encoded(plan, b, out);
            Py_DECREF(out);
            if (table_put(&plan->clean, start, len, h, 1) != OK)
                return ERR;
        }
    }
    return put(b, start - 1, len + 2);
}

/* An integer of 16 to 18 digits (text[0:n]) in a kept value: what Python's
 * IdRedactor.number makes of it (kept as it is, or the action's value, or DROPPED). */
static int emit_long(Plan *plan, const unsigned char *text, Py_ssize_t n, Buf *b) {
    char digits[24];
    memcpy(digits, text, n); /* at most 19 bytes: a sign and 18 digits */
    digits[n] = 0;
    PyObject *x = PyLong_FromString(digits, NULL, 10);
    if (x == NULL)
        return ERR;
    PyObject *out = PyObject_CallOneArg(plan->number, x);
    Py_DECREF(x);
    if (out == NULL)
        return ERR;
    if (out == plan->drop) {
        Py_DECREF(out);
        return DROPPED;
    }
    if (PyLong_CheckExact(out)) { /* not an id: the integer as it is */
        Py_DECREF(out);
        return put(b, text, n);
    }
    if (!PyUnicode_Check(out)) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_TypeError, "number() must return an int, a str or drop");
        return ERR;
    }
    return put_encoded(plan, b, out);
}

/* A number, true, false or null, as msgspec writes it: copied, or for a float (when
 * floats is set: a kept value, not the version) the double Python parses from it,
 * encoded by msgspec, and for an integer of 16+ digits or a float that is such a whole
 * number (floats set) what IdRedactor.number makes of it. */
static int emit_scalar(Plan *plan, Src *s, Buf *b, int floats) {
    const unsigned char *start = s->p;
    int rc, form = NUM_INT;
    if (*s->p == 't' || *s->p == 'f' || *s->p == 'n')
        rc = scan_literal(s);
    else
        rc = scan_number(s, &form);
    if (rc != OK)
        return rc;
    if (form == NUM_INT || (form == NUM_LONG && !floats))
        return put(b, start, s->p - start);
    if (form == NUM_LONG)
        return emit_long(plan, start, s->p - start, b);
    if (form != NUM_FLOAT || !floats)
        return GIVE_UP;
    PyObject *text = PyBytes_FromStringAndSize((const char *)start, s->p - start);
    if (text == NULL)
        return ERR;
    PyObject *value = PyFloat_FromString(text); /* correctly rounded, as msgspec's parser */
    Py_DECREF(text);
    if (value == NULL)
        return ERR;
    double d = PyFloat_AS_DOUBLE(value);
    if (!isfinite(d)) {
        Py_DECREF(value);
        return GIVE_UP; /* out of range: msgspec rejects the line */
    }
    if (fabs(d) >= LONG_FLOAT && d == floor(d)) { /* a whole number of 16+ digits: maybe an id */
        PyObject *out = PyObject_CallOneArg(plan->number, value);
        Py_DECREF(value);
        if (out == NULL)
            return ERR;
        if (out == plan->drop) {
            Py_DECREF(out);
            return DROPPED;
        }
        if (!PyFloat_CheckExact(out) && !PyUnicode_Check(out)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, "number() must return a float, a str or drop");
            return ERR;
        }
        value = out; /* the float itself (not an id), or the action's value */
    }
    return put_encoded(plan, b, value);
}

static int emit_free(Plan *plan, Src *s, Buf *b, int depth);

/* At '"', the value of a KEY_HASH key: what Python's id_value() makes of the string. */
static int emit_hashed(Plan *plan, Src *s, Buf *b) {
    const unsigned char *start;
    Py_ssize_t len;
    int rc = scan_string(s, &start, &len);
    if (rc != OK)
        return rc;
    PyObject *out = call_with_text(plan->id_value, start, len);
    if (out == NULL)
        return ERR;
    if (!PyUnicode_Check(out)) {
        Py_DECREF(out);
        return GIVE_UP;
    }
    return put_encoded(plan, b, out);
}

/* The kind of a free-form key: cached, or asked of Python once. */
static int key_kind(Plan *plan, const unsigned char *key, Py_ssize_t len) {
    uint64_t h = fnv1a(key, len);
    int kind = table_get(&plan->keys, key, len, h);
    if (kind >= 0)
        return kind;
    PyObject *out = call_with_text(plan->kind_of, key, len);
    if (out == NULL)
        return ERR;
    long value = PyLong_AsLong(out);
    Py_DECREF(out);
    if (value == -1 && PyErr_Occurred())
        return ERR;
    if (value < KEY_KEEP || value > KEY_HASH) {
        PyErr_Format(PyExc_ValueError, "kind_of() returned %ld", value);
        return ERR;
    }
    if (table_put(&plan->keys, key, len, h, (int)value) != OK)
        return ERR;
    return (int)value;
}

/* After a member was written from mark on: DROPPED takes it back (its comma too). */
static inline int settle(Buf *b, Py_ssize_t mark, int rc, int *first) {
    if (rc == DROPPED) {
        b->len = mark;
        return OK;
    }
    if (rc == OK)
        *first = 0;
    return rc;
}

/* At '{': a free-form map (metadata.*), in the line's order, id-named entries deleted. */
static int emit_map(Plan *plan, Src *s, Buf *b, int depth) {
    const unsigned char *keys[MAX_MAP_KEYS];
    Py_ssize_t lens[MAX_MAP_KEYS];
    int n = 0, first = 1, rc;
    if (depth >= MAX_DEPTH)
        return GIVE_UP;
    if (put_char(b, '{') != OK)
        return ERR;
    if (open_container(s, '}'))
        return put_char(b, '}');
    do {
        const unsigned char *key;
        Py_ssize_t klen;
        if (s->p >= s->end || *s->p != '"')
            return GIVE_UP;
        if ((rc = scan_string(s, &key, &klen)) != OK || (rc = colon(s)) != OK)
            return rc;
        if (n >= MAX_MAP_KEYS)
            return GIVE_UP;
        for (int i = 0; i < n; i++) {
            if (lens[i] == klen && memcmp(keys[i], key, klen) == 0)
                return GIVE_UP; /* a duplicate key: Python keeps the last value */
        }
        keys[n] = key;
        lens[n++] = klen;
        int kind = key_kind(plan, key, klen);
        if (kind == ERR)
            return ERR;
        if (kind == KEY_GIVE_UP)
            return GIVE_UP;
        if (kind == KEY_DELETE) {
            rc = skip_value(s, depth + 1);
        } else {
            Py_ssize_t mark = b->len;
            if ((!first && put_char(b, ',') != OK) || put_char(b, '"') != OK || put(b, key, klen) != OK ||
                put(b, "\":", 2) != OK)
                return ERR;
            if (kind == KEY_MASK) {
                if ((rc = skip_value(s, depth + 1)) != OK)
                    return rc;
                rc = put(b, PyBytes_AS_STRING(plan->mask_json), PyBytes_GET_SIZE(plan->mask_json));
            } else if (kind == KEY_HASH) {
                if (s->p >= s->end || *s->p != '"')
                    return GIVE_UP; /* a hashed map or list: Python encodes it sorted first */
                rc = emit_hashed(plan, s, b);
            } else {
                rc = emit_free(plan, s, b, depth + 1);
            }
            rc = settle(b, mark, rc, &first);
        }
        if (rc != OK)
            return rc;
    } while ((rc = next_member(s, '}')) == MORE);
    return rc == OK ? put_char(b, '}') : rc;
}

/* At '[': a list inside a free-form part; strings the action removes leave the list. */
static int emit_array(Plan *plan, Src *s, Buf *b, int depth) {
    int first = 1, rc;
    if (depth >= MAX_DEPTH)
        return GIVE_UP;
    if (put_char(b, '[') != OK)
        return ERR;
    if (open_container(s, ']'))
        return put_char(b, ']');
    do {
        Py_ssize_t mark = b->len;
        if (!first && put_char(b, ',') != OK)
            return ERR;
        if ((rc = settle(b, mark, emit_free(plan, s, b, depth + 1), &first)) != OK)
            return rc;
    } while ((rc = next_member(s, ']')) == MORE);
    return rc == OK ? put_char(b, ']') : rc;
}

/* Any value inside a free-form part. */
static int emit_free(Plan *plan, Src *s, Buf *b, int depth) {
    if (s->p >= s->end)
        return GIVE_UP;
    switch (*s->p) {
    case '"':
        return emit_string(plan, s, b);
    case '{':
        return emit_map(plan, s, b, depth);
    case '[':
        return emit_array(plan, s, b, depth);
    default:
        return emit_scalar(plan, s, b, 1);
    }
}

static int emit_struct(Plan *plan, Node *node, Src *s, Buf *b, int depth);

/* The value of one allowed field (at its first byte), as its kind says. */
static int emit_item(Plan *plan, Item *item, Src *s, Buf *b, int depth) {
    unsigned char c = *s->p;
    int rc, first;
    switch (item->kind) {
    case K_REQ:
        if (c != '"')
            return GIVE_UP;
        {
            const unsigned char *start;
            Py_ssize_t len;
            if ((rc = scan_string(s, &start, &len)) != OK)
                return rc;
            if (len == 0)
                return GIVE_UP;
            return put(b, start - 1, len + 2);
        }
    case K_VERSION:
        if (c != '-' && (c < '0' || c > '9'))
            return GIVE_UP;
        return emit_scalar(plan, s, b, 0); /* an integer, or the Python tiers drop it */
    case K_LEAF:
        if (c == '"')
            return emit_string(plan, s, b);
        if (c == '{' || c == '[')
            return GIVE_UP;
        return emit_scalar(plan, s, b, 1);
    case K_STRUCT:
        if (c != '{')
            return GIVE_UP;
        return emit_struct(plan, item->sub, s, b, depth);
    case K_MAP:
        if (c != '{')
            return GIVE_UP;
        return emit_map(plan, s, b, depth);
    case K_LIST:
        if (c != '[' || depth >= MAX_DEPTH)
            return GIVE_UP;
        if (put_char(b, '[') != OK)
            return ERR;
        if (open_container(s, ']'))
            return put_char(b, ']');
        first = 1;
        do {
            if (!first && put_char(b, ',') != OK)
                return ERR;
            first = 0;
            if (s->p >= s->end || *s->p != '{')
                return GIVE_UP;
            if ((rc = emit_struct(plan, item->sub, s, b, depth + 1)) != OK)
                return rc;
        } while ((rc = next_member(s, ']')) == MORE);
        return rc == OK ? put_char(b, ']') : rc;
    }
    return GIVE_UP;
}

/* At '{': an object with explicit fields: every field read (and checked), the allowed
 * ones written in the policy's order. */
static int emit_struct(Plan *plan, Node *node, Src *s, Buf *b, int depth) {
    const unsigned char *spans[MAX_ITEMS];
    uint64_t seen = 0;
    int rc;
    if (depth >= MAX_DEPTH)
        return GIVE_UP;
    if (!open_container(s, '}')) {
        do {
            const unsigned char *key;
            Py_ssize_t klen;
            if (s->p >= s->end || *s->p != '"')
                return GIVE_UP;
            if ((rc = scan_string(s, &key, &klen)) != OK || (rc = colon(s)) != OK)
                return rc;
            for (int i = 0; i < node->n; i++) {
                Item *item = &node->items[i];
                if (item->klen == klen && memcmp(item->key, key, klen) == 0) {
                    if (seen & ((uint64_t)1 << i))
                        return GIVE_UP; /* a duplicate allowed field */
                    seen |= (uint64_t)1 << i;
                    spans[i] = s->p;
                    break;
                }
            }
            if ((rc = skip_value(s, depth + 1)) != OK)
                return rc;
        } while ((rc = next_member(s, '}')) == MORE);
        if (rc != OK)
            return rc;
    }
    int first = 1;
    if (put_char(b, '{') != OK)
        return ERR;
    for (int i = 0; i < node->n; i++) {
        Item *item = &node->items[i];
        if (!(seen & ((uint64_t)1 << i))) {
            if (item->kind == K_REQ)
                return GIVE_UP; /* the Python tiers give the quarantine reason */
            continue;
        }
        Py_ssize_t mark = b->len;
        if ((!first && put_char(b, ',') != OK) || put(b, item->head, item->hlen) != OK)
            return ERR;
        Src sub = {spans[i], s->end};
        if ((rc = settle(b, mark, emit_item(plan, item, &sub, b, depth + 1), &first)) != OK)
            return rc;
    }
    return put_char(b, '}');
}

/* -- the Plan type ------------------------------------------------------------------- */

static void node_free(Node *node) {
    if (node == NULL)
        return;
    for (int i = 0; i < node->n; i++) {
        PyMem_Free(node->items[i].key);
        PyMem_Free(node->items[i].head);
        node_free(node->items[i].sub);
    }
    PyMem_Free(node->items);
    PyMem_Free(node);
}

/* A node from a tuple of (key: str, kind: int, sub: tuple | None). */
static Node *node_build(PyObject *spec, int depth) {
    if (!PyTuple_Check(spec)) {
        PyErr_SetString(PyExc_TypeError, "a plan node must be a tuple");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(spec);
    if (n > MAX_ITEMS || depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "plan node too wide or too deep for the C tier");
        return NULL;
    }
    Node *node = PyMem_Calloc(1, sizeof(Node));
    if (node == NULL)
        return (Node *)PyErr_NoMemory();
    node->items = PyMem_Calloc(n ? n : 1, sizeof(Item));
    if (node->items == NULL) {
        PyMem_Free(node);
        return (Node *)PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyTuple_GET_ITEM(spec, i);
        const char *key;
        Py_ssize_t klen;
        int kind;
        PyObject *sub;
        if (!PyArg_ParseTuple(entry, "s#iO;a plan item is (key, kind, sub)", &key, &klen, &kind, &sub))
            goto fail;
        for (Py_ssize_t j = 0; j < klen; j++) {
            unsigned char c = (unsigned char)key[j];
            if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') {
                PyErr_SetString(PyExc_ValueError, "a plan key must be printable ASCII without quotes");
                goto fail;
            }
        }
        Item *item = &node->items[node->n++];
        item->kind = kind;
        item->klen = klen;
        item->key = PyMem_Malloc(klen ? klen : 1);
        item->hlen = klen + 3;
        item->head = PyMem_Malloc(klen + 3);
        if (item->key == NULL || item->head == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(item->key, key, klen);
        item->head[0] = '"';
        memcpy(item->head + 1, key, klen);
        item->head[klen + 1] = '"';
        item->head[klen + 2] = ':';
        if (kind == K_STRUCT || kind == K_LIST) {
            item->sub = node_build(sub, depth + 1);
            if (item->sub == NULL)
                goto fail;
        } else if (kind < K_LEAF || kind > K_VERSION) {
            PyErr_Format(PyExc_ValueError, "unknown plan kind %d", kind);
            goto fail;
        }
    }
    return node;
fail:
    node_free(node);
    return NULL;
}

static int Plan_init(Plan *self, PyObject *args, PyObject *kwds) {
    PyObject *root, *kind_of, *redact_str, *encode, *drop, *mask_json, *id_value, *escaped, *number;
    static char *kwlist[] = {"root",      "kind_of",  "redact_str", "encode", "drop",
                             "mask_json", "id_value", "escaped",    "number", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOSOOO", kwlist, &root, &kind_of, &redact_str,
                                     &encode, &drop, &mask_json, &id_value, &escaped, &number))
        return -1;
    if (self->root != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Plan is already initialised");
        return -1;
    }
    self->root = node_build(root, 0);
    if (self->root == NULL)
        return -1;
    self->keys.slots = PyMem_Calloc(TABLE_CAP, sizeof(Slot));
    self->clean.slots = PyMem_Calloc(TABLE_CAP, sizeof(Slot));
    if (self->keys.slots == NULL || self->clean.slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->kind_of = Py_NewRef(kind_of);
    self->redact_str = Py_NewRef(redact_str);
    self->encode = Py_NewRef(encode);
    self->drop = Py_NewRef(drop);
    self->mask_json = Py_NewRef(mask_json);
    self->id_value = Py_NewRef(id_value);
    self->escaped = Py_NewRef(escaped);
    self->number = Py_NewRef(number);
    return 0;
}

/* A Plan holds callbacks that hold the Redactor that holds the Plan: a cycle only the
 * garbage collector can free, so the Plan takes part in it (traverse/clear). */
static int Plan_traverse(Plan *self, visitproc visit, void *arg) {
    Py_VISIT(self->kind_of);
    Py_VISIT(self->redact_str);
    Py_VISIT(self->encode);
    Py_VISIT(self->drop);
    Py_VISIT(self->mask_json);
    Py_VISIT(self->id_value);
    Py_VISIT(self->escaped);
    Py_VISIT(self->number);
    return 0;
}

static int Plan_clear(Plan *self) {
    Py_CLEAR(self->kind_of);
    Py_CLEAR(self->redact_str);
    Py_CLEAR(self->encode);
    Py_CLEAR(self->drop);
    Py_CLEAR(self->mask_json);
    Py_CLEAR(self->id_value);
    Py_CLEAR(self->escaped);
    Py_CLEAR(self->number);
    return 0;
}

static void Plan_dealloc(Plan *self) {
    PyObject_GC_UnTrack(self);
    Plan_clear(self);
    node_free(self->root);
    self->root = NULL;
    table_free(&self->keys);
    table_free(&self->clean);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Plan_redact(Plan *self, PyObject *line) {
    if (!PyBytes_Check(line)) {
        PyErr_SetString(PyExc_TypeError, "redact() takes bytes");
        return NULL;
    }
    if (self->root == NULL || self->kind_of == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Plan is not initialised (or was cleared)");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(line);
    Py_ssize_t size = PyBytes_GET_SIZE(line);
    for (Py_ssize_t i = 0; i < size; i++) {
        if (data[i] >= 0x80) {
            PyObject *check = PyUnicode_DecodeUTF8((const char *)data, size, NULL);
            if (check == NULL) {
                PyErr_Clear();
                Py_RETURN_NONE; /* invalid UTF-8: the Python tier raises the error */
            }
            Py_DECREF(check);
            break;
        }
    }
    Src s = {data, data + size};
    Buf b;
    b.p = b.local;
    b.len = 0;
    b.cap = sizeof(b.local);
    skip_ws(&s);
    int rc = GIVE_UP;
    if (s.p < s.end && *s.p == '{') {
        rc = emit_struct(self, self->root, &s, &b, 0);
        if (rc == OK) {
            skip_ws(&s);
            if (s.p != s.end)
                rc = GIVE_UP; /* trailing data */
        }
    }
    PyObject *result;
    if (rc == OK)
        result = PyBytes_FromStringAndSize(b.p, b.len);
    else if (rc == ERR)
        result = NULL;
    else
        result = Py_NewRef(Py_None);
    if (b.p != b.local)
        PyMem_Free(b.p);
    return result;
}

/* -- scope: a line's organization slug and occurred_at, for routing ----------------- */

/* The decoded value of a JSON string without escapes (else GIVE_UP: Python decides). */
static int scope_string(Src *s, PyObject **out) {
    const unsigned char *start;
    Py_ssize_t len;
    int rc = scan_string(s, &start, &len);
    if (rc != OK)
        return rc;
    *out = PyUnicode_DecodeUTF8((const char *)start, len, NULL);
    return *out == NULL ? ERR : OK;
}

/* The "slug" member of the organization object (None when absent or not a string). */
static int scope_org(Src *s, PyObject **slug) {
    const unsigned char *key;
    Py_ssize_t klen;
    int rc, seen = 0;
    if (s->p >= s->end || *s->p != '{') /* not an object: no slug */
        return skip_value(s, 1);
    if (open_container(s, '}'))
        return OK;
    do {
        if (s->p >= s->end || *s->p != '"')
            return GIVE_UP;
        if ((rc = scan_string(s, &key, &klen)) != OK || (rc = colon(s)) != OK)
            return rc;
        if (klen == 4 && memcmp(key, "slug", 4) == 0) {
            if (seen++)
                return GIVE_UP; /* a duplicate key: Python decides which counts */
            if (s->p < s->end && *s->p == '"') {
                if ((rc = scope_string(s, slug)) != OK)
                    return rc;
                continue;
            }
        }
        if ((rc = skip_value(s, 2)) != OK)
            return rc;
    } while ((rc = next_member(s, '}')) == MORE);
    return rc;
}

/* Whether any byte is >= 0x80 (not ASCII), eight bytes at a time. */
static inline int has_high_byte(const unsigned char *p, Py_ssize_t n) {
    const unsigned char *end = p + n;
    uint64_t acc = 0;
    for (; end - p >= 8; p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        acc |= w;
    }
    while (p < end)
        acc |= *p++;
    return (acc & 0x8080808080808080ULL) != 0;
}

/* One line: OK with *slug / *when set (new references or NULL for "absent / not a
 * string"), GIVE_UP when Python must decide (invalid or unusual JSON), ERR. */
static int scope_line(const unsigned char *data, Py_ssize_t size, int want_time, PyObject **slug,
                      PyObject **when) {
    const unsigned char *key;
    Py_ssize_t klen;
    int rc, orgs = 0, times = 0;
    Src s = {data, data + size};
    if (has_high_byte(data, size)) { /* invalid UTF-8 is invalid JSON: Python says so */
        PyObject *check = PyUnicode_DecodeUTF8((const char *)data, size, NULL);
        if (check == NULL) {
            PyErr_Clear();
            return GIVE_UP;
        }
        Py_DECREF(check);
    }
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return GIVE_UP;
    if (!open_container(&s, '}')) {
        do {
            if (s.p >= s.end || *s.p != '"')
                return GIVE_UP;
            if ((rc = scan_string(&s, &key, &klen)) != OK || (rc = colon(&s)) != OK)
                return rc;
            if (klen == 12 && memcmp(key, "organization", 12) == 0) {
                if (orgs++)
                    return GIVE_UP;
                rc = scope_org(&s, slug);
            } else if (klen == 11 && memcmp(key, "occurred_at", 11) == 0) {
                if (times++)
                    return GIVE_UP;
                if (s.p >= s.end || *s.p != '"')
                    return GIVE_UP; /* not a string: Python decides what it means */
                if (want_time)
                    rc = scope_string(&s, when);
                else {
                    const unsigned char *start;
                    Py_ssize_t len;
                    rc = scan_string(&s, &start, &len);
                }
            } else {
                rc = skip_value(&s, 1);
            }
            if (rc != OK)
                return rc;
        } while ((rc = next_member(&s, '}')) == MORE);
        if (rc != OK)
            return rc;
    }
    skip_ws(&s);
    return s.p == s.end ? OK : GIVE_UP; /* trailing data: not one JSON object */
}

/* scope_lines(lines, want_times) -> (slugs, times, unsure): per line the organization's
 * slug (None: absent or not a string), its occurred_at string (None: absent; only with
 * want_times, else times is None), and the indices of the lines the scanner leaves to
 * Python (their entries are None). */
static PyObject *scope_lines(PyObject *self, PyObject *args) {
    PyObject *lines;
    int want_time;
    if (!PyArg_ParseTuple(args, "O!p", &PyList_Type, &lines, &want_time))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(lines);
    PyObject *slugs = PyList_New(n);
    PyObject *times = want_time ? PyList_New(n) : Py_NewRef(Py_None);
    PyObject *unsure = PyList_New(0);
    PyObject *last = NULL; /* the previous line's slug: runs of one organization share it */
    if (slugs == NULL || times == NULL || unsure == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        PyObject *slug = NULL, *when = NULL;
        if (!PyBytes_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "scope_lines() takes a list of bytes");
            goto fail;
        }
        int rc = scope_line((const unsigned char *)PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line),
                            want_time, &slug, &when);
        if (rc == ERR) {
            Py_XDECREF(slug);
            Py_XDECREF(when);
            goto fail;
        }
        if (rc == GIVE_UP) {
            Py_XDECREF(slug);
            Py_XDECREF(when);
            slug = when = NULL;
            PyObject *k = PyLong_FromSsize_t(i);
            if (k == NULL || PyList_Append(unsure, k) < 0) {
                Py_XDECREF(k);
                goto fail;
            }
            Py_DECREF(k);
        }
        if (slug != NULL && last != NULL && PyUnicode_Compare(slug, last) == 0) {
            Py_DECREF(slug); /* the same organization as the line before: one object */
            slug = Py_NewRef(last);
        }
        if (slug != NULL)
            last = slug;
        PyList_SET_ITEM(slugs, i, slug != NULL ? slug : Py_NewRef(Py_None));
        if (want_time)
            PyList_SET_ITEM(times, i, when != NULL ? when : Py_NewRef(Py_None));
        else
            Py_XDECREF(when);
    }
    return Py_BuildValue("(NNN)", slugs, times, unsure);
fail:
    Py_XDECREF(slugs);
    Py_XDECREF(times);
    Py_XDECREF(unsure);
    return NULL;
}

/* group_lines(keys) -> {key: [index, ...]}: the indices of equal keys, ascending. */
static PyObject *group_lines(PyObject *self, PyObject *keys) {
    if (!PyList_Check(keys)) {
        PyErr_SetString(PyExc_TypeError, "group_lines() takes a list");
        return NULL;
    }
    PyObject *groups = PyDict_New();
    if (groups == NULL)
        return NULL;
    PyObject *last = NULL, *rows = NULL; /* the previous key and its list (borrowed) */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (key != last) {
            rows = PyDict_GetItemWithError(groups, key);
            if (rows == NULL) {
                if (PyErr_Occurred())
                    goto fail;
                rows = PyList_New(0);
                if (rows == NULL)
                    goto fail;
                int bad = PyDict_SetItem(groups, key, rows);
                Py_DECREF(rows); /* the dict holds it */
                if (bad < 0)
                    goto fail;
            }
            last = key;
        }
        PyObject *k = PyLong_FromSsize_t(i);
        if (k == NULL || PyList_Append(rows, k) < 0) {
            Py_XDECREF(k);
            goto fail;
        }
        Py_DECREF(k);
    }
    return groups;
fail:
    Py_DECREF(groups);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"scope_lines", scope_lines, METH_VARARGS,
     "scope_lines(lines: list[bytes], want_times: bool) -> (slugs, times, unsure): each "
     "line's organization slug and occurred_at; unsure: the lines Python must scope."},
    {"group_lines", group_lines, METH_O,
     "group_lines(keys: list) -> dict: the ascending indices of each distinct key."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Plan_methods[] = {
    {"redact", (PyCFunction)Plan_redact, METH_O,
     "redact(line: bytes) -> bytes | None: the redacted event, or None when the Python "
     "tiers must answer for this line."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "auditshipd.redaction._redact_c.Plan",
    .tp_basicsize = sizeof(Plan),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Plan(root, kind_of, redact_str, encode, drop, mask_json, id_value, escaped, number): a policy "
               "compiled for the C tier.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Plan_init,
    .tp_dealloc = (destructor)Plan_dealloc,
    .tp_traverse = (traverseproc)Plan_traverse,
    .tp_clear = (inquiry)Plan_clear,
    .tp_free = PyObject_GC_Del,
    .tp_methods = Plan_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "auditshipd.redaction._redact_c",
    .m_doc = "The C tier of the redaction fast path (see auditshipd.redaction.fastpath).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__redact_c(void) {
    init_class();
    if (PyType_Ready(&PlanType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PlanType);
    if (PyModule_AddObject(m, "Plan", (PyObject *)&PlanType) < 0) {
        Py_DECREF(&PlanType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "K_LEAF", K_LEAF) < 0 || PyModule_AddIntConstant(m, "K_STRUCT", K_STRUCT) < 0 ||
        PyModule_AddIntConstant(m, "K_LIST", K_LIST) < 0 || PyModule_AddIntConstant(m, "K_MAP", K_MAP) < 0 ||
        PyModule_AddIntConstant(m, "K_REQ", K_REQ) < 0 || PyModule_AddIntConstant(m, "K_VERSION", K_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "CACHE_ITEM_MAX", CACHE_ITEM_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
