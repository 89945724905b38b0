/*
 * The shared store's per-request GCRA check, in C.
 *
 * `SharedStore.check_rate` in shared.py is the reference: this module runs
 * the same lookup, locking and arithmetic on the same mapping, so results
 * are equal to the last bit and either implementation can serve a key the
 * other wrote. It exists because the Python version costs about 2.3 us per
 * request inside a worker, and a per-IP limit must cost less than a tenth
 * of a proxied request (bench/run.py, system ringwall-limited).
 *
 * The stripe locks stay `multiprocessing` locks. This code takes and
 * releases their POSIX semaphores directly (`sem_trywait`, `sem_post` on the
 * handle that `_multiprocessing.SemLock.handle` exposes), so Python and C
 * callers exclude each other without a Python call. A contended lock is not
 * waited for here: `check` returns None and the caller falls back to the
 * Python path, which waits with a timeout. The Python lock objects' own
 * counts do not see these acquisitions, and the store never reads them.
 *
 * Build flags: -ffp-contract=off keeps the compiler from fusing a multiply
 * and an add, which would change the rounding against the Python version.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* Layout constants, equal to those of shared.py. */
#define WAYS 8
#define TAGS_BYTES (WAYS * 8)
#define RATE_BUCKET_BYTES (TAGS_BYTES + WAYS * 8)
#define STRIPES 64
#define STRIPE_BYTES 64
#define RATE_EVICTIONS 8
#define EPSILON 1e-6
/* Reset jitter: up to 0.1 s in 256 steps, chosen by the key's hash. */
#define JITTER_STEP (0.1 / 256)

/* The pid written into a stripe record while this process holds its lock. */
static long cached_pid;
/* b"RateLimit", the name of the field that `check` returns. */
static PyObject *ratelimit_name;

static void
refresh_pid(void)
{
    cached_pid = (long)getpid();
}

/* Convert a whole number of requests to an integer: at least 0, and capped so the cast is defined. */
static long long
count_of(double requests)
{
    if (!(requests > 0)) {
        return 0;
    }
    if (requests >= 1e18) {
        return (long long)1e18;
    }
    return (long long)requests;
}

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    Py_ssize_t buckets;
    Py_ssize_t rate_offset;
    sem_t *locks[STRIPES];
} RateTable;

static int
RateTable_init(RateTable *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"memory", "buckets", "rate_offset", "handles", NULL};
    PyObject *memory, *handles;
    Py_ssize_t buckets, rate_offset;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnO!", keywords, &memory, &buckets,
                                     &rate_offset, &PyTuple_Type, &handles)) {
        return -1;
    }
    if (PyTuple_GET_SIZE(handles) != STRIPES) {
        PyErr_Format(PyExc_ValueError, "handles must hold %d semaphore handles", STRIPES);
        return -1;
    }
    for (Py_ssize_t stripe = 0; stripe < STRIPES; stripe++) {
        void *handle = PyLong_AsVoidPtr(PyTuple_GET_ITEM(handles, stripe));
        if (handle == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "a semaphore handle is 0");
            }
            return -1;
        }
        self->locks[stripe] = (sem_t *)handle;
    }
    if (buckets < 1 || rate_offset < STRIPES * STRIPE_BYTES) {
        PyErr_SetString(PyExc_ValueError, "invalid shared store layout");
        return -1;
    }
    if (self->has_view) {
        PyErr_SetString(PyExc_RuntimeError, "RateTable is already initialized");
        return -1;
    }
    if (PyObject_GetBuffer(memory, &self->view, PyBUF_WRITABLE) < 0) {
        return -1;
    }
    self->has_view = 1;
    if (rate_offset + buckets * (Py_ssize_t)RATE_BUCKET_BYTES > self->view.len) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
        PyErr_SetString(PyExc_ValueError, "the rate region lies outside the mapping");
        return -1;
    }
    self->buckets = buckets;
    self->rate_offset = rate_offset;
    return 0;
}

static void
RateTable_dealloc(RateTable *self)
{
    if (self->has_view) {
        PyBuffer_Release(&self->view);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
RateTable_release(RateTable *self, PyObject *Py_UNUSED(ignored))
{
    if (self->has_view) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *
RateTable_check(RateTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "check(key, now, interval, capacity, item, policy_field) takes 6 arguments");
        return NULL;
    }
    PyObject *key = args[0];
    PyObject *item = args[4];
    PyObject *policy_field = args[5];
    if (!PyBytes_Check(key) || !PyBytes_Check(item)) {
        PyErr_SetString(PyExc_TypeError, "key and item must be bytes");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[1]);
    double interval = PyFloat_AsDouble(args[2]);
    double capacity = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!self->has_view) {
        PyErr_SetString(PyExc_ValueError, "the shared store is closed in this process");
        return NULL;
    }

    /* Tag, bucket and stripe as SharedStore.check_rate computes them. */
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1) {
        return NULL;
    }
    int64_t tag = hash ? (int64_t)hash : 1;
    Py_ssize_t bucket = (Py_ssize_t)(tag % self->buckets);
    if (bucket < 0) {
        bucket += self->buckets;
    }
    Py_ssize_t stripe = bucket % STRIPES;
    char *memory = (char *)self->view.buf;
    char *base = memory + self->rate_offset + bucket * RATE_BUCKET_BYTES;
    int32_t *owner = (int32_t *)(memory + stripe * STRIPE_BYTES);

    sem_t *lock = self->locks[stripe];
    int status;
    do {
        status = sem_trywait(lock);
    } while (status < 0 && errno == EINTR);
    if (status < 0) {
        if (errno == EAGAIN) {
            Py_RETURN_NONE; /* contended: the caller waits in Python */
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    *owner = (int32_t)cached_pid;

    int64_t tags[WAYS];
    double tats[WAYS];
    memcpy(tags, base, sizeof tags);
    memcpy(tats, base + TAGS_BYTES, sizeof tats);
    int slot = -1;
    for (int way = 0; way < WAYS; way++) {
        if (tags[way] == tag) {
            slot = way;
            break;
        }
    }
    double tat = slot >= 0 ? tats[slot] : 0.0;
    double start = tat > now ? tat : now;
    double new_tat = start + interval;
    double ahead = new_tat - now;
    int allowed = ahead <= capacity + EPSILON;
    if (allowed) {
        if (slot < 0) {
            /* Take the slot with the smallest TAT (the first one on a tie). */
            slot = 0;
            for (int way = 1; way < WAYS; way++) {
                if (tats[way] < tats[slot]) {
                    slot = way;
                }
            }
            if (tats[slot] > now) {
                int64_t evictions;
                char *counter = memory + stripe * STRIPE_BYTES + RATE_EVICTIONS;
                memcpy(&evictions, counter, sizeof evictions);
                evictions += 1;
                memcpy(counter, &evictions, sizeof evictions);
            }
            memcpy(base + slot * 8, &tag, sizeof tag);
        }
        memcpy(base + TAGS_BYTES + slot * 8, &new_tat, sizeof new_tat);
    }
    *owner = 0;

    if (sem_post(lock) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }

    if (allowed) {
        double left = floor((capacity - ahead) / interval + EPSILON);
        /* PyBytes_FromFormat has no %lld, and Py_ssize_t is 64 bits on the platforms built. */
        Py_ssize_t remaining = (Py_ssize_t)count_of(left);
        Py_ssize_t reset = (Py_ssize_t)ceil(ahead + (double)((uint64_t)hash & 0xFF) * JITTER_STEP);
        PyObject *state =
            PyBytes_FromFormat("%s;r=%zd;t=%zd", PyBytes_AS_STRING(item), remaining, reset);
        if (state == NULL) {
            return NULL;
        }
        /* The response fields, ready to add: [policy_field, (b"RateLimit", state)]. */
        PyObject *field = PyTuple_Pack(2, ratelimit_name, state);
        Py_DECREF(state);
        if (field == NULL) {
            return NULL;
        }
        PyObject *fields = PyList_New(2);
        if (fields == NULL) {
            Py_DECREF(field);
            return NULL;
        }
        Py_INCREF(policy_field);
        PyList_SET_ITEM(fields, 0, policy_field);
        PyList_SET_ITEM(fields, 1, field);
        return fields;
    }
    double current = start - now;
    double left = floor((capacity - current) / interval + EPSILON);
    return Py_BuildValue("(dLdd)", tat, count_of(left), ahead - capacity, current);
}

static PyMethodDef RateTable_methods[] = {
    {"check", (PyCFunction)(void (*)(void))RateTable_check, METH_FASTCALL,
     "check(key, now, interval, capacity, item, policy_field)\n--\n\n"
     "Count one request for key against a GCRA rate. Return the response fields "
     "[policy_field, (b'RateLimit', item + b';r=R;t=T')] when allowed, a "
     "(tat, remaining, retry_after, reset) tuple when refused, or None when the "
     "stripe lock is taken."},
    {"release", (PyCFunction)RateTable_release, METH_NOARGS,
     "Release the buffer of the mapping, so that it can be closed."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RateTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ringwall.state._native.RateTable",
    .tp_basicsize = sizeof(RateTable),
    .tp_dealloc = (destructor)RateTable_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The GCRA region of a SharedStore mapping, checked in C.",
    .tp_methods = RateTable_methods,
    .tp_init = (initproc)RateTable_init,
    .tp_new = PyType_GenericNew,
};

static PyObject *
owner_pid(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(cached_pid);
}

static PyMethodDef module_methods[] = {
    {"owner_pid", owner_pid, METH_NOARGS,
     "Return the pid that this process writes into a stripe record while it holds the lock."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ringwall.state._native",
    .m_doc = "The shared store's per-request rate check in C.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    refresh_pid();
    if (pthread_atfork(NULL, NULL, refresh_pid) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return NULL;
    }
    ratelimit_name = PyBytes_FromString("RateLimit");
    if (ratelimit_name == NULL) {
        return NULL;
    }
    if (PyType_Ready(&RateTableType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&native_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "RateTable", (PyObject *)&RateTableType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
