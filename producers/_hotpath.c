/*
 * The compiled fast path of run.log (producers.run.Run.log): the same checks and the same record as the
 * Python fast path there, without the interpreter's per-operation cost.
 *
 * A MetricsLog is called as log(values, step=None).  When the queue has room, values is a non-empty plain dict
 * whose names are known-good text and whose values are plain numbers (float, bool, int within int64 or uint64),
 * and step is None or a plain int >= 0, it appends (time.time_ns(), step, dict(values)) to the queue and wakes
 * the sender once the queue holds wake_at records.  Anything else goes to the Python callable `slow`, with the
 * same arguments, which counts drops, converts numpy scalars and tensors, and warns: so the two paths queue the
 * same records and count the same things (tests/producers/test_hotpath.py holds them equal).
 *
 * A name is known-good when it is ASCII, printable, 1 to max_name characters long, or when it is in `known`
 * (names the Python path has checked).  Never raises for a user's input: an error while checking (an int too
 * large for a float) sends the call to `slow`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    PyObject *queue;   /* collections.deque of records */
    PyObject *append;  /* queue.append */
    PyObject *known;   /* set of names checked by the Python path */
    PyObject *sender;  /* has .wake_pending and .wake() */
    PyObject *slow;    /* slow(values, step): the Python path */
    Py_ssize_t bound;
    Py_ssize_t wake_at;
    Py_ssize_t max_name;
    vectorcallfunc vectorcall;
} MetricsLog;

static PyObject *str_wake_pending;
static PyObject *str_wake;

/* 1 when `key` may be used as it is, 0 when the Python path must judge it, -1 on error. */
static int
good_name(MetricsLog *self, PyObject *key)
{
    if (!PyUnicode_CheckExact(key))
        return 0;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(key) < 0) /* a legacy string made by an old C API (gone in 3.12) */
        return -1;
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(key);
    if (n >= 1 && n <= self->max_name && PyUnicode_IS_ASCII(key)) {
        const unsigned char *s = PyUnicode_1BYTE_DATA(key);
        Py_ssize_t i = 0;
        while (i < n && s[i] >= 0x20 && s[i] < 0x7f)
            i++;
        if (i == n)
            return 1;
    }
    return PySet_Contains(self->known, key);
}

/* 1 when `value` is a plain number the sender takes as it is, 0 otherwise (never an error). */
static int
plain_number(PyObject *value)
{
    if (PyFloat_CheckExact(value) || PyBool_Check(value))
        return 1;
    if (PyLong_CheckExact(value)) {
        /* An int the wire carries as one (int64 or uint64); a larger one is the Python path's (made a float). */
        int overflow = 0;
        PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow == 0)
            return 1;
        if (overflow < 0)
            return 0;
        PyLong_AsUnsignedLongLong(value);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return 1;
    }
    return 0;
}

static PyObject *
call_slow(MetricsLog *self, PyObject *values, PyObject *step)
{
    PyObject *args[2] = {values, step};
    return PyObject_Vectorcall(self->slow, args, 2, NULL);
}

static PyObject *
metrics_log_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    MetricsLog *self = (MetricsLog *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *values = NULL, *step = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs >= 1)
        values = args[0];
    if (nargs == 2)
        step = args[1];
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "log() takes 1 or 2 positional arguments (values, step=None), %zd given",
                     nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject *arg = args[nargs + i];
        if (PyUnicode_CompareWithASCIIString(name, "step") == 0 && nargs < 2)
            step = arg;
        else if (PyUnicode_CompareWithASCIIString(name, "values") == 0 && nargs < 1)
            values = arg;
        else {
            PyErr_Format(PyExc_TypeError, "log() got an unexpected or repeated keyword argument '%U'", name);
            return NULL;
        }
    }
    if (values == NULL) {
        PyErr_SetString(PyExc_TypeError, "log() missing required argument 'values'");
        return NULL;
    }

    Py_ssize_t n = PyObject_Size(self->queue);
    if (n < 0)
        return NULL;
    if (n >= self->bound || !PyDict_CheckExact(values) || PyDict_GET_SIZE(values) == 0)
        return call_slow(self, values, step);
    if (step != Py_None) {
        if (!PyLong_CheckExact(step))
            return call_slow(self, values, step);
        int overflow = 0;
        long long s = PyLong_AsLongLongAndOverflow(step, &overflow);
        if (overflow || s < 0) /* (an int never fails here: -1 is just < 0) */
            return call_slow(self, values, step);
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(values, &pos, &key, &value)) {
        int ok = good_name(self, key);
        if (ok < 0) {
            PyErr_Clear();
            ok = 0;
        }
        if (!ok || !plain_number(value))
            return call_slow(self, values, step);
    }

    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0)
        return call_slow(self, values, step);
    PyObject *copy = PyDict_Copy(values);
    if (copy == NULL)
        return NULL;
    PyObject *ts = PyLong_FromLongLong((long long)now.tv_sec * 1000000000LL + now.tv_nsec);
    if (ts == NULL) {
        Py_DECREF(copy);
        return NULL;
    }
    PyObject *record = PyTuple_New(3);
    if (record == NULL) {
        Py_DECREF(copy);
        Py_DECREF(ts);
        return NULL;
    }
    Py_INCREF(step);
    PyTuple_SET_ITEM(record, 0, ts);
    PyTuple_SET_ITEM(record, 1, step);
    PyTuple_SET_ITEM(record, 2, copy);
    PyObject *done = PyObject_Vectorcall(self->append, &record, 1, NULL);
    Py_DECREF(record);
    if (done == NULL)
        return NULL;
    Py_DECREF(done);

    if (n >= self->wake_at) {
        PyObject *pending = PyObject_GetAttr(self->sender, str_wake_pending);
        if (pending == NULL)
            return NULL;
        int busy = PyObject_IsTrue(pending);
        Py_DECREF(pending);
        if (busy < 0)
            return NULL;
        if (!busy) {
            PyObject *woke = PyObject_CallMethodNoArgs(self->sender, str_wake);
            if (woke == NULL)
                return NULL;
            Py_DECREF(woke);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
metrics_log_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"queue", "bound", "known", "wake_at", "sender", "slow", "max_name", NULL};
    PyObject *queue, *known, *sender, *slow;
    Py_ssize_t bound, wake_at, max_name;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OnO!nOOn:MetricsLog", names, &queue, &bound, &PySet_Type, &known,
                                     &wake_at, &sender, &slow, &max_name))
        return NULL;
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "slow must be callable");
        return NULL;
    }
    PyObject *append = PyObject_GetAttrString(queue, "append");
    if (append == NULL)
        return NULL;
    MetricsLog *self = (MetricsLog *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(append);
        return NULL;
    }
    Py_INCREF(queue);
    Py_INCREF(known);
    Py_INCREF(sender);
    Py_INCREF(slow);
    self->queue = queue;
    self->append = append;
    self->known = known;
    self->sender = sender;
    self->slow = slow;
    self->bound = bound;
    self->wake_at = wake_at;
    self->max_name = max_name;
    self->vectorcall = metrics_log_call;
    return (PyObject *)self;
}

static int
metrics_log_traverse(MetricsLog *self, visitproc visit, void *arg)
{
    Py_VISIT(self->queue);
    Py_VISIT(self->append);
    Py_VISIT(self->known);
    Py_VISIT(self->sender);
    Py_VISIT(self->slow);
    return 0;
}

static int
metrics_log_clear(MetricsLog *self)
{
    Py_CLEAR(self->queue);
    Py_CLEAR(self->append);
    Py_CLEAR(self->known);
    Py_CLEAR(self->sender);
    Py_CLEAR(self->slow);
    return 0;
}

static void
metrics_log_dealloc(MetricsLog *self)
{
    PyObject_GC_UnTrack(self);
    metrics_log_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef metrics_log_members[] = {
    {"queue", T_OBJECT, offsetof(MetricsLog, queue), READONLY, "the queue records are appended to"},
    {"bound", T_PYSSIZET, offsetof(MetricsLog, bound), READONLY, "records the queue may hold"},
    {NULL},
};

PyDoc_STRVAR(metrics_log_doc,
             "MetricsLog(queue, bound, known, wake_at, sender, slow, max_name)\n\n"
             "Callable as log(values, step=None): the compiled fast path of run.log.");

static PyTypeObject MetricsLogType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "producers._hotpath.MetricsLog",
    .tp_basicsize = sizeof(MetricsLog),
    .tp_dealloc = (destructor)metrics_log_dealloc,
    .tp_vectorcall_offset = offsetof(MetricsLog, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = metrics_log_doc,
    .tp_traverse = (traverseproc)metrics_log_traverse,
    .tp_clear = (inquiry)metrics_log_clear,
    .tp_members = metrics_log_members,
    .tp_new = metrics_log_new,
};

static struct PyModuleDef hotpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "producers._hotpath",
    .m_doc = "The compiled fast path of run.log (optional: producers.run falls back to Python without it).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__hotpath(void)
{
    if (PyType_Ready(&MetricsLogType) < 0)
        return NULL;
    str_wake_pending = PyUnicode_InternFromString("wake_pending");
    str_wake = PyUnicode_InternFromString("wake");
    if (str_wake_pending == NULL || str_wake == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&hotpath_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&MetricsLogType);
    if (PyModule_AddObject(m, "MetricsLog", (PyObject *)&MetricsLogType) < 0) {
        Py_DECREF(&MetricsLogType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
