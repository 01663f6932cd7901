/* The fast state compiled for C: the cold path of _coldpath.h without Python objects per query.
   Included by _fastudp.c after _coldpath.h.

   Engine.fast_state() is a tuple of bytes, sets and dicts (see _coldpath.h); looking names up
   in those costs a bytes object and a SipHash per look-up, and the region map's binary search
   over ~125,000 IPv4 and ~176,000 IPv6 starts misses the CPU caches on most of its ~17 steps.
   So the first time a state is seen, fast_compile() turns it into a Fast (kept in a capsule,
   one at a time: the newest state's), and every query answered through it reads only C arrays:
   - The region map as blocks of FB starts (native, padded with the largest key) followed by
     their values (value | prefix << 16), a summary of each block's first start (31 kB for
     IPv4, 88 kB for IPv6), and a radix index: for each value of the key's top 16 bits, how many
     summary entries are below it. A look-up reads the index, runs a branchless binary search
     over the few summary entries of that range, then reads one block: three or four cache
     lines instead of the ~7 missed ones of ~17 steps.
   - The zones (origins) as an array, matched by memcmp from the longest suffix of the name,
     and every existing name of every zone in one open-addressing hash table (name, zone) ->
     whether its answers depend on the location: a name not in it does not exist in its zone.
   - The templates found in the state's template dict, in a table (name, type, class, order
     index) -> the template bytes (a reference held). The dict only grows for one state (a
     health change or a new signing generation makes a new dict, hence a new state), and a
     key's template never changes in it, so a template found once stays right; a key not in
     the table is looked up in the dict again (Python may have stored it since). A full table is
     emptied.
   A state that cannot be compiled (a zone key that is not bytes, too many names) is marked so
   and answered by build_common (_coldpath.h), as before. The answers are the same bytes as
   build_common's (tests/test_dns_fastudp.py compares answer_common with the Python path).

   fast_plan() decides one query and fast_write() writes its response, so the loop can write it
   into the datagram's own receive buffer (no bytes object per answer). */

#define FB 16                    /* starts per block */
#define FAST_NAMES_MAX (1 << 20) /* more existing names: not compiled */
#define FAST_TMPL_SLOTS 8192     /* power of two; emptied at half full */
#define FAST_ZONES_MAX 4096

typedef struct {
    uint32_t key[FB];
    uint32_t vp[FB];
} Blk4;

typedef struct {
    uint64_t key[FB];
    uint32_t vp[FB];
} Blk6;

#define RADIX_BITS 16

typedef struct {
    Py_ssize_t n, nblk;
    void *sum, *blk; /* uint32_t/uint64_t [nblk], Blk4/Blk6 [nblk], 64-byte aligned */
    uint32_t *radix; /* [2^RADIX_BITS + 1]: the summary entries below each top-bits value */
    void *mem;
} FMap;

typedef struct {
    const unsigned char *origin; /* the key's bytes (borrowed: the state holds them) */
    Py_ssize_t len;
    int bad;       /* not (existing, parts[, True]): every name goes to Python */
    int has_parts; /* NXDOMAIN parts (fixed, mname, rname, times) */
    int is_signed;
    PyObject *fixed, *mname, *rname, *times; /* borrowed */
} FZone;

typedef struct {
    const unsigned char *name; /* NULL: empty slot; borrowed from the zone's set */
    uint32_t hash;
    int len, zone, dependent;
} FName;

typedef struct {
    uint64_t key; /* name slot + 1 (0: empty) << 32 | type << 16 | class */
    unsigned int val;
    PyObject *tmpl;
} FTmpl;

typedef struct {
    PyObject *state; /* strong: the tuple this was compiled from (it owns what we borrow) */
    int ok;          /* 0: not compilable, build_common answers */
    FMap m4, m6;
    FZone *zones;
    Py_ssize_t nzones;
    FName *names;
    size_t nmask;
    FTmpl *tmpls;
    size_t ntmpl;
    long max_udp;
} Fast;

static void *
aligned64(void **mem, size_t size)
{
    *mem = PyMem_RawMalloc(size + 64);
    if (*mem == NULL)
        return NULL;
    return (void *)(((uintptr_t)*mem + 63) & ~(uintptr_t)63);
}

/* 1 compiled, 0 not compilable (the sizes disagree), -1 out of memory */
static int
fmap_build(FMap *m, PyObject *starts, PyObject *plens, PyObject *vals, int wide)
{
    Py_ssize_t n = PyBytes_GET_SIZE(plens), ksz = wide ? 8 : 4;
    if (PyBytes_GET_SIZE(starts) != n * ksz || PyBytes_GET_SIZE(vals) != n * 2)
        return 0;
    m->n = n;
    m->nblk = (n + FB - 1) / FB;
    size_t bsz = wide ? sizeof(Blk6) : sizeof(Blk4);
    size_t sum_size = ((size_t)m->nblk * (size_t)ksz + 63) & ~(size_t)63;
    size_t radix_size = (((size_t)1 << RADIX_BITS) + 1) * sizeof(uint32_t);
    char *base = aligned64(&m->mem, sum_size + (size_t)m->nblk * bsz + radix_size);
    if (base == NULL)
        return -1;
    m->sum = base;
    m->blk = base + sum_size;
    m->radix = (uint32_t *)(base + sum_size + (size_t)m->nblk * bsz);
    const char *sp = PyBytes_AS_STRING(starts), *vp = PyBytes_AS_STRING(vals);
    const unsigned char *pp = (const unsigned char *)PyBytes_AS_STRING(plens);
    for (Py_ssize_t j = 0; j < m->nblk; j++) {
        uint32_t *vals_out = wide ? ((Blk6 *)m->blk)[j].vp : ((Blk4 *)m->blk)[j].vp;
        for (int k = 0; k < FB; k++) {
            Py_ssize_t i = j * FB + k;
            uint16_t v = 0;
            unsigned int plen = 0;
            if (i < n) {
                memcpy(&v, vp + i * 2, 2);
                plen = pp[i];
            }
            vals_out[k] = (uint32_t)v | ((uint32_t)plen << 16);
            if (wide) {
                uint64_t key = UINT64_MAX;
                if (i < n)
                    memcpy(&key, sp + i * 8, 8);
                ((Blk6 *)m->blk)[j].key[k] = key;
                if (k == 0)
                    ((uint64_t *)m->sum)[j] = key;
            } else {
                uint32_t key = UINT32_MAX;
                if (i < n)
                    memcpy(&key, sp + i * 4, 4);
                ((Blk4 *)m->blk)[j].key[k] = key;
                if (k == 0)
                    ((uint32_t *)m->sum)[j] = key;
            }
        }
    }
    int shift = wide ? 64 - RADIX_BITS : 32 - RADIX_BITS;
    Py_ssize_t j = 0;
    for (size_t t = 0; t <= ((size_t)1 << RADIX_BITS); t++) { /* sum[j] < t << shift */
        while (j < m->nblk &&
               (wide ? ((uint64_t *)m->sum)[j] >> shift : ((uint32_t *)m->sum)[j] >> shift) < t)
            j++;
        m->radix[t] = (uint32_t)j;
    }
    return 1;
}

/* map_lookup()'s answer: the entry of the last start <= key (the first entry if none) */
static unsigned int
fmap_lookup(const FMap *m, int wide, uint64_t key, unsigned int *plen)
{
    if (m->nblk == 0)
        return MAP_SLOW;
    /* the last summary entry <= key is in [radix[t] - 1, radix[t + 1] - 1]: those below t are
       below the key, those from t + 1 on above it */
    size_t t = (size_t)(wide ? key >> (64 - RADIX_BITS) : key >> (32 - RADIX_BITS));
    Py_ssize_t base = m->radix[t] ? (Py_ssize_t)m->radix[t] - 1 : 0;
    Py_ssize_t len = (Py_ssize_t)m->radix[t + 1] - base;
    if (len < 1)
        len = 1;
    unsigned int c = 0;
    const uint32_t *vals;
    if (wide) {
        const uint64_t *sum = m->sum;
        while (len > 1) {
            Py_ssize_t half = len / 2;
            base += sum[base + half] <= key ? half : 0;
            len -= half;
        }
        const Blk6 *b = (const Blk6 *)m->blk + base;
        for (int k = 1; k < FB; k++)
            c += b->key[k] <= key;
        vals = b->vp;
    } else {
        const uint32_t *sum = m->sum;
        uint32_t k32 = (uint32_t)key;
        while (len > 1) {
            Py_ssize_t half = len / 2;
            base += sum[base + half] <= k32 ? half : 0;
            len -= half;
        }
        const Blk4 *b = (const Blk4 *)m->blk + base;
        for (int k = 1; k < FB; k++)
            c += b->key[k] <= k32;
        vals = b->vp;
    }
    if (base * FB + (Py_ssize_t)c >= m->n) /* the padding counted: the key is the largest */
        c = (unsigned int)(m->n - 1 - base * FB);
    *plen = vals[c] >> 16;
    return vals[c] & 0xFFFF;
}

static uint32_t
name_hash(const unsigned char *p, Py_ssize_t len, int zone)
{
    /* 8 bytes per multiply (a byte-at-a-time FNV was a fifth of the look-up's time) */
    uint64_t h = ((uint64_t)zone << 32 | (uint64_t)len) * 0x9E3779B97F4A7C15ull, w;
    for (; len >= 8; p += 8, len -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, p, (size_t)len);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    return (uint32_t)(h >> 32);
}

static FName *
name_find(const Fast *f, int zone, const unsigned char *name, Py_ssize_t len)
{
    uint32_t h = name_hash(name, len, zone);
    for (size_t i = h & f->nmask;; i = (i + 1) & f->nmask) {
        FName *e = &f->names[i];
        if (e->name == NULL)
            return NULL;
        if (e->hash == h && e->zone == zone && e->len == len && !memcmp(e->name, name, len))
            return e;
    }
}

static void
tmpl_clear(Fast *f)
{
    for (size_t i = 0; i < FAST_TMPL_SLOTS; i++) {
        if (f->tmpls[i].key) {
            Py_CLEAR(f->tmpls[i].tmpl);
            f->tmpls[i].key = 0;
        }
    }
    f->ntmpl = 0;
}

static void
fast_free(Fast *f)
{
    if (f == NULL)
        return;
    if (f->tmpls != NULL) {
        tmpl_clear(f);
        PyMem_RawFree(f->tmpls);
    }
    PyMem_RawFree(f->m4.mem);
    PyMem_RawFree(f->m6.mem);
    PyMem_RawFree(f->zones);
    PyMem_RawFree(f->names);
    Py_XDECREF(f->state);
    PyMem_RawFree(f);
}

static void
fast_capsule_free(PyObject *capsule)
{
    fast_free(PyCapsule_GetPointer(capsule, "geodns.fast"));
}

/* 1 compiled, 0 not compilable, -1 error set */
static int
fast_fill(Fast *f, PyObject *st)
{
    int r = fmap_build(&f->m4, PyTuple_GET_ITEM(st, 0), PyTuple_GET_ITEM(st, 1),
                       PyTuple_GET_ITEM(st, 2), 0);
    if (r == 1)
        r = fmap_build(&f->m6, PyTuple_GET_ITEM(st, 3), PyTuple_GET_ITEM(st, 4),
                       PyTuple_GET_ITEM(st, 5), 1);
    if (r <= 0) {
        if (r < 0)
            PyErr_NoMemory();
        return r;
    }
    f->max_udp = PyLong_AsLong(PyTuple_GET_ITEM(st, 9));
    if (f->max_udp == -1 && PyErr_Occurred())
        return -1;
    PyObject *origins = PyTuple_GET_ITEM(st, 8), *dependent = PyTuple_GET_ITEM(st, 7);
    Py_ssize_t nz = PyDict_GET_SIZE(origins), pos = 0, total = 0;
    if (nz > FAST_ZONES_MAX)
        return 0;
    f->zones = PyMem_RawCalloc((size_t)nz + 1, sizeof(FZone));
    f->tmpls = PyMem_RawCalloc(FAST_TMPL_SLOTS, sizeof(FTmpl));
    if (f->zones == NULL || f->tmpls == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *key, *zone;
    while (PyDict_Next(origins, &pos, &key, &zone)) {
        if (!PyBytes_CheckExact(key))
            return 0;
        FZone *z = &f->zones[f->nzones++];
        z->origin = (const unsigned char *)PyBytes_AS_STRING(key);
        z->len = PyBytes_GET_SIZE(key);
        if (!PyTuple_Check(zone) || PyTuple_GET_SIZE(zone) < 2 || PyTuple_GET_SIZE(zone) > 3 ||
            !PyAnySet_Check(PyTuple_GET_ITEM(zone, 0))) {
            z->bad = 1;
            continue;
        }
        z->is_signed = PyTuple_GET_SIZE(zone) == 3;
        PyObject *parts = PyTuple_GET_ITEM(zone, 1);
        if (PyTuple_Check(parts) && PyTuple_GET_SIZE(parts) == 4) {
            z->fixed = PyTuple_GET_ITEM(parts, 0);
            z->mname = PyTuple_GET_ITEM(parts, 1);
            z->rname = PyTuple_GET_ITEM(parts, 2);
            z->times = PyTuple_GET_ITEM(parts, 3);
            z->has_parts = PyBytes_Check(z->fixed) && PyBytes_Check(z->mname) &&
                           PyBytes_Check(z->rname) && PyBytes_Check(z->times);
        }
        total += PySet_GET_SIZE(PyTuple_GET_ITEM(zone, 0));
    }
    if (total > FAST_NAMES_MAX)
        return 0;
    size_t slots = 16;
    while (slots < (size_t)total * 2)
        slots *= 2;
    f->nmask = slots - 1;
    f->names = PyMem_RawCalloc(slots, sizeof(FName));
    if (f->names == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    pos = 0;
    for (int zi = 0; PyDict_Next(origins, &pos, &key, &zone); zi++) {
        if (f->zones[zi].bad)
            continue;
        PyObject *it = PyObject_GetIter(PyTuple_GET_ITEM(zone, 0)), *item;
        if (it == NULL)
            return -1;
        for (; (item = PyIter_Next(it)) != NULL; Py_DECREF(item)) {
            /* borrowed below: the set holds the item as long as the state lives */
            if (!PyBytes_CheckExact(item) || PyBytes_GET_SIZE(item) > 255)
                continue; /* never equal to a query's name */
            const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(item);
            Py_ssize_t len = PyBytes_GET_SIZE(item);
            if (name_find(f, zi, p, len) != NULL)
                continue;
            int dep = PySet_Contains(dependent, item);
            if (dep < 0) {
                Py_DECREF(item);
                Py_DECREF(it);
                return -1;
            }
            uint32_t h = name_hash(p, len, zi);
            size_t i = h & f->nmask;
            while (f->names[i].name != NULL)
                i = (i + 1) & f->nmask;
            f->names[i] = (FName){p, h, (int)len, zi, dep};
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            return -1;
    }
    return 1;
}

static PyObject *fast_current; /* the capsule of the newest state's Fast, or NULL */

/* A new reference to the capsule for `st`, compiling it when it is not the current one's;
   NULL with an error set (out of memory). The capsule's Fast may be not ok. */
static PyObject *
fast_for(PyObject *st)
{
    if (fast_current != NULL) {
        Fast *cur = PyCapsule_GetPointer(fast_current, "geodns.fast");
        if (cur->state == st) {
            Py_INCREF(fast_current);
            return fast_current;
        }
    }
    Fast *f = PyMem_RawCalloc(1, sizeof *f);
    if (f == NULL)
        return PyErr_NoMemory();
    Py_INCREF(st);
    f->state = st;
    int r = fast_fill(f, st);
    if (r < 0) {
        fast_free(f);
        return NULL;
    }
    f->ok = r;
    PyObject *capsule = PyCapsule_New(f, "geodns.fast", fast_capsule_free);
    if (capsule == NULL) {
        fast_free(f);
        return NULL;
    }
    Py_XSETREF(fast_current, capsule);
    Py_INCREF(capsule);
    return capsule;
}

/* The template for (name slot, type, class, val), borrowed (the table or the dict holds it),
   or NULL: not there (Python builds it), or an error is set. */
static PyObject *
fast_template(Fast *f, const FName *e, const unsigned char *name, Py_ssize_t qlen,
              unsigned int qtype, unsigned int tclass, unsigned int val)
{
    uint64_t key = ((uint64_t)(e - f->names + 1) << 32) | ((uint64_t)qtype << 16) | tclass;
    uint64_t h = (key ^ ((uint64_t)val << 40)) * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 51) & (FAST_TMPL_SLOTS - 1);
    for (;; i = (i + 1) & (FAST_TMPL_SLOTS - 1)) {
        FTmpl *t = &f->tmpls[i];
        if (t->key == 0)
            break;
        if (t->key == key && t->val == val)
            return t->tmpl;
    }
    PyObject *tkey = PyBytes_FromStringAndSize(NULL, qlen + 6);
    if (tkey == NULL)
        return NULL;
    unsigned char *k = (unsigned char *)PyBytes_AS_STRING(tkey);
    memcpy(k, name, (size_t)qlen);
    put16(k + qlen, qtype);
    put16(k + qlen + 2, tclass);
    put16(k + qlen + 4, val);
    PyObject *tmpl = PyDict_GetItemWithError(PyTuple_GET_ITEM(f->state, 6), tkey);
    Py_DECREF(tkey);
    if (tmpl == NULL || !PyBytes_Check(tmpl) || PyBytes_GET_SIZE(tmpl) < 9)
        return NULL; /* an invalid one goes to Python each time, as in build_common */
    if (f->ntmpl >= FAST_TMPL_SLOTS / 2) {
        tmpl_clear(f);
        i = (size_t)(h >> 51) & (FAST_TMPL_SLOTS - 1);
    }
    while (f->tmpls[i].key != 0)
        i = (i + 1) & (FAST_TMPL_SLOTS - 1);
    Py_INCREF(tmpl);
    f->tmpls[i] = (FTmpl){key, val, tmpl};
    f->ntmpl++;
    return tmpl;
}

typedef struct {
    Scan s;
    const unsigned char *body;
    Py_ssize_t body_len, qsec, opt_len, elen, total;
    unsigned int eflags, an, ns, ar, located, scope;
    int truncated;
    unsigned char nxbody[600];
} Plan;

/* 1: planned (fast_write writes p->total bytes); 0: Python decides; -1: an error is set. */
static int
fast_plan(Fast *f, const unsigned char *d, Py_ssize_t n, Plan *p)
{
    Scan *s = &p->s;
    if (!scan(d, n, s) || (s->flags & 0x7800) || s->version || (s->qclass != 1 && s->qclass != 255))
        return 0;
    unsigned char name[256];
    Py_ssize_t qlen = s->end - 12; /* <= 255: scan_plain_name */
    for (Py_ssize_t i = 0; i < qlen; i++) /* bytes.lower(): ASCII letters only */
        name[i] = (unsigned char)(d[12 + i] >= 'A' && d[12 + i] <= 'Z' ? d[12 + i] + 32
                                                                        : d[12 + i]);
    Py_ssize_t at = 0; /* the longest origin that is the name or a suffix of it */
    int zi = -1;
    for (;;) {
        for (Py_ssize_t z = 0; z < f->nzones; z++)
            if (f->zones[z].len == qlen - at && !memcmp(f->zones[z].origin, name + at, qlen - at)) {
                zi = (int)z;
                break;
            }
        if (zi >= 0 || name[at] == 0)
            break;
        at += name[at] + 1;
    }
    if (zi < 0 || f->zones[zi].bad)
        return 0;
    const FZone *z = &f->zones[zi];
    const FName *e = name_find(f, zi, name, qlen);
    unsigned int qt = s->qtype;
    p->an = p->ns = p->ar = p->located = p->scope = 0;
    if (e == NULL) {
        if (qt == 41 || qt == 251 || qt == 252 || (qt >= 128 && qt < 255) || !z->has_parts)
            return 0;
        if (s->dnssec_ok && z->is_signed)
            return 0; /* signed denial (geodns/dnssec) */
        Py_ssize_t fl = PyBytes_GET_SIZE(z->fixed), ml = PyBytes_GET_SIZE(z->mname),
                   rl = PyBytes_GET_SIZE(z->rname), tl = PyBytes_GET_SIZE(z->times);
        Py_ssize_t rdlen = ml + 2 + rl + 2 + tl;
        if (2 + fl + 2 + rdlen > (Py_ssize_t)sizeof p->nxbody)
            return 0;
        unsigned int ptr = 0xC000 | (unsigned int)(12 + at);
        unsigned char *o = p->nxbody;
        put16(o, ptr);
        memcpy(o + 2, PyBytes_AS_STRING(z->fixed), (size_t)fl);
        o += 2 + fl;
        put16(o, (unsigned int)rdlen);
        memcpy(o + 2, PyBytes_AS_STRING(z->mname), (size_t)ml);
        o += 2 + ml;
        put16(o, ptr);
        memcpy(o + 2, PyBytes_AS_STRING(z->rname), (size_t)rl);
        o += 2 + rl;
        put16(o, ptr);
        memcpy(o + 2, PyBytes_AS_STRING(z->times), (size_t)tl);
        o += 2 + tl;
        p->body = p->nxbody;
        p->body_len = o - p->nxbody;
        p->eflags = 0x0400 | 3;
        p->ns = 1;
    } else {
        unsigned int val = INDEPENDENT;
        if (e->dependent) {
            if (!s->source)
                return 0;
            unsigned char full[16] = {0};
            memcpy(full, d + s->addr_at, (size_t)s->addr_len);
            int wide = s->family == 2;
            uint64_t key = 0;
            for (int i = 0; i < (wide ? 8 : 4); i++)
                key = (key << 8) | full[i];
            val = fmap_lookup(wide ? &f->m6 : &f->m4, wide, key, &p->scope);
            if (val == MAP_SLOW)
                return 0;
        }
        PyObject *tmpl = fast_template(f, e, name, qlen, qt,
                                       s->qclass | (s->dnssec_ok ? 0x8000 : 0), val);
        if (tmpl == NULL)
            return PyErr_Occurred() ? -1 : 0;
        const unsigned char *t = (const unsigned char *)PyBytes_AS_STRING(tmpl);
        p->eflags = u16(t);
        p->an = u16(t + 2);
        p->ns = u16(t + 4);
        p->ar = u16(t + 6);
        p->located = t[8];
        p->body = t + 9;
        p->body_len = PyBytes_GET_SIZE(tmpl) - 9;
    }
    p->qsec = s->pos - 12;
    p->opt_len = p->elen = 0;
    if (s->udp_size >= 0)
        p->opt_len = 11 + (s->family ? (p->elen = 8 + s->addr_len) : 0);
    p->total = 12 + p->qsec + p->body_len + p->opt_len;
    long limit = s->udp_size < 0 ? 512 : (s->udp_size < f->max_udp ? s->udp_size : f->max_udp);
    p->truncated = p->total > limit;
    if (p->truncated)
        p->total = 12 + p->qsec + p->opt_len;
    return 1;
}

/* Write the planned response (p->total bytes) to `o`, which must not overlap the query `d`. */
static void
fast_write(const Plan *p, const unsigned char *d, unsigned char *o, long max_udp)
{
    const Scan *s = &p->s;
    unsigned int out_flags = 0x8000 | (s->flags & 0x7910) | p->eflags | (p->truncated ? 0x0200 : 0);
    put16(o, s->id);
    put16(o + 2, out_flags);
    put16(o + 4, 1);
    put16(o + 6, p->truncated ? 0 : p->an);
    put16(o + 8, p->truncated ? 0 : p->ns);
    put16(o + 10, (p->truncated ? 0 : p->ar) + (p->opt_len ? 1 : 0));
    memcpy(o + 12, d + 12, (size_t)p->qsec);
    o += 12 + p->qsec;
    if (!p->truncated) {
        memcpy(o, p->body, (size_t)p->body_len);
        o += p->body_len;
    }
    if (p->opt_len) {
        o[0] = 0;
        put16(o + 1, 41);
        put16(o + 3, (unsigned int)max_udp);
        put16(o + 5, 0);
        put16(o + 7, s->dnssec_ok ? 0x8000 : 0);
        put16(o + 9, (unsigned int)p->elen);
        if (p->elen) {
            put16(o + 11, 8);
            put16(o + 13, (unsigned int)(4 + s->addr_len));
            put16(o + 15, (unsigned int)s->family);
            o[17] = (unsigned char)s->source;
            o[18] = (unsigned char)(p->located ? p->scope : 0);
            memcpy(o + 19, d + s->addr_at, (size_t)s->addr_len);
        }
    }
}

/* build_common's result through the compiled state (a new reference, Py_None or NULL). */
static PyObject *
build_fast(Fast *f, const unsigned char *d, Py_ssize_t n)
{
    if (!f->ok)
        return build_common(d, n, f->state);
    Plan p;
    int r = fast_plan(f, d, n, &p);
    if (r <= 0) {
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, p.total);
    if (out != NULL)
        fast_write(&p, d, (unsigned char *)PyBytes_AS_STRING(out), f->max_udp);
    return out;
}

static PyObject *
answer_common(PyObject *module, PyObject *args)
{
    PyObject *data, *st;
    (void)module;
    if (!PyArg_ParseTuple(args, "SO:answer_common", &data, &st))
        return NULL;
    if (!state_ok(st))
        return PyErr_Format(PyExc_TypeError, "answer_common(): not a fast state");
    PyObject *capsule = fast_for(st);
    if (capsule == NULL)
        return NULL;
    PyObject *out = build_fast(PyCapsule_GetPointer(capsule, "geodns.fast"),
                               (const unsigned char *)PyBytes_AS_STRING(data),
                               PyBytes_GET_SIZE(data));
    Py_DECREF(capsule);
    return out;
}

/* _bench_plan(queries, state, chunk) -> the fastest chunk's ns per query of fast_plan +
   fast_write over the list (bench/: the per-query CPU of the cold path without the sockets). */
static PyObject *
bench_plan(PyObject *module, PyObject *args)
{
    PyObject *list, *st;
    Py_ssize_t chunk;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!On:_bench_plan", &PyList_Type, &list, &st, &chunk))
        return NULL;
    if (!state_ok(st) || chunk < 1)
        return PyErr_Format(PyExc_ValueError, "_bench_plan(): not a fast state or chunk < 1");
    PyObject *capsule = fast_for(st);
    if (capsule == NULL)
        return NULL;
    Fast *f = PyCapsule_GetPointer(capsule, "geodns.fast");
    double best = -1;
    unsigned char out[DGRAM_MAX];
    Py_ssize_t n = PyList_GET_SIZE(list);
    for (Py_ssize_t i = 0; f->ok && i + chunk <= n; i += chunk) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (Py_ssize_t j = i; j < i + chunk; j++) {
            PyObject *q = PyList_GET_ITEM(list, j);
            Plan p;
            if (!PyBytes_Check(q))
                continue;
            const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(q);
            int r = fast_plan(f, d, PyBytes_GET_SIZE(q), &p);
            if (r < 0) {
                Py_DECREF(capsule);
                return NULL;
            }
            if (r > 0 && p.total <= (Py_ssize_t)sizeof out)
                fast_write(&p, d, out, f->max_udp);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / (double)chunk;
        if (best < 0 || ns < best)
            best = ns;
    }
    Py_DECREF(capsule);
    return PyFloat_FromDouble(best);
}
