/* The cold path in C: the usual UDP query answered from the engine's fast state, without
   Python, also for a client subnet never seen before. Included by _fastudp.c.

   state = Engine.fast_state(): (v4 starts, v4 prefix lengths, v4 values, v6 starts, v6 prefix
   lengths, v6 values, templates, dependent, origins, max_udp), the region map as bytes (starts
   native uint32 / uint64 of the upper 64 bits, values native uint16, SLOW = 0xFFFF).

   Rules (the same bytes as Engine._answer_fields; the tests compare the two):
   - Only a query that `scan` accepts, opcode 0, EDNS version 0, class IN or ANY is handled;
     everything else returns None and goes to Python.
   - The zone is the longest origin in `origins` (origin -> (existing names, NXDOMAIN parts or
     None)) that is the name or a suffix of it; none: None (Python answers REFUSED).
   - A name not in the zone's existing names, type not OPT/AXFR/IXFR/128-254, with NXDOMAIN
     parts: NXDOMAIN with the negative SOA, pointers into the question (answer.nxdomain_fast).
   - A zone tuple with a third item is signed: its NXDOMAIN with DO is left to Python.
   - Otherwise a template (flags, counts, location flag, body) from `templates`, keyed by the
     name, type, class (| 0x8000 with DO: signed answers differ) and the order index: 0xFFFE
     for a name not in `dependent`, else the region map's value for the ECS address (source
     prefix > 0, value not SLOW); not there: None (Python builds it and stores the template).
   - OPT and ECS echo, scope (the map entry's prefix when the template depends on location),
     and truncation to min(udp size, max_udp) (512 without EDNS) exactly as in Python. */

#define INDEPENDENT 0xFFFE
#define MAP_SLOW 0xFFFF

static void
put16(unsigned char *p, unsigned int v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

/* (value, prefix) of the entry holding key: binary search for the last start <= key */
static unsigned int
map_lookup(PyObject *starts, PyObject *plens, PyObject *vals, int wide, unsigned long long key,
           unsigned int *plen)
{
    Py_ssize_t n = PyBytes_GET_SIZE(plens), lo = 0, hi = n - 1;
    const char *sp = PyBytes_AS_STRING(starts);
    if (n <= 0)
        return MAP_SLOW;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi + 1) / 2;
        unsigned long long start;
        if (wide) {
            uint64_t v;
            memcpy(&v, sp + mid * 8, 8);
            start = v;
        } else {
            uint32_t v;
            memcpy(&v, sp + mid * 4, 4);
            start = v;
        }
        if (start <= key)
            lo = mid;
        else
            hi = mid - 1;
    }
    uint16_t val;
    memcpy(&val, PyBytes_AS_STRING(vals) + lo * 2, 2);
    *plen = (unsigned char)PyBytes_AS_STRING(plens)[lo];
    return val;
}

static int
state_ok(PyObject *st)
{
    if (!PyTuple_Check(st) || PyTuple_GET_SIZE(st) != 10)
        return 0;
    for (int i = 0; i < 6; i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(st, i)))
            return 0;
    return PyDict_Check(PyTuple_GET_ITEM(st, 6)) && PyAnySet_Check(PyTuple_GET_ITEM(st, 7)) &&
           PyDict_Check(PyTuple_GET_ITEM(st, 8)) && PyLong_Check(PyTuple_GET_ITEM(st, 9));
}

/* The zone tuple for the name (borrowed), or NULL (none, or an error is set). */
static PyObject *
find_zone(PyObject *origins, const unsigned char *name, Py_ssize_t len, Py_ssize_t *found_at)
{
    Py_ssize_t at = 0;
    while (at < len) {
        *found_at = at;
        PyObject *key = PyBytes_FromStringAndSize((const char *)name + at, len - at);
        if (key == NULL)
            return NULL;
        PyObject *zone = PyDict_GetItemWithError(origins, key);
        Py_DECREF(key);
        if (zone != NULL || PyErr_Occurred())
            return zone;
        if (name[at] == 0)
            break;
        at += name[at] + 1;
    }
    return NULL;
}

/* The response (new reference), Py_None (new reference: Python decides) or NULL (error). */
static PyObject *
build_common(const unsigned char *d, Py_ssize_t n, PyObject *st)
{
    Scan s;
    if (!scan(d, n, &s) || (s.flags & 0x7800) || s.version || (s.qclass != 1 && s.qclass != 255))
        Py_RETURN_NONE;
    PyObject *qname = lower_name(d, s.end);
    if (qname == NULL)
        return NULL;
    const unsigned char *name = (const unsigned char *)PyBytes_AS_STRING(qname);
    Py_ssize_t qlen = PyBytes_GET_SIZE(qname);
    Py_ssize_t at = 0; /* where the zone's origin starts in the name */
    PyObject *zone = find_zone(PyTuple_GET_ITEM(st, 8), name, qlen, &at);
    PyObject *result = NULL, *template = NULL;
    unsigned char nxbody[600];
    const unsigned char *body = NULL;
    Py_ssize_t body_len = 0;
    unsigned int eflags = 0, an = 0, ns = 0, ar = 0, located = 0, scope = 0;
    if (zone == NULL) {
        if (PyErr_Occurred())
            goto done;
        goto python;
    }
    /* (existing, NXDOMAIN parts) or, for a signed zone, (existing, parts, True) */
    if (!PyTuple_Check(zone) || PyTuple_GET_SIZE(zone) < 2 || PyTuple_GET_SIZE(zone) > 3)
        goto python;
    int exists = PySet_Contains(PyTuple_GET_ITEM(zone, 0), qname);
    if (exists < 0)
        goto done;
    unsigned int qt = s.qtype;
    if (!exists) {
        PyObject *parts = PyTuple_GET_ITEM(zone, 1);
        if (qt == 41 || qt == 251 || qt == 252 || (qt >= 128 && qt < 255) ||
            !PyTuple_Check(parts) || PyTuple_GET_SIZE(parts) != 4)
            goto python;
        if (s.dnssec_ok && PyTuple_GET_SIZE(zone) == 3)
            goto python; /* signed denial (geodns/dnssec) */
        /* zone_ptr fixed rdlen mname zone_ptr rname zone_ptr times */
        PyObject *fixed = PyTuple_GET_ITEM(parts, 0), *mname = PyTuple_GET_ITEM(parts, 1),
                 *rname = PyTuple_GET_ITEM(parts, 2), *times = PyTuple_GET_ITEM(parts, 3);
        Py_ssize_t fl = PyBytes_GET_SIZE(fixed), ml = PyBytes_GET_SIZE(mname),
                   rl = PyBytes_GET_SIZE(rname), tl = PyBytes_GET_SIZE(times);
        Py_ssize_t rdlen = ml + 2 + rl + 2 + tl;
        if (2 + fl + 2 + rdlen > (Py_ssize_t)sizeof nxbody)
            goto python;
        unsigned int ptr = 0xC000 | (unsigned int)(12 + at);
        unsigned char *p = nxbody;
        put16(p, ptr);
        p += 2;
        memcpy(p, PyBytes_AS_STRING(fixed), (size_t)fl);
        p += fl;
        put16(p, (unsigned int)rdlen);
        p += 2;
        memcpy(p, PyBytes_AS_STRING(mname), (size_t)ml);
        p += ml;
        put16(p, ptr);
        p += 2;
        memcpy(p, PyBytes_AS_STRING(rname), (size_t)rl);
        p += rl;
        put16(p, ptr);
        p += 2;
        memcpy(p, PyBytes_AS_STRING(times), (size_t)tl);
        p += tl;
        body = nxbody;
        body_len = p - nxbody;
        eflags = 0x0400 | 3;
        ns = 1;
    } else {
        int dependent = PySet_Contains(PyTuple_GET_ITEM(st, 7), qname);
        unsigned int val = INDEPENDENT;
        if (dependent < 0)
            goto done;
        if (dependent) {
            unsigned char full[16] = {0};
            if (!s.source)
                goto python;
            memcpy(full, d + s.addr_at, (size_t)s.addr_len);
            unsigned long long key = 0;
            int wide = s.family == 2;
            for (int i = 0; i < (wide ? 8 : 4); i++)
                key = (key << 8) | full[i];
            int base = wide ? 3 : 0;
            val = map_lookup(PyTuple_GET_ITEM(st, base), PyTuple_GET_ITEM(st, base + 1),
                             PyTuple_GET_ITEM(st, base + 2), wide, key, &scope);
            if (val == MAP_SLOW)
                goto python;
        }
        PyObject *tkey = PyBytes_FromStringAndSize(NULL, qlen + 6);
        if (tkey == NULL)
            goto done;
        unsigned char *k = (unsigned char *)PyBytes_AS_STRING(tkey);
        memcpy(k, name, (size_t)qlen);
        put16(k + qlen, s.qtype);
        put16(k + qlen + 2, s.qclass | (s.dnssec_ok ? 0x8000 : 0)); /* DO: signed templates */
        put16(k + qlen + 4, val);
        template = PyDict_GetItemWithError(PyTuple_GET_ITEM(st, 6), tkey);
        Py_DECREF(tkey);
        if (template == NULL) {
            if (PyErr_Occurred())
                goto done;
            goto python;
        }
        if (!PyBytes_Check(template) || PyBytes_GET_SIZE(template) < 9)
            goto python;
        const unsigned char *t = (const unsigned char *)PyBytes_AS_STRING(template);
        eflags = u16(t);
        an = u16(t + 2);
        ns = u16(t + 4);
        ar = u16(t + 6);
        located = t[8];
        body = t + 9;
        body_len = PyBytes_GET_SIZE(template) - 9;
    }
    {
        long max_udp = PyLong_AsLong(PyTuple_GET_ITEM(st, 9));
        Py_ssize_t qsec = s.pos - 12, opt_len = 0, elen = 0;
        if (s.udp_size >= 0)
            opt_len = 11 + (s.family ? (elen = 8 + s.addr_len) : 0);
        Py_ssize_t total = 12 + qsec + body_len + opt_len;
        long limit = s.udp_size < 0 ? 512 : (s.udp_size < max_udp ? s.udp_size : max_udp);
        int truncated = total > limit;
        if (truncated)
            total = 12 + qsec + opt_len;
        result = PyBytes_FromStringAndSize(NULL, total);
        if (result == NULL)
            goto done;
        unsigned char *o = (unsigned char *)PyBytes_AS_STRING(result);
        unsigned int out_flags = 0x8000 | (s.flags & 0x7910) | eflags | (truncated ? 0x0200 : 0);
        unsigned int extra = opt_len ? 1 : 0;
        put16(o, s.id);
        put16(o + 2, out_flags);
        put16(o + 4, 1);
        put16(o + 6, truncated ? 0 : an);
        put16(o + 8, truncated ? 0 : ns);
        put16(o + 10, (truncated ? 0 : ar) + extra);
        memcpy(o + 12, d + 12, (size_t)qsec);
        o += 12 + qsec;
        if (!truncated) {
            memcpy(o, body, (size_t)body_len);
            o += body_len;
        }
        if (opt_len) {
            o[0] = 0;
            put16(o + 1, 41);
            put16(o + 3, (unsigned int)max_udp);
            put16(o + 5, 0);
            put16(o + 7, s.dnssec_ok ? 0x8000 : 0);
            put16(o + 9, (unsigned int)elen);
            if (elen) {
                put16(o + 11, 8);
                put16(o + 13, (unsigned int)(4 + s.addr_len));
                put16(o + 15, (unsigned int)s.family);
                o[17] = (unsigned char)s.source;
                o[18] = (unsigned char)(located ? scope : 0);
                memcpy(o + 19, d + s.addr_at, (size_t)s.addr_len);
            }
        }
    }
    goto done;
python:
    result = Py_None;
    Py_INCREF(result);
done:
    Py_DECREF(qname);
    return result;
}
