/* Run one whole ModSecurity transaction in C, with the GIL released.

   ringwall.edge.waf.engine loads libmodsecurity and the rule sets through
   ctypes, and calls run() here for every request. A transaction makes about
   twenty libmodsecurity calls. Made through ctypes, each call releases and
   retakes the GIL, and under load every retake can wait for the event loop's
   thread and cost two context switches. run() takes the GIL once on entry
   and once on exit.

   Log lines that libmodsecurity reports while the transaction runs go to
   log_line(), which copies them into the transaction's LogLines without
   touching Python. install_log_callback() must therefore replace any other
   log callback of the ModSecurity instance before the first run().

   Thread safety: libmodsecurity 3.0.9 does not support two transactions of
   one process at the same time, so the caller serializes calls to run(). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>
#include <string.h>

#include <modsecurity/intervention.h>
#include <modsecurity/modsecurity.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>

/* The log lines of one transaction, owned by C until run() converts them. */
typedef struct {
    char **lines;
    size_t *sizes;
    size_t count;
    size_t capacity;
    /* Set when a line could not be stored: run() then raises MemoryError,
       because a verdict built from missing lines could pass an attack. */
    int out_of_memory;
} LogLines;

/* One request header, pointing into bytes objects that run() keeps alive. */
typedef struct {
    const unsigned char *name;
    size_t name_size;
    const unsigned char *value;
    size_t value_size;
} Header;

/* The result of a transaction: the intervention, if any, and its log line. */
typedef struct {
    int status;
    char *blocking_line;
} Outcome;

static void
log_line(void *data, const void *message)
{
    LogLines *log = (LogLines *)data;
    if (log == NULL || message == NULL || log->out_of_memory) {
        return;
    }
    if (log->count == log->capacity) {
        size_t capacity = log->capacity ? log->capacity * 2 : 8;
        char **lines = realloc(log->lines, capacity * sizeof(*lines));
        if (lines == NULL) {
            log->out_of_memory = 1;
            return;
        }
        log->lines = lines;
        size_t *sizes = realloc(log->sizes, capacity * sizeof(*sizes));
        if (sizes == NULL) {
            log->out_of_memory = 1;
            return;
        }
        log->sizes = sizes;
        log->capacity = capacity;
    }
    size_t size = strlen((const char *)message);
    char *copy = malloc(size > 0 ? size : 1);
    if (copy == NULL) {
        log->out_of_memory = 1;
        return;
    }
    memcpy(copy, message, size);
    log->lines[log->count] = copy;
    log->sizes[log->count] = size;
    log->count++;
}

static void
free_log_lines(LogLines *log)
{
    for (size_t index = 0; index < log->count; index++) {
        free(log->lines[index]);
    }
    free(log->lines);
    free(log->sizes);
}

/* Return 1 and fill `outcome` when the last phase left an intervention. */
static int
intervened(Transaction *transaction, Outcome *outcome)
{
    ModSecurityIntervention intervention = {200, 0, NULL, NULL, 0};
    int disruptive = msc_intervention(transaction, &intervention);
    free(intervention.url);
    if (!disruptive && !intervention.disruptive) {
        free(intervention.log);
        return 0;
    }
    outcome->status = intervention.status;
    outcome->blocking_line = intervention.log;
    return 1;
}

/* The request phases in order, each followed by the intervention check
   that libmodsecurity 3.0.9 requires, then the logging phase. */
static void
run_phases(Transaction *transaction, const char *client_ip, int client_port,
           const char *server_ip, int server_port, const char *method,
           const char *uri, const char *version, const Header *headers,
           Py_ssize_t header_count, const unsigned char *body,
           size_t body_size, Outcome *outcome)
{
    msc_process_connection(transaction, client_ip, client_port, server_ip,
                           server_port);
    if (intervened(transaction, outcome)) {
        goto logging;
    }

    msc_process_uri(transaction, uri, method, version);
    if (intervened(transaction, outcome)) {
        goto logging;
    }

    for (Py_ssize_t index = 0; index < header_count; index++) {
        const Header *header = &headers[index];
        msc_add_n_request_header(transaction, header->name, header->name_size,
                                 header->value, header->value_size);
    }
    msc_process_request_headers(transaction);
    if (intervened(transaction, outcome)) {
        goto logging;
    }

    if (body_size > 0) {
        msc_append_request_body(transaction, body, body_size);
    }
    msc_process_request_body(transaction);
    intervened(transaction, outcome);

logging:
    msc_process_logging(transaction);
}

/* Point `headers` at the name and value of each (bytes, bytes) pair of
   `pairs`, a tuple that the caller keeps alive. */
static int
read_headers(PyObject *pairs, Header *headers)
{
    Py_ssize_t count = PyTuple_GET_SIZE(pairs);
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *pair = PyTuple_GET_ITEM(pairs, index);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_Format(PyExc_TypeError,
                         "invalid header at index %zd: expected a tuple of "
                         "two bytes objects, got %.100s",
                         index, Py_TYPE(pair)->tp_name);
            return -1;
        }
        PyObject *name = PyTuple_GET_ITEM(pair, 0);
        PyObject *value = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_Check(name) || !PyBytes_Check(value)) {
            PyErr_Format(PyExc_TypeError,
                         "invalid header at index %zd: name and value must "
                         "be bytes",
                         index);
            return -1;
        }
        headers[index].name = (const unsigned char *)PyBytes_AS_STRING(name);
        headers[index].name_size = (size_t)PyBytes_GET_SIZE(name);
        headers[index].value = (const unsigned char *)PyBytes_AS_STRING(value);
        headers[index].value_size = (size_t)PyBytes_GET_SIZE(value);
    }
    return 0;
}

static PyObject *
build_result(const Outcome *outcome, const LogLines *log)
{
    PyObject *lines = PyTuple_New((Py_ssize_t)log->count);
    if (lines == NULL) {
        return NULL;
    }
    for (size_t index = 0; index < log->count; index++) {
        PyObject *line = PyBytes_FromStringAndSize(log->lines[index],
                                                   (Py_ssize_t)log->sizes[index]);
        if (line == NULL) {
            Py_DECREF(lines);
            return NULL;
        }
        PyTuple_SET_ITEM(lines, (Py_ssize_t)index, line);
    }
    if (outcome->blocking_line == NULL) {
        return Py_BuildValue("(iON)", outcome->status, Py_None, lines);
    }
    return Py_BuildValue("(iy#N)", outcome->status, outcome->blocking_line,
                         (Py_ssize_t)strlen(outcome->blocking_line), lines);
}

PyDoc_STRVAR(run_doc,
"run(instance, rules, transaction_id, client_ip, client_port, server_ip,\n"
"    server_port, method, uri, version, headers, body)\n"
"--\n"
"\n"
"Run one transaction through the request phases and the logging phase.\n"
"\n"
"`instance` and `rules` are the addresses of a ModSecurity instance and a\n"
"rule set. The strings are bytes, and `uri` is read up to its first NUL\n"
"byte, as libmodsecurity reads it. `headers` is a sequence of (name, value)\n"
"bytes pairs. Returns (status, blocking_line, lines). `status` is the\n"
"intervention's status, or 200 without one. `blocking_line` is the\n"
"intervention's log line or None. `lines` are the log lines of the matched\n"
"rules in the order libmodsecurity reported them. The caller must not run\n"
"two transactions of one process at once.");

static PyObject *
run(PyObject *module, PyObject *args)
{
    PyObject *instance_address, *rules_address, *uri_object, *header_sequence;
    const char *transaction_id, *client_ip, *server_ip, *method, *version;
    Py_ssize_t body_size;
    const unsigned char *body;
    int client_port, server_port;

    if (!PyArg_ParseTuple(args, "OOyyiyiyO!yOy#:run", &instance_address,
                          &rules_address, &transaction_id, &client_ip,
                          &client_port, &server_ip, &server_port, &method,
                          &PyBytes_Type, &uri_object, &version,
                          &header_sequence, &body, &body_size)) {
        return NULL;
    }
    /* Read up to the first NUL byte, as the ctypes binding passes it. The
       HTTP parser rejects NUL in a request target, so only a request that
       is rejected anyway, and judged for the security log, can have one. */
    const char *uri = PyBytes_AS_STRING(uri_object);
    ModSecurity *instance = PyLong_AsVoidPtr(instance_address);
    if (instance == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "invalid ModSecurity instance: NULL");
        }
        return NULL;
    }
    RulesSet *rules = PyLong_AsVoidPtr(rules_address);
    if (rules == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "invalid rule set: NULL");
        }
        return NULL;
    }

    /* A tuple copy keeps every pair alive and unchanged while the GIL is
       released, even if the caller's list changes meanwhile. */
    PyObject *pairs = PySequence_Tuple(header_sequence);
    if (pairs == NULL) {
        return NULL;
    }
    Py_ssize_t header_count = PyTuple_GET_SIZE(pairs);
    Header *headers = PyMem_Malloc(sizeof(Header) * (size_t)(header_count ? header_count : 1));
    if (headers == NULL) {
        Py_DECREF(pairs);
        return PyErr_NoMemory();
    }
    if (read_headers(pairs, headers) < 0) {
        PyMem_Free(headers);
        Py_DECREF(pairs);
        return NULL;
    }

    LogLines log = {NULL, NULL, 0, 0, 0};
    Outcome outcome = {200, NULL};
    int created = 1;
    Py_BEGIN_ALLOW_THREADS
    /* A transaction id of our own: without one, libmodsecurity 3.0.9
       seeds a new std::mt19937 from std::random_device for every
       transaction, which cost about 28 µs per request in a VM. */
    Transaction *transaction = msc_new_transaction_with_id(
        instance, rules, (char *)transaction_id, &log);
    if (transaction == NULL) {
        created = 0;
    } else {
        run_phases(transaction, client_ip, client_port, server_ip, server_port,
                   method, uri, version, headers, header_count, body,
                   (size_t)body_size, &outcome);
        msc_transaction_cleanup(transaction);
    }
    Py_END_ALLOW_THREADS

    PyMem_Free(headers);
    Py_DECREF(pairs);
    PyObject *result = NULL;
    if (!created) {
        PyErr_SetString(PyExc_MemoryError, "msc_new_transaction_with_id failed");
    } else if (log.out_of_memory) {
        PyErr_SetString(PyExc_MemoryError,
                        "out of memory while storing the WAF log lines");
    } else {
        result = build_result(&outcome, &log);
    }
    free(outcome.blocking_line);
    free_log_lines(&log);
    return result;
}

PyDoc_STRVAR(install_log_callback_doc,
"install_log_callback(instance)\n"
"--\n"
"\n"
"Make run() receive the log lines of the ModSecurity instance at address\n"
"`instance`. This replaces the instance's log callback, so every\n"
"transaction of that instance must go through run() afterwards.");

static PyObject *
install_log_callback(PyObject *module, PyObject *instance_address)
{
    ModSecurity *instance = PyLong_AsVoidPtr(instance_address);
    if (instance == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "invalid ModSecurity instance: NULL");
        }
        return NULL;
    }
    msc_set_log_cb(instance, log_line);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"run", run, METH_VARARGS, run_doc},
    {"install_log_callback", install_log_callback, METH_O,
     install_log_callback_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ringwall.edge.waf._transaction",
    .m_doc = "Run one ModSecurity transaction in C, with the GIL released.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__transaction(void)
{
    return PyModuleDef_Init(&module_definition);
}
