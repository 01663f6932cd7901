/* edge._nghttp2: a CPython binding of one libnghttp2 *server* session (edge/h2ng.py uses it).
 *
 * Session(max_streams, max_header_list, initial_window, hard_header_bytes):
 *   recv(data) -> (events, error)    feed received bytes (nghttp2_session_mem_recv); error:
 *                                    None, or why nghttp2 could not go on (bad preface)
 *   send() -> (bytes, events|None)   outbound bytes (nghttp2_session_send, all of them; body
 *                                    bytes copied once, from the chunks, by send_data)
 *   submit(sid, status, fields, body, end, stop[, start, quiet])   a response: HEADERS,
 *                                    then body[start:] (if any); quiet: no CLOSE event
 *                                    for this stream
 *                                    through a data provider that respects flow control
 *   write(sid, chunk, end)           more body for a submitted response
 *   pending(sid) -> int              body bytes not yet taken by nghttp2
 *   reset(sid, code), goaway(code), terminate(code), last_stream_id(), want_io()
 *
 * Events are tuples, kind first:
 *   (REQUEST, sid, [(name, value), ...], end_stream)   request header block complete
 *   (DATA, sid, bytes)                                  request body
 *   (END, sid)                                          END_STREAM after body or trailers
 *   (CLOSE, sid, error_code, complete)                  stream closed; complete: our response
 *                                                       was sent whole (END_STREAM went out)
 *   (GOAWAY, error_code)                                the client's GOAWAY
 *   (FLOOD, resets, pings, settings, priority, window_updates, empty)   frame counts of this
 *                                                       batch (first in the list when present)
 *   (CALM, reason)                                      a header block over hard_header_bytes:
 *                                                       the session is terminated with
 *                                                       ENHANCE_YOUR_CALM
 * An HPACK decoding failure (nghttp2 refuses a field over 64 KiB: an HPACK bomb) makes nghttp2
 * end the session with COMPRESSION_ERROR; that GOAWAY goes out as ENHANCE_YOUR_CALM.
 * Request fields are checked in Python (edge/policy/h2head.py): nghttp2's HTTP messaging
 * checks are off. Response fields Connection, Keep-Alive, Proxy-Connection,
 * Transfer-Encoding and Upgrade are dropped; Set-Cookie and Authorization are never indexed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <nghttp2/nghttp2.h>

enum { EV_REQUEST = 1, EV_DATA, EV_END, EV_CLOSE, EV_GOAWAY, EV_FLOOD, EV_CALM };
enum { F_RESETS, F_PINGS, F_SETTINGS, F_PRIORITY, F_WINDOW, F_EMPTY, F_N };

typedef struct strm {
    int32_t sid;
    PyObject *headers;     /* list while the request header block arrives, else NULL */
    size_t header_bytes;   /* names, values and 32 per field, this block */
    PyObject **chunks;     /* response body not yet taken by nghttp2 */
    size_t head, n, cap, off;
    Py_ssize_t pending;
    int eof, deferred, provider, rst_after, complete, quiet;
    struct strm *prev, *next;
} strm;

typedef struct {
    PyObject_HEAD
    nghttp2_session *s;
    PyObject *events;
    int failed;            /* a Python error inside a callback */
    int patch_goaway;      /* the next GOAWAY goes out as ENHANCE_YOUR_CALM */
    size_t hard_header_bytes;
    long floods[F_N];
    strm *all;
    char *out;
    size_t out_cap, used;  /* what nghttp2_session_send gave, this send() */
} Session;

static void strm_clear_chunks(strm *st) {
    for (size_t i = st->head; i < st->n; i++) Py_DECREF(st->chunks[i]);
    st->head = st->n = st->off = 0;
    st->pending = 0;
}

static void strm_free(Session *self, strm *st) {
    strm_clear_chunks(st);
    PyMem_Free(st->chunks);
    Py_CLEAR(st->headers);
    if (st->prev) st->prev->next = st->next; else self->all = st->next;
    if (st->next) st->next->prev = st->prev;
    PyMem_Free(st);
}

static strm *strm_get(Session *self, int32_t sid, int create) {
    strm *st = nghttp2_session_get_stream_user_data(self->s, sid);
    if (st || !create) return st;
    st = PyMem_Calloc(1, sizeof(strm));
    if (!st) return NULL;
    st->sid = sid;
    st->rst_after = -1;
    st->next = self->all;
    if (self->all) self->all->prev = st;
    self->all = st;
    if (nghttp2_session_set_stream_user_data(self->s, sid, st) != 0) {
        strm_free(self, st);
        return NULL;
    }
    return st;
}

static int emit(Session *self, PyObject *ev) {
    if (!ev || PyList_Append(self->events, ev) < 0) {
        Py_XDECREF(ev);
        self->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    Py_DECREF(ev);
    return 0;
}

/* -- callbacks ------------------------------------------------------------------------------ */
static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *user) {
    Session *self = user;
    (void)s;
    switch (hd->type) {
    case NGHTTP2_RST_STREAM: self->floods[F_RESETS]++; break;
    case NGHTTP2_PING: if (!(hd->flags & NGHTTP2_FLAG_ACK)) self->floods[F_PINGS]++; break;
    case NGHTTP2_SETTINGS:
        if (!(hd->flags & NGHTTP2_FLAG_ACK)) self->floods[F_SETTINGS]++;
        break;
    case NGHTTP2_PRIORITY: self->floods[F_PRIORITY]++; break;
    case NGHTTP2_WINDOW_UPDATE: self->floods[F_WINDOW]++; break;
    case NGHTTP2_DATA:
        if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM)) self->floods[F_EMPTY]++;
        break;
    case NGHTTP2_HEADERS: case NGHTTP2_CONTINUATION: case NGHTTP2_GOAWAY:
    case NGHTTP2_PUSH_PROMISE: break;
    default: self->floods[F_EMPTY]++;  /* frames of unknown types */
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
    Session *self = user;
    (void)s;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    strm *st = strm_get(self, frame->hd.stream_id, 1);
    if (!st) { self->failed = 1; PyErr_NoMemory(); return NGHTTP2_ERR_CALLBACK_FAILURE; }
    st->header_bytes = 0;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        Py_XSETREF(st->headers, PyList_New(0));
        if (!st->headers) { self->failed = 1; return NGHTTP2_ERR_CALLBACK_FAILURE; }
    }
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
    Session *self = user;
    (void)flags;
    strm *st = strm_get(self, frame->hd.stream_id, 0);
    if (!st) return 0;
    st->header_bytes += namelen + valuelen + 32;
    if (st->header_bytes > self->hard_header_bytes) {
        Py_CLEAR(st->headers);
        nghttp2_session_terminate_session(s, NGHTTP2_ENHANCE_YOUR_CALM);
        emit(self, Py_BuildValue("(is)", EV_CALM, "header block over the hard limit"));
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (!st->headers) return 0;  /* trailers: counted, not kept */
    PyObject *t = Py_BuildValue("(y#y#)", (const char *)name, (Py_ssize_t)namelen,
                                (const char *)value, (Py_ssize_t)valuelen);
    if (!t || PyList_Append(st->headers, t) < 0) {
        Py_XDECREF(t);
        self->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    Py_DECREF(t);
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
    Session *self = user;
    int32_t sid = frame->hd.stream_id;
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
        strm *st = strm_get(self, sid, 0);
        if (st && st->headers && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            PyObject *h = st->headers;
            st->headers = NULL;
            int rv = emit(self, Py_BuildValue("(iiNO)", EV_REQUEST, sid, h,
                                              end ? Py_True : Py_False));
            return rv;
        }
        if (end) return emit(self, Py_BuildValue("(ii)", EV_END, sid));
        break;
    }
    case NGHTTP2_DATA:
        if (end) return emit(self, Py_BuildValue("(ii)", EV_END, sid));
        break;
    case NGHTTP2_GOAWAY:
        return emit(self, Py_BuildValue("(iI)", EV_GOAWAY, frame->goaway.error_code));
    default: break;
    }
    (void)s;
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *user) {
    (void)s; (void)flags;
    return emit((Session *)user, Py_BuildValue("(iiy#)", EV_DATA, sid, (const char *)data,
                                               (Py_ssize_t)len));
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *user) {
    Session *self = user;
    strm *st = nghttp2_session_get_stream_user_data(s, sid);
    int complete = 0;
    if (st) {
        complete = st->complete;
        if (st->quiet) {
            nghttp2_session_set_stream_user_data(s, sid, NULL);
            strm_free(self, st);
            return 0;
        }
        nghttp2_session_set_stream_user_data(s, sid, NULL);
        strm_free(self, st);
    }
    return emit(self, Py_BuildValue("(iiIO)", EV_CLOSE, sid, code,
                                    complete ? Py_True : Py_False));
}

static int before_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
    (void)s;
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code == NGHTTP2_COMPRESSION_ERROR)
        ((Session *)user)->patch_goaway = 1;
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user) {
    (void)user;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
            (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        strm *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
        if (st) {
            st->complete = 1;
            if (st->rst_after >= 0)  /* the client is still sending: not wanted (RFC 9113 §8.1) */
                nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->sid, (uint32_t)st->rst_after);
        }
    }
    return 0;
}

/* Body bytes are not copied into nghttp2's frames: read_body only says how many go in this
 * DATA frame (NO_COPY), send_data copies them from the chunks to the output buffer once. */
static ssize_t read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user) {
    (void)s; (void)sid; (void)user; (void)buf;
    strm *st = source->ptr;
    size_t avail = (size_t)st->pending;
    size_t n = avail < length ? avail : length;
    if (n == avail && st->eof) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == 0) {
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    return (ssize_t)n;
}

static int out_room(Session *self, size_t more) {
    if (self->used + more <= self->out_cap) return 0;
    size_t cap = self->out_cap ? self->out_cap : 65536;
    while (cap < self->used + more) cap *= 2;
    char *o = PyMem_Realloc(self->out, cap);
    if (!o) return -1;
    self->out = o;
    self->out_cap = cap;
    return 0;
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t length, int flags,
                       void *user) {
    Session *self = user;
    (void)s; (void)flags;
    if (out_room(self, length) < 0) { self->failed = 1; return NGHTTP2_ERR_CALLBACK_FAILURE; }
    memcpy(self->out + self->used, data, length);
    if (self->patch_goaway && length >= 17 && data[3] == NGHTTP2_GOAWAY) {
        self->patch_goaway = 0;  /* error code: bytes 13..16 of the frame */
        memcpy(self->out + self->used + 13, "\x00\x00\x00\x0b", 4);
    }
    self->used += length;
    return (ssize_t)length;
}

static int send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *source, void *user) {
    Session *self = user;
    (void)s;
    strm *st = source->ptr;
    size_t pad = frame->data.padlen;
    if (out_room(self, 9 + length + pad) < 0) {
        self->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    char *out = self->out + self->used;
    memcpy(out, framehd, 9);
    out += 9;
    if (pad) *out++ = (char)(pad - 1);
    size_t n = 0;
    while (n < length && st->head < st->n) {
        PyObject *c = st->chunks[st->head];
        size_t left = (size_t)PyBytes_GET_SIZE(c) - st->off;
        size_t take = left < length - n ? left : length - n;
        memcpy(out + n, PyBytes_AS_STRING(c) + st->off, take);
        n += take;
        st->off += take;
        if (st->off == (size_t)PyBytes_GET_SIZE(c)) {
            Py_DECREF(c);
            st->head++;
            st->off = 0;
        }
    }
    st->pending -= (Py_ssize_t)n;
    if (st->head == st->n) st->head = st->n = 0;
    if (n < length) {  /* fewer body bytes than read_body promised: never send the rest of the
                        * buffer (it holds earlier output); end the session instead */
        self->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (pad > 1) memset(out + n, 0, pad - 1);
    self->used += 9 + length + pad;
    return 0;
}

/* -- helpers -------------------------------------------------------------------------------- */
static int check(int rv) {
    if (rv < 0 && nghttp2_is_fatal(rv)) {
        PyErr_Format(PyExc_RuntimeError, "nghttp2: %s", nghttp2_strerror(rv));
        return -1;
    }
    return 0;
}

static int strm_append(strm *st, PyObject *chunk) {
    Py_ssize_t len = PyBytes_GET_SIZE(chunk);
    if (len == 0) return 0;
    if (st->n == st->cap) {
        if (st->head > 0) {
            memmove(st->chunks, st->chunks + st->head, (st->n - st->head) * sizeof(PyObject *));
            st->n -= st->head;
            st->head = 0;
        } else {
            size_t cap = st->cap ? st->cap * 2 : 4;
            PyObject **c = PyMem_Realloc(st->chunks, cap * sizeof(PyObject *));
            if (!c) { PyErr_NoMemory(); return -1; }
            st->chunks = c;
            st->cap = cap;
        }
    }
    Py_INCREF(chunk);
    st->chunks[st->n++] = chunk;
    st->pending += len;
    return 0;
}

static PyObject *as_bytes(PyObject *o) {
    if (PyBytes_CheckExact(o)) { Py_INCREF(o); return o; }
    return PyBytes_FromObject(o);
}

static int hop_by_hop(const char *n, Py_ssize_t len) {
    switch (len) {
    case 7: return memcmp(n, "upgrade", 7) == 0;
    case 10: return memcmp(n, "connection", 10) == 0 || memcmp(n, "keep-alive", 10) == 0;
    case 16: return memcmp(n, "proxy-connection", 16) == 0;
    case 17: return memcmp(n, "transfer-encoding", 17) == 0;
    default: return 0;
    }
}

static PyObject *take_events(Session *self) {
    PyObject *ev = self->events;
    self->events = PyList_New(0);
    if (!self->events) { self->events = ev; return NULL; }
    return ev;
}

/* -- methods -------------------------------------------------------------------------------- */
static PyObject *Session_recv(Session *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    memset(self->floods, 0, sizeof self->floods);
    ssize_t rv = nghttp2_session_mem_recv(self->s, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (self->failed) {
        self->failed = 0;
        if (PyErr_Occurred()) return NULL;
    }
    PyObject *ev = take_events(self);
    if (!ev) return NULL;
    long any = 0;
    for (int i = 0; i < F_N; i++) any |= self->floods[i];
    if (any) {
        PyObject *f = Py_BuildValue("(illllll)", EV_FLOOD, self->floods[0], self->floods[1],
                                    self->floods[2], self->floods[3], self->floods[4],
                                    self->floods[5]);
        if (!f || PyList_Insert(ev, 0, f) < 0) { Py_XDECREF(f); Py_DECREF(ev); return NULL; }
        Py_DECREF(f);
    }
    if (rv < 0) {  /* a connection error nghttp2 could not turn into a GOAWAY (bad preface) */
        PyObject *r = Py_BuildValue("(Ns)", ev, nghttp2_strerror((int)rv));
        return r;
    }
    return Py_BuildValue("(NO)", ev, Py_None);
}

static PyObject *Session_send(Session *self, PyObject *unused) {
    (void)unused;
    self->used = 0;
    int rv = nghttp2_session_send(self->s);
    if (rv < 0) {
        if (self->failed) { self->failed = 0; if (PyErr_Occurred()) return NULL; }
        PyErr_Format(PyExc_RuntimeError, "nghttp2: %s", nghttp2_strerror(rv));
        return NULL;
    }
    PyObject *data = PyBytes_FromStringAndSize(self->out, (Py_ssize_t)self->used);
    if (!data) return NULL;
    if (self->out_cap > 4 * 1024 * 1024) {  /* do not keep a burst's buffer */
        PyMem_Free(self->out);
        self->out = NULL;
        self->out_cap = 0;
    }
    PyObject *ev = Py_None;
    if (PyList_GET_SIZE(self->events) > 0) {
        ev = take_events(self);
        if (!ev) { Py_DECREF(data); return NULL; }
    } else {
        Py_INCREF(ev);
    }
    return Py_BuildValue("(NN)", data, ev);
}

static PyObject *Session_submit(Session *self, PyObject *args) {
    int sid, status, end, stop, quiet = 0;
    PyObject *fields, *body;
    Py_ssize_t start = 0;
    if (!PyArg_ParseTuple(args, "iiOOpp|np", &sid, &status, &fields, &body, &end, &stop,
                          &start, &quiet))
        return NULL;
    PyObject *seq = PySequence_Fast(fields, "fields must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    nghttp2_nv *nva = PyMem_Malloc((size_t)(n + 1) * sizeof(nghttp2_nv));
    if (!nva) { Py_DECREF(seq); return PyErr_NoMemory(); }
    char code[12];
    int clen = snprintf(code, sizeof code, "%d", status);
    nva[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)code, 7, (size_t)clen,
                          NGHTTP2_NV_FLAG_NONE};
    size_t k = 1;
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        char *name, *value;
        Py_ssize_t nlen, vlen;
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2 ||
                PyBytes_AsStringAndSize(PyTuple_GET_ITEM(t, 0), &name, &nlen) < 0 ||
                PyBytes_AsStringAndSize(PyTuple_GET_ITEM(t, 1), &value, &vlen) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "fields: (bytes, bytes)");
            goto done;
        }
        if (hop_by_hop(name, nlen)) continue;
        uint8_t flag = ((nlen == 10 && memcmp(name, "set-cookie", 10) == 0) ||
                        (nlen == 13 && memcmp(name, "authorization", 13) == 0))
                       ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE;
        nva[k++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, (size_t)nlen, (size_t)vlen,
                                flag};
    }
    strm *st = strm_get(self, sid, 1);
    if (!st) {  /* the stream is gone already: nothing to answer */
        PyErr_Clear();
        result = Py_False;
        Py_INCREF(result);
        goto done;
    }
    if (stop && !nghttp2_session_get_stream_remote_close(self->s, sid)) st->rst_after = 0;
    st->quiet = quiet;
    Py_ssize_t blen = body == Py_None ? 0 : PyObject_Length(body);
    if (blen < 0) goto done;
    if (start < 0 || start > blen) {
        PyErr_SetString(PyExc_ValueError, "start out of the body");
        goto done;
    }
    int has_body = blen > start;
    int rv;
    if (end && !has_body) {
        rv = nghttp2_submit_response(self->s, sid, nva, k, NULL);
    } else {
        if (has_body) {
            PyObject *b = as_bytes(body);
            if (!b) goto done;
            if (start > 0 && st->n > st->head) {  /* not first in the queue: a copy */
                Py_SETREF(b, PyBytes_FromStringAndSize(PyBytes_AS_STRING(b) + start,
                                                       blen - start));
                if (!b) goto done;
                start = 0;
            }
            int r = strm_append(st, b);
            Py_DECREF(b);
            if (r < 0) goto done;
            st->off = (size_t)start;  /* the body starts there in the first chunk */
            st->pending -= start;
        }
        st->eof = end;
        st->provider = 1;
        nghttp2_data_provider prd;
        prd.source.ptr = st;
        prd.read_callback = read_body;
        rv = nghttp2_submit_response(self->s, sid, nva, k, &prd);
    }
    if (check(rv) < 0) goto done;
    result = rv == 0 ? Py_True : Py_False;
    Py_INCREF(result);
done:
    PyMem_Free(nva);
    Py_DECREF(seq);
    return result;
}

static PyObject *Session_write(Session *self, PyObject *args) {
    int sid, end;
    PyObject *chunk;
    if (!PyArg_ParseTuple(args, "iOp", &sid, &chunk, &end)) return NULL;
    strm *st = strm_get(self, sid, 0);
    if (!st || !st->provider) Py_RETURN_FALSE;
    PyObject *b = as_bytes(chunk);
    if (!b) return NULL;
    int r = strm_append(st, b);
    Py_DECREF(b);
    if (r < 0) return NULL;
    if (end) st->eof = 1;
    if (st->deferred && (st->n > st->head || st->eof)) {
        st->deferred = 0;
        if (check(nghttp2_session_resume_data(self->s, sid)) < 0) return NULL;
    }
    Py_RETURN_TRUE;
}

static PyObject *Session_pending(Session *self, PyObject *arg) {
    long sid = PyLong_AsLong(arg);
    if (sid == -1 && PyErr_Occurred()) return NULL;
    strm *st = strm_get(self, (int32_t)sid, 0);
    return PyLong_FromSsize_t(st ? st->pending : 0);
}

static PyObject *Session_reset(Session *self, PyObject *args) {
    int sid;
    unsigned int code;
    if (!PyArg_ParseTuple(args, "iI", &sid, &code)) return NULL;
    if (check(nghttp2_submit_rst_stream(self->s, NGHTTP2_FLAG_NONE, sid, code)) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Session_goaway(Session *self, PyObject *arg) {
    unsigned long code = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    int32_t last = nghttp2_session_get_last_proc_stream_id(self->s);
    if (check(nghttp2_submit_goaway(self->s, NGHTTP2_FLAG_NONE, last, (uint32_t)code, NULL, 0))
            < 0)
        return NULL;
    return PyLong_FromLong(last);
}

static PyObject *Session_terminate(Session *self, PyObject *arg) {
    unsigned long code = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    if (check(nghttp2_session_terminate_session(self->s, (uint32_t)code)) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Session_want_io(Session *self, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(nghttp2_session_want_read(self->s) ||
                           nghttp2_session_want_write(self->s));
}

static PyObject *Session_remote_closed(Session *self, PyObject *arg) {
    long sid = PyLong_AsLong(arg);
    if (sid == -1 && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(nghttp2_session_get_stream_remote_close(self->s, (int32_t)sid) == 1);
}

/* -- type ----------------------------------------------------------------------------------- */
static int Session_init(Session *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"max_streams", "max_header_list", "initial_window",
                            "hard_header_bytes", NULL};
    unsigned int max_streams, max_header_list, initial_window;
    Py_ssize_t hard;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "IIIn", names, &max_streams, &max_header_list,
                                     &initial_window, &hard))
        return -1;
    if (self->s) { PyErr_SetString(PyExc_RuntimeError, "initialised twice"); return -1; }
    self->hard_header_bytes = (size_t)hard;
    self->events = PyList_New(0);
    if (!self->events) return -1;
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0) { PyErr_NoMemory(); return -1; }
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_before_frame_send_callback(cb, before_frame_send);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_send_callback(cb, send_cb);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_option_set_no_http_messaging(opt, 1);  /* edge/policy/h2head.py checks requests */
    nghttp2_option_set_no_recv_client_magic(opt, 0);
    int rv = nghttp2_session_server_new2(&self->s, cb, self, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0) { PyErr_NoMemory(); return -1; }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, max_header_list},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, initial_window},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (check(nghttp2_submit_settings(self->s, NGHTTP2_FLAG_NONE, iv, 4)) < 0) return -1;
    return 0;
}

static void Session_dealloc(Session *self) {
    if (self->s) nghttp2_session_del(self->s);  /* no callbacks: the streams' data is ours */
    while (self->all) strm_free(self, self->all);
    Py_XDECREF(self->events);
    PyMem_Free(self->out);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Session_methods[] = {
    {"recv", (PyCFunction)Session_recv, METH_O, "Feed received bytes: (events, error|None)."},
    {"send", (PyCFunction)Session_send, METH_NOARGS, "Outbound bytes: (bytes, events|None)."},
    {"submit", (PyCFunction)Session_submit, METH_VARARGS,
     "submit(sid, status, fields, body, end, stop): a response."},
    {"write", (PyCFunction)Session_write, METH_VARARGS, "write(sid, chunk, end): more body."},
    {"pending", (PyCFunction)Session_pending, METH_O, "Body bytes not yet taken by nghttp2."},
    {"reset", (PyCFunction)Session_reset, METH_VARARGS, "reset(sid, code): RST_STREAM."},
    {"goaway", (PyCFunction)Session_goaway, METH_O, "GOAWAY(code), streams go on; last id."},
    {"terminate", (PyCFunction)Session_terminate, METH_O, "GOAWAY(code), then the end."},
    {"want_io", (PyCFunction)Session_want_io, METH_NOARGS, "nghttp2 wants to read or write."},
    {"remote_closed", (PyCFunction)Session_remote_closed, METH_O, "The client ended the stream."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edge._nghttp2.Session",
    .tp_basicsize = sizeof(Session),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_methods = Session_methods,
    .tp_doc = "One nghttp2 server session (see the module's comment).",
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "edge._nghttp2", "libnghttp2 server sessions for edge/h2ng.py.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__nghttp2(void) {
    if (PyType_Ready(&SessionType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&SessionType);
    if (PyModule_AddObject(m, "Session", (PyObject *)&SessionType) < 0) {
        Py_DECREF(&SessionType);
        Py_DECREF(m);
        return NULL;
    }
    const nghttp2_info *info = nghttp2_version(0);
    if (PyModule_AddStringConstant(m, "NGHTTP2_VERSION", info->version_str) < 0 ||
            PyModule_AddIntConstant(m, "REQUEST", EV_REQUEST) < 0 ||
            PyModule_AddIntConstant(m, "DATA", EV_DATA) < 0 ||
            PyModule_AddIntConstant(m, "END", EV_END) < 0 ||
            PyModule_AddIntConstant(m, "CLOSE", EV_CLOSE) < 0 ||
            PyModule_AddIntConstant(m, "GOAWAY", EV_GOAWAY) < 0 ||
            PyModule_AddIntConstant(m, "FLOOD", EV_FLOOD) < 0 ||
            PyModule_AddIntConstant(m, "CALM", EV_CALM) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
