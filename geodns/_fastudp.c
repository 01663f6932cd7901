/* geodns._fastudp: the UDP loop of geodns/server.py in C, answering cached queries itself.

   serve(fd, cache_of, answer, send_failed, batch=64, fast_of=None, rrl=None, obs=None,
   watch=None) serves one blocking UDP socket (IPv4 or IPv6) until it is shut down, then
   returns None.

   Rules:
   - Receive: recvmmsg() with MSG_WAITFORONE takes up to `batch` datagrams (blocking, with the
     GIL released, for the first only), each into its own 65535-byte buffer.
   - Each batch, `cache_of()` is called once for the engine's current UDP response cache (a dict:
     query bytes after the ID -> response bytes after the ID, or a dict of per-client answers).
     The dict is held only for that batch, so a swapped or cleared cache is seen at the next one.
     With `watch` (the server: `watch.engine` is its engine), cache_of() and fast_of() are
     called only when watch.engine, its wire_udp, templates or maps.active is not the object it
     was at the last call, and otherwise their last results serve the batch: what they return
     is made from those attributes alone, so it is the same; the steady state runs no Python.
   - A datagram of at least 12 bytes whose bytes after the ID are a key with a `bytes` value is
     answered here: the query's 2-byte ID followed by that value. No DNS parsing happens here: a
     key can only match the byte-identical query (flags included) that produced the answer.
   - With `fast_of` (called once per batch for the engine's fast state, or None), a datagram
     that is not cached is answered by build_common (_coldpath.h) when it can be: the cold
     path, in C, for a client subnet never seen before; through the state compiled for C
     (_fastidx.h). Without `obs`, that comes first, before the cache: it gives the bytes Python
     would build now, in less time than making and hashing the cache key; the answer is written
     behind the query in the datagram's receive buffer, without a bytes object.
   - Every other datagram (shorter, not cached, per-client answers) goes to
     `answer(data, client_ip, False)`, exactly like the pure-Python loop; it returns the
     response bytes or None (no answer). An exception from it (or from `cache_of`) is raised
     out of serve() after the answers already prepared in that batch have been sent.
   - With `rrl` (an Rrl, _rrl.h), the batch's answers are rate limited just before they are
     sent: some dropped, some replaced by their truncated form (geodns/rrl.py's rules).
   - With `obs` (a capsule of _obs.h's obs_new(), or None), every datagram answered or left
     unanswered is counted (and maybe logged) before its answer is queued: its qtype and ECS
     option read from the query, its rcode and first A/AAAA address from the answer, and the
     batch's time from receipt to sendmmsg() -- the only reading of packets this loop does
     besides the cache look-up. Answers an RRL filter drops at send time are still counted.
   - Send: sendmmsg() of the batch's answers, with the GIL released, each to its datagram's
     source address. A datagram that cannot be sent is skipped and reported through
     `send_failed(client_ip, errno)`; the rest of the batch is still sent.
   - Stop: after shutdown(SHUT_RD) recvmmsg() returns an entry without a source address; serve()
     answers the rest of that batch and returns None, and the caller checks whether it is
     stopping. Receive errors other than EINTR/EAGAIN raise OSError.

   scan_common(data) is query_fields(parse_common(data)) of geodns/wire.py (the usual query: one
   plain question, at most an OPT with at most one valid ECS option) for the Python miss path:
   (id, flags, question, qname, qtype, qclass, udp_size, version, do, family, source, address),
   with udp_size -1 when there is no OPT and family 0 when there is no ECS; None for anything
   else (parse_query then parses it in full and decides). Same rules, same results: the tests
   compare the two on table-driven and random packets. It reads only within the bytes object's
   length.

   Buffers and references: a cached answer is copied, while the GIL is held, behind the ID in
   its datagram's own receive buffer (the datagram has been looked up already and is not read
   again; 2 + its size always fits in the 65535 bytes, else the next rule applies). Any other
   response's iovec points into a bytes object (the callback's result), held by a strong
   reference in `keep` from the moment it is chosen until its batch has been sent, so nothing
   can free it while the GIL is released for sendmmsg(). Bytes objects are immutable, so reading
   them without the GIL is safe. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH_MAX 64
#define DGRAM_MAX 65535 /* the largest datagram we read, as recvfrom(65535) in Python */
#define HEADER_LEN 12   /* shorter datagrams are never looked up */
#define ID_LEN 2
/* receive buffers are DGRAM_MAX bytes, BUF_STRIDE apart: not a multiple of 4096, so their
   starts (where the datagram and its answer are) do not all fall in the same cache set */
#define BUF_STRIDE (65536 + 64)

typedef struct {
    struct mmsghdr in[BATCH_MAX];
    struct iovec in_iov[BATCH_MAX];
    struct sockaddr_storage addr[BATCH_MAX];
    struct mmsghdr out[BATCH_MAX];
    struct iovec out_iov[BATCH_MAX][2];
    PyObject *keep[BATCH_MAX]; /* strong references to what out_iov points into */
    int nout;
    int used; /* entries filled by the last recvmmsg */
    unsigned char *bufs; /* `batch` buffers of DGRAM_MAX bytes, BUF_STRIDE apart */
    PyObject *rrl;       /* serve()'s rrl (borrowed), or NULL: see _rrl.h */
} Batch;

#include "_rrl.h"

/* The client's address as text, as Python's socket module formats addr[0] of recvfrom, except
   that an IPv6 scope (fe80::1%lo) is left out: such clients are never located anyway. */
static PyObject *
client_ip(const struct sockaddr_storage *ss)
{
    char text[INET6_ADDRSTRLEN];
    const void *src;
    if (ss->ss_family == AF_INET)
        src = &((const struct sockaddr_in *)ss)->sin_addr;
    else if (ss->ss_family == AF_INET6)
        src = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    else
        return PyErr_Format(PyExc_ValueError, "unsupported address family %d",
                            (int)ss->ss_family);
    if (inet_ntop(ss->ss_family, src, text, sizeof text) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyUnicode_FromString(text);
}

static void
receive_init(Batch *b, int batch)
{
    for (int i = 0; i < batch; i++) {
        b->in_iov[i].iov_base = b->bufs + (size_t)i * BUF_STRIDE;
        b->in_iov[i].iov_len = DGRAM_MAX;
        memset(&b->in[i], 0, sizeof b->in[i]);
        b->in[i].msg_hdr.msg_name = &b->addr[i];
        b->in[i].msg_hdr.msg_namelen = sizeof b->addr[i];
        b->in[i].msg_hdr.msg_iov = &b->in_iov[i];
        b->in[i].msg_hdr.msg_iovlen = 1;
    }
}

/* Up to `batch` datagrams; 0 means woken without any. -1 with a Python error set. The kernel
   changes only the received entries' msg_len, msg_namelen and msg_flags: the entries of the
   last receive get their name length back, the rest are as receive_init left them. */
static int
receive(int fd, Batch *b, int batch)
{
    for (int i = 0; i < b->used; i++)
        b->in[i].msg_hdr.msg_namelen = sizeof b->addr[i];
    b->used = 0;
    for (;;) {
        int n, err;
        Py_BEGIN_ALLOW_THREADS
        n = recvmmsg(fd, b->in, (unsigned int)batch, MSG_WAITFORONE, NULL);
        err = errno;
        Py_END_ALLOW_THREADS
        if (n >= 0) {
            b->used = n;
            return n;
        }
        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        if (err == EAGAIN || err == EWOULDBLOCK) { /* a non-blocking socket: wait for data */
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            Py_BEGIN_ALLOW_THREADS
            (void)poll(&pfd, 1, -1);
            Py_END_ALLOW_THREADS
            continue;
        }
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
}

/* Queue the answer to datagram i. A cached answer (`with_id`: the datagram's ID goes first) is
   copied behind the ID into the datagram's own buffer, which is no longer needed: one iovec,
   and nothing to keep alive. Otherwise the iovecs point into `response`, and the reference
   (a new one, handed over) is kept in b->keep until the batch is sent. */
static void
queue(Batch *b, int i, PyObject *response, int with_id)
{
    int k = b->nout++;
    struct iovec *iov = b->out_iov[k];
    size_t size = (size_t)PyBytes_GET_SIZE(response);
    int n = 0;
    if (with_id && size <= DGRAM_MAX - ID_LEN) {
        memcpy((char *)b->in_iov[i].iov_base + ID_LEN, PyBytes_AS_STRING(response), size);
        iov[n].iov_base = b->in_iov[i].iov_base;
        iov[n++].iov_len = ID_LEN + size;
        b->keep[k] = NULL;
    } else {
        if (with_id) {
            Py_INCREF(response);
            iov[n].iov_base = b->in_iov[i].iov_base;
            iov[n++].iov_len = ID_LEN;
        }
        iov[n].iov_base = PyBytes_AS_STRING(response);
        iov[n++].iov_len = size;
        b->keep[k] = response;
    }
    memset(&b->out[k], 0, sizeof b->out[k]);
    b->out[k].msg_hdr.msg_name = &b->addr[i];
    b->out[k].msg_hdr.msg_namelen = b->in[i].msg_hdr.msg_namelen;
    b->out[k].msg_hdr.msg_iov = iov;
    b->out[k].msg_hdr.msg_iovlen = (size_t)n;
}

/* Queue `len` bytes at p, inside datagram i's own receive buffer, as its answer. */
static void
queue_raw(Batch *b, int i, unsigned char *p, size_t len)
{
    int k = b->nout++;
    b->out_iov[k][0].iov_base = p;
    b->out_iov[k][0].iov_len = len;
    b->keep[k] = NULL;
    memset(&b->out[k], 0, sizeof b->out[k]);
    b->out[k].msg_hdr.msg_name = &b->addr[i];
    b->out[k].msg_hdr.msg_namelen = b->in[i].msg_hdr.msg_namelen;
    b->out[k].msg_hdr.msg_iov = b->out_iov[k];
    b->out[k].msg_hdr.msg_iovlen = 1;
}

static void
report_send_failure(PyObject *send_failed, const struct msghdr *msg, int err)
{
    PyObject *ip = client_ip((const struct sockaddr_storage *)msg->msg_name);
    PyObject *result = NULL;
    if (ip != NULL)
        result = PyObject_CallFunction(send_failed, "Oi", ip, err);
    if (result == NULL)
        PyErr_WriteUnraisable(send_failed);
    Py_XDECREF(result);
    Py_XDECREF(ip);
}

/* Send the queued answers, then drop the references that kept their bytes alive. Called with
   no Python error set. */
static void
send_queued(int fd, Batch *b, PyObject *send_failed)
{
    int done = 0;
    rrl_filter(b, b->rrl);
    while (done < b->nout) {
        int r, err;
        Py_BEGIN_ALLOW_THREADS
        r = sendmmsg(fd, b->out + done, (unsigned int)(b->nout - done), 0);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r > 0) {
            done += r;
            continue;
        }
        if (r < 0 && err == EINTR)
            continue;
        /* the datagram at `done` could not be sent: skip it, as the Python loop does */
        report_send_failure(send_failed, &b->out[done].msg_hdr, r < 0 ? err : EIO);
        done++;
    }
    for (int k = 0; k < b->nout; k++)
        Py_XDECREF(b->keep[k]);
    b->nout = 0;
}

/* Answer datagram i through Python. 0: queued or no answer; -1: a Python error is set. */
static int
answer_in_python(Batch *b, int i, PyObject *answer)
{
    PyObject *data = PyBytes_FromStringAndSize(b->in_iov[i].iov_base, b->in[i].msg_len);
    PyObject *ip = data ? client_ip(&b->addr[i]) : NULL;
    PyObject *response = NULL;
    if (ip != NULL) {
        PyObject *args[3] = {data, ip, Py_False};
        response = PyObject_Vectorcall(answer, args, 3, NULL);
    }
    Py_XDECREF(data);
    Py_XDECREF(ip);
    if (response == NULL)
        return -1;
    if (response == Py_None) {
        Py_DECREF(response);
        return 0;
    }
    if (!PyBytes_Check(response)) {
        PyErr_Format(PyExc_TypeError, "answer() must return bytes or None, not %.100s",
                     Py_TYPE(response)->tp_name);
        Py_DECREF(response);
        return -1;
    }
    queue(b, i, response, 0);
    return 0;
}

static unsigned int
u16(const unsigned char *p)
{
    return ((unsigned int)p[0] << 8) | p[1];
}

/* End of an uncompressed name starting at pos, or -1 (see wire.py's _scan_plain_name). */
static Py_ssize_t
scan_plain_name(const unsigned char *d, Py_ssize_t n, Py_ssize_t pos)
{
    Py_ssize_t start = pos;
    while (pos < n) {
        unsigned int length = d[pos];
        if (length == 0)
            return pos + 1 - start <= 255 ? pos + 1 : -1;
        if (length > 63)
            return -1;
        pos += (Py_ssize_t)length + 1;
    }
    return -1;
}

/* The usual query's fields (see scan_common); 1 when `d` is one, else 0. */
typedef struct {
    unsigned int id, flags, qtype, qclass;
    Py_ssize_t end, pos, addr_at, addr_len; /* name end, question end, ECS address */
    long udp_size, version, dnssec_ok, family, source;
} Scan;

static int
scan(const unsigned char *d, Py_ssize_t n, Scan *s)
{
    if (n < 17)
        return 0;
    unsigned int qd = u16(d + 4), an = u16(d + 6), ns = u16(d + 8), ar = u16(d + 10);
    s->id = u16(d);
    s->flags = u16(d + 2);
    if ((s->flags & 0x8000) || qd != 1 || an || ns || ar > 1)
        return 0;
    Py_ssize_t end = scan_plain_name(d, n, 12);
    if (end < 0 || end + 4 > n)
        return 0;
    s->end = end;
    s->qtype = u16(d + end);
    s->qclass = u16(d + end + 2);
    Py_ssize_t pos = end + 4;
    s->pos = pos;
    s->udp_size = -1;
    s->version = s->dnssec_ok = s->family = s->source = 0;
    s->addr_at = s->addr_len = 0;
    if (!ar)
        return pos == n;
    if (pos + 11 > n)
        return 0;
    const unsigned char *opt = d + pos;
    unsigned int rtype = u16(opt + 1), rclass = u16(opt + 3), rdlen = u16(opt + 9);
    unsigned long ttl = ((unsigned long)u16(opt + 5) << 16) | u16(opt + 7);
    if (opt[0] || rtype != 41 || pos + 11 + (Py_ssize_t)rdlen != n)
        return 0;
    if (rdlen) {
        if (rdlen < 4)
            return 0;
        unsigned int code = u16(opt + 11), length = u16(opt + 13);
        if (code != 8 || length + 4 != rdlen || length < 4)
            return 0;
        const unsigned char *ecs = opt + 15; /* the ECS option's data, `length` bytes */
        long family = (long)u16(ecs), source = ecs[2];
        if (ecs[3]) /* SCOPE PREFIX-LENGTH in a query: FORMERR, parse_query decides */
            return 0;
        if ((family != 1 && family != 2) || source > (family == 1 ? 32 : 128))
            return 0;
        Py_ssize_t addr_at = pos + 15 + 4, addr_len = (Py_ssize_t)length - 4;
        if (addr_len != (source + 7) / 8)
            return 0;
        if ((source % 8) && (d[addr_at + addr_len - 1] & (0xFF >> (source % 8))))
            return 0;
        s->family = family;
        s->source = source;
        s->addr_at = addr_at;
        s->addr_len = addr_len;
    }
    s->udp_size = rclass > 512 ? (long)rclass : 512;
    s->version = (long)((ttl >> 16) & 0xFF);
    s->dnssec_ok = (ttl & 0x8000) != 0;
    return 1;
}

static PyObject *
lower_name(const unsigned char *d, Py_ssize_t end)
{
    PyObject *qname = PyBytes_FromStringAndSize(NULL, end - 12);
    if (qname == NULL)
        return NULL;
    char *lower = PyBytes_AS_STRING(qname);
    for (Py_ssize_t i = 12; i < end; i++) /* bytes.lower(): ASCII letters only */
        lower[i - 12] = (char)(d[i] >= 'A' && d[i] <= 'Z' ? d[i] + 32 : d[i]);
    return qname;
}

static PyObject *
scan_common(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_Check(arg))
        return PyErr_Format(PyExc_TypeError, "scan_common() needs bytes, not %.100s",
                            Py_TYPE(arg)->tp_name);
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(arg);
    Scan s;
    if (!scan(d, PyBytes_GET_SIZE(arg), &s))
        Py_RETURN_NONE;
    PyObject *qname = lower_name(d, s.end);
    if (qname == NULL)
        return NULL;
    return Py_BuildValue("(IIy#NIIllNlly#)", s.id, s.flags, (const char *)d + 12,
                         (Py_ssize_t)(s.pos - 12), qname, s.qtype, s.qclass, s.udp_size,
                         s.version, PyBool_FromLong(s.dnssec_ok), s.family, s.source,
                         (const char *)d + s.addr_at, s.addr_len);
}

#include "_coldpath.h"
#include "_fastidx.h"

/* counters and the query log (_obs.h): obs is NULL when off */
static void *obs_arg(PyObject *capsule);
static int obs_log_on(void *obs);
static int obs_answered(void *obs, int path, const unsigned char *q, Py_ssize_t qn,
                        PyObject *resp, int with_id, const struct sockaddr_storage *ss,
                        const struct sockaddr_storage *local, const struct timespec *now);
static void obs_batch_done(void *obs, const struct timespec *start);

/* serve()'s `watch`: what cache_of() and fast_of() returned, and the attributes they are
   made from when they returned it (strong references, so an identity is never reused) */
typedef struct {
    int valid;
    PyObject *engine, *wire_udp, *templates, *active; /* watch.engine, its attributes */
    PyObject *cache, *state;                          /* cache_of(), fast_of() */
} Watch;

static void
watch_clear(Watch *w)
{
    w->valid = 0;
    Py_CLEAR(w->engine);
    Py_CLEAR(w->wire_udp);
    Py_CLEAR(w->templates);
    Py_CLEAR(w->active);
    Py_CLEAR(w->cache);
    Py_CLEAR(w->state);
}

/* 1: watch.engine, its wire_udp, templates and maps.active are the objects they were at the
   last call, so the cache and state that cache_of() and fast_of() returned then serve this
   batch too (attribute reads, no Python code); 0: one changed, or an attribute is missing. */
static int
watch_same(PyObject *watch, Watch *w)
{
    static PyObject *names[5];
    static const char *const text[5] = {"engine", "wire_udp", "templates", "maps", "active"};
    PyObject *got[5] = {NULL};
    for (int i = 0; i < 5; i++) {
        if (names[i] == NULL && (names[i] = PyUnicode_InternFromString(text[i])) == NULL)
            break;
        got[i] = PyObject_GetAttr(i == 0 ? watch : i == 4 ? got[3] : got[0], names[i]);
        if (got[i] == NULL)
            break;
    }
    if (got[4] == NULL) { /* not an engine's server: the callbacks decide every batch */
        PyErr_Clear();
        for (int i = 0; i < 5; i++)
            Py_XDECREF(got[i]);
        watch_clear(w);
        return 0;
    }
    Py_DECREF(got[3]);
    int same = w->valid && got[0] == w->engine && got[1] == w->wire_udp &&
               got[2] == w->templates && got[4] == w->active;
    Py_XSETREF(w->engine, got[0]);
    Py_XSETREF(w->wire_udp, got[1]);
    Py_XSETREF(w->templates, got[2]);
    Py_XSETREF(w->active, got[4]);
    return same;
}

/* Answer one batch of n datagrams. 1: woken by shutdown; 0: go on; -1: a Python error is set
   (the answers prepared before it have been sent). */
static int
answer_batch(int fd, Batch *b, int n, PyObject *cache_of, PyObject *answer,
             PyObject *send_failed, PyObject *fast_of, void *obs,
             const struct sockaddr_storage *local, const struct timespec *now,
             PyObject *watch, Watch *w)
{
    int woken = n == 0, failed = 0;
    PyObject *fast = NULL; /* the capsule of the compiled fast state for this batch, or NULL */
    Fast *fc = NULL;
    PyObject *cache = NULL; /* this batch only */
    if (watch != NULL && n > 0 && watch_same(watch, w)) {
        cache = w->cache;
        Py_INCREF(cache);
        if (w->state != NULL) {
            fast = fast_for(w->state);
            if (fast == NULL)
                failed = 1;
            else
                fc = PyCapsule_GetPointer(fast, "geodns.fast");
        }
    } else if (fast_of != NULL && n > 0) {
        w->valid = 0;
        Py_CLEAR(w->state);
        PyObject *st = PyObject_CallNoArgs(fast_of);
        if (st == NULL)
            failed = 1;
        else if (state_ok(st)) { /* else None (no map yet): every miss goes to Python */
            w->state = st;
            Py_INCREF(st);
            fast = fast_for(st);
            if (fast == NULL)
                failed = 1;
            else
                fc = PyCapsule_GetPointer(fast, "geodns.fast");
        }
        Py_XDECREF(st);
    }
    if (cache == NULL && !failed) {
        cache = PyObject_CallNoArgs(cache_of);
        if (cache != NULL && !PyDict_Check(cache)) {
            PyErr_Format(PyExc_TypeError, "cache_of() must return a dict, not %.100s",
                         Py_TYPE(cache)->tp_name);
            Py_CLEAR(cache);
        }
        if (cache == NULL)
            failed = 1;
        else if (watch != NULL && n > 0 && !failed && w->engine != NULL) {
            Py_INCREF(cache);
            Py_XSETREF(w->cache, cache);
            w->valid = 1; /* the next batch may reuse both */
        }
    }
    for (int i = 0; i < n && !failed; i++) {
        unsigned int len = b->in[i].msg_len;
        PyObject *value = NULL; /* borrowed from the cache */
        if (b->in[i].msg_hdr.msg_namelen == 0) { /* no sender: woken by shutdown */
            woken = 1;
            continue;
        }
        int declined = 0; /* the compiled state leaves it to Python */
        /* Without counters, the compiled state first: it gives the bytes Python would build
           now (the cache holds what Python built, for the same state or, after a region map
           merge, with a narrower scope), and costs less than making and hashing the cache
           key. Its answer is written behind the query in the datagram's own buffer. */
        if (fc != NULL && fc->ok && obs == NULL && len >= HEADER_LEN) {
            Plan p;
            unsigned char *buf = b->in_iov[i].iov_base;
            int r = fast_plan(fc, buf, (Py_ssize_t)len, &p);
            if (r < 0) {
                failed = 1;
                break;
            }
            size_t at = ((size_t)len + 63) & ~(size_t)63;
            if (r > 0 && at + (size_t)p.total <= DGRAM_MAX) {
                fast_write(&p, buf, buf + at, fc->max_udp);
                queue_raw(b, i, buf + at, (size_t)p.total);
                continue;
            }
            declined = r == 0;
        }
        if (len >= HEADER_LEN) {
            PyObject *key = PyBytes_FromStringAndSize(
                (const char *)b->in_iov[i].iov_base + ID_LEN, (Py_ssize_t)(len - ID_LEN));
            if (key == NULL) {
                failed = 1;
                break;
            }
            value = PyDict_GetItemWithError(cache, key);
            Py_DECREF(key);
            if (value == NULL && PyErr_Occurred()) {
                failed = 1;
                break;
            }
        }
        if (value != NULL && PyBytes_CheckExact(value)) {
            if (obs != NULL && obs_answered(obs, 0, b->in_iov[i].iov_base, len, value, 1,
                                            &b->addr[i], local, now) < 0) {
                failed = 1;
                break;
            }
            queue(b, i, value, 1); /* borrowed: copied, or a reference taken */
            continue;
        }
        if (fc != NULL && !declined) {
            PyObject *built = build_fast(fc, b->in_iov[i].iov_base, (Py_ssize_t)len);
            if (built == NULL) {
                failed = 1;
                break;
            }
            if (built != Py_None) {
                if (obs != NULL && obs_answered(obs, 1, b->in_iov[i].iov_base, len, built, 0,
                                                &b->addr[i], local, now) < 0)
                    failed = 1;
                queue(b, i, built, 0); /* the new reference is handed over */
                if (failed)
                    break;
                continue;
            }
            Py_DECREF(built);
        }
        int queued = b->nout;
        if (answer_in_python(b, i, answer) < 0)
            failed = 1;
        else if (obs != NULL &&
                 obs_answered(obs, 2, b->in_iov[i].iov_base, len,
                              b->nout > queued ? b->keep[queued] : NULL, 0, &b->addr[i],
                              local, now) < 0)
            failed = 1;
    }
    Py_XDECREF(cache);
    Py_XDECREF(fast);
    if (failed) {
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *exc = PyErr_GetRaisedException();
        send_queued(fd, b, send_failed);
        PyErr_SetRaisedException(exc);
#else
        PyObject *type, *val, *tb;
        PyErr_Fetch(&type, &val, &tb);
        send_queued(fd, b, send_failed);
        PyErr_Restore(type, val, tb);
#endif
        return -1;
    }
    send_queued(fd, b, send_failed);
    return woken;
}

static PyObject *
serve(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", "cache_of", "answer", "send_failed", "batch", "fast_of",
                               "rrl", "obs", "watch", NULL};
    int fd, batch = BATCH_MAX, rc = 0;
    PyObject *cache_of, *answer, *send_failed, *fast_of = Py_None, *rrl = Py_None;
    PyObject *obs_capsule = Py_None, *watch = Py_None;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iOOO|iOOOO:serve", keywords, &fd, &cache_of,
                                     &answer, &send_failed, &batch, &fast_of, &rrl,
                                     &obs_capsule, &watch))
        return NULL;
    if (rrl != Py_None && !PyObject_TypeCheck(rrl, &RrlType))
        return PyErr_Format(PyExc_TypeError, "rrl must be an Rrl or None");
    void *obs = obs_arg(obs_capsule);
    if (obs == NULL && obs_capsule != Py_None)
        return NULL;
    struct sockaddr_storage local; /* the socket's own address, for the query log */
    socklen_t local_len = sizeof local;
    memset(&local, 0, sizeof local);
    if (obs != NULL && getsockname(fd, (struct sockaddr *)&local, &local_len) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (fast_of == Py_None)
        fast_of = NULL;
    else if (!PyCallable_Check(fast_of))
        return PyErr_Format(PyExc_TypeError, "fast_of must be callable or None");
    if (!PyCallable_Check(cache_of) || !PyCallable_Check(answer) ||
        !PyCallable_Check(send_failed)) {
        PyErr_SetString(PyExc_TypeError, "cache_of, answer and send_failed must be callable");
        return NULL;
    }
    if (fd < 0)
        return PyErr_Format(PyExc_ValueError, "invalid file descriptor %d", fd);
    /* a non-blocking socket would never see the shutdown that wakes the loop (recvmmsg gives
       EAGAIN, not 0): it would spin instead of returning */
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (flags & O_NONBLOCK)
        return PyErr_Format(PyExc_ValueError, "fd %d is non-blocking; serve needs a blocking "
                                              "socket", fd);
    if (batch < 1 || batch > BATCH_MAX)
        return PyErr_Format(PyExc_ValueError, "batch must be 1..%d, got %d", BATCH_MAX, batch);
    Batch *b = PyMem_Calloc(1, sizeof *b);
    if (b == NULL)
        return PyErr_NoMemory();
    b->bufs = PyMem_Malloc((size_t)batch * BUF_STRIDE);
    if (b->bufs == NULL) {
        PyMem_Free(b);
        return PyErr_NoMemory();
    }
    b->rrl = rrl == Py_None ? NULL : rrl; /* the caller's reference outlives serve() */
    receive_init(b, batch);
    Watch w = {0};
    while (rc == 0) {
        int n = receive(fd, b, batch);
        struct timespec start, now = {0, 0};
        if (obs != NULL && n > 0) {
            clock_gettime(CLOCK_MONOTONIC, &start);
            if (obs_log_on(obs))
                clock_gettime(CLOCK_REALTIME, &now);
        }
        rc = n < 0 ? -1 : answer_batch(fd, b, n, cache_of, answer, send_failed, fast_of, obs,
                                       &local, &now, watch == Py_None ? NULL : watch, &w);
        if (obs != NULL && n > 0)
            obs_batch_done(obs, &start);
    }
    watch_clear(&w);
    PyMem_Free(b->bufs);
    PyMem_Free(b);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

#include "_obs.h"

static PyMethodDef methods[] = {
    {"serve", (PyCFunction)(void (*)(void))serve, METH_VARARGS | METH_KEYWORDS,
     "serve(fd, cache_of, answer, send_failed, batch=64, fast_of=None, rrl=None, obs=None, "
     "watch=None)\n--\n\n"
     "Serve one blocking UDP socket until it is shut down (see the module's source for the "
     "rules)."},
    {"answer_common", answer_common, METH_VARARGS,
     "answer_common(data, state)\n--\n\n"
     "The UDP response to the usual query built from the engine's fast state, or None (see "
     "geodns/_coldpath.h)."},
    {"_bench_plan", bench_plan, METH_VARARGS,
     "_bench_plan(queries, state, chunk)\n--\n\n"
     "The fastest chunk's nanoseconds per query of the compiled cold path (bench/)."},
    {"scan_common", scan_common, METH_O,
     "scan_common(data)\n--\n\n"
     "geodns.wire.parse_common's fields as a flat tuple, or None (see the module's source)."},
    OBS_METHODS
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "geodns._fastudp",
    "The UDP answer loop in C: cached answers without Python, the rest through a callback.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastudp(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m != NULL && PyModule_AddIntConstant(m, "BATCH_MAX", BATCH_MAX) < 0)
        Py_CLEAR(m);
    if (m != NULL && (PyType_Ready(&RrlType) < 0 ||
                      PyModule_AddObjectRef(m, "Rrl", (PyObject *)&RrlType) < 0))
        Py_CLEAR(m);
    return m;
}
