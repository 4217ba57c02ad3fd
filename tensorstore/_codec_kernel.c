/* The codec's hot loops in C: one call encodes or decodes a whole block, GIL released.
 *
 * codec.py is the specification and the fallback: it does the same work in numpy, and the
 * tests check that both give the same bytes for every dtype width, encoding and damage.
 * This file exists for speed alone (docs/benchmarks.md, Encoded blocks, Speed): numpy needs
 * a dozen calls and temporaries per block, each holding the GIL, so a block cost about 170
 * us to decode and two threads could not share the work. Here a block is one call that
 * lets go of the GIL, so codec.decode_many and choose_many spread blocks over threads.
 *
 * zstd is python-zstandard's own libzstd: its cffi module hands us the addresses of four
 * functions (set_zstd), and the caller passes each thread's context (zstdframes). This
 * module links nothing and keeps no state but those addresses and a scratch buffer per
 * thread.
 *
 * It also hashes blocks for exact dedup (MurmurHash3, as mmh3 does) and gathers the samples
 * of content codes (contentcodes.vectors), for the same reason.
 *
 * Payload format (codec.py says it in full): [0x03 for a difference] varint heads (size << 2
 * | kind) for each plane, the plane bodies, the tail. Plane j holds byte j of every element
 * in memory order; float elements are rotated left by one bit first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "planes are bytes of little-endian words; codec.py does the work in numpy elsewhere"
#endif

enum { KIND_ZSTD = 0, KIND_AS_IS = 1, KIND_ZEROS = 2, DIFF = 3, MAX_WIDTH = 8 };

typedef size_t (*zstd_call)(void *ctx, void *dst, size_t cap, const void *src, size_t n);
typedef unsigned (*zstd_is_error)(size_t code);
typedef const char *(*zstd_error_name)(size_t code);

static zstd_call zstd_decompress, zstd_compress;
static zstd_is_error zstd_failed;
static zstd_error_name zstd_name;

typedef struct {
    char text[200];
} Err;

static int fail(Err *e, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(e->text, sizeof e->text, fmt, args);
    va_end(args);
    return -1;
}

/* One scratch buffer per thread, grown as needed and freed when the thread ends: blocks
 * are 64 KiB, and a fresh malloc of a few of them per call would be an mmap each. */
static pthread_key_t scratch_key;

typedef struct {
    size_t cap;
    uint8_t data[];
} Scratch;

static uint8_t *scratch(size_t need) {
    Scratch *s = pthread_getspecific(scratch_key);
    if (s == NULL || s->cap < need) {
        free(s);
        s = malloc(sizeof *s + need);
        pthread_setspecific(scratch_key, s);
        if (s == NULL) return NULL;
        s->cap = need;
    }
    return s->data;
}

static size_t compress_bound(size_t n) { /* ZSTD_COMPRESSBOUND of zstd.h */
    return n + (n >> 8) + (n < (128 << 10) ? ((128 << 10) - n) >> 11 : 0);
}

/* -- decoding ------------------------------------------------------------------------ */

/* The planes of a payload (without its 0x03): planes[j] points at `count` bytes, a body
 * kept as it is, a plane decompressed into `work` (width * count bytes) or `zeros`. The
 * checks and their order are codec._bodies' and codec._unpack's. */
static int unpack(const uint8_t *p, size_t len, size_t n, int width, void *dctx, uint8_t *work,
                  uint8_t *zeros, const uint8_t *planes[], const uint8_t **tail, Err *e) {
    size_t count = n / width, at = 0;
    uint64_t heads[MAX_WIDTH];
    const uint8_t *bodies[MAX_WIDTH];
    for (int j = 0; j < width; j++) {
        uint64_t v = 0;
        for (int shift = 0;; shift += 7) {
            if (at >= len || shift > 35) return fail(e, "an encoded block's header is cut short or malformed");
            uint8_t byte = p[at++];
            v |= (uint64_t)(byte & 0x7F) << shift;
            if (!(byte & 0x80)) break;
        }
        heads[j] = v;
    }
    for (int j = 0; j < width; j++) {
        uint64_t kind = heads[j] & 3, size = heads[j] >> 2;
        if (size > len - at || kind == DIFF) return fail(e, "an encoded block is cut short or malformed");
        bodies[j] = p + at;
        at += size;
    }
    int zeroed = 0;
    for (int j = 0; j < width; j++) {
        uint64_t kind = heads[j] & 3, size = heads[j] >> 2;
        if (kind == KIND_ZEROS) {
            if (!zeroed) memset(zeros, 0, count);
            zeroed = 1;
            planes[j] = zeros;
        } else if (kind == KIND_ZSTD) {
            uint8_t *dst = work + (size_t)j * count;
            size_t got = zstd_decompress(dctx, dst, count, bodies[j], size);
            if (zstd_failed(got)) return fail(e, "a frame does not decompress (%s)", zstd_name(got));
            if (got != count) return fail(e, "a frame holds %zu bytes where %zu are needed", got, count);
            planes[j] = dst;
        } else {
            if (size != count) return fail(e, "a plane holds %llu bytes where %zu are needed", (unsigned long long)size, count);
            planes[j] = bodies[j];
        }
    }
    if (len - at != n - count * width)
        return fail(e, "an encoded block of %zu bytes has %zu tail bytes", n, len - at);
    *tail = p + at;
    return 0;
}

/* Elements from planes. Modes: 0 store, 1 store un-rotated (a float's planes), 2 add the
 * zigzag-decoded value to what `out` holds (a difference). One loop per width and mode,
 * so that the compiler sees constants. */
#define GATHER2(P, i) ((uint16_t)(P[0][i] | (uint16_t)P[1][i] << 8))
#define GATHER4(P, i) ((uint32_t)P[0][i] | (uint32_t)P[1][i] << 8 | (uint32_t)P[2][i] << 16 | (uint32_t)P[3][i] << 24)
#define GATHER8(P, i) ((uint64_t)GATHER4(P, i) | ((uint64_t)P[4][i] | (uint64_t)P[5][i] << 8 | (uint64_t)P[6][i] << 16 \
                                                 | (uint64_t)P[7][i] << 24) << 32)

#define INTERLEAVE(T, BITS, GATHER)                                                          \
    static void interleave##BITS(const uint8_t *const pl[], size_t count, int mode, uint8_t *out) { \
        if (mode == 0) {                                                                     \
            for (size_t i = 0; i < count; i++) {                                             \
                T w = GATHER(pl, i);                                                             \
                memcpy(out + i * sizeof(T), &w, sizeof(T));                                  \
            }                                                                                \
        } else if (mode == 1) {                                                              \
            for (size_t i = 0; i < count; i++) {                                             \
                T w = GATHER(pl, i);                                                             \
                w = (T)(w >> 1 | w << (BITS - 1));                                           \
                memcpy(out + i * sizeof(T), &w, sizeof(T));                                  \
            }                                                                                \
        } else {                                                                             \
            for (size_t i = 0; i < count; i++) {                                             \
                T z = GATHER(pl, i), w;                                                      \
                memcpy(&w, out + i * sizeof(T), sizeof(T));                                  \
                w = (T)(w + ((z >> 1) ^ (T)(0 - (z & 1))));                                  \
                memcpy(out + i * sizeof(T), &w, sizeof(T));                                  \
            }                                                                                \
        }                                                                                    \
    }
INTERLEAVE(uint16_t, 16, GATHER2)
INTERLEAVE(uint32_t, 32, GATHER4)
INTERLEAVE(uint64_t, 64, GATHER8)

/* A difference against a packed reference in one pass: out = the reference's elements
 * (from its planes `rp`, un-rotated if `rotate`) + the zigzag-decoded planes `pl`. */
#define ADD_TO_PLANES(T, BITS, GATHER)                                                       \
    static void add_to_planes##BITS(const uint8_t *const pl[], const uint8_t *const rp[], size_t count, \
                                    int rotate, uint8_t *out) {                              \
        for (size_t i = 0; i < count; i++) {                                                 \
            T z = GATHER(pl, i), w = GATHER(rp, i);                                          \
            if (rotate) w = (T)(w >> 1 | w << (BITS - 1));                                   \
            w = (T)(w + ((z >> 1) ^ (T)(0 - (z & 1))));                                      \
            memcpy(out + i * sizeof(T), &w, sizeof(T));                                      \
        }                                                                                    \
    }
ADD_TO_PLANES(uint16_t, 16, GATHER2)
ADD_TO_PLANES(uint32_t, 32, GATHER4)
ADD_TO_PLANES(uint64_t, 64, GATHER8)

static void interleave(const uint8_t *const pl[], size_t count, int width, int mode, uint8_t *out) {
    switch (width) {
    case 1:
        if (mode == 2) {
            for (size_t i = 0; i < count; i++) out[i] = (uint8_t)(out[i] + ((pl[0][i] >> 1) ^ (uint8_t)(0 - (pl[0][i] & 1))));
        } else {
            memcpy(out, pl[0], count);
        }
        break;
    case 2: interleave16(pl, count, mode, out); break;
    case 4: interleave32(pl, count, mode, out); break;
    default: interleave64(pl, count, mode, out); break;
    }
}

/* A packed payload (no reference) decoded into out[n]; `work` holds (width + 1) * count. */
static int unpacked(const uint8_t *p, size_t len, size_t n, int width, int is_float, void *dctx,
                    uint8_t *work, uint8_t *out, Err *e) {
    const uint8_t *planes[MAX_WIDTH], *tail;
    size_t count = n / width;
    if (unpack(p, len, n, width, dctx, work, work + (size_t)width * count, planes, &tail, e)) return -1;
    interleave(planes, count, width, is_float && width > 1 ? 1 : 0, out);
    memcpy(out + count * width, tail, n - count * width);
    return 0;
}

/* codec.decode: `ref` is the reference as stored (raw, or packed if ref_packed), or NULL. */
static int decode_block(const uint8_t *p, size_t len, size_t n, int width, int is_float, const uint8_t *ref,
                        size_t ref_len, int ref_packed, void *dctx, uint8_t *out, Err *e) {
    size_t count = n / width, whole = count * width;
    uint8_t *work = scratch(2 * (width + 1) * count + n);
    if (work == NULL) return fail(e, "out of memory");
    uint8_t *ref_work = work + (width + 1) * count, *ref_out = ref_work + (width + 1) * count;
    if (ref != NULL && !ref_packed && ref_len < n)
        return fail(e, "a delta reference must be as long as the block (%zu != %zu bytes)", ref_len, n);
    if (ref == NULL) return unpacked(p, len, n, width, is_float, dctx, work, out, e);
    if (len > 0 && p[0] == DIFF) {
        /* out = the reference + the differences; tails XOR-ed */
        const uint8_t *planes[MAX_WIDTH], *tail, *ref_planes[MAX_WIDTH], *ref_tail = ref + whole;
        if (ref_packed && unpack(ref, ref_len, n, width, dctx, ref_work, ref_work + (size_t)width * count, ref_planes,
                                 &ref_tail, e))
            return -1;
        if (unpack(p + 1, len - 1, n, width, dctx, work, work + (size_t)width * count, planes, &tail, e)) return -1;
        int rotate = is_float && width > 1;
        if (ref_packed && width == 2) add_to_planes16(planes, ref_planes, count, rotate, out);
        else if (ref_packed && width == 4) add_to_planes32(planes, ref_planes, count, rotate, out);
        else if (ref_packed && width == 8) add_to_planes64(planes, ref_planes, count, rotate, out);
        else {
            if (ref_packed) interleave(ref_planes, count, width, rotate, out); /* width 1 */
            else memcpy(out, ref, whole);
            interleave(planes, count, width, 2, out);
        }
        for (size_t i = whole; i < n; i++) out[i] = ref_tail[i - whole] ^ tail[i - whole];
        return 0;
    }
    /* an XOR delta (format 3 and earlier): the rotation is a permutation of bits, so the
     * XOR of the decoded block and the decoded reference is the block */
    if (unpacked(p, len, n, width, is_float, dctx, work, out, e)) return -1;
    if (ref_packed) {
        if (unpacked(ref, ref_len, n, width, is_float, dctx, ref_work, ref_out, e)) return -1;
        ref = ref_out;
    }
    for (size_t i = 0; i < n; i++) out[i] ^= ref[i];
    return 0;
}

/* -- encoding ------------------------------------------------------------------------ */

/* Planes of data[whole] (rotated if a float's), or of its zigzag difference with ref. */
#define SPLIT(T, BITS, ST)                                                                   \
    static void split##BITS(const uint8_t *data, const uint8_t *ref, size_t count, int rotate, uint8_t *pl) { \
        for (size_t i = 0; i < count; i++) {                                                 \
            T w;                                                                             \
            memcpy(&w, data + i * sizeof(T), sizeof(T));                                     \
            if (ref != NULL) {                                                               \
                T r;                                                                         \
                memcpy(&r, ref + i * sizeof(T), sizeof(T));                                  \
                w = (T)(w - r);                                                              \
                w = (T)((T)(w << 1) ^ (T)((ST)w >> (BITS - 1)));                             \
            } else if (rotate) {                                                             \
                w = (T)(w << 1 | w >> (BITS - 1));                                           \
            }                                                                                \
            for (size_t j = 0; j < sizeof(T); j++) pl[j * count + i] = (uint8_t)(w >> (8 * j)); \
        }                                                                                    \
    }
SPLIT(uint16_t, 16, int16_t)
SPLIT(uint32_t, 32, int32_t)
SPLIT(uint64_t, 64, int64_t)

static void split(const uint8_t *data, const uint8_t *ref, size_t count, int width, int rotate, uint8_t *pl) {
    switch (width) {
    case 1:
        if (ref == NULL) {
            memcpy(pl, data, count);
        } else {
            for (size_t i = 0; i < count; i++) {
                uint8_t w = (uint8_t)(data[i] - ref[i]);
                pl[i] = (uint8_t)((uint8_t)(w << 1) ^ (uint8_t)((int8_t)w >> 7));
            }
        }
        break;
    case 2: split16(data, ref, count, rotate, pl); break;
    case 4: split32(data, ref, count, rotate, pl); break;
    default: split64(data, ref, count, rotate, pl); break;
    }
}

static size_t put_varint(uint8_t *at, uint64_t v) {
    size_t k = 0;
    do {
        uint8_t byte = v & 0x7F;
        v >>= 7;
        at[k++] = byte | (v ? 0x80 : 0);
    } while (v);
    return k;
}

/* codec._pack of the planes in `pl` (width planes of count bytes) and a tail: written to
 * `dst`, whose size is returned. `zbuf` holds width * compress_bound(count). */
static size_t pack(const uint8_t *pl, size_t count, int width, const uint8_t *tail, size_t tail_len, void *cctx,
                   uint8_t *zbuf, uint8_t *dst) {
    size_t bound = compress_bound(count), sizes[MAX_WIDTH], at = 0;
    int kinds[MAX_WIDTH];
    for (int j = 0; j < width; j++) {
        const uint8_t *plane = pl + (size_t)j * count;
        uint8_t any = 0;
        for (size_t i = 0; i < count; i++) any |= plane[i];
        if (!any) {
            kinds[j] = KIND_ZEROS, sizes[j] = 0;
            continue;
        }
        size_t z = zstd_compress(cctx, zbuf + (size_t)j * bound, bound, plane, count);
        if (!zstd_failed(z) && z < count) {
            kinds[j] = KIND_ZSTD, sizes[j] = z;
        } else { /* a frame no smaller than the plane (or, never seen, an error): keep it as it is */
            kinds[j] = KIND_AS_IS, sizes[j] = count;
        }
    }
    for (int j = 0; j < width; j++) at += put_varint(dst + at, (uint64_t)sizes[j] << 2 | (uint64_t)kinds[j]);
    for (int j = 0; j < width; j++) {
        if (kinds[j] == KIND_ZSTD) memcpy(dst + at, zbuf + (size_t)j * bound, sizes[j]);
        else if (kinds[j] == KIND_AS_IS) memcpy(dst + at, pl + (size_t)j * count, count);
        at += sizes[j];
    }
    memcpy(dst + at, tail, tail_len);
    return at + tail_len;
}

/* codec.encode: packed (ref NULL) or the difference against `ref` (as stored). The payload
 * is written to scratch; *payload points at it. Returns its size, or -1 with `e` set. */
static Py_ssize_t encode_block(const uint8_t *data, size_t n, int width, int is_float, const uint8_t *ref,
                               size_t ref_len, int ref_packed, void *cctx, void *dctx, const uint8_t **payload,
                               Err *e) {
    size_t count = n / width, whole = count * width, bound = compress_bound(count);
    size_t out_cap = 1 + 10 * MAX_WIDTH + n;
    uint8_t *work = scratch(width * count + width * bound + out_cap + (width + 1) * count + n);
    if (work == NULL) return fail(e, "out of memory");
    uint8_t *pl = work, *zbuf = pl + width * count, *dst = zbuf + width * bound;
    uint8_t *ref_work = dst + out_cap, *ref_out = ref_work + (width + 1) * count;
    if (ref != NULL && ref_packed) {
        if (unpacked(ref, ref_len, n, width, is_float, dctx, ref_work, ref_out, e)) return -1;
        ref = ref_out;
    } else if (ref != NULL && ref_len != n) {
        return fail(e, "a delta reference must be as long as the block (%zu != %zu bytes)", ref_len, n);
    }
    uint8_t tail[MAX_WIDTH];
    for (size_t i = whole; i < n; i++) tail[i - whole] = ref == NULL ? data[i] : (uint8_t)(data[i] ^ ref[i]);
    split(data, ref, count, width, is_float && width > 1 && ref == NULL, pl);
    size_t at = 0;
    if (ref != NULL) dst[at++] = DIFF;
    at += pack(pl, count, width, tail, n - whole, cctx, zbuf, dst + at);
    *payload = dst;
    return (Py_ssize_t)at;
}

/* -- Python ------------------------------------------------------------------------- */

static int check_width(int width) {
    if (width != 1 && width != 2 && width != 4 && width != 8) {
        PyErr_Format(PyExc_ValueError, "element width must be 1, 2, 4 or 8 bytes, not %d", width);
        return -1;
    }
    return 0;
}

static int ready(void) {
    if (zstd_decompress == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_zstd() was not called");
        return -1;
    }
    return 0;
}

static PyObject *py_set_zstd(PyObject *self, PyObject *args) {
    unsigned long long dec, comp, failed, name;
    if (!PyArg_ParseTuple(args, "KKKK", &dec, &comp, &failed, &name)) return NULL;
    zstd_decompress = (zstd_call)(uintptr_t)dec;
    zstd_compress = (zstd_call)(uintptr_t)comp;
    zstd_failed = (zstd_is_error)(uintptr_t)failed;
    zstd_name = (zstd_error_name)(uintptr_t)name;
    Py_RETURN_NONE;
}

/* The reference argument: None, or a bytes-like read into `view`. */
static int get_ref(PyObject *obj, Py_buffer *view) {
    if (obj == Py_None) {
        view->obj = NULL;
        view->buf = NULL;
        view->len = 0;
        return 0;
    }
    return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE);
}

static void release(Py_buffer *view) {
    if (view->obj != NULL) PyBuffer_Release(view);
}

static PyObject *py_decode(PyObject *self, PyObject *args) {
    Py_buffer payload, out, ref;
    PyObject *ref_obj;
    int width, is_float, ref_packed, rc;
    unsigned long long dctx;
    Err e;
    if (ready()) return NULL;
    if (!PyArg_ParseTuple(args, "y*w*iiOpK", &payload, &out, &width, &is_float, &ref_obj, &ref_packed, &dctx)) return NULL;
    if (check_width(width) || get_ref(ref_obj, &ref)) {
        PyBuffer_Release(&payload);
        PyBuffer_Release(&out);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = decode_block(payload.buf, payload.len, out.len, width, is_float, ref.buf, ref.len, ref_packed,
                      (void *)(uintptr_t)dctx, out.buf, &e);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&payload);
    PyBuffer_Release(&out);
    release(&ref);
    if (rc) {
        PyErr_SetString(PyExc_ValueError, e.text);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* decode() of many blocks in one call: the GIL is let go once for the whole list. */
static PyObject *py_decode_all(PyObject *self, PyObject *args) {
    PyObject *items, *seq;
    unsigned long long dctx;
    if (ready()) return NULL;
    if (!PyArg_ParseTuple(args, "OK", &items, &dctx)) return NULL;
    if ((seq = PySequence_Fast(items, "decode_all takes a list of decode() argument tuples")) == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq), parsed = 0, failed = -1;
    typedef struct {
        Py_buffer payload, out, ref;
        int width, is_float, ref_packed;
    } Job;
    Job *jobs = PyMem_Calloc(count ? count : 1, sizeof(Job));
    Err e;
    if (jobs == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (; parsed < count; parsed++) {
        Job *j = &jobs[parsed];
        PyObject *ref_obj;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, parsed), "y*w*iiOp", &j->payload, &j->out, &j->width,
                              &j->is_float, &ref_obj, &j->ref_packed))
            break;
        if (check_width(j->width) || get_ref(ref_obj, &j->ref)) {
            PyBuffer_Release(&j->payload);
            PyBuffer_Release(&j->out);
            break;
        }
    }
    if (parsed == count) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < count && failed < 0; i++) {
            Job *j = &jobs[i];
            if (decode_block(j->payload.buf, j->payload.len, j->out.len, j->width, j->is_float, j->ref.buf, j->ref.len,
                             j->ref_packed, (void *)(uintptr_t)dctx, j->out.buf, &e))
                failed = i;
        }
        Py_END_ALLOW_THREADS
    }
    for (Py_ssize_t i = 0; i < parsed; i++) {
        PyBuffer_Release(&jobs[i].payload);
        PyBuffer_Release(&jobs[i].out);
        release(&jobs[i].ref);
    }
    PyMem_Free(jobs);
    Py_DECREF(seq);
    if (parsed < count) return NULL;
    if (failed >= 0) return Py_BuildValue("(ns)", failed, e.text);
    Py_RETURN_NONE;
}

static PyObject *py_encode(PyObject *self, PyObject *args) {
    Py_buffer data, ref;
    PyObject *ref_obj;
    int width, is_float, ref_packed;
    unsigned long long cctx, dctx;
    const uint8_t *payload = NULL;
    Py_ssize_t size;
    Err e;
    if (ready()) return NULL;
    if (!PyArg_ParseTuple(args, "y*iiOpKK", &data, &width, &is_float, &ref_obj, &ref_packed, &cctx, &dctx)) return NULL;
    if (check_width(width) || get_ref(ref_obj, &ref)) {
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    size = encode_block(data.buf, data.len, width, is_float, ref.buf, ref.len, ref_packed, (void *)(uintptr_t)cctx,
                        (void *)(uintptr_t)dctx, &payload, &e);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    release(&ref);
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, e.text);
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)payload, size);
}

/* codec._choose of one block: a delta against each reference, then packed unless a delta
 * already under three quarters of the block wins; the smallest that saves at least
 * `min_saving` of the block is copied to `best` (room for encode_block's largest payload).
 * Sets *encoding (0 raw, 1 packed, 2 delta), *which and *size; -1 with `e` set on failure. */
typedef struct {
    Py_buffer data;
    Py_ssize_t nrefs;
    Py_buffer *refs;
    int *ref_packed;
    int encoding, which;
    Py_ssize_t size, at;
} ChooseJob;

static int choose_block(ChooseJob *j, int width, int is_float, double min_saving, void *cctx, void *dctx,
                        uint8_t *best, Err *e) {
    size_t n = (size_t)j->data.len;
    double limit = (double)n * (1.0 - min_saving);
    const uint8_t *payload;
    j->encoding = 0, j->which = -1, j->size = 0;
    for (Py_ssize_t i = 0; i < j->nrefs; i++) {
        Py_buffer *r = &j->refs[i];
        Py_ssize_t size = encode_block(j->data.buf, n, width, is_float, r->buf, r->len, j->ref_packed[i], cctx, dctx,
                                       &payload, e);
        if (size < 0) return -1;
        if ((double)size <= limit) {
            memcpy(best, payload, size);
            j->encoding = 2, j->which = (int)i, j->size = size, limit = (double)size;
        }
    }
    if (j->encoding != 2 || limit > 0.75 * (double)n) {
        Py_ssize_t size = encode_block(j->data.buf, n, width, is_float, NULL, 0, 0, cctx, dctx, &payload, e);
        if (size < 0) return -1;
        if ((double)size <= limit) {
            memcpy(best, payload, size);
            j->encoding = 1, j->which = -1, j->size = size;
        }
    }
    return 0;
}

/* The payloads chosen in one choose_all call, kept until the GIL is back: one buffer per
 * thread, grown as needed (a fresh one per call would be page faults each time). */
static pthread_key_t chosen_key;

static PyObject *py_choose_all(PyObject *self, PyObject *args) {
    PyObject *items, *seq, *out = NULL;
    int width, is_float;
    double min_saving;
    unsigned long long cctx, dctx;
    if (ready()) return NULL;
    if (!PyArg_ParseTuple(args, "OiidKK", &items, &width, &is_float, &min_saving, &cctx, &dctx)) return NULL;
    if (check_width(width)) return NULL;
    if ((seq = PySequence_Fast(items, "choose_all takes a list of (data, refs) tuples")) == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq), parsed = 0, failed = -1;
    ChooseJob *jobs = PyMem_Calloc(count ? count : 1, sizeof(ChooseJob));
    size_t room = 0;
    Err e;
    if (jobs == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (; parsed < count; parsed++) {
        ChooseJob *j = &jobs[parsed];
        PyObject *refs, *rseq;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, parsed), "y*O", &j->data, &refs)) break;
        if ((rseq = PySequence_Fast(refs, "a job's references are a list of (stored, packed) tuples")) == NULL) {
            PyBuffer_Release(&j->data);
            break;
        }
        Py_ssize_t k = PySequence_Fast_GET_SIZE(rseq), got = 0;
        j->refs = PyMem_Calloc(k ? k : 1, sizeof(Py_buffer));
        j->ref_packed = PyMem_Calloc(k ? k : 1, sizeof(int));
        if (j->refs != NULL && j->ref_packed != NULL) {
            for (; got < k; got++)
                if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(rseq, got), "y*p", &j->refs[got], &j->ref_packed[got]))
                    break;
        } else {
            PyErr_NoMemory();
        }
        j->nrefs = got;
        Py_DECREF(rseq);
        if (j->refs == NULL || j->ref_packed == NULL || got < k) {
            parsed++; /* its buffers are released below */
            break;
        }
        j->at = (Py_ssize_t)room;
        room += 1 + 10 * MAX_WIDTH + (size_t)j->data.len;
    }
    int complete = parsed == count && !PyErr_Occurred();
    Scratch *chosen = pthread_getspecific(chosen_key);
    if (complete && (chosen == NULL || chosen->cap < room)) {
        free(chosen);
        chosen = malloc(sizeof *chosen + room);
        pthread_setspecific(chosen_key, chosen);
        if (chosen == NULL) {
            PyErr_NoMemory();
            complete = 0;
        } else {
            chosen->cap = room;
        }
    }
    if (complete) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < count && failed < 0; i++)
            if (choose_block(&jobs[i], width, is_float, min_saving, (void *)(uintptr_t)cctx, (void *)(uintptr_t)dctx,
                             chosen->data + jobs[i].at, &e))
                failed = i;
        Py_END_ALLOW_THREADS
        if (failed >= 0) {
            PyErr_SetString(PyExc_ValueError, e.text);
        } else if ((out = PyList_New(count)) != NULL) {
            for (Py_ssize_t i = 0; i < count; i++) {
                ChooseJob *j = &jobs[i];
                PyObject *item = j->encoding == 0
                                     ? Py_BuildValue("(iOi)", 0, Py_None, -1)
                                     : Py_BuildValue("(iy#i)", j->encoding, chosen->data + j->at, j->size, j->which);
                if (item == NULL) {
                    Py_CLEAR(out);
                    break;
                }
                PyList_SET_ITEM(out, i, item);
            }
        }
    }
    for (Py_ssize_t i = 0; i < parsed; i++) {
        ChooseJob *j = &jobs[i];
        PyBuffer_Release(&j->data);
        for (Py_ssize_t r = 0; r < j->nrefs; r++) PyBuffer_Release(&j->refs[r]);
        PyMem_Free(j->refs);
        PyMem_Free(j->ref_packed);
    }
    PyMem_Free(jobs);
    Py_DECREF(seq);
    return out;
}

/* -- content digests ------------------------------------------------------------------- */

/* MurmurHash3 x64-128 (Austin Appleby's, public domain), the digest of exact dedup that
 * tensorstore_index.exact.block_digest takes with mmh3, which holds the GIL: here a list
 * of blocks is hashed with it let go, so threads share the work. */
static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

static void murmur3_x64_128(const uint8_t *data, size_t len, uint32_t seed, uint8_t out[16]) {
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    uint64_t h1 = seed, h2 = seed, k1, k2;
    size_t blocks = len / 16;
    for (size_t i = 0; i < blocks; i++) {
        memcpy(&k1, data + 16 * i, 8);
        memcpy(&k2, data + 16 * i + 8, 8);
        k1 *= c1, k1 = rotl64(k1, 31), k1 *= c2, h1 ^= k1;
        h1 = rotl64(h1, 27), h1 += h2, h1 = h1 * 5 + 0x52dce729;
        k2 *= c2, k2 = rotl64(k2, 33), k2 *= c1, h2 ^= k2;
        h2 = rotl64(h2, 31), h2 += h1, h2 = h2 * 5 + 0x38495ab5;
    }
    const uint8_t *tail = data + 16 * blocks;
    size_t rest = len & 15;
    k1 = k2 = 0;
    for (size_t i = rest; i > 8; i--) k2 ^= (uint64_t)tail[i - 1] << (8 * (i - 9));
    if (rest > 8) k2 *= c2, k2 = rotl64(k2, 33), k2 *= c1, h2 ^= k2;
    for (size_t i = rest < 8 ? rest : 8; i > 0; i--) k1 ^= (uint64_t)tail[i - 1] << (8 * (i - 1));
    if (rest > 0) k1 *= c1, k1 = rotl64(k1, 31), k1 *= c2, h1 ^= k1;
    h1 ^= len, h2 ^= len;
    h1 += h2, h2 += h1;
    h1 = fmix64(h1), h2 = fmix64(h2);
    h1 += h2, h2 += h1;
    memcpy(out, &h1, 8);
    memcpy(out + 8, &h2, 8);
}

static PyObject *py_murmur_all(PyObject *self, PyObject *args) {
    PyObject *items, *seeds, *seq, *sseq = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OO", &items, &seeds)) return NULL;
    if ((seq = PySequence_Fast(items, "murmur_all takes a list of bytes-like blocks")) == NULL) return NULL;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq), got = 0;
    Py_buffer *views = PyMem_Calloc(m ? m : 1, sizeof(Py_buffer));
    uint32_t *seed = PyMem_Calloc(m ? m : 1, sizeof(uint32_t));
    uint8_t *digests = PyMem_Malloc(16 * (m ? m : 1));
    if (views == NULL || seed == NULL || digests == NULL) PyErr_NoMemory();
    else if ((sseq = PySequence_Fast(seeds, "murmur_all takes a list of seeds")) != NULL) {
        if (PySequence_Fast_GET_SIZE(sseq) != m) PyErr_SetString(PyExc_ValueError, "murmur_all: one seed a block");
        for (Py_ssize_t i = 0; i < m && !PyErr_Occurred(); i++)
            seed[i] = (uint32_t)PyLong_AsUnsignedLongMask(PySequence_Fast_GET_ITEM(sseq, i));
        for (; got < m && !PyErr_Occurred(); got++)
            if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE)) break;
    }
    if (!PyErr_Occurred()) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < m; i++) murmur3_x64_128(views[i].buf, (size_t)views[i].len, seed[i], digests + 16 * i);
        Py_END_ALLOW_THREADS
        if ((out = PyList_New(m)) != NULL)
            for (Py_ssize_t i = 0; i < m; i++) {
                PyObject *d = PyBytes_FromStringAndSize((const char *)digests + 16 * i, 16);
                if (d == NULL) {
                    Py_CLEAR(out);
                    break;
                }
                PyList_SET_ITEM(out, i, d);
            }
    }
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(seed);
    PyMem_Free(digests);
    Py_XDECREF(sseq);
    Py_DECREF(seq);
    return out;
}

/* -- content-code samples -------------------------------------------------------------- */

/* gather: element k * stride of each block (k < count) into its row of `out`, the rest of
 * a shorter block's row zeroed: contentcodes.vectors' sampling, before the cast to float32,
 * for a whole list of blocks with the GIL let go once. */
static PyObject *py_gather(PyObject *self, PyObject *args) {
    PyObject *items, *seq;
    Py_buffer out;
    Py_ssize_t itemsize, stride, count;
    if (!PyArg_ParseTuple(args, "Onnnw*", &items, &itemsize, &stride, &count, &out)) return NULL;
    if ((seq = PySequence_Fast(items, "gather takes a list of bytes-like blocks")) == NULL) {
        PyBuffer_Release(&out);
        return NULL;
    }
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq), got = 0, row = itemsize * count;
    Py_buffer *views = PyMem_Calloc(m ? m : 1, sizeof(Py_buffer));
    if (views == NULL) PyErr_NoMemory();
    else if (itemsize < 1 || itemsize > MAX_WIDTH || stride < 1 || count < 0 || out.len != m * row)
        PyErr_Format(PyExc_ValueError, "gather: the output must be %zd rows of %zd bytes", m, row);
    else
        for (; got < m; got++)
            if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE)) break;
    if (!PyErr_Occurred()) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < m; i++) {
            const uint8_t *src = views[i].buf;
            uint8_t *dst = (uint8_t *)out.buf + i * row;
            Py_ssize_t n = views[i].len / itemsize, k = 0;
            for (Py_ssize_t at = 0; k < count && at < n; k++, at += stride)
                memcpy(dst + k * itemsize, src + at * itemsize, itemsize);
            memset(dst + k * itemsize, 0, (size_t)((count - k) * itemsize));
        }
        Py_END_ALLOW_THREADS
    }
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_DECREF(seq);
    PyBuffer_Release(&out);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_zstd", py_set_zstd, METH_VARARGS,
     "set_zstd(decompress, compress2, is_error, error_name): addresses of libzstd's ZSTD_decompressDCtx, "
     "ZSTD_compress2, ZSTD_isError and ZSTD_getErrorName."},
    {"decode", py_decode, METH_VARARGS,
     "decode(payload, out, width, is_float, ref, ref_packed, dctx): codec.decode into out (writable, the block's "
     "length); ref is None or the reference as stored. Raises ValueError if the payload does not decode."},
    {"decode_all", py_decode_all, METH_VARARGS,
     "decode_all(jobs, dctx) -> None or (index, message): decode() of each (payload, out, width, is_float, ref, "
     "ref_packed) tuple, in order, with the GIL let go once; stops at the first that does not decode."},
    {"encode", py_encode, METH_VARARGS,
     "encode(data, width, is_float, ref, ref_packed, cctx, dctx) -> bytes: codec.encode, packed when ref is None, "
     "else the difference against ref (as stored)."},
    {"choose_all", py_choose_all, METH_VARARGS,
     "choose_all(jobs, width, is_float, min_saving, cctx, dctx) -> [(encoding, payload or None, which)]: "
     "codec._choose of each (data, [(stored, packed), ...]) job, in order, with the GIL let go once. Raises "
     "ValueError for the first job whose reference is not usable."},
    {"murmur_all", py_murmur_all, METH_VARARGS,
     "murmur_all(blocks, seeds) -> [bytes]: the 16-byte MurmurHash3 x64-128 digest of each block with its seed "
     "(mmh3's mmh3_x64_128_digest), with the GIL let go once."},
    {"gather", py_gather, METH_VARARGS,
     "gather(blocks, itemsize, stride, count, out): element k * stride (k < count) of each block into its row of out "
     "(count * itemsize bytes a row), the rest of a shorter block's row zeroed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_codec_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__codec_kernel(void) {
    if (pthread_key_create(&scratch_key, free) != 0 || pthread_key_create(&chosen_key, free) != 0)
        return PyErr_NoMemory();
    return PyModule_Create(&module);
}
