/* edge._fasthttp: a strict one-call parser for the plain HTTP/1.1 GET/HEAD request heads that
 * make up the edge's cache hits (edge/httpserver.py uses it ahead of llhttp).
 *
 * parse(data, offset, scheme, flags, max_url, max_header_bytes, max_header_count) parses one
 * complete request head at data[offset:] and returns
 *   (end, method, target, headers, lower, authority, flagged, key, wire_bytes)
 * or None. None means "not for me": the caller hands data[offset:] to llhttp (httptools) and
 * the Python path decides, exactly as without this module. So this parser only ever accepts a
 * subset of what llhttp accepts, and gives it the meaning the Python path gives it:
 *
 * - request line: "GET " or "HEAD ", an origin-form target made only of the characters
 *   edge.policy.target's _SIMPLE allows (no '%', no dot segment, so normalising it changes
 *   nothing), " HTTP/1.1" CRLF. Anything else (other methods and versions, absolute-form, '*',
 *   bytes that need encoding or refusal, bare LF) is None.
 * - header fields: a token name, ':', optional SP/HTAB, a non-empty value of VCHAR, SP and
 *   HTAB not ending in SP/HTAB, CRLF; no obs-fold, no obs-text. Content-Length,
 *   Transfer-Encoding, Expect, Upgrade, Proxy-Connection and a Connection other than
 *   "keep-alive" are None (the Python path handles framing, 100-continue and close). Exactly
 *   one Host, whose value normalises as edge.policy.target.normalise_authority does for
 *   reg-names and IPv4 ("[" literals are None).
 * - limits: a target over max_url, or more than max_header_count fields, or a head over
 *   max_header_bytes (counted as the Python path counts: 1 + target + name + value + 4 per
 *   field) are None: llhttp's path answers 414/431.
 * - an incomplete head is None (llhttp gets it and keeps its timeouts).
 *
 * parse_request(..., client_ip) makes the Request itself instead of the tuple: (end, Request),
 * every field at the default configure(Request, defaults) was given, then the parsed ones set
 * (version "1.1", scheme and client_ip as passed); no dataclass __init__ runs per request.
 *
 * headers is the list of (name, value) str as received; lower the dict Request.header()
 * builds (lower-case names, repeated fields joined with ", "); flagged whether a field named
 * in flags (lower-case bytes) is present; key scheme://authority/target; wire_bytes the count
 * above; end the offset just past the head.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define MAX_FIELDS 128
#define MAX_HOST 253

static unsigned char TCHAR[256], PATHC[256], VALC[256];
static PyObject *s_GET, *s_HEAD;

static void init_tables(void) {
    const char *tspecial = "!#$%&'*+-.^_`|~";
    const char *pspecial = "-._~!$&'()*+,;=:@/";
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        TCHAR[c] = (unsigned char)(alnum || (c && strchr(tspecial, c)));
        PATHC[c] = (unsigned char)(alnum || (c && strchr(pspecial, c)));
        VALC[c] = (unsigned char)((c >= 0x21 && c <= 0x7e) || c == ' ' || c == '\t');
    }
}

static PyObject *ascii_str(const char *p, Py_ssize_t n) {
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL)
        memcpy(PyUnicode_DATA(s), p, (size_t)n);
    return s;
}

static int name_is(const char *lower, Py_ssize_t n, const char *want) {
    return (size_t)n == strlen(want) && memcmp(lower, want, (size_t)n) == 0;
}

static int ci_equal(const char *p, Py_ssize_t n, const char *want) {
    if ((size_t)n != strlen(want))
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != want[i])
            return 0;
    }
    return 1;
}

/* normalise_authority for a reg-name or IPv4 host with an optional port; 0: not handled. */
static int norm_authority(const char *v, Py_ssize_t n, int default_port, char *out,
                          Py_ssize_t *outlen) {
    Py_ssize_t colon = -1, hl, i;
    for (i = 0; i < n; i++)
        if (v[i] == ':') {
            colon = i;
            break;
        }
    hl = colon < 0 ? n : colon;
    if (hl > MAX_HOST + 1)
        return 0;
    for (i = 0; i < hl; i++) {
        char c = v[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-'
                   || c == '_'))
            return 0;
        out[i] = c;
    }
    if (hl > 0 && out[hl - 1] == '.')
        hl--;
    if (hl == 0 || hl > MAX_HOST)
        return 0;
    Py_ssize_t start = 0;
    for (i = 0; i <= hl; i++) {
        if (i == hl || out[i] == '.') {
            Py_ssize_t len = i - start;
            if (len < 1 || len > 63 || out[start] == '-' || out[i - 1] == '-')
                return 0;
            start = i + 1;
        }
    }
    *outlen = hl;
    if (colon >= 0 && colon + 1 < n) {
        Py_ssize_t pl = n - colon - 1;
        long port = 0;
        if (pl > 5)
            return 0;
        for (i = colon + 1; i < n; i++) {
            if (v[i] < '0' || v[i] > '9')
                return 0;
            port = port * 10 + (v[i] - '0');
        }
        if (port < 1 || port > 65535)
            return 0;
        if (port != default_port)
            *outlen += sprintf(out + hl, ":%ld", port);
    }
    return 1;
}

typedef struct {
    const char *name, *value;
    Py_ssize_t nlen, vlen;
} Field;

/* The Request type (edge/httpserver.py, a slots dataclass) that parse_request fills: the offset
 * of every slot and its default, and which slots the parser sets. */
#define MAX_SLOTS 64
static PyTypeObject *req_type;
static Py_ssize_t slot_offsets[MAX_SLOTS];
static PyObject *slot_defaults[MAX_SLOTS];
static int nslots;
enum { F_METHOD, F_TARGET, F_VERSION, F_HEADERS, F_CLIENT_IP, F_HOST, F_FLAGGED, F_KEY, F_SCHEME,
       F_WIRE, F_LOWER, NSET };
static const char *set_names[NSET] = {"method", "target", "version", "headers", "client_ip",
                                      "host", "flagged", "key", "scheme", "wire_bytes", "_lower"};
static Py_ssize_t set_offsets[NSET];
static PyObject *s_11;

static PyObject *configure(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *type, *defaults, *name, *value;
    Py_ssize_t pos = 0;
    int found[NSET] = {0};
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &type, &PyDict_Type, &defaults))
        return NULL;
    if (PyDict_GET_SIZE(defaults) > MAX_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "too many fields");
        return NULL;
    }
    for (int i = 0; i < nslots; i++)
        Py_CLEAR(slot_defaults[i]);
    Py_CLEAR(req_type);
    nslots = 0;
    while (PyDict_Next(defaults, &pos, &name, &value)) {
        PyObject *descr = PyObject_GetAttr(type, name);
        if (descr == NULL)
            return NULL;
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            Py_DECREF(descr);
            PyErr_Format(PyExc_TypeError, "%R is not an object slot", name);
            return NULL;
        }
        Py_ssize_t offset = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        for (int j = 0; j < NSET; j++)
            if (PyUnicode_CompareWithASCIIString(name, set_names[j]) == 0) {
                set_offsets[j] = offset;
                found[j] = 1;
            }
        slot_offsets[nslots] = offset;
        Py_INCREF(value);
        slot_defaults[nslots++] = value;
    }
    for (int j = 0; j < NSET; j++)
        if (!found[j]) {
            PyErr_Format(PyExc_TypeError, "no field %s", set_names[j]);
            return NULL;
        }
    Py_INCREF(type);
    req_type = (PyTypeObject *)type;
    Py_RETURN_NONE;
}

static void set_slot(PyObject *obj, Py_ssize_t offset, PyObject *value) { /* steals value */
    PyObject **at = (PyObject **)((char *)obj + offset);
    Py_XSETREF(*at, value);
}

static PyObject *build(const char *buf, Py_ssize_t end, PyObject *method, const char *t0,
                       Py_ssize_t tlen, Field *fields, int nf, const char *auth,
                       Py_ssize_t alen, const char *scheme, Py_ssize_t slen, int flagged,
                       Py_ssize_t wire, PyObject *scheme_obj, PyObject *client_ip) {
    PyObject *target = NULL, *headers = NULL, *lower = NULL, *authority = NULL, *key = NULL;
    PyObject *result = NULL;
    char lname[64];
    (void)buf;
    target = ascii_str(t0, tlen);
    headers = PyList_New(nf);
    lower = PyDict_New();
    authority = ascii_str(auth, alen);
    key = PyUnicode_New(slen + 3 + alen + tlen, 127);
    if (!target || !headers || !lower || !authority || !key)
        goto done;
    char *k = (char *)PyUnicode_DATA(key);
    memcpy(k, scheme, (size_t)slen);
    memcpy(k + slen, "://", 3);
    memcpy(k + slen + 3, auth, (size_t)alen);
    memcpy(k + slen + 3 + alen, t0, (size_t)tlen);
    for (int i = 0; i < nf; i++) {
        Field *f = &fields[i];
        PyObject *name = ascii_str(f->name, f->nlen);
        PyObject *value = ascii_str(f->value, f->vlen);
        PyObject *pair = (name && value) ? PyTuple_Pack(2, name, value) : NULL;
        PyObject *lk = NULL;
        int ok = pair != NULL;
        if (ok) {
            PyList_SET_ITEM(headers, i, pair);
            Py_INCREF(pair);
            for (Py_ssize_t j = 0; j < f->nlen; j++) { /* nlen <= 64: checked by the parser */
                char c = f->name[j];
                lname[j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
            }
            lk = ascii_str(lname, f->nlen);
            ok = lk != NULL;
        }
        if (ok) {
            PyObject *old = PyDict_GetItemWithError(lower, lk);
            if (old != NULL) {
                PyObject *joined = PyUnicode_FromFormat("%U, %U", old, value);
                ok = joined != NULL && PyDict_SetItem(lower, lk, joined) == 0;
                Py_XDECREF(joined);
            } else {
                ok = !PyErr_Occurred() && PyDict_SetItem(lower, lk, value) == 0;
            }
        }
        Py_XDECREF(lk);
        Py_XDECREF(pair);
        Py_XDECREF(name);
        Py_XDECREF(value);
        if (!ok)
            goto done;
    }
    if (client_ip != NULL) { /* parse_request: (end, Request) */
        PyObject *e = PyLong_FromSsize_t(end), *w = PyLong_FromSsize_t(wire);
        PyObject *req = req_type->tp_alloc(req_type, 0);
        if (!e || !w || !req) {
            Py_XDECREF(e);
            Py_XDECREF(w);
            Py_XDECREF(req);
            goto done;
        }
        for (int i = 0; i < nslots; i++) {
            Py_INCREF(slot_defaults[i]);
            set_slot(req, slot_offsets[i], slot_defaults[i]);
        }
        Py_INCREF(method);
        set_slot(req, set_offsets[F_METHOD], method);
        set_slot(req, set_offsets[F_TARGET], target);
        Py_INCREF(s_11);
        set_slot(req, set_offsets[F_VERSION], s_11);
        set_slot(req, set_offsets[F_HEADERS], headers);
        Py_INCREF(client_ip);
        set_slot(req, set_offsets[F_CLIENT_IP], client_ip);
        set_slot(req, set_offsets[F_HOST], authority);
        PyObject *fl = flagged ? Py_True : Py_False;
        Py_INCREF(fl);
        set_slot(req, set_offsets[F_FLAGGED], fl);
        set_slot(req, set_offsets[F_KEY], key);
        Py_INCREF(scheme_obj);
        set_slot(req, set_offsets[F_SCHEME], scheme_obj);
        set_slot(req, set_offsets[F_WIRE], w);
        set_slot(req, set_offsets[F_LOWER], lower);
        result = PyTuple_New(2);
        if (result == NULL) {
            Py_DECREF(e);
            Py_DECREF(req);
            return NULL;
        }
        PyTuple_SET_ITEM(result, 0, e);
        PyTuple_SET_ITEM(result, 1, req);
        return result;
    }
    result = PyTuple_New(9);
    if (result == NULL)
        goto done;
    PyObject *flag = flagged ? Py_True : Py_False;
    PyObject *e = PyLong_FromSsize_t(end), *w = PyLong_FromSsize_t(wire);
    if (!e || !w) {
        Py_XDECREF(e);
        Py_XDECREF(w);
        Py_CLEAR(result);
        goto done;
    }
    Py_INCREF(method);
    Py_INCREF(flag);
    PyTuple_SET_ITEM(result, 0, e);
    PyTuple_SET_ITEM(result, 1, method);
    PyTuple_SET_ITEM(result, 2, target);
    PyTuple_SET_ITEM(result, 3, headers);
    PyTuple_SET_ITEM(result, 4, lower);
    PyTuple_SET_ITEM(result, 5, authority);
    PyTuple_SET_ITEM(result, 6, flag);
    PyTuple_SET_ITEM(result, 7, key);
    PyTuple_SET_ITEM(result, 8, w);
    return result;
done:
    Py_XDECREF(target);
    Py_XDECREF(headers);
    Py_XDECREF(lower);
    Py_XDECREF(authority);
    Py_XDECREF(key);
    return NULL;
}

static PyObject *parse_head(PyObject *const *args, Py_ssize_t nargs, PyObject *client_ip) {
    if (nargs < 7 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[2])
        || !PyTuple_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "parse(data: bytes, offset, scheme: str, flags: tuple[bytes], max_url, "
                        "max_header_bytes, max_header_count[, client_ip])");
        return NULL;
    }
    Py_ssize_t off = PyLong_AsSsize_t(args[1]);
    Py_ssize_t max_url = PyLong_AsSsize_t(args[4]);
    Py_ssize_t max_hbytes = PyLong_AsSsize_t(args[5]);
    Py_ssize_t max_count = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t slen;
    const char *scheme = PyUnicode_AsUTF8AndSize(args[2], &slen);
    if (scheme == NULL)
        return NULL;
    int default_port;
    if (slen == 4 && memcmp(scheme, "http", 4) == 0)
        default_port = 80;
    else if (slen == 5 && memcmp(scheme, "https", 5) == 0)
        default_port = 443;
    else
        Py_RETURN_NONE;
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
    if (off < 0 || off >= len)
        Py_RETURN_NONE;
    const unsigned char *p = (const unsigned char *)buf + off;
    const unsigned char *end = (const unsigned char *)buf + len;
    PyObject *method;
    if (end - p >= 4 && memcmp(p, "GET ", 4) == 0) {
        method = s_GET;
        p += 4;
    } else if (end - p >= 5 && memcmp(p, "HEAD ", 5) == 0) {
        method = s_HEAD;
        p += 5;
    } else {
        Py_RETURN_NONE;
    }
    const unsigned char *t0 = p;
    if (p >= end || *p != '/')
        Py_RETURN_NONE;
    int in_query = 0;
    for (; p < end && *p != ' '; p++) {
        unsigned char c = *p;
        if (c == '?')
            in_query = 1;
        else if (!PATHC[c])
            Py_RETURN_NONE;
        else if (c == '.' && !in_query && p[-1] == '/')
            Py_RETURN_NONE; /* a dot segment (or a name starting with '.'): the Python path */
    }
    Py_ssize_t tlen = (const char *)p - (const char *)t0;
    if (tlen > max_url || end - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0)
        Py_RETURN_NONE;
    p += 11;
    Field fields[MAX_FIELDS];
    int nf = 0, hosts = 0, flagged = 0;
    Py_ssize_t hbytes = 1 + tlen, nflags = PyTuple_GET_SIZE(args[3]);
    const char *host = NULL;
    Py_ssize_t hostlen = 0;
    char lname[64];
    for (;;) {
        if (end - p < 2)
            Py_RETURN_NONE;
        if (p[0] == '\r' && p[1] == '\n') {
            p += 2;
            break;
        }
        const unsigned char *n0 = p;
        while (p < end && TCHAR[*p])
            p++;
        if (p >= end || *p != ':' || p == n0)
            Py_RETURN_NONE;
        Py_ssize_t nlen = (const char *)p - (const char *)n0;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const unsigned char *v0 = p;
        while (p < end && VALC[*p])
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            Py_RETURN_NONE;
        Py_ssize_t vlen = (const char *)p - (const char *)v0;
        if (vlen == 0 || v0[vlen - 1] == ' ' || v0[vlen - 1] == '\t')
            Py_RETURN_NONE;
        p += 2;
        hbytes += nlen + vlen + 4;
        if (nf >= MAX_FIELDS || nf >= max_count || hbytes > max_hbytes)
            Py_RETURN_NONE;
        fields[nf].name = (const char *)n0;
        fields[nf].nlen = nlen;
        fields[nf].value = (const char *)v0;
        fields[nf].vlen = vlen;
        nf++;
        if (nlen > (Py_ssize_t)sizeof lname)
            Py_RETURN_NONE; /* a name this long: the Python path */
        for (Py_ssize_t j = 0; j < nlen; j++) {
            char c = (char)n0[j];
            lname[j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        if (name_is(lname, nlen, "host")) {
            hosts++;
            host = (const char *)v0;
            hostlen = vlen;
            continue;
        }
        if (name_is(lname, nlen, "content-length") || name_is(lname, nlen, "transfer-encoding")
            || name_is(lname, nlen, "expect") || name_is(lname, nlen, "upgrade")
            || name_is(lname, nlen, "proxy-connection"))
            Py_RETURN_NONE;
        if (name_is(lname, nlen, "connection")) {
            if (!ci_equal((const char *)v0, vlen, "keep-alive"))
                Py_RETURN_NONE;
            continue;
        }
        for (Py_ssize_t i = 0; i < nflags && !flagged; i++) {
            PyObject *fl = PyTuple_GET_ITEM(args[3], i);
            if (PyBytes_Check(fl) && PyBytes_GET_SIZE(fl) == nlen
                && memcmp(PyBytes_AS_STRING(fl), lname, (size_t)nlen) == 0)
                flagged = 1;
        }
    }
    if (hosts != 1)
        Py_RETURN_NONE;
    char auth[MAX_HOST + 16];
    Py_ssize_t alen;
    if (!norm_authority(host, hostlen, default_port, auth, &alen))
        Py_RETURN_NONE;
    return build(buf, (const char *)p - buf, method, (const char *)t0, tlen, fields, nf, auth,
                 alen, scheme, slen, flagged, hbytes, args[2], client_ip);
}

static PyObject *fast_parse(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "parse() takes 7 arguments");
        return NULL;
    }
    return parse_head(args, nargs, NULL);
}

static PyObject *fast_parse_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 8 || !PyUnicode_Check(args[7])) {
        PyErr_SetString(PyExc_TypeError, "parse_request() takes 8 arguments");
        return NULL;
    }
    if (req_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    return parse_head(args, nargs, args[7]);
}

static PyMethodDef methods[] = {
    {"parse", (PyCFunction)(void (*)(void))fast_parse, METH_FASTCALL,
     "parse(data, offset, scheme, flags, max_url, max_header_bytes, max_header_count): one "
     "plain GET/HEAD head as a tuple, or None (see the module's source)."},
    {"parse_request", (PyCFunction)(void (*)(void))fast_parse_request, METH_FASTCALL,
     "parse_request(data, offset, scheme, flags, max_url, max_header_bytes, max_header_count, "
     "client_ip): parse()'s head as (end, Request), the Request made as configure() says, or "
     "None."},
    {"configure", configure, METH_VARARGS,
     "configure(Request, defaults): the slots dataclass parse_request makes, and every field's "
     "default (a dict by field name)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fasthttp",
    "A strict one-call parser for plain HTTP/1.1 GET/HEAD request heads.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fasthttp(void) {
    init_tables();
    s_GET = PyUnicode_InternFromString("GET");
    s_HEAD = PyUnicode_InternFromString("HEAD");
    s_11 = PyUnicode_InternFromString("1.1");
    if (s_GET == NULL || s_HEAD == NULL || s_11 == NULL)
        return NULL;
    return PyModule_Create(&module);
}
