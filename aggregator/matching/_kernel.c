/* The matcher's per-item loops, in C. Each has a reference implementation in Python, which runs
 * when this module was not built (native.py):
 *
 * find():   which tokens of a field start a term (index.py, _find_python);
 * hits():   the offsets and Hit tuples of some terms' occurrences in a field (_hits_python);
 * group():  the hits of each simple watchlist that fired (matcher.py, _group_python);
 * add_ids(): the terms found in a field (index.py, _add_ids_python);
 * triage(): the watchlists that those terms fire or concern, and the terms to make hits of
 *           (matcher.py, _triage_python).
 *
 * Matching 10,000 terms makes tens of occurrences per item; in Python each costs a few
 * microseconds of interpreter work, which was most of the matcher's time with many terms
 * (bench/bench_matching.py). Here each costs a few dictionary or list reads. The logic is the
 * Python's, step for step; tests/test_matching_kernel.py checks each pair against each other.
 *
 * Every object is checked before it is read as a tuple, list, dict or int, so wrong input is a
 * TypeError or IndexError, never a crash. Ints, strs and bools must be exactly those types (the
 * matcher's own are), so that no lookup here runs Python code (a subclass's __hash__ or __eq__)
 * that could change the lists being read; objects kept across a call that can (an allocation,
 * which can collect garbage, or the chunk cache's __missing__) are held by a reference of ours,
 * and list lengths are read again after it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

/* A token's entry (index.py, _TokenStarts): a tuple of these fields. */
enum {
    E_KEY,
    E_SINGLES,
    E_PAIRS,
    E_OTHERS,
    E_NEEDS,
    E_IS,
    E_CHECKED,
    E_CASE,
    E_STARTS,
    E_SIZE
};

/* The shared empty tuple and 0, and WatchlistMatch's attribute names (see PyInit__kernel). */
static PyObject *empty_tuple = NULL;
static PyObject *zero = NULL;
static PyObject *watchlist_attribute = NULL;
static PyObject *hits_attribute = NULL;

static int
bad_input(const char *what)
{
    PyErr_Format(PyExc_TypeError, "matching kernel: %s", what);
    return -1;
}

/* Whether a function got its `expected` number of arguments; a TypeError if not. */
static int
arguments_ok(const char *function, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs == expected) {
        return 1;
    }
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", function, expected,
                 nargs);
    return 0;
}

static PyObject *
entry_at(PyObject *tokens, Py_ssize_t index)
{
    PyObject *entry = PyList_GET_ITEM(tokens, index);
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != E_SIZE) {
        bad_input("a token entry is not a tuple of 9");
        return NULL;
    }
    return entry;
}

static int
append_index(PyObject *list, Py_ssize_t index)
{
    PyObject *number = PyLong_FromSsize_t(index);
    if (number == NULL) {
        return -1;
    }
    int failed = PyList_Append(list, number);
    Py_DECREF(number);
    return failed;
}

/* A dictionary's value for key, if there is a true one (a borrowed reference), else NULL;
 * -1 in *failed on error. */
static PyObject *
true_value(PyObject *dict, PyObject *key, int *failed)
{
    if (!PyDict_Check(dict)) {
        *failed = bad_input("a phrase table is not a dict");
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(dict, key);
    if (value == NULL) {
        *failed = PyErr_Occurred() ? -1 : 0;
        return NULL;
    }
    if (!PyTuple_CheckExact(value)) {
        *failed = bad_input("a phrase table's value is not a tuple");
        return NULL;
    }
    return PyTuple_GET_SIZE(value) ? value : NULL;
}

static long
small_int(PyObject *number)
{
    if (!PyLong_CheckExact(number)) {
        bad_input("a bit set is not an int");
        return -1;
    }
    return PyLong_AsLong(number);
}

PyDoc_STRVAR(find_doc,
"find(tokens, phrases, checked) -> (single_at, single_ids, pair_at, pair_ids,\n"
"                                   checked_at, checked_entries, star_at)\n\n"
"index.py's _find_python, in C.");

static PyObject *
find(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!arguments_ok("find", nargs, 3)) {
        return NULL;
    }
    PyObject *tokens = args[0];
    if (!PyList_CheckExact(tokens)) {
        bad_input("tokens is not a list");
        return NULL;
    }
    int phrases = PyObject_IsTrue(args[1]);
    int checked = PyObject_IsTrue(args[2]);
    if (phrases < 0 || checked < 0) {
        return NULL;
    }
    PyObject *out[7] = {NULL};
    for (int n = 0; n < 7; n++) {
        out[n] = PyList_New(0);
        if (out[n] == NULL) {
            goto error;
        }
    }
    PyObject *single_at = out[0], *single_ids = out[1], *pair_at = out[2], *pair_ids = out[3];
    PyObject *checked_at = out[4], *checked_entries = out[5], *star_at = out[6];
    for (Py_ssize_t index = 0; index < PyList_GET_SIZE(tokens); index++) {
        PyObject *entry = entry_at(tokens, index);
        if (entry == NULL) {
            goto error;
        }
        PyObject *starts = PyTuple_GET_ITEM(entry, E_STARTS);
        if (starts == Py_False) {
            continue;
        }
        if (starts != Py_True) {
            bad_input("whether a term starts at a token is not a bool");
            goto error;
        }
        /* Most entries have no one-word terms, no `*` phrases or no bits: the shared empty
         * tuple and the shared 0, compared by address without reading the objects (each entry's
         * own objects are scattered in memory, and reading them is most of this loop's time). */
        PyObject *singles = PyTuple_GET_ITEM(entry, E_SINGLES);
        if (singles != empty_tuple) {
            if (!PyTuple_Check(singles)) {
                bad_input("one-word terms are not a tuple");
                goto error;
            }
            if (PyTuple_GET_SIZE(singles)
                && (append_index(single_at, index) < 0
                    || PyList_Append(single_ids, singles) < 0)) {
                goto error;
            }
        }
        if (!phrases) {
            continue;
        }
        PyObject *others = PyTuple_GET_ITEM(entry, E_OTHERS);
        if (others != empty_tuple) {
            if (!PyTuple_Check(others)) {
                bad_input("`*` phrases are not a tuple");
                goto error;
            }
            if (PyTuple_GET_SIZE(others) && append_index(star_at, index) < 0) {
                goto error;
            }
        }
        PyObject *needs_bits = PyTuple_GET_ITEM(entry, E_NEEDS);
        if (needs_bits == zero || index + 1 >= PyList_GET_SIZE(tokens)) {
            continue;
        }
        long needs = small_int(needs_bits);
        if (needs == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (!needs) {
            continue;
        }
        PyObject *next = entry_at(tokens, index + 1);
        if (next == NULL) {
            goto error;
        }
        PyObject *is_bits = PyTuple_GET_ITEM(next, E_IS);
        if (is_bits == zero) {
            continue;
        }
        long is = small_int(is_bits);
        if (is == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (!(needs & is)) {
            continue;
        }
        PyObject *key = PyTuple_GET_ITEM(next, E_KEY);
        if (!PyUnicode_CheckExact(key)) {
            bad_input("a token's key is not a str");
            goto error;
        }
        int failed = 0;
        PyObject *ids = true_value(PyTuple_GET_ITEM(entry, E_PAIRS), key, &failed);
        if (failed) {
            goto error;
        }
        if (ids != NULL && (append_index(pair_at, index) < 0 || PyList_Append(pair_ids, ids) < 0)) {
            goto error;
        }
        if (checked) {
            PyObject *found = true_value(PyTuple_GET_ITEM(entry, E_CHECKED), key, &failed);
            if (failed) {
                goto error;
            }
            if (found != NULL
                && (append_index(checked_at, index) < 0
                    || PyList_Append(checked_entries, found) < 0)) {
                goto error;
            }
        }
    }
    PyObject *result = PyTuple_New(7);
    if (result == NULL) {
        goto error;
    }
    for (int n = 0; n < 7; n++) {
        PyTuple_SET_ITEM(result, n, out[n]);  /* steals the reference */
    }
    return result;
error:
    for (int n = 0; n < 7; n++) {
        Py_XDECREF(out[n]);
    }
    return NULL;
}

/* One occurrence of a term: first and last token, and the term id (its value and object). */
typedef struct {
    Py_ssize_t first;
    Py_ssize_t last;
    long long id;
    PyObject *id_object; /* a reference of ours (free_found) */
} Found;

static int
found_order(const void *a, const void *b)
{
    const Found *x = a, *y = b;
    if (x->first != y->first) {
        return x->first < y->first ? -1 : 1;
    }
    if (x->last != y->last) {
        return x->last < y->last ? -1 : 1;
    }
    return (x->id > y->id) - (x->id < y->id);
}

typedef struct {
    Found *items;
    Py_ssize_t count;
    Py_ssize_t size;
} FoundList;

static int
add_found(FoundList *list, Py_ssize_t first, Py_ssize_t last, PyObject *id_object)
{
    long long id = PyLong_AsLongLong(id_object);
    if (id == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (list->count == list->size) {
        Py_ssize_t size = list->size ? list->size * 2 : 64;
        Found *items = PyMem_Realloc(list->items, (size_t)size * sizeof(Found));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        list->items = items;
        list->size = size;
    }
    Py_INCREF(id_object);  /* released by free_found */
    list->items[list->count++] = (Found){first, last, id, id_object};
    return 0;
}

/* An exact int (a subclass's __hash__ or __index__ would run Python code); -1 if not. */
static int
exact_int(PyObject *number)
{
    return PyLong_CheckExact(number) ? 0 : bad_input("a term id or index is not an int");
}

static void
free_found(FoundList *list)
{
    for (Py_ssize_t n = 0; n < list->count; n++) {
        Py_DECREF(list->items[n].id_object);
    }
    PyMem_Free(list->items);
}

static Py_ssize_t
index_value(PyObject *number)
{
    if (!PyLong_CheckExact(number)) {
        bad_input("a token position is not an int");
        return -1;
    }
    return PyLong_AsSsize_t(number);
}

/* Occurrences at positions `at` (a list of ints) of the term ids in `ids` (a list of tuples)
 * that are in `wanted`; each spans `extra` tokens after its first. */
static int
select_found(FoundList *list, PyObject *at, PyObject *ids, Py_ssize_t extra, PyObject *wanted)
{
    if (!PyList_Check(at) || !PyList_Check(ids) || PyList_GET_SIZE(at) != PyList_GET_SIZE(ids)) {
        return bad_input("positions and term ids are not two lists of one length");
    }
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(at) && n < PyList_GET_SIZE(ids); n++) {
        PyObject *group = PyList_GET_ITEM(ids, n);
        if (!PyTuple_Check(group)) {
            return bad_input("term ids are not a tuple");
        }
        Py_ssize_t first = -1;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(group); k++) {
            PyObject *id_object = PyTuple_GET_ITEM(group, k);
            if (exact_int(id_object) < 0) {
                return -1;
            }
            int in = PySet_Contains(wanted, id_object);
            if (in < 0) {
                return -1;
            }
            if (!in) {
                continue;
            }
            if (first < 0) {
                first = index_value(PyList_GET_ITEM(at, n));
                if (first == -1 && PyErr_Occurred()) {
                    return -1;
                }
            }
            if (add_found(list, first, first + extra, id_object) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* The term id of a phrase of 3 or more words found, (first token, last token, term id); NULL
 * if it is not such a tuple. */
static PyObject *
longer_id(PyObject *entry)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3) {
        bad_input("a longer phrase is not a tuple of 3");
        return NULL;
    }
    return PyTuple_GET_ITEM(entry, 2);
}

static int
select_longer(FoundList *list, PyObject *longer, PyObject *wanted)
{
    if (!PyList_Check(longer)) {
        return bad_input("longer phrases are not a list");
    }
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(longer); n++) {
        PyObject *entry = PyList_GET_ITEM(longer, n);
        PyObject *id_object = longer_id(entry);
        if (id_object == NULL || exact_int(id_object) < 0) {
            return -1;
        }
        int in = PySet_Contains(wanted, id_object);
        if (in < 0) {
            return -1;
        }
        if (!in) {
            continue;
        }
        Py_ssize_t first = index_value(PyTuple_GET_ITEM(entry, 0));
        if (first == -1 && PyErr_Occurred()) {
            return -1;
        }
        Py_ssize_t last = index_value(PyTuple_GET_ITEM(entry, 1));
        if (last == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (add_found(list, first, last, id_object) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Where the field's chunks start: the index of each one's first token and of its first
 * character (chunks are joined by separators of `step` characters). */
typedef struct {
    Py_ssize_t *first_token; /* count + 1 entries, the last one the number of tokens */
    Py_ssize_t *first_char;
    Py_ssize_t count;
} Chunks;

static int
chunk_starts(Chunks *out, PyObject *chunks, PyObject *chunk_tokens, Py_ssize_t step)
{
    if (!PyList_Check(chunks) || !PyList_Check(chunk_tokens)
        || PyList_GET_SIZE(chunks) != PyList_GET_SIZE(chunk_tokens)) {
        return bad_input("chunks and their tokens are not two lists of one length");
    }
    Py_ssize_t count = PyList_GET_SIZE(chunks);
    out->count = count;
    out->first_token = PyMem_Malloc((size_t)(count + 1) * sizeof(Py_ssize_t));
    out->first_char = PyMem_Malloc((size_t)(count + 1) * sizeof(Py_ssize_t));
    if (out->first_token == NULL || out->first_char == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out->first_token[0] = 0;
    out->first_char[0] = 0;
    for (Py_ssize_t c = 0; c < count; c++) {
        PyObject *chunk = PyList_GET_ITEM(chunks, c);
        PyObject *entries = PyList_GET_ITEM(chunk_tokens, c);
        if (!PyUnicode_CheckExact(chunk) || !PyTuple_Check(entries)) {
            return bad_input("a chunk is not a str with a tuple of token entries");
        }
        out->first_token[c + 1] = out->first_token[c] + PyTuple_GET_SIZE(entries);
        out->first_char[c + 1] = out->first_char[c] + PyUnicode_GET_LENGTH(chunk) + step;
    }
    return 0;
}

/* Where token `token` starts and ends in the prepared text; -1 on error. A chunk whose entries
 * are a `whole_type` is one token from its first character to its last (index.py,
 * WholeChunk): its span is the chunk's, without a lookup. */
static int
token_span(const Chunks *chunks, PyObject *chunk_list, PyObject *chunk_tokens,
           PyObject *spans_by_chunk, PyObject *whole_type, Py_ssize_t token, Py_ssize_t *start,
           Py_ssize_t *end)
{
    /* bisect_right(first_token, token) - 1: the last chunk that starts at or before it (an
     * empty chunk starts where the next one does, and the next one is taken). */
    Py_ssize_t low = 0, high = chunks->count + 1;
    while (low < high) {
        Py_ssize_t middle = low + (high - low) / 2;
        if (token < chunks->first_token[middle]) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Py_ssize_t chunk = low - 1;
    if (token < 0 || chunk >= chunks->count) {
        PyErr_SetString(PyExc_IndexError, "matching kernel: token position out of range");
        return -1;
    }
    /* The chunk's spans are in the cache (the scan put them there): a plain dict read; if the
     * cache was cleared since, its __missing__ works them out again. */
    if (chunk >= PyList_GET_SIZE(chunk_list) || chunk >= PyList_GET_SIZE(chunk_tokens)) {
        PyErr_SetString(PyExc_IndexError, "matching kernel: fewer chunks than scanned");
        return -1;
    }
    PyObject *chunk_text = PyList_GET_ITEM(chunk_list, chunk);
    if ((PyObject *)Py_TYPE(PyList_GET_ITEM(chunk_tokens, chunk)) == whole_type
        && PyUnicode_CheckExact(chunk_text)) {
        *start = chunks->first_char[chunk];
        *end = *start + PyUnicode_GET_LENGTH(chunk_text);
        return 0;
    }
    PyObject *spans = PyDict_Check(spans_by_chunk)
                          ? PyDict_GetItemWithError(spans_by_chunk, chunk_text) : NULL;
    if (spans != NULL) {
        Py_INCREF(spans);
    } else if (PyErr_Occurred()) {
        return -1;
    } else {
        Py_INCREF(chunk_text);  /* __missing__ runs Python code */
        spans = PyObject_GetItem(spans_by_chunk, chunk_text);
        Py_DECREF(chunk_text);
        if (spans == NULL) {
            return -1;
        }
    }
    Py_ssize_t local = token - chunks->first_token[chunk];
    int failed = -1;
    if (!PyTuple_Check(spans) || local >= PyTuple_GET_SIZE(spans)) {
        PyErr_SetString(PyExc_IndexError, "matching kernel: chunk has fewer tokens than scanned");
    } else {
        PyObject *span = PyTuple_GET_ITEM(spans, local);
        if (!PyTuple_Check(span) || PyTuple_GET_SIZE(span) != 3) {
            bad_input("a token span is not a tuple of 3");
        } else if ((*start = index_value(PyTuple_GET_ITEM(span, 1))) != -1
                   && (*end = index_value(PyTuple_GET_ITEM(span, 2))) != -1) {
            *start += chunks->first_char[chunk];
            *end += chunks->first_char[chunk];
            failed = 0;
        } else if (!PyErr_Occurred()) {
            bad_input("a token span has a negative offset");
        }
    }
    Py_DECREF(spans);
    return failed;
}

static Py_ssize_t
mapped(PyObject *map, Py_ssize_t offset)
{
    if (!PyList_Check(map) || offset < 0 || offset >= PyList_GET_SIZE(map)) {
        PyErr_SetString(PyExc_IndexError, "matching kernel: offset outside the NFKC map");
        return -1;
    }
    return index_value(PyList_GET_ITEM(map, offset));
}

/* A Hit (a tuple subclass with 5 fields), made as tuple.__new__(Hit, fields) makes it: the
 * type's allocation, then the items (the references are new ones, owned by the hit). */
static PyObject *
new_hit(PyTypeObject *type, PyObject *term, PyObject *name, Py_ssize_t start, Py_ssize_t end,
        PyObject *text)
{
    PyObject *start_object = PyLong_FromSsize_t(start);
    PyObject *end_object = PyLong_FromSsize_t(end);
    PyObject *hit = NULL;
    if (start_object != NULL && end_object != NULL) {
        hit = type->tp_alloc(type, 5);
    }
    if (hit == NULL) {
        Py_XDECREF(start_object);
        Py_XDECREF(end_object);
        return NULL;
    }
    Py_INCREF(term);
    Py_INCREF(name);
    Py_INCREF(text);
    PyTuple_SET_ITEM(hit, 0, term);
    PyTuple_SET_ITEM(hit, 1, name);
    PyTuple_SET_ITEM(hit, 2, start_object);
    PyTuple_SET_ITEM(hit, 3, end_object);
    PyTuple_SET_ITEM(hit, 4, text);
    return hit;
}

PyDoc_STRVAR(hits_doc,
"hits(single_at, single_ids, pair_at, pair_ids, longer, wanted, chunks, chunk_tokens,\n"
"     spans_by_chunk, step, original, mapped_starts, mapped_ends, name, term_texts,\n"
"     hit_type, whole_type) -> (hits, owners)\n\n"
"index.py's _hits_python, in C.");

static PyObject *
hits(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!arguments_ok("hits", nargs, 17)) {
        return NULL;
    }
    PyObject *wanted = args[5], *chunk_list = args[6], *spans_by_chunk = args[8];
    PyObject *original = args[10];
    PyObject *map_starts = args[11], *map_ends = args[12], *name = args[13];
    PyObject *term_texts = args[14], *hit_type = args[15], *whole_type = args[16];
    Py_ssize_t step = PyLong_AsSsize_t(args[9]);
    if (step == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyAnySet_Check(wanted) || !PyUnicode_Check(original)
        || !PyList_Check(term_texts) || !PyType_Check(hit_type)
        || !PyType_IsSubtype((PyTypeObject *)hit_type, &PyTuple_Type)
        || ((PyTypeObject *)hit_type)->tp_itemsize != PyTuple_Type.tp_itemsize
        || ((PyTypeObject *)hit_type)->tp_basicsize != PyTuple_Type.tp_basicsize) {
        bad_input("hits() was given arguments of the wrong types");
        return NULL;
    }
    int is_mapped = map_starts != Py_None && map_ends != Py_None;
    FoundList found = {NULL, 0, 0};
    Chunks chunks = {NULL, NULL, 0};
    PyObject *made = NULL, *owners = NULL;
    if (select_found(&found, args[0], args[1], 0, wanted) < 0
        || select_found(&found, args[2], args[3], 1, wanted) < 0
        || select_longer(&found, args[4], wanted) < 0) {
        goto error;
    }
    made = PyList_New(0);
    owners = PyList_New(0);
    if (made == NULL || owners == NULL) {
        goto error;
    }
    if (found.count) {
        qsort(found.items, (size_t)found.count, sizeof(Found), found_order);
        if (chunk_starts(&chunks, chunk_list, args[7], step) < 0) {
            goto error;
        }
    }
    int hashtags = PyUnicode_FindChar(original, '#', 0, PY_SSIZE_T_MAX, 1) >= 0
                   || PyUnicode_FindChar(original, 0xff03, 0, PY_SSIZE_T_MAX, 1) >= 0;
    Py_ssize_t original_length = PyUnicode_GET_LENGTH(original);
    for (Py_ssize_t n = 0; n < found.count; n++) {
        Found *one = &found.items[n];
        Py_ssize_t start, end, last_start;
        if (token_span(&chunks, chunk_list, args[7], spans_by_chunk, whole_type, one->first,
                       &start, &end) < 0
            || (one->last != one->first
                && token_span(&chunks, chunk_list, args[7], spans_by_chunk, whole_type,
                              one->last, &last_start, &end) < 0)) {
            goto error;
        }
        if (is_mapped) {
            start = mapped(map_starts, start);
            if (start == -1 && PyErr_Occurred()) {
                goto error;
            }
            end = mapped(map_ends, end - 1);
            if (end == -1 && PyErr_Occurred()) {
                goto error;
            }
        }
        if (hashtags && start > 0 && start <= original_length) {
            Py_UCS4 before = PyUnicode_READ_CHAR(original, start - 1);
            if (before == '#' || before == 0xff03) {
                start -= 1;
            }
        }
        /* The words as written: the original's characters, at original offsets. */
        PyObject *text = PyUnicode_Substring(original, start, end);
        if (text == NULL) {
            goto error;
        }
        PyObject *term = PyList_GetItem(term_texts, (Py_ssize_t)one->id);
        if (term == NULL) {
            Py_DECREF(text);
            goto error;
        }
        Py_INCREF(term);  /* held across the allocations of new_hit */
        PyObject *hit = new_hit((PyTypeObject *)hit_type, term, name, start, end, text);
        Py_DECREF(term);
        Py_DECREF(text);
        if (hit == NULL) {
            goto error;
        }
        /* Strings and ints only: it can never be part of a reference cycle, so the garbage
         * collector need not look at it (CPython untracks plain tuples of such items itself;
         * a Hit, a subclass, it would keep looking at). */
        PyObject_GC_UnTrack(hit);
        int failed = PyList_Append(made, hit);
        Py_DECREF(hit);
        if (failed < 0 || PyList_Append(owners, one->id_object) < 0) {
            goto error;
        }
    }
    free_found(&found);
    PyMem_Free(chunks.first_token);
    PyMem_Free(chunks.first_char);
    PyObject *result = PyTuple_Pack(2, made, owners);
    Py_DECREF(made);
    Py_DECREF(owners);
    return result;
error:
    free_found(&found);
    PyMem_Free(chunks.first_token);
    PyMem_Free(chunks.first_char);
    Py_XDECREF(made);
    Py_XDECREF(owners);
    return NULL;
}

/* list[index] for an int index, as a borrowed reference; NULL on error. */
static PyObject *
item_of(PyObject *list, PyObject *index)
{
    Py_ssize_t at = index_value(index);
    if (at == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_Check(list)) {
        bad_input("a term table is not a list");
        return NULL;
    }
    if (at < 0 || at >= PyList_GET_SIZE(list)) {
        PyErr_SetString(PyExc_IndexError, "matching kernel: index out of range");
        return NULL;
    }
    return PyList_GET_ITEM(list, at);
}

/* A WatchlistMatch(name, hits), made as its dataclass __init__ makes it: the two slots set
 * with object.__setattr__ (the class is frozen). tests/test_matching_kernel.py checks that
 * these are still its only fields. */
static PyObject *
new_match(PyTypeObject *type, PyObject *name, PyObject *hits)
{
    PyObject *match = type->tp_alloc(type, 0);
    if (match == NULL) {
        return NULL;
    }
    if (PyObject_GenericSetAttr(match, watchlist_attribute, name) < 0
        || PyObject_GenericSetAttr(match, hits_attribute, hits) < 0) {
        Py_DECREF(match);
        return NULL;
    }
    return match;
}

PyDoc_STRVAR(group_doc,
"group(hits, owners, any_of, fired, several, names, match_type)\n"
"    -> {watchlist index: WatchlistMatch}\n\n"
"matcher.py's _group_python, in C.");

static int
add_to(PyObject *lists, PyObject *index, PyObject *hit)
{
    PyObject *list = PyDict_GetItemWithError(lists, index);
    if (list == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!PyList_Check(list)) {
        return bad_input("a watchlist's hits are not a list");
    }
    return PyList_Append(list, hit);
}

/* A term's watchlists in the three roles, from `several` (a borrowed tuple of 3 tuples), or
 * NULL if it has at most one in each; -1 in *failed on error. */
static PyObject *
roles_of(PyObject *several, PyObject *term_id, int *failed)
{
    PyObject *found = PyDict_GetItemWithError(several, term_id);
    if (found == NULL) {
        *failed = PyErr_Occurred() ? -1 : 0;
        return NULL;
    }
    if (!PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 3) {
        *failed = bad_input("a term's watchlists are not a tuple of 3");
        return NULL;
    }
    return found;
}

/* Add a hit to the list of each simple watchlist in `lists` whose `any` terms include its term:
 * the term's one such watchlist (any_of), or those `several` lists for it. */
static int
add_hit(PyObject *lists, PyObject *several, PyObject *any_of, PyObject *hit, PyObject *term_id)
{
    PyObject *own = item_of(any_of, term_id);
    if (own == NULL || exact_int(own) < 0) {
        return -1;
    }
    int in = PyDict_Contains(lists, own);
    if (in != 0) {
        return in < 0 ? -1 : add_to(lists, own, hit);
    }
    int failed = 0;
    PyObject *roles = roles_of(several, term_id, &failed);
    if (roles == NULL) {
        return failed;
    }
    PyObject *in_any = PyTuple_GET_ITEM(roles, 0);
    if (!PyTuple_Check(in_any)) {
        return bad_input("watchlist indexes are not a tuple");
    }
    Py_INCREF(in_any);  /* held across the appends, as the hit is */
    for (Py_ssize_t k = 0; !failed && k < PyTuple_GET_SIZE(in_any); k++) {
        PyObject *index_object = PyTuple_GET_ITEM(in_any, k);
        failed = exact_int(index_object) < 0 || add_to(lists, index_object, hit) < 0;
    }
    Py_DECREF(in_any);
    return failed ? -1 : 0;
}

static PyObject *
group(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!arguments_ok("group", nargs, 7)) {
        return NULL;
    }
    PyObject *hit_list = args[0], *owners = args[1], *any_of = args[2], *fired = args[3];
    PyObject *several = args[4], *names = args[5];
    /* The match type: a class of two slots and nothing else, as WatchlistMatch is. */
    PyTypeObject *match_type = (PyTypeObject *)args[6];
    if (!PyType_Check(args[6]) || !PyList_Check(names)
        || !(match_type->tp_flags & Py_TPFLAGS_HEAPTYPE) || match_type->tp_itemsize != 0
        || match_type->tp_dictoffset != 0
        || match_type->tp_basicsize != (Py_ssize_t)(sizeof(PyObject) + 2 * sizeof(PyObject *))) {
        bad_input("group() was given arguments of the wrong types");
        return NULL;
    }
    if (!PyList_Check(hit_list) || !PyList_Check(owners) || !PyList_Check(any_of)
        || !PyAnySet_Check(fired) || !PyDict_Check(several)
        || PyList_GET_SIZE(hit_list) != PyList_GET_SIZE(owners)) {
        bad_input("group() was given arguments of the wrong types");
        return NULL;
    }
    /* A list per watchlist that fired, then each hit added to those of its term's. */
    PyObject *lists = PyDict_New(), *iterator = NULL, *index = NULL;
    if (lists == NULL || (iterator = PyObject_GetIter(fired)) == NULL) {
        goto error;
    }
    while ((index = PyIter_Next(iterator)) != NULL) {
        PyObject *list = PyList_New(0);
        int failed = list == NULL || PyDict_SetItem(lists, index, list) < 0;
        Py_XDECREF(list);
        Py_CLEAR(index);
        if (failed) {
            goto error;
        }
    }
    if (PyErr_Occurred()) {
        goto error;
    }
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(hit_list); n++) {
        if (n >= PyList_GET_SIZE(owners)) {
            bad_input("fewer term ids than hits");
            goto error;
        }
        PyObject *hit = PyList_GET_ITEM(hit_list, n), *term_id = PyList_GET_ITEM(owners, n);
        /* Held: adding to a list allocates, which can collect garbage and run Python code. */
        Py_INCREF(hit);
        Py_INCREF(term_id);
        int failed = add_hit(lists, several, any_of, hit, term_id);
        Py_DECREF(hit);
        Py_DECREF(term_id);
        if (failed < 0) {
            goto error;
        }
    }
    /* Each watchlist's WatchlistMatch, its hits a tuple. Replacing the value of an existing
     * key does not resize the dict, so iterating it meanwhile is safe. */
    Py_ssize_t position = 0;
    PyObject *key, *list;
    while (PyDict_Next(lists, &position, &key, &list)) {
        PyObject *name = item_of(names, key);
        Py_XINCREF(name);  /* held across allocations, which can collect garbage */
        PyObject *hits = name == NULL ? NULL : PyList_AsTuple(list);
        PyObject *match = hits == NULL ? NULL : new_match(match_type, name, hits);
        Py_XDECREF(hits);
        Py_XDECREF(name);
        if (match == NULL || PyDict_SetItem(lists, key, match) < 0) {
            Py_XDECREF(match);
            goto error;
        }
        Py_DECREF(match);
    }
    Py_DECREF(iterator);
    return lists;
error:
    Py_XDECREF(index);
    Py_XDECREF(iterator);
    Py_XDECREF(lists);
    return NULL;
}

PyDoc_STRVAR(add_ids_doc,
"add_ids(into, every, single_ids, pair_ids, longer) -> None\n\n"
"index.py's _add_ids_python, in C.");

static int
add_id(PyObject *into, PyObject *every, PyObject *term_id)
{
    return exact_int(term_id) < 0 || PySet_Add(into, term_id) < 0
                   || PyList_Append(every, term_id) < 0
               ? -1
               : 0;
}

static PyObject *
add_ids(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!arguments_ok("add_ids", nargs, 5)) {
        return NULL;
    }
    PyObject *into = args[0], *every = args[1], *longer = args[4];
    if (!PySet_Check(into) || !PyList_Check(every) || !PyList_Check(longer)) {
        bad_input("add_ids() was given arguments of the wrong types");
        return NULL;
    }
    for (int which = 2; which <= 3; which++) {
        PyObject *groups = args[which];
        if (!PyList_Check(groups)) {
            bad_input("term ids are not a list");
            return NULL;
        }
        for (Py_ssize_t n = 0; n < PyList_GET_SIZE(groups); n++) {
            PyObject *group = PyList_GET_ITEM(groups, n);
            if (!PyTuple_Check(group)) {
                bad_input("term ids are not a tuple");
                return NULL;
            }
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(group); k++) {
                if (add_id(into, every, PyTuple_GET_ITEM(group, k)) < 0) {
                    return NULL;
                }
            }
        }
    }
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(longer); n++) {
        PyObject *id_object = longer_id(PyList_GET_ITEM(longer, n));
        if (id_object == NULL || add_id(into, every, id_object) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* The roles that the terms found give each watchlist, by watchlist index. */
enum { FIRES = 1, VETOED = 2, EVALUATE = 4 };

typedef struct {
    unsigned char *roles;   /* one byte of role bits per watchlist */
    PyObject **objects;     /* the int object of each index marked (borrowed) */
    Py_ssize_t *marked;     /* the indexes marked, in order */
    Py_ssize_t marked_count;
    Py_ssize_t count;       /* number of watchlists */
} Roles;

static int
mark(Roles *roles, PyObject *index_object, int role)
{
    Py_ssize_t index = index_value(index_object);
    if (index == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (index < 0) {  /* -1: no watchlist in this role */
        return 0;
    }
    if (index >= roles->count) {
        PyErr_SetString(PyExc_IndexError, "matching kernel: watchlist index out of range");
        return -1;
    }
    if (!roles->roles[index]) {
        Py_INCREF(index_object);  /* released at the end of triage() */
        roles->objects[index] = index_object;
        roles->marked[roles->marked_count++] = index;
    }
    roles->roles[index] |= (unsigned char)role;
    return 0;
}

static int
mark_all(Roles *roles, PyObject *indexes, int role)
{
    if (!PyTuple_Check(indexes)) {
        return bad_input("watchlist indexes are not a tuple");
    }
    for (Py_ssize_t n = 0; n < PyTuple_GET_SIZE(indexes); n++) {
        if (mark(roles, PyTuple_GET_ITEM(indexes, n), role) < 0) {
            return -1;
        }
    }
    return 0;
}


/* Whether watchlist `index` (an int object, -1 for none) is a simple watchlist that fires. */
static int
fires(const Roles *roles, PyObject *index_object)
{
    Py_ssize_t index = index_value(index_object);
    if (index == -1 && PyErr_Occurred()) {
        return -1;
    }
    return index >= 0 && index < roles->count && (roles->roles[index] & (FIRES | VETOED)) == FIRES;
}

PyDoc_STRVAR(triage_doc,
"triage(found, any_of, none_of, other_of, several, always, count)\n"
"    -> (fired, others, wanted)\n\n"
"matcher.py's _triage_python, in C (count: the number of watchlists).");

static PyObject *
triage(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!arguments_ok("triage", nargs, 7)) {
        return NULL;
    }
    PyObject *found_ids = args[0], *tables[3] = {args[1], args[2], args[3]};
    PyObject *several = args[4], *always = args[5];
    Py_ssize_t count = PyLong_AsSsize_t(args[6]);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_Check(found_ids) || !PyDict_Check(several) || !PyTuple_Check(always)
        || count < 0) {
        bad_input("triage() was given arguments of the wrong types");
        return NULL;
    }
    static const int role_of_table[3] = {FIRES, VETOED, EVALUATE};
    Roles roles = {PyMem_Calloc((size_t)count + 1, 1),
                   PyMem_Malloc(((size_t)count + 1) * sizeof(PyObject *)),
                   PyMem_Malloc(((size_t)count + 1) * sizeof(Py_ssize_t)), 0, count};
    PyObject *fired = PySet_New(NULL), *others = PySet_New(NULL), *wanted = PySet_New(NULL);
    PyObject *shared = PyList_New(0), *result = NULL;
    if (roles.roles == NULL || roles.objects == NULL || roles.marked == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (fired == NULL || others == NULL || wanted == NULL || shared == NULL
        || mark_all(&roles, always, EVALUATE) < 0) {
        goto done;
    }
    /* Each term found marks the watchlists it fires, vetoes or makes to evaluate (a term found
     * twice marks the same again). Exact ints only (item_of): no lookup runs Python code. */
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(found_ids); n++) {
        PyObject *term_id = PyList_GET_ITEM(found_ids, n);
        for (int table = 0; table < 3; table++) {
            PyObject *index = item_of(tables[table], term_id);
            if (index == NULL || mark(&roles, index, role_of_table[table]) < 0) {
                goto done;
            }
        }
        int failed = 0;
        PyObject *found = roles_of(several, term_id, &failed);
        if (failed || (found != NULL
                       && (mark_all(&roles, PyTuple_GET_ITEM(found, 0), FIRES) < 0
                           || mark_all(&roles, PyTuple_GET_ITEM(found, 1), VETOED) < 0
                           || mark_all(&roles, PyTuple_GET_ITEM(found, 2), EVALUATE) < 0
                           || PyList_Append(shared, term_id) < 0))) {
            goto done;
        }
    }
    for (Py_ssize_t n = 0; n < roles.marked_count; n++) {
        Py_ssize_t index = roles.marked[n];
        unsigned char role = roles.roles[index];
        if (((role & (FIRES | VETOED)) == FIRES && PySet_Add(fired, roles.objects[index]) < 0)
            || ((role & EVALUATE) && PySet_Add(others, roles.objects[index]) < 0)) {
            goto done;
        }
    }
    /* The terms to make hits of: those of a simple watchlist that fired. */
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(found_ids); n++) {
        PyObject *term_id = PyList_GET_ITEM(found_ids, n);
        PyObject *index = item_of(tables[0], term_id);
        int in = index == NULL ? -1 : fires(&roles, index);
        if (in < 0 || (in && PySet_Add(wanted, term_id) < 0)) {
            goto done;
        }
    }
    for (Py_ssize_t n = 0; n < PyList_GET_SIZE(shared); n++) {
        PyObject *shared_id = PyList_GET_ITEM(shared, n);
        int failed = 0;
        PyObject *found = roles_of(several, shared_id, &failed);
        if (failed) {
            goto done;
        }
        PyObject *in_any = found == NULL ? NULL : PyTuple_GET_ITEM(found, 0);
        if (in_any != NULL && !PyTuple_Check(in_any)) {
            bad_input("watchlist indexes are not a tuple");
            goto done;
        }
        for (Py_ssize_t k = 0; in_any != NULL && k < PyTuple_GET_SIZE(in_any); k++) {
            int in = fires(&roles, PyTuple_GET_ITEM(in_any, k));
            if (in < 0 || (in && PySet_Add(wanted, shared_id) < 0)) {
                goto done;
            }
            if (in) {
                break;
            }
        }
    }
    result = PyTuple_Pack(3, fired, others, wanted);
done:
    for (Py_ssize_t n = 0; roles.objects != NULL && n < roles.marked_count; n++) {
        Py_DECREF(roles.objects[roles.marked[n]]);
    }
    PyMem_Free(roles.roles);
    PyMem_Free(roles.objects);
    PyMem_Free(roles.marked);
    Py_XDECREF(fired);
    Py_XDECREF(others);
    Py_XDECREF(wanted);
    Py_XDECREF(shared);
    return result;
}

static PyMethodDef methods[] = {
    {"find", (PyCFunction)(void (*)(void))find, METH_FASTCALL, find_doc},
    {"hits", (PyCFunction)(void (*)(void))hits, METH_FASTCALL, hits_doc},
    {"group", (PyCFunction)(void (*)(void))group, METH_FASTCALL, group_doc},
    {"add_ids", (PyCFunction)(void (*)(void))add_ids, METH_FASTCALL, add_ids_doc},
    {"triage", (PyCFunction)(void (*)(void))triage, METH_FASTCALL, triage_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "aggregator.matching._kernel",
    "The term index's per-item loops in C (index.py has the same in Python).",
    0,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__kernel(void)
{
    /* In CPython these are the interpreter's own () and 0, shared by every empty tuple and
     * every 0; if not, the comparisons with them are merely never true. Kept for the
     * process's lifetime. */
    empty_tuple = PyTuple_New(0);
    zero = PyLong_FromLong(0);
    watchlist_attribute = PyUnicode_InternFromString("watchlist");
    hits_attribute = PyUnicode_InternFromString("hits");
    if (empty_tuple == NULL || zero == NULL || watchlist_attribute == NULL
        || hits_attribute == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
