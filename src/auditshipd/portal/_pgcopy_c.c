/* The PostgreSQL store's binary COPY stream in C (portal/pg_ingest.py).
 *
 * rows(records, epoch) takes the writer's records, each a tuple
 *
 *     (id: str, when: datetime, action: str, actor: str, organization: str | None,
 *      targets: list[str], search: bytes, body: str)
 *
 * and returns the whole COPY ... (FORMAT binary) input for them: the signature, then per
 * record 8 fields, each a length and the value in the server's binary form (text as
 * UTF-8; timestamptz as microseconds since ``epoch``, 2000-01-01 UTC; text[] as a
 * one-dimensional array of text, or an empty one; the tsvector as it is), a NULL
 * organization as length -1, then the trailer. It is what asyncpg's
 * copy_records_to_table sends for the same records with the store's codecs, which
 * stays the path when this extension is not built. Anything else (another type, a
 * string that cannot be UTF-8) raises; nothing is guessed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>

#define FIELDS 8
#define TEXT_OID 25

typedef struct {
    char *data;
    Py_ssize_t size, cap;
} Buffer;

static int reserve(Buffer *b, Py_ssize_t more)
{
    if (b->size + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->size + more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *d = PyMem_Realloc(b->data, (size_t)cap);
    if (d == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

static void put32(Buffer *b, int32_t v)
{
    uint32_t u = (uint32_t)v;
    unsigned char *o = (unsigned char *)b->data + b->size;
    o[0] = (unsigned char)(u >> 24);
    o[1] = (unsigned char)(u >> 16);
    o[2] = (unsigned char)(u >> 8);
    o[3] = (unsigned char)u;
    b->size += 4;
}

static void put64(Buffer *b, int64_t v)
{
    put32(b, (int32_t)(uint32_t)((uint64_t)v >> 32));
    put32(b, (int32_t)(uint32_t)((uint64_t)v & 0xffffffffu));
}

/* A length-prefixed value; its length must fit the protocol's int32. */
static int put_value(Buffer *b, const char *s, Py_ssize_t n)
{
    if (n > INT32_MAX - 64) {
        PyErr_SetString(PyExc_ValueError, "a value too large for PostgreSQL");
        return -1;
    }
    if (reserve(b, 4 + n) < 0)
        return -1;
    put32(b, (int32_t)n);
    memcpy(b->data + b->size, s, (size_t)n);
    b->size += n;
    return 0;
}

static int put_text(Buffer *b, PyObject *v)
{
    if (!PyUnicode_Check(v)) {
        PyErr_Format(PyExc_TypeError, "expected str, got %.80s", Py_TYPE(v)->tp_name);
        return -1;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(v, &n);
    return s == NULL ? -1 : put_value(b, s, n);
}

/* Days from 1970-01-01 to a date of the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int put_time(Buffer *b, PyObject *when, PyObject *epoch)
{
    if (!PyDateTime_Check(when)) {
        PyErr_Format(PyExc_TypeError, "expected datetime, got %.80s", Py_TYPE(when)->tp_name);
        return -1;
    }
    if (PyDateTime_DATE_GET_TZINFO(when) == PyDateTime_DATE_GET_TZINFO(epoch) &&
        PyDateTime_GET_YEAR(epoch) == 2000 && PyDateTime_GET_MONTH(epoch) == 1 &&
        PyDateTime_GET_DAY(epoch) == 1 && PyDateTime_DATE_GET_HOUR(epoch) == 0 &&
        PyDateTime_DATE_GET_MINUTE(epoch) == 0 && PyDateTime_DATE_GET_SECOND(epoch) == 0 &&
        PyDateTime_DATE_GET_MICROSECOND(epoch) == 0) {
        /* the same zone as the epoch (UTC, as the rows' times are): fields, no objects */
        int64_t days = days_from_civil(PyDateTime_GET_YEAR(when), PyDateTime_GET_MONTH(when),
                                       PyDateTime_GET_DAY(when)) - 10957;
        int64_t micros = ((days * 86400 + PyDateTime_DATE_GET_HOUR(when) * 3600 +
                           PyDateTime_DATE_GET_MINUTE(when) * 60 +
                           PyDateTime_DATE_GET_SECOND(when)) * 1000000) +
                         PyDateTime_DATE_GET_MICROSECOND(when);
        if (reserve(b, 12) < 0)
            return -1;
        put32(b, 8);
        put64(b, micros);
        return 0;
    }
    PyObject *delta = PyNumber_Subtract(when, epoch);
    if (delta == NULL)
        return -1;
    if (!PyDelta_Check(delta)) {
        Py_DECREF(delta);
        PyErr_SetString(PyExc_TypeError, "datetime difference is not a timedelta");
        return -1;
    }
    int64_t micros = ((int64_t)PyDateTime_DELTA_GET_DAYS(delta) * 86400 +
                      PyDateTime_DELTA_GET_SECONDS(delta)) * 1000000 +
                     PyDateTime_DELTA_GET_MICROSECONDS(delta);
    Py_DECREF(delta);
    if (reserve(b, 12) < 0)
        return -1;
    put32(b, 8);
    put64(b, micros);
    return 0;
}

static int put_array(Buffer *b, PyObject *list)
{
    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "expected list, got %.80s", Py_TYPE(list)->tp_name);
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > INT32_MAX / 8) {
        PyErr_SetString(PyExc_ValueError, "an array too large for PostgreSQL");
        return -1;
    }
    Py_ssize_t header = n ? 20 : 12;
    if (reserve(b, 4 + header) < 0)
        return -1;
    Py_ssize_t length_at = b->size;
    put32(b, 0); /* the length, written when known */
    put32(b, n ? 1 : 0); /* dimensions */
    put32(b, 0);         /* no NULL element */
    put32(b, TEXT_OID);
    if (n) {
        put32(b, (int32_t)n); /* elements */
        put32(b, 1);          /* lower bound */
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (put_text(b, PyList_GET_ITEM(list, i)) < 0)
            return -1;
    Py_ssize_t length = b->size - length_at - 4;
    if (length > INT32_MAX - 64) {
        PyErr_SetString(PyExc_ValueError, "an array too large for PostgreSQL");
        return -1;
    }
    Py_ssize_t end = b->size;
    b->size = length_at;
    put32(b, (int32_t)length);
    b->size = end;
    return 0;
}

static int put_record(Buffer *b, PyObject *rec, PyObject *epoch)
{
    if (!PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) != FIELDS) {
        PyErr_SetString(PyExc_TypeError, "each record must be a tuple of 8 values");
        return -1;
    }
    if (reserve(b, 2) < 0)
        return -1;
    b->data[b->size++] = 0;
    b->data[b->size++] = FIELDS;
    PyObject *org = PyTuple_GET_ITEM(rec, 4), *search = PyTuple_GET_ITEM(rec, 6);
    if (put_text(b, PyTuple_GET_ITEM(rec, 0)) < 0 ||
        put_time(b, PyTuple_GET_ITEM(rec, 1), epoch) < 0 ||
        put_text(b, PyTuple_GET_ITEM(rec, 2)) < 0 || put_text(b, PyTuple_GET_ITEM(rec, 3)) < 0)
        return -1;
    if (org == Py_None) {
        if (reserve(b, 4) < 0)
            return -1;
        put32(b, -1);
    } else if (put_text(b, org) < 0) {
        return -1;
    }
    if (put_array(b, PyTuple_GET_ITEM(rec, 5)) < 0)
        return -1;
    if (!PyBytes_Check(search)) {
        PyErr_Format(PyExc_TypeError, "expected bytes, got %.80s", Py_TYPE(search)->tp_name);
        return -1;
    }
    if (put_value(b, PyBytes_AS_STRING(search), PyBytes_GET_SIZE(search)) < 0)
        return -1;
    return put_text(b, PyTuple_GET_ITEM(rec, 7));
}

static const char SIGNATURE[] = "PGCOPY\n\377\r\n";

static PyObject *py_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *records, *epoch;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &records, &epoch))
        return NULL;
    if (!PyDateTime_Check(epoch)) {
        PyErr_SetString(PyExc_TypeError, "epoch must be a datetime");
        return NULL;
    }
    Buffer b = {NULL, 0, 0};
    if (reserve(&b, 19 + 2) < 0)
        return NULL;
    memcpy(b.data, SIGNATURE, 11);
    b.size = 11;
    put32(&b, 0); /* flags */
    put32(&b, 0); /* header extension */
    Py_ssize_t n = PyList_GET_SIZE(records);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (put_record(&b, PyList_GET_ITEM(records, i), epoch) < 0) {
            PyMem_Free(b.data);
            return NULL;
        }
    }
    if (reserve(&b, 2) < 0) {
        PyMem_Free(b.data);
        return NULL;
    }
    b.data[b.size++] = (char)0xff;
    b.data[b.size++] = (char)0xff;
    PyObject *out = PyBytes_FromStringAndSize(b.data, b.size);
    PyMem_Free(b.data);
    return out;
}

static PyMethodDef methods[] = {
    {"rows", py_rows, METH_VARARGS, "The binary COPY input of the records (see the source)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pgcopy_c",
                                    "The PostgreSQL store's binary COPY stream (pg_ingest.py).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__pgcopy_c(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    return PyModule_Create(&module);
}
