/* The ledger's per-entry hashing loops in C: immutrail.ledger._native.
 *
 * Written by hand, like the rest of the Merkle code, because it is ours: three loops that
 * CPython runs one bytecode at a time in immutrail.ledger.hashing, where the call overhead of
 * hashlib costs more than the SHA-256 itself on entries of a few hundred bytes. Each function
 * here returns exactly what its Python twin in hashing.py returns; the tests compare the two.
 *
 * SHA-256 comes from OpenSSL's libcrypto, the same library behind hashlib, through its
 * low-level interface: the one-shot SHA256() of OpenSSL 3 looks the algorithm up on every call
 * (measured: 4x slower on 65-byte tree nodes).
 *
 * scan_sqlite_leaves() reads the entries of a SQLite ledger itself: Python's sqlite3 module costs
 * about 1.3 us a row in objects, four times what SQLite's own reading costs. It uses the one
 * SQLite library the sqlite3 module has already loaded (looked up, never linked: two copies of
 * SQLite in one process would not see each other's file locks), and only when that library is
 * the shared libsqlite3.so.0.
 *
 * Hashing runs with the GIL released. The inputs are first copied into a tuple, which holds a
 * reference to each bytes object (immutable): another thread changing the caller's list meanwhile
 * cannot free what is being read.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE /* memmem */
#include <Python.h>
#include <dlfcn.h>
#include <sqlite3.h>
#include <string.h>

#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#define HASH_SIZE 32
#define TILE_WIDTH 256
#define TILE_HEIGHT 8

typedef struct {
    const unsigned char *data;
    size_t len;
} span;

/* The items of an iterable of bytes as spans; NULL with an exception set on anything else.
 * The caller owns *fast (the tuple the spans point into) and frees the returned array. */
static span *bytes_spans(PyObject *items, const char *what, PyObject **fast, Py_ssize_t *count) {
    *fast = PySequence_Tuple(items);
    if (*fast == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(*fast);
    span *spans = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(span));
    if (spans == NULL) {
        Py_CLEAR(*fast);
        PyErr_NoMemory();
        return NULL;
    }
    PyObject **objects = PySequence_Fast_ITEMS(*fast); /* a tuple's items */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(objects[i])) {
            PyErr_Format(PyExc_TypeError, "%s: item %zd is %.100s, not bytes", what, i,
                         Py_TYPE(objects[i])->tp_name);
            PyMem_Free(spans);
            Py_CLEAR(*fast);
            return NULL;
        }
        spans[i].data = (const unsigned char *)PyBytes_AS_STRING(objects[i]);
        spans[i].len = (size_t)PyBytes_GET_SIZE(objects[i]);
    }
    *count = n;
    return spans;
}

/* bytes_spans() for search marks, which must not be empty (every entry would hold one). */
static span *mark_spans(PyObject *items, const char *what, PyObject **fast, Py_ssize_t *count) {
    span *marks = bytes_spans(items, what, fast, count);
    for (Py_ssize_t k = 0; marks != NULL && k < *count; k++) {
        if (marks[k].len == 0) {
            PyErr_Format(PyExc_ValueError, "%s: a mark must not be empty", what);
            PyMem_Free(marks);
            Py_CLEAR(*fast);
            return NULL;
        }
    }
    return marks;
}

static void sha256_two(const unsigned char *a, size_t a_len, const unsigned char *b,
                       size_t b_len, unsigned char *out) {
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, a, a_len);
    SHA256_Update(&ctx, b, b_len);
    SHA256_Final(out, &ctx);
}

/* RFC 6962 node hash: SHA-256(0x01 || left || right). */
static void node_hash(const unsigned char *left, const unsigned char *right, unsigned char *out) {
    unsigned char buffer[1 + 2 * HASH_SIZE];
    buffer[0] = 0x01;
    memcpy(buffer + 1, left, HASH_SIZE);
    memcpy(buffer + 1 + HASH_SIZE, right, HASH_SIZE);
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, buffer, sizeof buffer);
    SHA256_Final(out, &ctx);
}

PyDoc_STRVAR(leaf_hashes_doc,
             "leaf_hashes(entries, /)\n--\n\n"
             "The RFC 6962 leaf hash of each entry (an iterable of bytes), joined.");

static PyObject *leaf_hashes(PyObject *module, PyObject *entries) {
    PyObject *fast;
    Py_ssize_t n;
    span *spans = bytes_spans(entries, "leaf_hashes", &fast, &n);
    if (spans == NULL) {
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * HASH_SIZE);
    if (out != NULL) {
        static const unsigned char leaf_prefix = 0x00;
        unsigned char *hashes = (unsigned char *)PyBytes_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            sha256_two(&leaf_prefix, 1, spans[i].data, spans[i].len, hashes + i * HASH_SIZE);
        }
        Py_END_ALLOW_THREADS
    }
    PyMem_Free(spans);
    Py_DECREF(fast);
    return out;
}

PyDoc_STRVAR(tile_from_base_doc,
             "tile_from_base(base, /)\n--\n\n"
             "The stored bytes of a tile over ``base``: 2 to 256 hashes joined, left to right.\n"
             "The interior nodes come in the order appending completes them (see tiles.py).");

static PyObject *tile_from_base(PyObject *module, PyObject *arg) {
    Py_buffer base;
    if (PyObject_GetBuffer(arg, &base, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_ssize_t width = base.len / HASH_SIZE;
    if (base.len % HASH_SIZE != 0 || width < 2 || width > TILE_WIDTH) {
        PyErr_Format(PyExc_ValueError, "a tile base is 2 to %d hashes of %d bytes, not %zd bytes",
                     TILE_WIDTH, HASH_SIZE, base.len);
        PyBuffer_Release(&base);
        return NULL;
    }
    Py_ssize_t count = width - __builtin_popcountll((unsigned long long)width);
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * HASH_SIZE);
    if (out != NULL) {
        const unsigned char *nodes = base.buf;
        unsigned char *slot = (unsigned char *)PyBytes_AS_STRING(out);
        /* The right edge of the tile as it grows: one hash per level, at most TILE_HEIGHT. */
        unsigned char edge[TILE_HEIGHT + 1][HASH_SIZE];
        int top = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < width; i++) {
            const unsigned char *acc = nodes + i * HASH_SIZE;
            for (Py_ssize_t index = i; index & 1; index >>= 1) {
                node_hash(edge[--top], acc, slot);
                acc = slot;
                slot += HASH_SIZE;
            }
            memcpy(edge[top++], acc, HASH_SIZE);
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&base);
    return out;
}

static int contains_any(const unsigned char *data, size_t len, const span *marks, Py_ssize_t m) {
    for (Py_ssize_t k = 0; k < m; k++) {
        if (memmem(data, len, marks[k].data, marks[k].len) != NULL) {
            return 1;
        }
    }
    return 0;
}

PyDoc_STRVAR(find_marked_doc,
             "find_marked(entries, marks, /)\n--\n\n"
             "The positions of the entries (bytes) that contain any of ``marks`` (bytes).");

static PyObject *find_marked(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "find_marked() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *entries_fast, *marks_fast, *out = NULL;
    Py_ssize_t n, m;
    span *entries = bytes_spans(args[0], "find_marked entries", &entries_fast, &n);
    if (entries == NULL) {
        return NULL;
    }
    span *marks = mark_spans(args[1], "find_marked", &marks_fast, &m);
    if (marks != NULL) {
        out = PyList_New(0);
        for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
            if (contains_any(entries[i].data, entries[i].len, marks, m)) {
                PyObject *position = PyLong_FromSsize_t(i);
                if (position == NULL || PyList_Append(out, position) < 0) {
                    Py_CLEAR(out);
                }
                Py_XDECREF(position);
            }
        }
        PyMem_Free(marks);
        Py_DECREF(marks_fast);
    }
    PyMem_Free(entries);
    Py_DECREF(entries_fast);
    return out;
}

/* -- reading a SQLite ledger ------------------------------------------------------------------ */

#define SQLITE_LIBRARY "libsqlite3.so.0"
#define SCAN_MAX_ENTRIES (1 << 24)

static struct {
    int (*open_v2)(const char *, sqlite3 **, int, const char *);
    int (*busy_timeout)(sqlite3 *, int);
    int (*prepare_v2)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
    int (*bind_int64)(sqlite3_stmt *, int, sqlite3_int64);
    int (*step)(sqlite3_stmt *);
    sqlite3_int64 (*column_int64)(sqlite3_stmt *, int);
    const void *(*column_blob)(sqlite3_stmt *, int);
    int (*column_bytes)(sqlite3_stmt *, int);
    int (*column_type)(sqlite3_stmt *, int);
    int (*finalize)(sqlite3_stmt *);
    int (*close)(sqlite3 *);
    const char *(*errmsg)(sqlite3 *);
    const char *(*libversion)(void);
} sq;
static int sq_state; /* 0: not looked up yet, 1: found, -1: not loaded in this process */

/* Find the functions in the SQLite library already loaded (with the GIL held: no race). */
static int sqlite_found(void) {
    if (sq_state != 0) {
        return sq_state > 0;
    }
    sq_state = -1;
    void *lib = dlopen(SQLITE_LIBRARY, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) {
        return 0;
    }
#define FIND(field, name)                                                                      \
    if ((*(void **)&sq.field = dlsym(lib, name)) == NULL) {                                    \
        return 0;                                                                              \
    }
    FIND(open_v2, "sqlite3_open_v2")
    FIND(busy_timeout, "sqlite3_busy_timeout")
    FIND(prepare_v2, "sqlite3_prepare_v2")
    FIND(bind_int64, "sqlite3_bind_int64")
    FIND(step, "sqlite3_step")
    FIND(column_int64, "sqlite3_column_int64")
    FIND(column_blob, "sqlite3_column_blob")
    FIND(column_bytes, "sqlite3_column_bytes")
    FIND(column_type, "sqlite3_column_type")
    FIND(finalize, "sqlite3_finalize")
    FIND(close, "sqlite3_close")
    FIND(errmsg, "sqlite3_errmsg")
    FIND(libversion, "sqlite3_libversion")
#undef FIND
    sq_state = 1;
    return 1;
}

PyDoc_STRVAR(sqlite_version_doc,
             "sqlite_version()\n--\n\n"
             "The version of the SQLite library scan_sqlite_leaves() would use, or None when\n"
             SQLITE_LIBRARY " is not loaded in this process (import sqlite3 first).");

static PyObject *sqlite_version(PyObject *module, PyObject *unused) {
    if (!sqlite_found()) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(sq.libversion());
}

/* A growing array of entry indexes, filled without the GIL. */
typedef struct {
    long long *items;
    size_t count, capacity;
} index_list;

static int index_list_add(index_list *list, long long value) {
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? 2 * list->capacity : 64;
        long long *items = realloc(list->items, capacity * sizeof *items);
        if (items == NULL) {
            return -1;
        }
        list->items = items;
        list->capacity = capacity;
    }
    list->items[list->count++] = value;
    return 0;
}

static PyObject *index_list_to_py(const index_list *list) {
    PyObject *out = PyList_New((Py_ssize_t)list->count);
    for (size_t i = 0; out != NULL && i < list->count; i++) {
        PyObject *value = PyLong_FromLongLong(list->items[i]);
        if (value == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, value);
    }
    return out;
}

PyDoc_STRVAR(scan_sqlite_leaves_doc,
             "scan_sqlite_leaves(path, start, stop, marks, busy_timeout_ms, /)\n--\n\n"
             "Read the entries [start, stop) of the SQLite ledger at path, in index order, up to\n"
             "the first missing index. Returns (leaves, count, bad, marked): the stored leaf\n"
             "hashes joined (32 zero bytes for one that is not 32 bytes), the number of entries\n"
             "read, the indexes whose bytes do not hash to their stored leaf hash, and the other\n"
             "indexes whose bytes contain any of marks. Raises RuntimeError on a SQLite error.");

static PyObject *scan_sqlite_leaves(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "scan_sqlite_leaves() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    long long start = PyLong_AsLongLong(args[1]);
    long long stop = PyLong_AsLongLong(args[2]);
    long busy_ms = PyLong_AsLong(args[4]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (start < 0 || stop < start || stop - start > SCAN_MAX_ENTRIES || busy_ms < 0 ||
        busy_ms > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "scan_sqlite_leaves: bad range or timeout");
        return NULL;
    }
    if (!sqlite_found()) {
        PyErr_SetString(PyExc_RuntimeError, SQLITE_LIBRARY " is not loaded in this process");
        return NULL;
    }
    PyObject *path = NULL, *marks_fast = NULL, *result = NULL;
    if (!PyUnicode_FSConverter(args[0], &path)) {
        return NULL;
    }
    Py_ssize_t m;
    span *marks = mark_spans(args[3], "scan_sqlite_leaves", &marks_fast, &m);
    if (marks == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    size_t wanted = (size_t)(stop - start);
    unsigned char *leaves = PyMem_RawMalloc(wanted ? wanted * HASH_SIZE : 1);
    if (leaves == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    index_list bad = {0}, marked = {0};
    const char *fs_path = PyBytes_AS_STRING(path);
    char error[512] = "";
    long long expected = start;

    Py_BEGIN_ALLOW_THREADS
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = sq.open_v2(fs_path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) {
        sq.busy_timeout(db, (int)busy_ms);
        rc = sq.prepare_v2(db,
                           "SELECT idx, data, leaf_hash FROM entries "
                           "WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
                           -1, &stmt, NULL);
    }
    if (rc == SQLITE_OK) {
        sq.bind_int64(stmt, 1, start);
        sq.bind_int64(stmt, 2, stop);
        static const unsigned char leaf_prefix = 0x00;
        while ((rc = sq.step(stmt)) == SQLITE_ROW && sq.column_int64(stmt, 0) == expected) {
            /* A value that is not a BLOB (a damaged row) is bad, as in the Python twin, which
             * gets it as text. column_blob before column_bytes: the documented order. */
            int data_ok = sq.column_type(stmt, 1) == SQLITE_BLOB;
            int stored_ok = sq.column_type(stmt, 2) == SQLITE_BLOB;
            const unsigned char *data = sq.column_blob(stmt, 1);
            size_t data_len = (size_t)sq.column_bytes(stmt, 1);
            const unsigned char *stored = sq.column_blob(stmt, 2);
            size_t stored_len = (size_t)sq.column_bytes(stmt, 2);
            stored_ok = stored_ok && stored_len == HASH_SIZE;
            unsigned char *slot = leaves + (size_t)(expected - start) * HASH_SIZE;
            unsigned char computed[HASH_SIZE];
            sha256_two(&leaf_prefix, 1, data ? data : (const unsigned char *)"", data_len,
                       computed);
            int ok = data_ok && stored_ok && memcmp(computed, stored, HASH_SIZE) == 0;
            if (stored_ok) {
                memcpy(slot, stored, HASH_SIZE);
            } else {
                memset(slot, 0, HASH_SIZE);
            }
            int failed = 0;
            if (!ok) {
                failed = index_list_add(&bad, expected);
            } else if (data != NULL && contains_any(data, data_len, marks, m)) {
                failed = index_list_add(&marked, expected);
            }
            if (failed) {
                rc = SQLITE_NOMEM;
                break;
            }
            expected++;
        }
        if (rc == SQLITE_ROW) {
            rc = SQLITE_DONE; /* stopped at a missing index: the caller reports the gap */
        }
    }
    if (rc != SQLITE_DONE) {
        snprintf(error, sizeof error, "%s",
                 rc == SQLITE_NOMEM || db == NULL ? "out of memory" : sq.errmsg(db));
    }
    sq.finalize(stmt);
    sq.close(db);
    Py_END_ALLOW_THREADS

    if (error[0] != '\0') {
        PyErr_Format(PyExc_RuntimeError, "cannot read the ledger's entries: %s", error);
    } else {
        PyObject *bad_py = index_list_to_py(&bad);
        PyObject *marked_py = bad_py ? index_list_to_py(&marked) : NULL;
        if (marked_py != NULL) {
            result = Py_BuildValue("(y#LNN)", (const char *)leaves,
                                   (Py_ssize_t)((expected - start) * HASH_SIZE), expected - start,
                                   bad_py, marked_py);
        } else {
            Py_XDECREF(bad_py);
        }
    }
    free(bad.items);
    free(marked.items);
    PyMem_RawFree(leaves);
done:
    PyMem_Free(marks);
    Py_DECREF(marks_fast);
    Py_DECREF(path);
    return result;
}

static PyMethodDef native_methods[] = {
    {"sqlite_version", sqlite_version, METH_NOARGS, sqlite_version_doc},
    {"scan_sqlite_leaves", (PyCFunction)(void (*)(void))scan_sqlite_leaves, METH_FASTCALL,
     scan_sqlite_leaves_doc},
    {"leaf_hashes", leaf_hashes, METH_O, leaf_hashes_doc},
    {"tile_from_base", tile_from_base, METH_O, tile_from_base_doc},
    {"find_marked", (PyCFunction)(void (*)(void))find_marked, METH_FASTCALL, find_marked_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "immutrail.ledger._native",
    .m_doc = "The ledger's per-entry hashing loops in C (see immutrail.ledger.hashing).",
    .m_size = 0,
    .m_methods = native_methods,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModuleDef_Init(&native_module); }
