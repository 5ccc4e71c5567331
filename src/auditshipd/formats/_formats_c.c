/* The SIEM format encoders' hot loop in C: OCSF, ECS and CEF written from the redacted
 * line's bytes in one pass.
 *
 * Byte for byte what the fast Python encoders (ocsf_fast.py, ecs_fast.py, cef_fast.py)
 * write, which the reference encoders (ocsf.py, ecs.py, cef.py) hold in turn. What
 * depends on the action only (the OCSF class, activity, severity, the CEF header, the
 * ECS event object) comes from the encoder's plan cache, built in Python from the
 * operator's action table; everything per event is written here.
 *
 * The input contract is the Python fast path's: a line is msgspec's compact JSON (the
 * redactor's output), so a string token is already what msgspec writes for its value
 * and ``metadata``/``targets`` are copied as the line holds them. Any line this code
 * cannot answer for exactly is handed back (the ``fallback`` callable encodes it in
 * Python): whitespace, an escape msgspec would not write, invalid UTF-8, a field of
 * another type than the typed view takes, a time other than the journal's
 * ``YYYY-MM-DDTHH:MM:SS[.fff]Z``, an action with escapes, nesting deeper than 64, a
 * CEF value that may be longer than the dictionary allows (Python cuts it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

enum { V_ABSENT = 0, V_NULL, V_STR, V_NUM, V_TRUE, V_FALSE, V_OBJ, V_ARR };
enum { F_OCSF = 0, F_ECS = 1, F_CEF = 2 };
#define MAX_DEPTH 64

typedef struct {
    const char *p; /* the token (a string with its quotes) */
    Py_ssize_t n;
    int kind;
    int esc; /* a string holding escapes */
} Val;

/* A string token that is present and not "" (``event.text``'s truth). */
#define TRUTHY_STR(v) ((v).kind == V_STR && (v).n > 2)
#define TOK_IS(v, lit) ((v).n == (Py_ssize_t)sizeof(lit) - 1 && memcmp((v).p, lit, sizeof(lit) - 1) == 0)

/* -- parsing (validating; NULL: hand the line back) -------------------------------- */

static const char *skip_value(const char *p, const char *end, int depth, Val *out);

/* Bytes a string token holds as they are: printable ASCII but '"' and '\\'. */
static unsigned char PLAIN[256];

static void init_plain(void)
{
    for (int c = 0x20; c < 0x80; c++)
        PLAIN[c] = c != '"' && c != '\\';
}

static const char *skip_string(const char *p, const char *end, int *esc)
{
    p++; /* the opening quote */
    *esc = 0;
    while (p < end) {
#if defined(__SSE2__)
        /* 16 bytes at a time: stop at '"', '\\', a control byte or a non-ASCII one
         * (signed, both are below 0x20) */
        const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                      space = _mm_set1_epi8(0x20);
        while (end - p >= 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)p);
            __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote),
                                                     _mm_cmpeq_epi8(x, bslash)),
                                        _mm_cmplt_epi8(x, space));
            int m = _mm_movemask_epi8(stop);
            if (m) {
                p += __builtin_ctz((unsigned)m);
                break;
            }
            p += 16;
        }
#endif
        while (end - p >= 4 && PLAIN[(unsigned char)p[0]] && PLAIN[(unsigned char)p[1]] &&
               PLAIN[(unsigned char)p[2]] && PLAIN[(unsigned char)p[3]])
            p += 4;
        while (p < end && PLAIN[(unsigned char)*p])
            p++;
        if (p >= end)
            return NULL;
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            *esc = 1;
            if (end - p < 2)
                return NULL;
            char e = p[1];
            if (e == '"' || e == '\\' || e == 'b' || e == 't' || e == 'n' || e == 'f' ||
                e == 'r') {
                p += 2;
                continue;
            }
            /* msgspec writes \u00XX (lowercase) only for the other control characters */
            if (e != 'u' || end - p < 6 || p[2] != '0' || p[3] != '0' || (p[4] != '0' && p[4] != '1'))
                return NULL;
            char h = p[5];
            int v;
            if (h >= '0' && h <= '9')
                v = h - '0';
            else if (h >= 'a' && h <= 'f')
                v = h - 'a' + 10;
            else
                return NULL;
            v += (p[4] - '0') * 16;
            if (v == 8 || v == 9 || v == 10 || v == 12 || v == 13)
                return NULL;
            p += 6;
            continue;
        }
        if (c < 0x80) {
            p++;
            continue;
        }
        /* UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF */
        if (c >= 0xC2 && c <= 0xDF) {
            if (end - p < 2 || ((unsigned char)p[1] & 0xC0) != 0x80)
                return NULL;
            p += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (end - p < 3)
                return NULL;
            unsigned char c1 = (unsigned char)p[1], c2 = (unsigned char)p[2];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80)
                return NULL;
            if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F))
                return NULL;
            p += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (end - p < 4)
                return NULL;
            unsigned char c1 = (unsigned char)p[1];
            if ((c1 & 0xC0) != 0x80 || ((unsigned char)p[2] & 0xC0) != 0x80 ||
                ((unsigned char)p[3] & 0xC0) != 0x80)
                return NULL;
            if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
                return NULL;
            p += 4;
        } else {
            return NULL;
        }
    }
    return NULL;
}

static const char *skip_number(const char *p, const char *end)
{
    const char *s = p;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p - s == 2 && s[0] == '-' && s[1] == '0')
        return NULL; /* msgspec writes the integer -0 as 0 */
    return p;
}

/* One member of an object at p (a key string, ':', a value); key and value out. */
static const char *skip_member(const char *p, const char *end, int depth, Val *key, Val *val)
{
    if (p >= end || *p != '"')
        return NULL;
    key->p = p;
    key->kind = V_STR;
    p = skip_string(p, end, &key->esc);
    if (p == NULL)
        return NULL;
    key->n = p - key->p;
    if (p >= end || *p != ':')
        return NULL;
    return skip_value(p + 1, end, depth, val);
}

static const char *skip_value(const char *p, const char *end, int depth, Val *out)
{
    if (p >= end)
        return NULL;
    out->p = p;
    out->esc = 0;
    const char *q;
    switch (*p) {
    case '"':
        out->kind = V_STR;
        q = skip_string(p, end, &out->esc);
        break;
    case '{': {
        if (depth >= MAX_DEPTH)
            return NULL;
        out->kind = V_OBJ;
        q = p + 1;
        if (q < end && *q == '}') {
            q++;
            break;
        }
        for (;;) {
            Val k, v;
            q = skip_member(q, end, depth + 1, &k, &v);
            if (q == NULL || q >= end)
                return NULL;
            if (*q == '}') {
                q++;
                break;
            }
            if (*q++ != ',')
                return NULL;
        }
        break;
    }
    case '[': {
        if (depth >= MAX_DEPTH)
            return NULL;
        out->kind = V_ARR;
        q = p + 1;
        if (q < end && *q == ']') {
            q++;
            break;
        }
        for (;;) {
            Val v;
            q = skip_value(q, end, depth + 1, &v);
            if (q == NULL || q >= end)
                return NULL;
            if (*q == ']') {
                q++;
                break;
            }
            if (*q++ != ',')
                return NULL;
        }
        break;
    }
    case 't':
        out->kind = V_TRUE;
        q = end - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
        break;
    case 'f':
        out->kind = V_FALSE;
        q = end - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
        break;
    case 'n':
        out->kind = V_NULL;
        q = end - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
        break;
    default:
        out->kind = V_NUM;
        q = skip_number(p, end);
    }
    if (q == NULL)
        return NULL;
    out->n = q - p;
    return q;
}

/* The members named in ``names`` (``lens``: their lengths) of the object starting at p
 * go to ``vals`` (absent stays V_ABSENT); every value is validated once. Returns the
 * end of the object, NULL for a named member twice or a broken object. */
static const char *scan_members(const char *p, const char *end, int depth,
                                const char *const *names, const unsigned char *lens,
                                Val *vals, int count)
{
    for (int i = 0; i < count; i++)
        vals[i].kind = V_ABSENT, vals[i].n = 0, vals[i].p = NULL, vals[i].esc = 0;
    if (p >= end || *p != '{')
        return NULL;
    p++;
    if (p < end && *p == '}')
        return p + 1;
    for (;;) {
        Val k, v;
        p = skip_member(p, end, depth + 1, &k, &v);
        if (p == NULL || p >= end)
            return NULL;
        if (!k.esc) {
            Py_ssize_t kn = k.n - 2;
            for (int i = 0; i < count; i++) {
                if (kn == lens[i] && memcmp(k.p + 1, names[i], (size_t)kn) == 0) {
                    if (vals[i].kind != V_ABSENT)
                        return NULL;
                    vals[i] = v;
                    break;
                }
            }
        }
        if (*p == '}')
            return p + 1;
        if (*p++ != ',')
            return NULL;
    }
}

static int pick_members(Val obj, const char *const *names, const unsigned char *lens,
                        Val *vals, int count)
{
    return scan_members(obj.p, obj.p + obj.n, 1, names, lens, vals, count) != NULL;
}

/* An actor, a target, an organization or a context: an object of optional strings.
 * present: absent or null is "none"; any other non-object hands the line back. */
typedef struct {
    Val f[3];
    int present; /* an object (for parties: one with a truthy field) */
} Obj3;

static const char *const PARTY_KEYS[] = {"type", "email", "name"};
static const unsigned char PARTY_LENS[] = {4, 5, 4};
static const char *const ORG_KEYS[] = {"slug", "name"};
static const unsigned char ORG_LENS[] = {4, 4};
static const char *const CTX_KEYS[] = {"location", "user_agent"};
static const unsigned char CTX_LENS[] = {8, 10};
enum { P_TYPE = 0, P_EMAIL = 1, P_NAME = 2 };

static int read_obj(Val v, const char *const *names, const unsigned char *lens, int count,
                    Obj3 *o)
{
    o->present = 0;
    for (int i = 0; i < 3; i++)
        o->f[i].kind = V_ABSENT, o->f[i].n = 0, o->f[i].p = NULL, o->f[i].esc = 0;
    if (v.kind == V_ABSENT || v.kind == V_NULL)
        return 1;
    if (v.kind != V_OBJ || !pick_members(v, names, lens, o->f, count))
        return 0;
    for (int i = 0; i < count; i++) {
        if (o->f[i].kind == V_NULL)
            o->f[i].kind = V_ABSENT;
        else if (o->f[i].kind != V_ABSENT && o->f[i].kind != V_STR)
            return 0; /* the typed view takes str | None only */
    }
    o->present = 1;
    return 1;
}

static int read_party(Val v, Obj3 *o)
{
    if (!read_obj(v, PARTY_KEYS, PARTY_LENS, 3, o))
        return 0;
    o->present = o->present && (TRUTHY_STR(o->f[0]) || TRUTHY_STR(o->f[1]) || TRUTHY_STR(o->f[2]));
    return 1;
}

static int person_type(Val t)
{
    return TOK_IS(t, "\"user\"") || TOK_IS(t, "\"invitation\"") || TOK_IS(t, "\"member\"") ||
           TOK_IS(t, "\"admin\"") || TOK_IS(t, "\"organization_membership\"");
}

/* What the formats read from ``targets``: the person (view.target_user), the entity
 * (view.first_entity), the first group, how many. */
typedef struct {
    int present; /* a list (absent or null: not) */
    Py_ssize_t count;
    Obj3 user, entity, group;
    int has_user, has_entity, has_group;
} Targets;

static int read_targets(Val v, Targets *t)
{
    memset(t, 0, sizeof *t);
    if (v.kind == V_ABSENT || v.kind == V_NULL)
        return 1;
    if (v.kind != V_ARR)
        return 0;
    t->present = 1;
    const char *p = v.p + 1, *end = v.p + v.n;
    if (*p == ']')
        return 1;
    int user_final = 0;
    for (;;) {
        Val item;
        p = skip_value(p, end, 1, &item);
        if (p == NULL || p >= end || item.kind != V_OBJ)
            return 0; /* list[PartyView]: every item an object */
        Obj3 o;
        if (!read_obj(item, PARTY_KEYS, PARTY_LENS, 3, &o))
            return 0;
        Val ty = o.f[P_TYPE];
        int typed = TRUTHY_STR(ty), any = typed || TRUTHY_STR(o.f[P_EMAIL]) || TRUTHY_STR(o.f[P_NAME]);
        t->count++;
        if (!user_final) {
            if (typed && TOK_IS(ty, "\"user\"")) {
                t->user = o, t->has_user = 1, user_final = 1;
            } else if (!t->has_user && ((typed && person_type(ty)) ||
                                        (!typed && TRUTHY_STR(o.f[P_EMAIL])))) {
                t->user = o, t->has_user = 1;
            }
        }
        if (!t->has_entity && !(typed && person_type(ty)) && any)
            t->entity = o, t->has_entity = 1;
        if (!t->has_group && typed && TOK_IS(ty, "\"group\""))
            t->group = o, t->has_group = 1;
        if (*p == ']')
            return 1;
        if (*p++ != ',')
            return 0;
    }
}

/* -- the event --------------------------------------------------------------------- */

enum { E_ID, E_ACTION, E_AT, E_ACTOR, E_ORG, E_CTX, E_TARGETS, E_META, E_COUNT };
static const char *const EVENT_KEYS[] = {"id", "action", "occurred_at", "actor",
                                         "organization", "context", "targets", "metadata"};
static const unsigned char EVENT_LENS[] = {2, 6, 11, 5, 12, 7, 7, 8};

static int read_event(const char *p, Py_ssize_t n, Val *ev)
{
    if (scan_members(p, p + n, 0, EVENT_KEYS, EVENT_LENS, ev, E_COUNT) != p + n)
        return 0;
    /* the typed view: id and occurred_at str when present, action str or null */
    if (ev[E_ID].kind != V_ABSENT && ev[E_ID].kind != V_STR)
        return 0;
    if (ev[E_AT].kind != V_ABSENT && ev[E_AT].kind != V_STR)
        return 0;
    if (ev[E_ACTION].kind != V_ABSENT && ev[E_ACTION].kind != V_STR && ev[E_ACTION].kind != V_NULL)
        return 0;
    return 1;
}

/* JSON values Python finds false, as msgspec writes them (view.truthy). */
static int truthy(Val v)
{
    if (v.kind == V_ABSENT)
        return 0;
    if (v.n > 5)
        return 1;
    static const char *const falsy[] = {"null", "false", "0", "0.0", "-0.0", "\"\"", "{}", "[]"};
    for (size_t i = 0; i < sizeof falsy / sizeof *falsy; i++)
        if ((size_t)v.n == strlen(falsy[i]) && memcmp(v.p, falsy[i], (size_t)v.n) == 0)
            return 0;
    return 1;
}

static int digits(const char *s, int k, int *out)
{
    int v = 0;
    for (int i = 0; i < k; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* Milliseconds since the epoch of ``YYYY-MM-DDTHH:MM:SS[.fff]Z`` (event._fast_ms); 0:
 * another form, an invalid date or a leap second (second 60: the Python code decides
 * what it is, timestamps.py reads a leap second as the second before it). */
static int epoch_ms(Val at, long long *ms)
{
    if (at.kind != V_STR || at.esc)
        return 0;
    const char *s = at.p + 1;
    Py_ssize_t n = at.n - 2;
    if (!(n == 20 || (n == 24 && s[19] == '.')) || s[n - 1] != 'Z' || s[4] != '-' ||
        s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
        return 0;
    int y, mo, d, h, mi, se, frac = 0;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) ||
        !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &se))
        return 0;
    if (n == 24 && !digits(s + 20, 3, &frac))
        return 0;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) ||
        h > 23 || mi > 59 || se > 59)
        return 0;
    /* days from civil (proleptic Gregorian) */
    long long yy = y - (mo <= 2);
    long long era = yy / 400;
    long long yoe = yy - era * 400;
    long long doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long long days = era * 146097 + doe - 719468;
    *ms = ((days * 24 + h) * 60 + mi) * 60000LL + se * 1000LL + frac;
    return 1;
}

/* -- output ------------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static int put(Buf *b, const void *s, size_t k)
{
    if (b->n + k > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + k)
            cap *= 2;
        char *np = PyMem_Realloc(b->p, cap);
        if (np == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->p = np, b->cap = cap;
    }
    memcpy(b->p + b->n, s, k);
    b->n += k;
    return 0;
}

#define W(s) do { if (put(b, (s), sizeof(s) - 1) < 0) return -1; } while (0)
#define WV(v) do { if (put(b, (v).p, (size_t)(v).n) < 0) return -1; } while (0)
#define WB(o) do { if (put(b, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o)) < 0) return -1; } while (0)
#define WN(s, k) do { if (put(b, (s), (size_t)(k)) < 0) return -1; } while (0)

/* A decoded string value, CEF-extension escaped (cef.escape_extension): ``\\`` ``=``
 * escaped, line breaks as ``\n`` / ``\r``, other characters as they are. */
static int put_cef_raw(Buf *b, const char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0, run = 0;
    while (i < n) {
        char c = s[i];
        if (c != '\\' && c != '=' && c != '\n' && c != '\r') {
            i++;
            continue;
        }
        WN(s + run, i - run);
        if (c == '\\')
            W("\\\\");
        else if (c == '=')
            W("\\=");
        else if (c == '\n')
            W("\\n");
        else
            W("\\r");
        run = ++i;
    }
    WN(s + run, n - run);
    return 0;
}

static int put_cef_value(Buf *b, Val v)
{
    const char *s = v.p + 1;
    Py_ssize_t n = v.n - 2;
    if (!v.esc)
        return put_cef_raw(b, s, n);
    Py_ssize_t i = 0, run = 0;
    while (i < n) {
        char c = s[i];
        if (c == '=') {
            WN(s + run, i - run);
            W("\\=");
            run = ++i;
            continue;
        }
        if (c != '\\') {
            i++;
            continue;
        }
        WN(s + run, i - run);
        char e = s[i + 1];
        i += 2;
        switch (e) {
        case '"': W("\""); break;
        case '\\': W("\\\\"); break;
        case 'n': W("\\n"); break;
        case 'r': W("\\r"); break;
        case 't': W("\t"); break;
        case 'b': W("\b"); break;
        case 'f': W("\f"); break;
        default: { /* u00XX, checked by the parser */
            char x = (char)(((s[i + 2] - '0') << 4) |
                            (s[i + 3] <= '9' ? s[i + 3] - '0' : s[i + 3] - 'a' + 10));
            WN(&x, 1);
            i += 4;
        }
        }
        run = i;
    }
    WN(s + run, n - run);
    return 0;
}

/* ``context.location`` as an IP address (event.ip_or_none): a dotted IPv4 address is
 * checked here (its text is its canonical form); anything with a colon goes to the
 * Python function (IPv6 has forms to normalise, and an IPv4-mapped address comes back
 * as the dotted IPv4 address it stands for). */
typedef struct {
    int kind;        /* 0: not an IP, 1: the location token itself, 2: text below */
    PyObject *obj;   /* kind 2: the str Python returned (owned) */
    const char *s;   /* kind 2: its UTF-8 */
    Py_ssize_t n;
} Ip;

static int is_ipv4(const char *s, Py_ssize_t n)
{
    int parts = 0;
    Py_ssize_t i = 0;
    while (parts < 4) {
        Py_ssize_t st = i;
        int v = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - st < 4)
            v = v * 10 + (s[i++] - '0');
        Py_ssize_t k = i - st;
        if (k == 0 || k > 3 || (k > 1 && s[st] == '0') || v > 255)
            return 0;
        parts++;
        if (parts < 4) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
    }
    return i == n;
}

/* 1: ip filled; 0: hand the line back; -1: error. */
static int read_ip(Val loc, PyObject *ip_or_none, Ip *ip)
{
    ip->kind = 0, ip->obj = NULL;
    if (!TRUTHY_STR(loc))
        return 1;
    const char *s = loc.p + 1;
    Py_ssize_t n = loc.n - 2;
    if (memchr(s, ':', (size_t)n) == NULL) {
        if (!loc.esc && n <= 15 && is_ipv4(s, n))
            ip->kind = 1;
        return 1;
    }
    if (loc.esc)
        return 0;
    PyObject *str = PyUnicode_DecodeUTF8(s, n, NULL);
    if (str == NULL)
        return -1;
    PyObject *res = PyObject_CallOneArg(ip_or_none, str);
    Py_DECREF(str);
    if (res == NULL)
        return -1;
    if (res == Py_None) {
        Py_DECREF(res);
        return 1;
    }
    if (!PyUnicode_Check(res)) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_TypeError, "ip_or_none must return a str or None");
        return -1;
    }
    ip->s = PyUnicode_AsUTF8AndSize(res, &ip->n);
    if (ip->s == NULL) {
        Py_DECREF(res);
        return -1;
    }
    for (Py_ssize_t i = 0; i < ip->n; i++) {
        unsigned char c = (unsigned char)ip->s[i];
        if (c < 0x20 || c == '"' || c == '\\') { /* would need escaping: Python writes it */
            Py_DECREF(res);
            return 0;
        }
    }
    ip->kind = 2, ip->obj = res;
    return 1;
}

static int put_ip_json(Buf *b, Val loc, Ip *ip)
{
    if (ip->kind == 1) {
        WV(loc);
        return 0;
    }
    W("\"");
    WN(ip->s, ip->n);
    W("\"");
    return 0;
}

/* `` src=IPv4`` (an IPv4-mapped address included: Python wrote it dotted) or
 * `` c6a2Label=Source IPv6 Address c6a2=IPv6`` (cef.IPV6_LABEL). */
static int put_ip_cef(Buf *b, Val loc, Ip *ip)
{
    if (ip->kind == 1) {
        W(" src=");
        WN(loc.p + 1, loc.n - 2);
        return 0;
    }
    if (memchr(ip->s, ':', (size_t)ip->n) != NULL)
        W(" c6a2Label=Source IPv6 Address c6a2=");
    else
        W(" src=");
    return put_cef_raw(b, ip->s, ip->n);
}

/* -- OCSF (ocsf_fast.py) ------------------------------------------------------------ */

typedef struct {
    PyObject *plans_map, *plan_get, *ip_or_none, *service, *app_actor;
} Ctx;

/* The OCSF ``user`` of a party, without ``org`` and the closing brace (_Person.user). */
static int put_ocsf_user(Buf *b, const Obj3 *p)
{
    Val t = p->f[P_TYPE], e = p->f[P_EMAIL], nm = p->f[P_NAME];
    if (TRUTHY_STR(e)) {
        W("{\"email_addr\":");
        WV(e);
        W(",\"name\":");
    } else {
        W("{\"name\":");
    }
    WV(TRUTHY_STR(nm) ? nm : TRUTHY_STR(e) ? e : t);
    if (TRUTHY_STR(t)) {
        if (TOK_IS(t, "\"user\""))
            W(",\"type\":\"User\",\"type_id\":1");
        else if (TOK_IS(t, "\"admin\""))
            W(",\"type\":\"Admin\",\"type_id\":2");
        else {
            W(",\"type\":");
            WV(t);
            W(",\"type_id\":99");
        }
    }
    return 0;
}

static int put_ocsf_org(Buf *b, const Obj3 *o)
{
    Val slug = o->f[0], name = o->f[1];
    if (!o->present)
        return 0;
    if (TRUTHY_STR(slug)) {
        W(",\"org\":{\"uid\":");
        WV(slug);
        if (TRUTHY_STR(name)) {
            W(",\"name\":");
            WV(name);
        }
        W("}");
    } else if (TRUTHY_STR(name)) {
        W(",\"org\":{\"name\":");
        WV(name);
        W("}");
    }
    return 0;
}

static int put_entity(Buf *b, const Obj3 *p)
{
    Val t = p->f[P_TYPE], e = p->f[P_EMAIL], nm = p->f[P_NAME];
    W("{\"name\":");
    WV(TRUTHY_STR(nm) ? nm : TRUTHY_STR(e) ? e : t);
    if (TRUTHY_STR(t)) {
        W(",\"type\":");
        WV(t);
    }
    W("}");
    return 0;
}

/* An unmapped member: a comma before all but the first. */
static int um_sep(Buf *um)
{
    return um->n ? put(um, ",", 1) : 0;
}

static int ocsf_privileges(Buf *b, Val md, PyObject *fallback_bytes)
{
    if (md.kind == V_OBJ) {
        static const char *const keys[] = {"new_role", "role", "to"};
        static const unsigned char lens[] = {8, 4, 2};
        Val v[3];
        if (pick_members(md, keys, lens, v, 3)) {
            for (int i = 0; i < 3; i++) {
                if (TRUTHY_STR(v[i])) {
                    W("[");
                    WV(v[i]);
                    W("]");
                    return 0;
                }
            }
        } else {
            return 1; /* a key twice: the dict keeps the last, Python decides */
        }
    }
    WB(fallback_bytes);
    return 0;
}

#define HAS_USER(u) ((u) == 3001 || (u) == 3002 || (u) == 3005 || (u) == 3006)
#define NEEDS_USER(u) ((u) == 3001 || (u) == 3002 || (u) == 3005)

/* 1: written; 0: hand back; -1: error. */
static int write_ocsf(Buf *b, Buf *um, const Ctx *cx, const Val *ev, PyObject *plan)
{
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 6) {
        PyErr_SetString(PyExc_TypeError, "an OCSF plan is a tuple of 6");
        return -1;
    }
    long uid = PyLong_AsLong(PyTuple_GET_ITEM(plan, 0));
    if (uid == -1 && PyErr_Occurred())
        return -1;
    PyObject *head = PyTuple_GET_ITEM(plan, 1), *mid = PyTuple_GET_ITEM(plan, 2),
             *entity = PyTuple_GET_ITEM(plan, 3), *api = PyTuple_GET_ITEM(plan, 4),
             *privileges = PyTuple_GET_ITEM(plan, 5);
    long long ms;
    Obj3 actor, org, ctx;
    Targets ts;
    if (!epoch_ms(ev[E_AT], &ms) || !read_party(ev[E_ACTOR], &actor) ||
        !read_obj(ev[E_ORG], ORG_KEYS, ORG_LENS, 2, &org) || !read_targets(ev[E_TARGETS], &ts) ||
        !read_obj(ev[E_CTX], CTX_KEYS, CTX_LENS, 2, &ctx))
        return 0;
    Ip ip = {0};
    if (ctx.present) {
        int r = read_ip(ctx.f[0], cx->ip_or_none, &ip);
        if (r <= 0)
            return r;
    }
    int rc = -1;
    char num[32];
    int numn = snprintf(num, sizeof num, "%lld", ms);
#undef W
#undef WV
#undef WB
#undef WN
#define W(s) do { if (put(b, (s), sizeof(s) - 1) < 0) goto done; } while (0)
#define WV(v) do { if (put(b, (v).p, (size_t)(v).n) < 0) goto done; } while (0)
#define WB(o) do { if (put(b, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o)) < 0) goto done; } while (0)
#define CALL(x) do { if ((x) < 0) goto done; } while (0)
#define UW(s) do { if (put(um, (s), sizeof(s) - 1) < 0) goto done; } while (0)
    WB(head);
    CALL(put(b, num, (size_t)numn));
    WB(mid);
    if (TRUTHY_STR(org.f[0])) {
        W(",\"tenant_uid\":");
        WV(org.f[0]);
    }
    if (ev[E_ID].kind == V_STR) {
        W(",\"uid\":");
        WV(ev[E_ID]);
    }
    W("}");
    if (actor.present) {
        if (uid == 6001) {
            CALL(um_sep(um));
            UW("\"actor\":{\"user\":");
            CALL(put_ocsf_user(um, &actor));
            CALL(put_ocsf_org(um, &org));
            UW("}}");
        } else {
            W(",\"actor\":{\"user\":");
            CALL(put_ocsf_user(b, &actor));
            CALL(put_ocsf_org(b, &org));
            W("}}");
        }
    }
    const Obj3 *who;
    if (uid == 3002) {
        who = actor.present ? &actor : ts.has_user ? &ts.user : NULL;
        WB(cx->service);
    } else {
        who = ts.has_user ? &ts.user : (NEEDS_USER(uid) && actor.present) ? &actor : NULL;
    }
    if (who != NULL) {
        if (HAS_USER(uid)) {
            W(",\"user\":");
            CALL(put_ocsf_user(b, who));
            CALL(put_ocsf_org(b, &org));
            W("}");
        } else {
            CALL(um_sep(um));
            UW("\"user\":");
            CALL(put_ocsf_user(um, who));
            CALL(put_ocsf_org(um, &org));
            UW("}");
        }
    } else if (NEEDS_USER(uid)) {
        W(",\"user\":{\"name\":\"unknown\"}");
    }
    if (uid == 3004) {
        W(",\"entity\":");
        if (ts.has_entity)
            CALL(put_entity(b, &ts.entity));
        else
            WB(entity);
    } else if (uid == 3005) {
        W(",\"privileges\":");
        int r = ocsf_privileges(b, ev[E_META], privileges);
        if (r != 0) {
            rc = r > 0 ? 0 : -1;
            goto done;
        }
    } else if (uid == 3006) {
        const Obj3 *g = ts.has_group ? &ts.group : NULL;
        if (g != NULL && (TRUTHY_STR(g->f[P_EMAIL]) || TRUTHY_STR(g->f[P_NAME]))) {
            W(",\"group\":{\"name\":");
            WV(TRUTHY_STR(g->f[P_NAME]) ? g->f[P_NAME] : g->f[P_EMAIL]);
            W("}");
        } else {
            W(",\"group\":{\"name\":\"unknown\"}");
        }
    } else if (uid == 6001) {
        W(",\"web_resources\":[");
        if (ts.has_entity)
            CALL(put_entity(b, &ts.entity));
        else
            WB(entity);
        W("]");
    } else if (uid == 6003) {
        WB(api);
        if (!actor.present)
            WB(cx->app_actor);
        if (!ctx.present || ip.kind == 0)
            W(",\"src_endpoint\":{\"name\":\"unknown\"}");
    }
    if (ctx.present) {
        if (ip.kind) {
            W(",\"src_endpoint\":{\"ip\":");
            CALL(put_ip_json(b, ctx.f[0], &ip));
            W("}");
        }
        if (TRUTHY_STR(ctx.f[1])) {
            W(",\"http_request\":{\"user_agent\":");
            WV(ctx.f[1]);
            W("}");
        }
        if (!ip.kind && TRUTHY_STR(ctx.f[0])) {
            CALL(um_sep(um));
            UW("\"location\":");
            CALL(put(um, ctx.f[0].p, (size_t)ctx.f[0].n));
        }
    }
    if (truthy(ev[E_META])) {
        CALL(um_sep(um));
        UW("\"metadata\":");
        CALL(put(um, ev[E_META].p, (size_t)ev[E_META].n));
    }
    if (ts.present && ts.count > 1) {
        CALL(um_sep(um));
        UW("\"targets\":");
        CALL(put(um, ev[E_TARGETS].p, (size_t)ev[E_TARGETS].n));
    }
    if (um->n) {
        W(",\"unmapped\":{");
        CALL(put(b, um->p, um->n));
        W("}}");
    } else {
        W("}");
    }
    rc = 1;
done:
    Py_XDECREF(ip.obj);
    return rc;
}
#undef W
#undef WV
#undef WB
#undef CALL
#undef UW
#define W(s) do { if (put(b, (s), sizeof(s) - 1) < 0) return -1; } while (0)
#define WV(v) do { if (put(b, (v).p, (size_t)(v).n) < 0) return -1; } while (0)
#define WB(o) do { if (put(b, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o)) < 0) return -1; } while (0)
#define WN(s, k) do { if (put(b, (s), (size_t)(k)) < 0) return -1; } while (0)

/* -- ECS (ecs_fast.py) --------------------------------------------------------------- */

/* ``"email":...,"name":...`` of a party (either may be missing); 1 if anything. */
static int put_ecs_user(Buf *b, const Obj3 *p, int *wrote)
{
    Val e = p->f[P_EMAIL], nm = p->f[P_NAME];
    *wrote = 0;
    if (TRUTHY_STR(e)) {
        W("\"email\":");
        WV(e);
        *wrote = 1;
    }
    if (TRUTHY_STR(nm) || TRUTHY_STR(e)) {
        if (*wrote)
            W(",");
        W("\"name\":");
        WV(TRUTHY_STR(nm) ? nm : e);
        *wrote = 1;
    }
    return 0;
}

static int write_ecs(Buf *b, Buf *um, const Ctx *cx, const Val *ev, PyObject *plan)
{
    if (!PyBytes_Check(plan)) {
        PyErr_SetString(PyExc_TypeError, "an ECS plan is bytes");
        return -1;
    }
    Obj3 actor, org, ctx;
    Targets ts;
    if (!read_party(ev[E_ACTOR], &actor) || !read_obj(ev[E_ORG], ORG_KEYS, ORG_LENS, 2, &org) ||
        !read_targets(ev[E_TARGETS], &ts) || !read_obj(ev[E_CTX], CTX_KEYS, CTX_LENS, 2, &ctx))
        return 0;
    long long ms;
    if (!epoch_ms(ev[E_AT], &ms))
        return 0; /* another form (Python reads it) or unreadable (the epoch, written there) */
    Ip ip = {0};
    W("{\"@timestamp\":");
    WV(ev[E_AT]);
    WB(plan);
    if (ev[E_ID].kind == V_STR) {
        W(",\"id\":");
        WV(ev[E_ID]);
    }
    W("}");
    /* user: the actor's members, then the target person's */
    int wrote = 0, twrote = 0;
    Buf *t = um; /* scratch for the target's members */
    if (ts.has_user && put_ecs_user(t, &ts.user, &twrote) < 0)
        return -1;
    if (actor.present) {
        size_t mark = b->n;
        if (put(b, ",\"user\":{", 9) < 0 || put_ecs_user(b, &actor, &wrote) < 0)
            return -1;
        if (!wrote)
            b->n = mark;
    }
    if (wrote || twrote) {
        if (!wrote)
            W(",\"user\":{");
        if (twrote) {
            if (wrote)
                W(",");
            W("\"target\":{");
            WN(t->p, t->n);
            W("}");
        }
        W("}");
    }
    if (ctx.present) {
        int r = read_ip(ctx.f[0], cx->ip_or_none, &ip);
        if (r <= 0)
            return r;
        if (ip.kind) {
            if (put(b, ",\"source\":{\"ip\":", 16) < 0 || put_ip_json(b, ctx.f[0], &ip) < 0 ||
                put(b, "}", 1) < 0)
                goto fail;
        }
        if (TRUTHY_STR(ctx.f[1])) {
            if (put(b, ",\"user_agent\":{\"original\":", 26) < 0 ||
                put(b, ctx.f[1].p, (size_t)ctx.f[1].n) < 0 || put(b, "}", 1) < 0)
                goto fail;
        }
    }
    Py_CLEAR(ip.obj);
    if (org.present && (TRUTHY_STR(org.f[0]) || TRUTHY_STR(org.f[1]))) {
        W(",\"organization\":{");
        if (TRUTHY_STR(org.f[0])) {
            W("\"id\":");
            WV(org.f[0]);
        }
        if (TRUTHY_STR(org.f[1])) {
            if (TRUTHY_STR(org.f[0]))
                W(",");
            W("\"name\":");
            WV(org.f[1]);
        }
        W("}");
    }
    int extra = 0;
    if (actor.present && TRUTHY_STR(actor.f[P_TYPE])) {
        W(",\"auditshipd\":{\"actor_type\":");
        WV(actor.f[P_TYPE]);
        extra = 1;
    }
    if (truthy(ev[E_TARGETS])) {
        if (extra)
            W(",\"targets\":");
        else
            W(",\"auditshipd\":{\"targets\":");
        WV(ev[E_TARGETS]);
        extra = 1;
    }
    if (truthy(ev[E_META])) {
        if (extra)
            W(",\"metadata\":");
        else
            W(",\"auditshipd\":{\"metadata\":");
        WV(ev[E_META]);
        extra = 1;
    }
    if (extra)
        W("}}");
    else
        W("}");
    return 1;
fail:
    Py_XDECREF(ip.obj);
    return -1;
}

/* -- CEF (cef_fast.py) ----------------------------------------------------------------- */

/* A string value of at most ``max`` characters for certain (absent and other kinds: yes). */
#define FITS(v, max) ((v).kind != V_STR || (v).n - 2 <= (max))

static int write_cef(Buf *b, const Ctx *cx, const Val *ev, PyObject *plan)
{
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 2 ||
        !PyBytes_Check(PyTuple_GET_ITEM(plan, 0)) || !PyBytes_Check(PyTuple_GET_ITEM(plan, 1))) {
        PyErr_SetString(PyExc_TypeError, "a CEF plan is a tuple of 2 bytes");
        return -1;
    }
    long long ms = 0;
    int has_time = ev[E_AT].kind == V_STR;
    Obj3 actor, org, ctx;
    Targets ts;
    if ((has_time && !epoch_ms(ev[E_AT], &ms)) || !read_party(ev[E_ACTOR], &actor) ||
        !read_obj(ev[E_ORG], ORG_KEYS, ORG_LENS, 2, &org) || !read_targets(ev[E_TARGETS], &ts) ||
        !read_obj(ev[E_CTX], CTX_KEYS, CTX_LENS, 2, &ctx))
        return 0;
    /* A value that may pass the dictionary's maximum length (cef.MAX_LENGTH): Python
     * cuts it. A token of no more bytes than the limit holds no more characters. */
    if ((actor.present && (!FITS(actor.f[P_EMAIL], 1023) ||
                           (!TRUTHY_STR(actor.f[P_EMAIL]) && !FITS(actor.f[P_NAME], 1023)) ||
                           !FITS(actor.f[P_TYPE], 4000))) ||
        (ts.has_user && (!FITS(ts.user.f[P_EMAIL], 1023) ||
                         (!TRUTHY_STR(ts.user.f[P_EMAIL]) && !FITS(ts.user.f[P_NAME], 1023)))) ||
        (ctx.present && !FITS(ctx.f[1], 1023)) || !FITS(ev[E_ID], 40) ||
        (org.present && (!FITS(org.f[0], 4000) || !FITS(org.f[1], 4000))) ||
        (truthy(ev[E_META]) && ev[E_META].n > 4000))
        return 0;
    Ip ip = {0};
    WB(PyTuple_GET_ITEM(plan, 0));
    if (has_time) {
        char num[40];
        int k = snprintf(num, sizeof num, "rt=%lld ", ms);
        WN(num, k);
    }
    WB(PyTuple_GET_ITEM(plan, 1));
    if (actor.present) {
        Val label = TRUTHY_STR(actor.f[P_EMAIL]) ? actor.f[P_EMAIL] : actor.f[P_NAME];
        if (TRUTHY_STR(label) && (put(b, " suser=", 7) < 0 || put_cef_value(b, label) < 0))
            return -1;
    }
    if (ts.has_user) {
        Val label = TRUTHY_STR(ts.user.f[P_EMAIL]) ? ts.user.f[P_EMAIL] : ts.user.f[P_NAME];
        if (TRUTHY_STR(label) && (put(b, " duser=", 7) < 0 || put_cef_value(b, label) < 0))
            return -1;
    }
    if (ctx.present) {
        int r = read_ip(ctx.f[0], cx->ip_or_none, &ip);
        if (r <= 0)
            return r;
        if (ip.kind && put_ip_cef(b, ctx.f[0], &ip) < 0)
            goto fail;
        if (TRUTHY_STR(ctx.f[1]) && (put(b, " requestClientApplication=", 26) < 0 ||
                                     put_cef_value(b, ctx.f[1]) < 0))
            goto fail;
    }
    Py_CLEAR(ip.obj);
    if (ev[E_ID].kind == V_STR) {
        W(" externalId=");
        if (put_cef_value(b, ev[E_ID]) < 0)
            return -1;
    }
    if (org.present) {
        if (TRUTHY_STR(org.f[0])) {
            W(" cs1Label=organization cs1=");
            if (put_cef_value(b, org.f[0]) < 0)
                return -1;
        }
        if (TRUTHY_STR(org.f[1])) {
            W(" cs2Label=organizationName cs2=");
            if (put_cef_value(b, org.f[1]) < 0)
                return -1;
        }
    }
    if (truthy(ev[E_META])) {
        W(" cs3Label=metadata cs3=");
        if (put_cef_raw(b, ev[E_META].p, ev[E_META].n) < 0)
            return -1;
    }
    if (actor.present && TRUTHY_STR(actor.f[P_TYPE])) {
        W(" cs4Label=actorType cs4=");
        if (put_cef_value(b, actor.f[P_TYPE]) < 0)
            return -1;
    }
    return 1;
fail:
    Py_XDECREF(ip.obj);
    return -1;
}

/* -- the entry point ------------------------------------------------------------------- */

static Py_ssize_t handed_back_count = 0;
static PyObject *unknown_action = NULL; /* "unknown" */

/* The action's plan (a new reference), NULL with an error set, or Py_None (borrowed, not
 * to be released) to hand the line back. */
static PyObject *plan_for(const Ctx *cx, Val action)
{
    PyObject *key;
    if (action.kind != V_STR || action.n == 2) {
        key = Py_NewRef(unknown_action);
    } else {
        if (action.esc)
            return Py_None;
        key = PyUnicode_DecodeUTF8(action.p + 1, action.n - 2, NULL);
        if (key == NULL)
            return NULL;
    }
    PyObject *plan = PyDict_GetItemWithError(cx->plans_map, key);
    if (plan != NULL) {
        Py_INCREF(plan);
    } else if (!PyErr_Occurred()) {
        plan = PyObject_CallOneArg(cx->plan_get, key);
    }
    Py_DECREF(key);
    return plan;
}

/* encode_lines(format, lines, plans_map, plan_get, ip_or_none, fallback, service,
 * app_actor) -> list of bytes: each line in the format; a line handed back is what
 * ``fallback(line)`` returns. */
static PyObject *py_encode_lines(PyObject *self, PyObject *args)
{
    int fmt;
    PyObject *lines, *fallback;
    Ctx cx;
    if (!PyArg_ParseTuple(args, "iOO!OOOO!O!", &fmt, &lines, &PyDict_Type, &cx.plans_map,
                          &cx.plan_get, &cx.ip_or_none, &fallback, &PyBytes_Type, &cx.service,
                          &PyBytes_Type, &cx.app_actor))
        return NULL;
    if (fmt < F_OCSF || fmt > F_CEF) {
        PyErr_SetString(PyExc_ValueError, "unknown format");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(lines, "lines must be a sequence of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    Buf b = {0}, um = {0};
    if (out == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *res = NULL;
        int r = 0;
        if (PyBytes_Check(line)) {
            Val ev[E_COUNT];
            if (read_event(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), ev)) {
                PyObject *plan = plan_for(&cx, ev[E_ACTION]);
                if (plan == NULL)
                    goto error;
                if (plan != Py_None) {
                    b.n = um.n = 0;
                    r = fmt == F_OCSF ? write_ocsf(&b, &um, &cx, ev, plan)
                        : fmt == F_ECS ? write_ecs(&b, &um, &cx, ev, plan)
                                       : write_cef(&b, &cx, ev, plan);
                    Py_DECREF(plan);
                    if (r < 0)
                        goto error;
                }
            }
        }
        if (r == 1) {
            res = PyBytes_FromStringAndSize(b.p, (Py_ssize_t)b.n);
        } else {
            handed_back_count++;
            res = PyObject_CallOneArg(fallback, line);
        }
        if (res == NULL)
            goto error;
        PyList_SET_ITEM(out, i, res);
    }
    PyMem_Free(b.p);
    PyMem_Free(um.p);
    Py_DECREF(seq);
    return out;
error:
    PyMem_Free(b.p);
    PyMem_Free(um.p);
    Py_DECREF(seq);
    Py_XDECREF(out);
    return NULL;
}

/* handed_back() -> int: lines handed back to Python since the last call (for tests and
 * benchmarks: the C path must answer for the lines it is meant to). */
static PyObject *py_handed_back(PyObject *self, PyObject *unused)
{
    Py_ssize_t n = handed_back_count;
    handed_back_count = 0;
    return PyLong_FromSsize_t(n);
}

static PyMethodDef methods[] = {
    {"encode_lines", py_encode_lines, METH_VARARGS, "Encode redacted lines (see the source)."},
    {"handed_back", py_handed_back, METH_NOARGS, "Lines handed back to Python since last call."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_formats_c",
                                    "The SIEM format encoders' hot loop (formats/*_fast.py).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__formats_c(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    init_plain();
    unknown_action = PyUnicode_InternFromString("unknown");
    if (unknown_action == NULL || PyModule_AddIntConstant(m, "OCSF", F_OCSF) < 0 ||
        PyModule_AddIntConstant(m, "ECS", F_ECS) < 0 || PyModule_AddIntConstant(m, "CEF", F_CEF) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
