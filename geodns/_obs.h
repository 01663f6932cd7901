/* Observation in C: the query counters behind geodns/metrics.py and the query log's encoder
   behind geodns/querylog.py. Included by _fastudp.c.

   obs_new(log=None) -> capsule: one server's counters (and, with `log`, its query log). The C
   loop (serve(..., obs=capsule)) counts every datagram it answers or drops, whichever path
   answered it; the Python paths (TCP, the pure-Python UDP loop) call obs_note() once per query.
   Every access holds the GIL, so the counters are plain integers without atomics.

   Counted per query (obs_read() returns them; the metrics collector labels them at scrape):
   - answers by (proto, qtype, rcode, answer address): rcode is the header's 4 bits; the answer
     address is the rdata of the first A or AAAA record of the answer section (none: all
     zero), which the collector maps to the edge's region. At most OBS_SLOTS distinct keys;
     further keys count in `overflow` (the collector labels them qtype="other").
   - ECS present/absent in the query (an OPT carrying option 8), per proto;
   - paths: answered from the wire cache in C, built by the C cold path (a region-map hit),
     answered by Python, not answered (dropped), per the C loop only;
   - latency: seconds from the batch's receipt to its sendmmsg() (every datagram of a batch
     gets the batch's time), or the Python path's measured time, in fixed buckets, per proto.

   Query log (log = (format, sample, chunk_size, on_chunk, identity, version)): format 0 JSON
   lines, 1 dnstap data frames (Frame Streams, protobuf dnstap.Dnstap, one AUTH_RESPONSE
   message holding the query and the response). One query in `sample` is encoded into a
   buffer; a full buffer (chunk_size bytes) is handed to on_chunk(bytes, records) and a new
   one started; obs_take() returns what is buffered (the writer thread calls it to flush). The
   file, the Frame Streams control frames and the thread are Python's (geodns/querylog.py). */

#include <time.h>

#define OBS_SLOTS 4096
#define OBS_BUCKETS 16
#define OBS_PROTOS 2 /* 0 udp, 1 tcp */

static const double obs_bounds[OBS_BUCKETS] = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005,   0.01,     0.025,   0.05,   0.1,    0.25,   0.5,   1.0};

typedef struct {
    uint64_t count;
    uint16_t qtype;
    uint8_t proto, rcode, family, used;
    unsigned char addr[16];
} ObsSlot;

typedef struct {
    int format, sample;
    Py_ssize_t chunk_size;
    PyObject *on_chunk, *identity, *version; /* identity/version: bytes */
    unsigned long long seen, records;
    char *buf;
    Py_ssize_t len;
} ObsLog;

typedef struct {
    ObsSlot slots[OBS_SLOTS];
    uint64_t overflow[OBS_PROTOS];
    uint64_t unanswered[OBS_PROTOS];
    uint64_t ecs[OBS_PROTOS][2];
    uint64_t paths[4]; /* cache, cold, python, dropped (C loop) */
    uint64_t lat[OBS_PROTOS][OBS_BUCKETS + 1];
    double lat_sum[OBS_PROTOS];
    uint64_t pending; /* queries of the current batch, for its latency */
    ObsLog *log;
} Obs;

#define OBS_CACHE 0
#define OBS_COLD 1
#define OBS_PYTHON 2
#define OBS_DROPPED 3

static void
obs_free(PyObject *capsule)
{
    Obs *o = PyCapsule_GetPointer(capsule, "geodns.obs");
    if (o == NULL)
        return;
    if (o->log != NULL) {
        Py_XDECREF(o->log->on_chunk);
        Py_XDECREF(o->log->identity);
        Py_XDECREF(o->log->version);
        PyMem_Free(o->log->buf);
        PyMem_Free(o->log);
    }
    PyMem_Free(o);
}

static Obs *
obs_of(PyObject *capsule)
{
    return PyCapsule_GetPointer(capsule, "geodns.obs");
}

/* Skip a possibly compressed name at pos; -1 when it runs out of the n bytes. */
static Py_ssize_t
skip_name(const unsigned char *d, Py_ssize_t n, Py_ssize_t pos)
{
    while (pos < n) {
        unsigned int c = d[pos];
        if (c == 0)
            return pos + 1;
        if ((c & 0xC0) == 0xC0)
            return pos + 2 <= n ? pos + 2 : -1;
        if (c > 63)
            return -1;
        pos += (Py_ssize_t)c + 1;
    }
    return -1;
}

/* The query's qtype (0 when it has no readable question) and whether it has an ECS option. */
static void
query_info(const unsigned char *d, Py_ssize_t n, unsigned int *qtype, int *ecs)
{
    *qtype = 0;
    *ecs = 0;
    if (n < 12 || u16(d + 4) < 1)
        return;
    Py_ssize_t end = skip_name(d, n, 12);
    if (end < 0 || end + 4 > n)
        return;
    *qtype = u16(d + end);
    if (u16(d + 4) != 1 || u16(d + 6) || u16(d + 8) || u16(d + 10) != 1)
        return;
    Py_ssize_t pos = end + 4; /* the one additional record: an OPT? */
    if (pos + 11 > n || d[pos] != 0 || u16(d + pos + 1) != 41)
        return;
    Py_ssize_t at = pos + 11, stop = at + u16(d + pos + 9);
    if (stop > n)
        return;
    while (at + 4 <= stop) {
        if (u16(d + at) == 8) {
            *ecs = 1;
            return;
        }
        at += 4 + u16(d + at + 2);
    }
}

/* rcode and the first A/AAAA address of a response given without its 2-byte ID (`r`, `n`). */
static int
answer_info(const unsigned char *r, Py_ssize_t n, unsigned char *family, unsigned char *addr)
{
    *family = 0;
    memset(addr, 0, 16);
    if (n < 10)
        return 0;
    int rcode = r[1] & 0xF;
    unsigned int qd = u16(r + 2), an = u16(r + 4);
    Py_ssize_t pos = 10;
    for (unsigned int i = 0; i < qd && pos >= 0; i++) {
        pos = skip_name(r, n, pos);
        pos = pos < 0 ? -1 : pos + 4;
    }
    for (unsigned int i = 0; i < an && i < 16 && pos >= 0 && pos <= n; i++) {
        pos = skip_name(r, n, pos);
        if (pos < 0 || pos + 10 > n)
            break;
        unsigned int type = u16(r + pos), rdlen = u16(r + pos + 8);
        pos += 10;
        if (pos + (Py_ssize_t)rdlen > n)
            break;
        if ((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16)) {
            *family = type == 1 ? 4 : 6;
            memcpy(addr, r + pos, rdlen);
            break;
        }
        pos += rdlen;
    }
    return rcode;
}

static void
obs_count(Obs *o, int proto, unsigned int qtype, int rcode, unsigned char family,
          const unsigned char *addr)
{
    uint32_t h = 2166136261u; /* FNV-1a of the key */
    unsigned char key[20] = {(unsigned char)proto, (unsigned char)(qtype >> 8),
                             (unsigned char)qtype, (unsigned char)rcode};
    memcpy(key + 4, addr, 16);
    key[0] |= (unsigned char)(family << 4);
    for (int i = 0; i < 20; i++)
        h = (h ^ key[i]) * 16777619u;
    for (int probe = 0; probe < 64; probe++) {
        ObsSlot *s = &o->slots[(h + (uint32_t)probe) % OBS_SLOTS];
        if (!s->used) {
            s->used = 1;
            s->proto = (uint8_t)proto;
            s->qtype = (uint16_t)qtype;
            s->rcode = (uint8_t)rcode;
            s->family = family;
            memcpy(s->addr, addr, 16);
        } else if (s->proto != proto || s->qtype != qtype || s->rcode != rcode ||
                   s->family != family || memcmp(s->addr, addr, 16)) {
            continue;
        }
        s->count++;
        return;
    }
    o->overflow[proto]++;
}

static void
obs_latency(Obs *o, int proto, double seconds, uint64_t queries)
{
    int k = 0;
    while (k < OBS_BUCKETS && seconds > obs_bounds[k])
        k++;
    o->lat[proto][k] += queries;
    o->lat_sum[proto] += seconds * (double)queries;
}

/* -- the query log's encoders ------------------------------------------------------------ */

static int
log_reserve(ObsLog *lg, Py_ssize_t more)
{
    if (lg->len + more <= lg->chunk_size)
        return 0;
    if (lg->len > 0) { /* hand the full chunk over, start a new one */
        PyObject *chunk = PyBytes_FromStringAndSize(lg->buf, lg->len);
        if (chunk == NULL)
            return -1;
        PyObject *r = PyObject_CallFunction(lg->on_chunk, "NK", chunk, lg->records);
        lg->len = 0;
        lg->records = 0;
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    if (more > lg->chunk_size) { /* one record larger than a chunk: grow for it */
        char *bigger = PyMem_Realloc(lg->buf, (size_t)more);
        if (bigger == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        lg->buf = bigger;
        lg->chunk_size = more;
    }
    return 0;
}

static unsigned char *
pb_varint(unsigned char *p, unsigned long long v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

static unsigned char *
pb_bytes(unsigned char *p, unsigned int field, const void *data, Py_ssize_t len)
{
    p = pb_varint(p, (field << 3) | 2);
    p = pb_varint(p, (unsigned long long)len);
    memcpy(p, data, (size_t)len);
    return p + len;
}

static unsigned char *
pb_fixed32(unsigned char *p, unsigned int field, uint32_t v)
{
    p = pb_varint(p, (field << 3) | 5);
    for (int i = 0; i < 4; i++)
        *p++ = (unsigned char)(v >> (8 * i));
    return p;
}

static int
varint_len(unsigned long long v)
{
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* One dnstap data frame: 4-byte length, Dnstap{identity, version, message, type MESSAGE}. */
static int
log_dnstap(ObsLog *lg, const struct sockaddr_storage *ss, const struct sockaddr_storage *local,
           int proto, const struct timespec *t, const unsigned char *q, Py_ssize_t qn,
           const unsigned char *id, const unsigned char *r, Py_ssize_t rn)
{
    unsigned char msg[128], *m = msg;
    const void *ip;
    Py_ssize_t iplen;
    unsigned int port;
    if (ss->ss_family == AF_INET6) {
        ip = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        iplen = 16;
        port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    } else {
        ip = &((const struct sockaddr_in *)ss)->sin_addr;
        iplen = 4;
        port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
    }
    Py_ssize_t rlen = rn + (id != NULL ? 2 : 0);
    m = pb_varint(m, (1 << 3) | 0);
    m = pb_varint(m, r != NULL ? 2 : 1); /* AUTH_RESPONSE, or AUTH_QUERY when not answered */
    m = pb_varint(m, (2 << 3) | 0);
    m = pb_varint(m, iplen == 16 ? 2 : 1); /* INET6 / INET */
    m = pb_varint(m, (3 << 3) | 0);
    m = pb_varint(m, proto == 1 ? 2 : 1); /* TCP / UDP */
    m = pb_bytes(m, 4, ip, iplen);
    if (local != NULL && local->ss_family == ss->ss_family) { /* the server's address */
        if (local->ss_family == AF_INET6) {
            m = pb_bytes(m, 5, &((const struct sockaddr_in6 *)local)->sin6_addr, 16);
            m = pb_varint(m, (7 << 3) | 0);
            m = pb_varint(m, ntohs(((const struct sockaddr_in6 *)local)->sin6_port));
        } else {
            m = pb_bytes(m, 5, &((const struct sockaddr_in *)local)->sin_addr, 4);
            m = pb_varint(m, (7 << 3) | 0);
            m = pb_varint(m, ntohs(((const struct sockaddr_in *)local)->sin_port));
        }
    }
    m = pb_varint(m, (6 << 3) | 0);
    m = pb_varint(m, port);
    m = pb_varint(m, (8 << 3) | 0);
    m = pb_varint(m, (unsigned long long)t->tv_sec);
    m = pb_fixed32(m, 9, (uint32_t)t->tv_nsec);
    if (r != NULL) {
        m = pb_varint(m, (12 << 3) | 0);
        m = pb_varint(m, (unsigned long long)t->tv_sec);
        m = pb_fixed32(m, 13, (uint32_t)t->tv_nsec);
    }
    Py_ssize_t head = m - msg;
    Py_ssize_t body = head + 1 + varint_len((unsigned long long)qn) + qn;
    if (r != NULL)
        body += 1 + varint_len((unsigned long long)rlen) + rlen;
    Py_ssize_t idn = PyBytes_GET_SIZE(lg->identity), vn = PyBytes_GET_SIZE(lg->version);
    Py_ssize_t outer = (idn ? 1 + varint_len((unsigned long long)idn) + idn : 0) +
                       (vn ? 1 + varint_len((unsigned long long)vn) + vn : 0) + 1 +
                       varint_len((unsigned long long)body) + body + 2;
    if (log_reserve(lg, 4 + outer) < 0)
        return -1;
    unsigned char *p = (unsigned char *)lg->buf + lg->len;
    p[0] = (unsigned char)(outer >> 24);
    p[1] = (unsigned char)(outer >> 16);
    p[2] = (unsigned char)(outer >> 8);
    p[3] = (unsigned char)outer;
    p += 4;
    if (idn)
        p = pb_bytes(p, 1, PyBytes_AS_STRING(lg->identity), idn);
    if (vn)
        p = pb_bytes(p, 2, PyBytes_AS_STRING(lg->version), vn);
    p = pb_varint(p, (14 << 3) | 2);
    p = pb_varint(p, (unsigned long long)body);
    memcpy(p, msg, (size_t)head);
    p += head;
    p = pb_bytes(p, 10, q, qn);
    if (r != NULL) {
        p = pb_varint(p, (14 << 3) | 2);
        p = pb_varint(p, (unsigned long long)rlen);
        if (id != NULL) {
            memcpy(p, id, 2);
            p += 2;
        }
        memcpy(p, r, (size_t)rn);
        p += rn;
    }
    p = pb_varint(p, (15 << 3) | 0);
    p = pb_varint(p, 1); /* MESSAGE */
    lg->len = (char *)p - lg->buf;
    return 0;
}

static const char *
qtype_name(unsigned int t)
{
    switch (t) {
    case 1: return "A";
    case 2: return "NS";
    case 5: return "CNAME";
    case 6: return "SOA";
    case 12: return "PTR";
    case 15: return "MX";
    case 16: return "TXT";
    case 28: return "AAAA";
    case 33: return "SRV";
    case 35: return "NAPTR";
    case 41: return "OPT";
    case 43: return "DS";
    case 46: return "RRSIG";
    case 47: return "NSEC";
    case 48: return "DNSKEY";
    case 50: return "NSEC3";
    case 64: return "SVCB";
    case 65: return "HTTPS";
    case 251: return "IXFR";
    case 252: return "AXFR";
    case 255: return "ANY";
    case 257: return "CAA";
    default: return NULL;
    }
}

static const char *const rcode_names[16] = {
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "DSOTYPENI", "RCODE12", "RCODE13", "RCODE14", "RCODE15"};

/* The query's name in presentation form, JSON-escaped ("\\DDD" for odd bytes), at most 1100
   bytes (a 255-byte name needs at most 4 * 255 + 1 + quotes). Returns the end. */
static char *
json_qname(char *p, const unsigned char *d, Py_ssize_t n)
{
    Py_ssize_t pos = 12;
    int labels = 0;
    while (pos < n && d[pos] != 0 && d[pos] <= 63 && pos + 1 + d[pos] <= n &&
           pos + 1 + d[pos] - 12 < 255) {
        unsigned int len = d[pos++];
        for (unsigned int i = 0; i < len; i++) {
            unsigned char c = d[pos++];
            if (c == '.')
                p += sprintf(p, "\\\\.");
            else if (c == '\\')
                p += sprintf(p, "\\\\\\\\");
            else if (c == '"')
                p += sprintf(p, "\\\\\\\"");
            else if (c < 0x21 || c > 0x7E)
                p += sprintf(p, "\\\\%03u", c);
            else
                *p++ = (char)c;
        }
        *p++ = '.';
        labels++;
    }
    if (labels == 0)
        *p++ = '.';
    return p;
}

static char *
put_s(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static char *
put_u(char *p, unsigned long long v, int width) /* width: zero-pad to at least this */
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v || n < width);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* An address in text (family 4 or 6), written here: glibc's inet_ntop formats IPv6 groups
   with sprintf, which made the JSON log several times dearer than dnstap. */
static char *
put_ip(char *p, int family, const unsigned char *a)
{
    if (family == 4) {
        for (int i = 0; i < 4; i++) {
            if (i)
                *p++ = '.';
            p = put_u(p, a[i], 1);
        }
        return p;
    }
    /* RFC 5952, as Python's ipaddress writes it: lower-case hex without leading zeros, the
       longest run (the first of equals) of two or more zero groups as "::" */
    static const char hex[] = "0123456789abcdef";
    unsigned int g[8];
    int best = -1, best_len = 0;
    for (int i = 0; i < 8; i++)
        g[i] = ((unsigned int)a[2 * i] << 8) | a[2 * i + 1];
    for (int i = 0; i < 8;) {
        int j = i;
        while (j < 8 && g[j] == 0)
            j++;
        if (j - i > best_len && j - i >= 2) {
            best = i;
            best_len = j - i;
        }
        i = j > i ? j : i + 1;
    }
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            *p++ = ':';
            *p++ = ':';
            i += best_len - 1;
            continue;
        }
        if (i && i != best + best_len)
            *p++ = ':';
        int started = 0;
        for (int shift = 12; shift >= 0; shift -= 4) {
            unsigned int d = (g[i] >> shift) & 0xF;
            if (d || started || shift == 0) {
                *p++ = hex[d];
                started = 1;
            }
        }
    }
    return p;
}

/* One JSON line: time, client, port, proto, id, qname, qtype, rcode, ecs, size, answer. */
static int
log_json(ObsLog *lg, const struct sockaddr_storage *ss, int proto, const struct timespec *t,
         const unsigned char *q, Py_ssize_t qn, const unsigned char *r, Py_ssize_t rn,
         unsigned int qtype, int has_ecs, int rcode, unsigned char family,
         const unsigned char *addr)
{
    unsigned int port;
    int client_family;
    const unsigned char *client;
    if (ss->ss_family == AF_INET6) {
        client = (const unsigned char *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
        port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
        client_family = 6;
    } else {
        client = (const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr;
        port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
        client_family = 4;
    }
    Scan s;
    int scanned = has_ecs && scan(q, qn, &s); /* for the ECS address and source prefix */
    if (log_reserve(lg, 1600) < 0)
        return -1;
    char *p = lg->buf + lg->len;
    p = put_s(p, "{\"time\":");
    p = put_u(p, (unsigned long long)t->tv_sec, 1);
    *p++ = '.';
    p = put_u(p, (unsigned long long)(t->tv_nsec / 1000), 6);
    p = put_s(p, ",\"client\":\"");
    p = put_ip(p, client_family, client);
    p = put_s(p, "\",\"port\":");
    p = put_u(p, port, 1);
    p = put_s(p, proto ? ",\"proto\":\"tcp\",\"id\":" : ",\"proto\":\"udp\",\"id\":");
    p = put_u(p, qn >= 2 ? u16(q) : 0, 1);
    p = put_s(p, ",\"qname\":\"");
    p = json_qname(p, q, qn);
    p = put_s(p, "\",\"qtype\":\"");
    const char *name = qtype_name(qtype);
    if (name == NULL) {
        p = put_s(p, "TYPE");
        p = put_u(p, qtype, 1);
    } else {
        p = put_s(p, name);
    }
    p = put_s(p, "\",\"rcode\":");
    if (rcode < 0) {
        p = put_s(p, "null");
    } else {
        *p++ = '"';
        p = put_s(p, rcode_names[rcode]);
        *p++ = '"';
    }
    p = put_s(p, ",\"ecs\":");
    if (scanned && s.family) {
        unsigned char a[16] = {0};
        memcpy(a, q + s.addr_at, (size_t)s.addr_len);
        *p++ = '"';
        p = put_ip(p, s.family == 1 ? 4 : 6, a);
        *p++ = '/';
        p = put_u(p, (unsigned long long)s.source, 1);
        *p++ = '"';
    } else {
        p = put_s(p, "null");
    }
    p = put_s(p, ",\"size\":");
    p = put_u(p, r != NULL ? (unsigned long long)(rn + 2) : 0, 1);
    p = put_s(p, ",\"answer\":");
    if (r != NULL && family) {
        *p++ = '"';
        p = put_ip(p, family, addr);
        *p++ = '"';
    } else {
        p = put_s(p, "null");
    }
    p = put_s(p, "}\n");
    lg->len = p - lg->buf;
    return 0;
}

/* Count (and maybe log) one query and its response: `r`, `rn` the response after its ID
   (NULL: no answer); `id` the response's ID bytes (NULL: r is the full response less 2). */
static int
obs_query(Obs *o, int proto, const unsigned char *q, Py_ssize_t qn, const unsigned char *r,
          Py_ssize_t rn, const struct sockaddr_storage *ss, const struct sockaddr_storage *local,
          const struct timespec *now)
{
    unsigned int qtype;
    int ecs, rcode = -1;
    unsigned char family = 0, addr[16];
    query_info(q, qn, &qtype, &ecs);
    o->ecs[proto][ecs]++;
    if (r != NULL) {
        rcode = answer_info(r, rn, &family, addr);
        obs_count(o, proto, qtype, rcode, family, addr);
    } else {
        o->unanswered[proto]++;
    }
    ObsLog *lg = o->log;
    if (lg == NULL || ss == NULL || lg->seen++ % (unsigned long long)lg->sample)
        return 0;
    lg->records++;
    if (lg->format == 1)
        return log_dnstap(lg, ss, local, proto, now, q, qn, qn >= 2 ? q : NULL, r, rn);
    return log_json(lg, ss, proto, now, q, qn, r, rn, qtype, ecs, rcode, family, addr);
}

/* -- the C loop's hooks (declared in _fastudp.c) ------------------------------------------ */

static void *
obs_arg(PyObject *capsule)
{
    return capsule == Py_None ? NULL : PyCapsule_GetPointer(capsule, "geodns.obs");
}

static int
obs_log_on(void *obs)
{
    return ((Obs *)obs)->log != NULL;
}

/* Datagram (q, qn) from ss answered by `path` with `resp` (NULL: not answered; with_id: resp
   is the answer after the ID). 0, or -1 with a Python error set (the query log's callback). */
static int
obs_answered(void *obs, int path, const unsigned char *q, Py_ssize_t qn, PyObject *resp,
             int with_id, const struct sockaddr_storage *ss, const struct sockaddr_storage *local,
             const struct timespec *now)
{
    Obs *o = obs;
    const unsigned char *r = NULL;
    Py_ssize_t rn = 0;
    o->paths[resp == NULL ? OBS_DROPPED : path]++;
    o->pending++;
    if (resp != NULL) {
        r = (const unsigned char *)PyBytes_AS_STRING(resp);
        rn = PyBytes_GET_SIZE(resp);
        if (!with_id && rn >= 2) {
            r += 2;
            rn -= 2;
        }
    }
    return obs_query(o, 0, q, qn, r, rn, ss, local, now);
}

static void
obs_batch_done(void *obs, const struct timespec *start)
{
    Obs *o = obs;
    struct timespec end;
    if (o->pending == 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (double)(end.tv_sec - start->tv_sec) +
                     (double)(end.tv_nsec - start->tv_nsec) / 1e9;
    obs_latency(o, 0, seconds, o->pending);
    o->pending = 0;
}

/* -- the Python API ------------------------------------------------------------------------ */

static PyObject *
obs_new(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"log", NULL};
    PyObject *log = Py_None;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:obs_new", keywords, &log))
        return NULL;
    ObsLog *lg = NULL;
    if (log != Py_None) {
        int format, sample;
        Py_ssize_t chunk;
        PyObject *on_chunk, *identity, *version;
        if (!PyArg_ParseTuple(log, "iinOSS:obs_new log", &format, &sample, &chunk, &on_chunk,
                              &identity, &version))
            return NULL;
        if ((format != 0 && format != 1) || sample < 1 || chunk < 4096 ||
            !PyCallable_Check(on_chunk))
            return PyErr_Format(PyExc_ValueError, "obs_new: bad log settings");
        lg = PyMem_Calloc(1, sizeof *lg);
        if (lg == NULL || (lg->buf = PyMem_Malloc((size_t)chunk)) == NULL) {
            PyMem_Free(lg);
            return PyErr_NoMemory();
        }
        lg->format = format;
        lg->sample = sample;
        lg->chunk_size = chunk;
        Py_INCREF(on_chunk);
        Py_INCREF(identity);
        Py_INCREF(version);
        lg->on_chunk = on_chunk;
        lg->identity = identity;
        lg->version = version;
    }
    Obs *o = PyMem_Calloc(1, sizeof *o);
    if (o == NULL) {
        if (lg != NULL) {
            Py_DECREF(lg->on_chunk);
            Py_DECREF(lg->identity);
            Py_DECREF(lg->version);
            PyMem_Free(lg->buf);
            PyMem_Free(lg);
        }
        return PyErr_NoMemory();
    }
    o->log = lg;
    PyObject *capsule = PyCapsule_New(o, "geodns.obs", obs_free);
    if (capsule == NULL) {
        PyMem_Free(o);
        return NULL;
    }
    return capsule;
}

/* `text` (an IPv4 or IPv6 address; anything else: 0.0.0.0) and port as a socket address */
static void
sockaddr_of(const char *text, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (text[0] == 0) /* none: AF_UNSPEC */
        return;
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        return;
    }
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, text, &s4->sin_addr) != 1)
        s4->sin_addr.s_addr = 0;
}

/* obs_note(obs, query, response, proto, seconds, client_ip, port, server_ip="", server_port=0):
   one query of a Python path (proto 0 udp, 1 tcp); response None when not answered. */
static PyObject *
obs_note(PyObject *module, PyObject *args)
{
    PyObject *capsule, *resp;
    Py_buffer q;
    int proto, port, server_port = 0;
    double seconds;
    const char *ip, *server_ip = "";
    (void)module;
    if (!PyArg_ParseTuple(args, "Oy*Oidsi|si:obs_note", &capsule, &q, &resp, &proto, &seconds,
                          &ip, &port, &server_ip, &server_port))
        return NULL;
    Obs *o = obs_of(capsule);
    PyObject *result = NULL;
    if (o == NULL)
        goto done;
    if ((resp != Py_None && !PyBytes_Check(resp)) || proto < 0 || proto >= OBS_PROTOS) {
        PyErr_SetString(PyExc_TypeError, "obs_note: response must be bytes or None, proto 0/1");
        goto done;
    }
    struct sockaddr_storage ss, local;
    sockaddr_of(ip, port, &ss);
    sockaddr_of(server_ip, server_port, &local);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    const unsigned char *r = NULL;
    Py_ssize_t rn = 0;
    if (resp != Py_None && PyBytes_GET_SIZE(resp) >= 2) {
        r = (const unsigned char *)PyBytes_AS_STRING(resp) + 2;
        rn = PyBytes_GET_SIZE(resp) - 2;
    }
    obs_latency(o, proto, seconds, 1);
    if (obs_query(o, proto, q.buf, q.len, r, rn, &ss, &local, &now) < 0)
        goto done;
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&q);
    return result;
}

/* (answers, overflow, unanswered, ecs, paths, latency): answers a list of (proto, qtype,
   rcode, family, address bytes, count); overflow and unanswered (udp, tcp); ecs ((udp absent, present), (tcp ...));
   paths (cache, cold, python, dropped); latency per proto (bucket counts..., +Inf count,
   sum) with the buckets' bounds in obs_bounds(). */
static PyObject *
obs_read(PyObject *module, PyObject *capsule)
{
    (void)module;
    Obs *o = obs_of(capsule);
    if (o == NULL)
        return NULL;
    PyObject *answers = PyList_New(0);
    if (answers == NULL)
        return NULL;
    for (int i = 0; i < OBS_SLOTS; i++) {
        ObsSlot *s = &o->slots[i];
        if (!s->used)
            continue;
        PyObject *t = Py_BuildValue("(iiiiy#K)", s->proto, s->qtype, s->rcode, s->family,
                                    (const char *)s->addr, (Py_ssize_t)(s->family == 4 ? 4 : 16),
                                    (unsigned long long)s->count);
        if (t == NULL || PyList_Append(answers, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(answers);
            return NULL;
        }
        Py_DECREF(t);
    }
    PyObject *lat[OBS_PROTOS];
    for (int p = 0; p < OBS_PROTOS; p++) {
        lat[p] = PyTuple_New(OBS_BUCKETS + 2);
        if (lat[p] == NULL) {
            Py_DECREF(answers);
            if (p)
                Py_DECREF(lat[0]);
            return NULL;
        }
        for (int k = 0; k <= OBS_BUCKETS; k++)
            PyTuple_SET_ITEM(lat[p], k, PyLong_FromUnsignedLongLong(o->lat[p][k]));
        PyTuple_SET_ITEM(lat[p], OBS_BUCKETS + 1, PyFloat_FromDouble(o->lat_sum[p]));
    }
    return Py_BuildValue("(N(KK)(KK)((KK)(KK))(KKKK)(NN))", answers,
                         (unsigned long long)o->overflow[0], (unsigned long long)o->overflow[1],
                         (unsigned long long)o->unanswered[0],
                         (unsigned long long)o->unanswered[1],
                         (unsigned long long)o->ecs[0][0], (unsigned long long)o->ecs[0][1],
                         (unsigned long long)o->ecs[1][0], (unsigned long long)o->ecs[1][1],
                         (unsigned long long)o->paths[0], (unsigned long long)o->paths[1],
                         (unsigned long long)o->paths[2], (unsigned long long)o->paths[3],
                         lat[0], lat[1]);
}

static PyObject *
obs_bounds_py(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    PyObject *t = PyTuple_New(OBS_BUCKETS);
    for (int k = 0; t != NULL && k < OBS_BUCKETS; k++)
        PyTuple_SET_ITEM(t, k, PyFloat_FromDouble(obs_bounds[k]));
    return t;
}

/* (bytes buffered, records in them), emptying the buffer: the writer's flush. */
static PyObject *
obs_take(PyObject *module, PyObject *capsule)
{
    (void)module;
    Obs *o = obs_of(capsule);
    if (o == NULL)
        return NULL;
    ObsLog *lg = o->log;
    if (lg == NULL)
        return Py_BuildValue("(y#K)", "", (Py_ssize_t)0, 0ULL);
    PyObject *out = Py_BuildValue("(y#K)", lg->buf, lg->len, lg->records);
    if (out != NULL) {
        lg->len = 0;
        lg->records = 0;
    }
    return out;
}

#define OBS_METHODS                                                                            \
    {"obs_new", (PyCFunction)(void (*)(void))obs_new, METH_VARARGS | METH_KEYWORDS,            \
     "obs_new(log=None)\n--\n\nA server's counters (and query log): see geodns/_obs.h."},    \
    {"obs_note", obs_note, METH_VARARGS,                                                       \
     "obs_note(obs, query, response, proto, seconds, client_ip, port)\n--\n\n"               \
     "Count (and log) one query answered by a Python path."},                                  \
    {"obs_read", obs_read, METH_O, "obs_read(obs)\n--\n\nThe counters (see geodns/_obs.h)."}, \
    {"obs_bounds", obs_bounds_py, METH_NOARGS,                                                 \
     "obs_bounds()\n--\n\nThe latency histogram's bucket bounds in seconds."},                \
    {"obs_take", obs_take, METH_O,                                                             \
     "obs_take(obs)\n--\n\n(bytes, records) buffered by the query log, emptying it."},
