/* Response Rate Limiting in the C loop: the rules of geodns/rrl.py (read them there), applied
   to a batch's queued answers just before they are sent. Included by _fastudp.c after Batch.

   Rrl(rate, window, slip, ipv4_prefix, ipv6_prefix, exempt, table_size) is the limiter;
   `exempt` is geodns.rrl.parse_exempt's tuple of (4 or 6, packed network, prefix length).
   Rrl.check(ip, now) -> 0 SEND, 1 DROP, 2 SLIP is the same decision for a text address at a
   given time (the table-driven tests run it and RateLimiter.check on one table); the loop uses
   the monotonic clock (time.monotonic() in Python), read once per batch. `dropped` and
   `slipped` count the limited answers. The table is open addressing over 2 * table_size slots
   (rounded up to a power of two), probing RRL_PROBE slots: a prefix takes the first empty one,
   or else the least recently seen of them (geodns/rrl.py: the two differ only when full).
   Every call holds the GIL, so UDP threads sharing one Rrl never race. */
#include <structmember.h>
#include <time.h>

#define RRL_PROBE 8
#define RRL_KEY 17        /* family (4 or 6; 0: an empty slot) + 16 bytes of masked address */
#define RRL_GATHER 1024   /* bytes of a response read to find its question (as rrl.py) */
#define RRL_EXEMPT_MAX 256

typedef struct {
    unsigned char key[RRL_KEY];
    double balance, last;
    unsigned long long limited;
} RrlSlot;

typedef struct {
    int family, plen;
    unsigned char net[16];
} RrlNet;

typedef struct {
    PyObject_HEAD
    double rate, window;
    long slip;
    int v4, v6, nexempt;
    RrlNet exempt[RRL_EXEMPT_MAX];
    RrlSlot *slots;
    size_t mask;
    unsigned long long dropped, slipped;
} RrlObject;

static void
rrl_mask(unsigned char *out, const unsigned char *addr, int len, int bits)
{
    for (int i = 0; i < len; i++) {
        int keep = bits - i * 8;
        unsigned char m = keep >= 8 ? 0xFF : keep <= 0 ? 0 : (unsigned char)(0xFF << (8 - keep));
        out[i] = addr[i] & m;
    }
}

/* SEND/DROP/SLIP for an address (4 or 16 bytes) at `now`; the rules of rrl.py. */
static int
rrl_verdict(RrlObject *r, int family, const unsigned char *addr, double now)
{
    int len = family == 4 ? 4 : 16;
    unsigned char key[RRL_KEY] = {0}, masked[16];
    for (int e = 0; e < r->nexempt; e++) {
        if (r->exempt[e].family != family)
            continue;
        rrl_mask(masked, addr, len, r->exempt[e].plen);
        if (memcmp(masked, r->exempt[e].net, (size_t)len) == 0)
            return 0;
    }
    key[0] = (unsigned char)family;
    rrl_mask(key + 1, addr, len, family == 4 ? r->v4 : r->v6);
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (int i = 0; i < RRL_KEY; i++)
        h = (h ^ key[i]) * 1099511628211ULL;
    RrlSlot *slot = NULL, *empty = NULL, *oldest = NULL;
    for (size_t p = 0; p < RRL_PROBE; p++) {
        RrlSlot *s = &r->slots[(h + p) & r->mask];
        if (s->key[0] == 0) {
            if (empty == NULL)
                empty = s;
        } else if (memcmp(s->key, key, RRL_KEY) == 0) {
            slot = s;
            break;
        } else if (oldest == NULL || s->last < oldest->last) {
            oldest = s;
        }
    }
    if (slot == NULL) {
        slot = empty != NULL ? empty : oldest;
        memcpy(slot->key, key, RRL_KEY);
        slot->balance = r->rate;
        slot->last = now;
        slot->limited = 0;
    }
    double elapsed = now - slot->last;
    if (elapsed < 0)
        elapsed = 0.0;
    double balance = slot->balance + elapsed * r->rate;
    if (balance > r->rate)
        balance = r->rate;
    balance -= 1.0;
    double floor = -r->window * r->rate;
    slot->balance = balance > floor ? balance : floor;
    slot->last = now;
    if (balance >= 0)
        return 0;
    slot->limited++;
    if (r->slip && slot->limited % (unsigned long long)r->slip == 0) {
        r->slipped++;
        return 2;
    }
    r->dropped++;
    return 1;
}

static int
rrl_verdict_sockaddr(RrlObject *r, const struct sockaddr_storage *ss, double now)
{
    if (ss->ss_family == AF_INET)
        return rrl_verdict(r, 4, (const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr,
                           now);
    if (ss->ss_family == AF_INET6)
        return rrl_verdict(r, 6,
                           (const unsigned char *)&((const struct sockaddr_in6 *)ss)->sin6_addr,
                           now);
    return 0;
}

/* The truncated form of a response (rrl.truncated) of `n` bytes gathered in `d`; its length. */
static size_t
rrl_truncate(const unsigned char *d, size_t n, unsigned char *out)
{
    if (n < 12) {
        memcpy(out, d, n);
        return n;
    }
    size_t qlen = 0;
    if (((d[4] << 8) | d[5]) == 1) {
        size_t pos = 12;
        while (pos < n && d[pos] > 0 && d[pos] <= 63)
            pos += (size_t)d[pos] + 1;
        if (pos < n && d[pos] == 0 && pos + 5 <= n)
            qlen = pos + 5 - 12;
    }
    memcpy(out, d, 2);
    out[2] = d[2] | 0x02; /* TC */
    out[3] = d[3];
    memset(out + 4, 0, 8);
    out[5] = qlen ? 1 : 0;
    memcpy(out + 12, d + 12, qlen);
    return 12 + qlen;
}

static double
rrl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Apply the limiter to the queued answers of a batch: dropped ones leave the queue (their kept
   reference released), slipped ones are replaced by their truncated form, written into their
   datagram's own receive buffer (the answer is gathered first: it may live there). */
static void
rrl_filter(Batch *b, PyObject *limiter)
{
    RrlObject *r = (RrlObject *)limiter;
    if (r == NULL || r->slots == NULL || b->nout == 0) /* slots: NULL until __init__ ran */
        return;
    double now = rrl_now();
    int kept = 0;
    for (int k = 0; k < b->nout; k++) {
        struct msghdr *msg = &b->out[k].msg_hdr;
        const struct sockaddr_storage *ss = msg->msg_name;
        int verdict = rrl_verdict_sockaddr(r, ss, now);
        if (verdict == 1) {
            Py_XDECREF(b->keep[k]);
            continue;
        }
        if (verdict == 2) {
            unsigned char gathered[RRL_GATHER], small[RRL_GATHER];
            size_t n = 0;
            for (size_t v = 0; v < msg->msg_iovlen && n < RRL_GATHER; v++) {
                size_t take = msg->msg_iov[v].iov_len;
                if (take > RRL_GATHER - n)
                    take = RRL_GATHER - n;
                memcpy(gathered + n, msg->msg_iov[v].iov_base, take);
                n += take;
            }
            size_t len = rrl_truncate(gathered, n, small);
            unsigned char *buf = b->in_iov[ss - b->addr].iov_base;
            memcpy(buf, small, len);
            Py_XDECREF(b->keep[k]);
            b->keep[k] = NULL;
            b->out_iov[k][0].iov_base = buf;
            b->out_iov[k][0].iov_len = len;
            msg->msg_iovlen = 1;
        }
        if (kept != k) {
            b->out[kept] = b->out[k];
            b->out_iov[kept][0] = b->out_iov[k][0];
            b->out_iov[kept][1] = b->out_iov[k][1];
            b->keep[kept] = b->keep[k];
        }
        b->out[kept].msg_hdr.msg_iov = b->out_iov[kept];
        kept++;
    }
    b->nout = kept;
}

static int
Rrl_init(RrlObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"rate", "window", "slip", "ipv4_prefix", "ipv6_prefix", "exempt",
                               "table_size", NULL};
    double rate, window;
    long slip;
    int v4, v6;
    Py_ssize_t size;
    PyObject *exempt;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ddliiOn:Rrl", keywords, &rate, &window,
                                     &slip, &v4, &v6, &exempt, &size))
        return -1;
    if (!(rate > 0) || !(window > 0) || slip < 0 || v4 < 0 || v4 > 32 || v6 < 0 || v6 > 128 ||
        size < 1 || size > ((Py_ssize_t)1 << 28)) {
        PyErr_SetString(PyExc_ValueError, "Rrl: a value out of range");
        return -1;
    }
    PyObject *seq = PySequence_Fast(exempt, "exempt must be a sequence");
    if (seq == NULL)
        return -1;
    Py_ssize_t ne = PySequence_Fast_GET_SIZE(seq);
    if (ne > RRL_EXEMPT_MAX) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "at most %d exempt networks", RRL_EXEMPT_MAX);
        return -1;
    }
    for (Py_ssize_t e = 0; e < ne; e++) {
        int family, plen;
        const char *net;
        Py_ssize_t netlen;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, e), "iy#i", &family, &net, &netlen,
                              &plen) ||
            (family != 4 && family != 6) || netlen != (family == 4 ? 4 : 16) || plen < 0 ||
            plen > netlen * 8) {
            Py_DECREF(seq);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "exempt: (4 or 6, packed network, prefix)");
            return -1;
        }
        self->exempt[e].family = family;
        self->exempt[e].plen = plen;
        memset(self->exempt[e].net, 0, 16);
        memcpy(self->exempt[e].net, net, (size_t)netlen);
    }
    Py_DECREF(seq);
    size_t slots = RRL_PROBE;
    while (slots < (size_t)size * 2)
        slots <<= 1;
    RrlSlot *table = PyMem_Calloc(slots, sizeof *table);
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(self->slots);
    self->slots = table;
    self->mask = slots - 1;
    self->rate = rate;
    self->window = window;
    self->slip = slip;
    self->v4 = v4;
    self->v6 = v6;
    self->nexempt = (int)ne;
    self->dropped = self->slipped = 0;
    return 0;
}

static void
Rrl_dealloc(RrlObject *self)
{
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Rrl_check(RrlObject *self, PyObject *args)
{
    const char *ip;
    double now;
    unsigned char addr[16];
    if (self->slots == NULL)
        return PyErr_Format(PyExc_ValueError, "Rrl is not initialized");
    if (!PyArg_ParseTuple(args, "sd:check", &ip, &now))
        return NULL;
    int v6 = strchr(ip, ':') != NULL;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, ip, addr) != 1)
        return PyErr_Format(PyExc_ValueError, "not an IP address: %s", ip);
    return PyLong_FromLong(rrl_verdict(self, v6 ? 6 : 4, addr, now));
}

static PyMethodDef Rrl_methods[] = {
    {"check", (PyCFunction)Rrl_check, METH_VARARGS,
     "check(ip, now) -> 0 (send), 1 (drop) or 2 (slip), as geodns.rrl.RateLimiter.check"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Rrl_members[] = {
    {"dropped", T_ULONGLONG, offsetof(RrlObject, dropped), READONLY, "limited answers dropped"},
    {"slipped", T_ULONGLONG, offsetof(RrlObject, slipped), READONLY,
     "limited answers sent truncated"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RrlType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "geodns._fastudp.Rrl",
    .tp_basicsize = sizeof(RrlObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Rrl(rate, window, slip, ipv4_prefix, ipv6_prefix, exempt, table_size): the C "
              "loop's response rate limiter (see geodns/_rrl.h)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Rrl_init,
    .tp_dealloc = (destructor)Rrl_dealloc,
    .tp_methods = Rrl_methods,
    .tp_members = Rrl_members,
};
