/*
 * fluxrig's gear ABI for C (docs/wasm-abi.md, docs/writing-gears.md "In C"): the exports the host
 * calls (alloc, free), the host functions (log, flux_emit, flux_kv_get, flux_kv_put), and enough
 * CBOR to read a fluxMsg's data and meta and to answer with it changed, rejected, dropped or fanned
 * out. One header: include it in the gear's one .c file, which defines
 *
 *   FLUXRIG_PROCESS(msg) { ... return fluxrig_ok(&edit); }
 *
 * Build with Debian's clang and wasi-libc:
 *   clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -I wasm-gears/sdk-c gear.c -o gear.wasm
 * printf and fprintf(stderr) become the gear's log lines (info and warn) through WASI.
 */
#ifndef FLUXRIG_H
#define FLUXRIG_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- host functions (module env); a gear imports only those it calls ---------------------- */

__attribute__((import_module("env"), import_name("log"))) void fluxrig_host_log(int32_t level, const char *text, int32_t len);
__attribute__((import_module("env"), import_name("flux_emit"))) int32_t fluxrig_host_emit(const uint8_t *msg, int32_t len);
__attribute__((import_module("env"), import_name("flux_kv_get"))) int64_t fluxrig_host_kv_get(const char *key, int32_t len);
__attribute__((import_module("env"), import_name("flux_kv_put"))) int32_t fluxrig_host_kv_put(const char *key, int32_t klen, const uint8_t *value, int32_t vlen);

enum { FLUXRIG_DEBUG = 1, FLUXRIG_INFO = 2, FLUXRIG_WARN = 3, FLUXRIG_ERROR = 4 };

static inline void fluxrig_log(int level, const char *text) { fluxrig_host_log(level, text, (int32_t)strlen(text)); }

/* ---- exports the host calls -------------------------------------------------------------- */

__attribute__((export_name("alloc"))) void *fluxrig_alloc(int32_t len) { return malloc(len > 0 ? (size_t)len : 1); }
__attribute__((export_name("free"))) void fluxrig_free(void *ptr, int32_t len) {
  (void)len;
  free(ptr);
}

/* ---- reading CBOR --------------------------------------------------------------------------- */

/* A span of CBOR bytes: one encoded item (a value), or empty (p == NULL) when absent. */
typedef struct {
  const uint8_t *p;
  size_t len;
} fluxrig_span;

typedef struct {
  const uint8_t *p, *end;
  int failed;
} fluxrig_reader;

/* Reads an item's head: its major type and argument. Indefinite lengths are refused (fluxMsg never uses them). */
static __attribute__((unused)) int fluxrig_head(fluxrig_reader *r, int *major, uint64_t *arg) {
  if (r->failed || r->p >= r->end) return r->failed = 1, 0;
  uint8_t b = *r->p++;
  int info = b & 0x1f;
  *major = b >> 5;
  if (info < 24) {
    *arg = (uint64_t)info;
    return 1;
  }
  int n = info == 24 ? 1 : info == 25 ? 2 : info == 26 ? 4 : info == 27 ? 8 : 0;
  if (n == 0 || r->end - r->p < n) return r->failed = 1, 0;
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | *r->p++;
  *arg = v;
  return 1;
}

/* Skips one item, nested ones included (depth-limited). */
static __attribute__((unused)) int fluxrig_skip(fluxrig_reader *r, int depth) {
  int major;
  uint64_t arg;
  if (depth > 32 || !fluxrig_head(r, &major, &arg)) return r->failed = 1, 0;
  switch (major) {
    case 2:
    case 3:
      if ((uint64_t)(r->end - r->p) < arg) return r->failed = 1, 0;
      r->p += arg;
      return 1;
    case 4:
      for (uint64_t i = 0; i < arg; i++)
        if (!fluxrig_skip(r, depth + 1)) return 0;
      return 1;
    case 5:
      for (uint64_t i = 0; i < 2 * arg; i++)
        if (!fluxrig_skip(r, depth + 1)) return 0;
      return 1;
    case 6:
      return fluxrig_skip(r, depth + 1);
    default:
      return 1;
  }
}

/* The value stored under text key `key` in the map `map`; empty when absent or not a map. */
static __attribute__((unused)) fluxrig_span fluxrig_lookup(fluxrig_span map, const char *key) {
  fluxrig_span none = {0, 0};
  fluxrig_reader r = {map.p, map.p + map.len, 0};
  int major;
  uint64_t count;
  if (map.p == NULL || !fluxrig_head(&r, &major, &count) || major != 5) return none;
  size_t klen = strlen(key);
  for (uint64_t i = 0; i < count; i++) {
    const uint8_t *k = r.p;
    int kmajor;
    uint64_t n;
    if (!fluxrig_head(&r, &kmajor, &n)) return none;
    int match = kmajor == 3 && n == klen && (size_t)(r.end - r.p) >= n && memcmp(r.p, key, klen) == 0;
    r.p = k;
    if (!fluxrig_skip(&r, 0)) return none;
    const uint8_t *v = r.p;
    if (!fluxrig_skip(&r, 0)) return none;
    if (match) return (fluxrig_span){v, (size_t)(r.p - v)};
  }
  return none;
}

/* A message as the host handed it: the whole map, and its data and meta maps. */
typedef struct {
  fluxrig_span whole, data, meta;
} fluxrig_msg;

static __attribute__((unused)) int fluxrig_read_msg(const uint8_t *ptr, int32_t len, fluxrig_msg *msg) {
  msg->whole = (fluxrig_span){ptr, (size_t)len};
  msg->data = fluxrig_lookup(msg->whole, "data");
  msg->meta = fluxrig_lookup(msg->whole, "meta");
  return msg->data.p != NULL;
}

/* Whether data has `key`. */
static inline int fluxrig_has(const fluxrig_msg *m, const char *key) { return fluxrig_lookup(m->data, key).p != NULL; }

/* A number field (integer or float) of data; `otherwise` when absent or not a number. */
static __attribute__((unused)) double fluxrig_get_number(const fluxrig_msg *m, const char *key, double otherwise) {
  fluxrig_span v = fluxrig_lookup(m->data, key);
  if (v.p == NULL) return otherwise;
  fluxrig_reader r = {v.p, v.p + v.len, 0};
  uint8_t first = *v.p;
  int major;
  uint64_t arg;
  if (!fluxrig_head(&r, &major, &arg)) return otherwise;
  if (major == 0) return (double)arg;
  if (major == 1) return -1.0 - (double)arg;
  if (major == 7 && (first & 0x1f) == 27) {
    double d;
    memcpy(&d, &arg, 8);
    return d;
  }
  if (major == 7 && (first & 0x1f) == 26) {
    float f;
    uint32_t bits = (uint32_t)arg;
    memcpy(&f, &bits, 4);
    return (double)f;
  }
  if (major == 7 && (first & 0x1f) == 25) {
    int e = (int)((arg >> 10) & 0x1f), mant = (int)(arg & 0x3ff);
    double val = e == 0 ? ldexp(mant, -24) : e == 31 ? (mant ? NAN : INFINITY) : ldexp(mant + 1024, e - 25);
    return (arg & 0x8000) ? -val : val;
  }
  return otherwise;
}

/* A text field of data (not NUL-terminated: use len); NULL when absent or not text. */
static const char *fluxrig_get_text(const fluxrig_msg *m, const char *key, size_t *len) {
  fluxrig_span v = fluxrig_lookup(m->data, key);
  fluxrig_reader r = {v.p, v.p + v.len, 0};
  int major;
  uint64_t n;
  *len = 0;
  if (v.p == NULL || !fluxrig_head(&r, &major, &n) || major != 3) return NULL;
  *len = (size_t)n;
  return (const char *)r.p;
}

/* ---- writing CBOR --------------------------------------------------------------------------- */

typedef struct {
  uint8_t *p;
  size_t len, cap;
} fluxrig_buf;

static __attribute__((unused)) void fluxrig_put(fluxrig_buf *b, const void *bytes, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    b->p = (uint8_t *)realloc(b->p, cap);
    b->cap = cap;
    if (b->p == NULL) __builtin_trap();
  }
  memcpy(b->p + b->len, bytes, n);
  b->len += n;
}

static __attribute__((unused)) void fluxrig_put_head(fluxrig_buf *b, int major, uint64_t arg) {
  uint8_t h[9];
  size_t n;
  if (arg < 24) h[0] = (uint8_t)(major << 5 | arg), n = 1;
  else if (arg <= 0xff) h[0] = (uint8_t)(major << 5 | 24), h[1] = (uint8_t)arg, n = 2;
  else if (arg <= 0xffff) h[0] = (uint8_t)(major << 5 | 25), h[1] = (uint8_t)(arg >> 8), h[2] = (uint8_t)arg, n = 3;
  else if (arg <= 0xffffffffu) {
    h[0] = (uint8_t)(major << 5 | 26);
    for (int i = 0; i < 4; i++) h[1 + i] = (uint8_t)(arg >> (24 - 8 * i));
    n = 5;
  } else {
    h[0] = (uint8_t)(major << 5 | 27);
    for (int i = 0; i < 8; i++) h[1 + i] = (uint8_t)(arg >> (56 - 8 * i));
    n = 9;
  }
  fluxrig_put(b, h, n);
}

static inline void fluxrig_put_text(fluxrig_buf *b, const char *s, size_t n) {
  fluxrig_put_head(b, 3, n);
  fluxrig_put(b, s, n);
}

static inline void fluxrig_put_int(fluxrig_buf *b, int64_t v) {
  if (v >= 0) fluxrig_put_head(b, 0, (uint64_t)v);
  else fluxrig_put_head(b, 1, (uint64_t)(-1 - v));
}

static inline void fluxrig_put_double(fluxrig_buf *b, double d) {
  uint64_t bits;
  memcpy(&bits, &d, 8);
  uint8_t h[9] = {0xfb};
  for (int i = 0; i < 8; i++) h[1 + i] = (uint8_t)(bits >> (56 - 8 * i));
  fluxrig_put(b, h, 9);
}

/* ---- answers -------------------------------------------------------------------------------- */

#define FLUXRIG_MAX_EDITS 16

/* Changes to one message: data and meta fields to set; everything else is copied as it came. */
typedef struct {
  const fluxrig_msg *msg;
  int count;
  struct {
    int meta;
    const char *key;
    int kind; /* 0 int, 1 double, 2 text */
    int64_t i;
    double d;
    const char *s;
    size_t slen;
  } edits[FLUXRIG_MAX_EDITS];
} fluxrig_edit;

static inline void fluxrig_edit_begin(fluxrig_edit *e, const fluxrig_msg *m) {
  e->msg = m;
  e->count = 0;
}
static __attribute__((unused)) void fluxrig_edit_add(fluxrig_edit *e, int meta, const char *key, int kind, int64_t i, double d, const char *s, size_t slen) {
  for (int k = 0; k < e->count; k++)
    if (e->edits[k].meta == meta && strcmp(e->edits[k].key, key) == 0) {
      e->edits[k].kind = kind, e->edits[k].i = i, e->edits[k].d = d, e->edits[k].s = s, e->edits[k].slen = slen;
      return;
    }
  if (e->count == FLUXRIG_MAX_EDITS) __builtin_trap();
  e->edits[e->count++] = (typeof(e->edits[0])){meta, key, kind, i, d, s, slen};
}
static inline void fluxrig_set_int(fluxrig_edit *e, const char *key, int64_t v) { fluxrig_edit_add(e, 0, key, 0, v, 0, NULL, 0); }
static inline void fluxrig_set_double(fluxrig_edit *e, const char *key, double v) { fluxrig_edit_add(e, 0, key, 1, 0, v, NULL, 0); }
static inline void fluxrig_set_text(fluxrig_edit *e, const char *key, const char *v) { fluxrig_edit_add(e, 0, key, 2, 0, 0, v, strlen(v)); }
/* Meta values are text. `v` must live until the answer is written. */
static inline void fluxrig_set_meta(fluxrig_edit *e, const char *key, const char *v) { fluxrig_edit_add(e, 1, key, 2, 0, 0, v, strlen(v)); }

/* Whether the entry at `r` (a key, then its value) is replaced by one of the edits of its kind. */
static __attribute__((unused)) int fluxrig_replaced(fluxrig_reader r, const fluxrig_edit *e, int meta) {
  int kmajor;
  uint64_t n;
  if (!fluxrig_head(&r, &kmajor, &n) || kmajor != 3) return 0;
  for (int j = 0; j < e->count; j++)
    if (e->edits[j].meta == meta && strlen(e->edits[j].key) == n && memcmp(r.p, e->edits[j].key, n) == 0) return 1;
  return 0;
}

/* Writes a map (data or meta) with the edits of its kind applied. */
static __attribute__((unused)) void fluxrig_write_map(fluxrig_buf *b, fluxrig_span map, const fluxrig_edit *e, int meta) {
  fluxrig_reader r = {map.p, map.p + map.len, 0};
  int major;
  uint64_t count = 0;
  if (map.p != NULL && (!fluxrig_head(&r, &major, &count) || major != 5)) count = 0;
  /* Two passes: the first counts the entries that stay, for the map's head; the second copies them. */
  const uint8_t *entries = r.p;
  uint64_t total = 0;
  for (int j = 0; j < e->count; j++) total += e->edits[j].meta == meta;
  for (int pass = 0; pass < 2; pass++) {
    r.p = entries;
    if (pass == 1) fluxrig_put_head(b, 5, total);
    for (uint64_t i = 0; i < count; i++) {
      const uint8_t *start = r.p;
      int replaced = fluxrig_replaced(r, e, meta);
      fluxrig_skip(&r, 0);
      fluxrig_skip(&r, 0);
      if (replaced) continue;
      if (pass == 0) total++;
      else fluxrig_put(b, start, (size_t)(r.p - start));
    }
  }
  for (int j = 0; j < e->count; j++) {
    if (e->edits[j].meta != meta) continue;
    fluxrig_put_text(b, e->edits[j].key, strlen(e->edits[j].key));
    if (e->edits[j].kind == 0) fluxrig_put_int(b, e->edits[j].i);
    else if (e->edits[j].kind == 1) fluxrig_put_double(b, e->edits[j].d);
    else fluxrig_put_text(b, e->edits[j].s, e->edits[j].slen);
  }
}

/* Writes the message with its edits. */
static __attribute__((unused)) void fluxrig_write_msg(fluxrig_buf *b, const fluxrig_edit *e) {
  fluxrig_reader r = {e->msg->whole.p, e->msg->whole.p + e->msg->whole.len, 0};
  int major;
  uint64_t count;
  if (!fluxrig_head(&r, &major, &count) || major != 5) __builtin_trap();
  fluxrig_put_head(b, 5, count);
  for (uint64_t i = 0; i < count; i++) {
    const uint8_t *key = r.p;
    fluxrig_reader k = r;
    int kmajor;
    uint64_t n;
    fluxrig_head(&k, &kmajor, &n);
    fluxrig_skip(&r, 0);
    const uint8_t *value = r.p;
    fluxrig_skip(&r, 0);
    fluxrig_put(b, key, (size_t)(value - key));
    int is_data = kmajor == 3 && n == 4 && memcmp(k.p, "data", 4) == 0;
    int is_meta = kmajor == 3 && n == 4 && memcmp(k.p, "meta", 4) == 0;
    if (is_data || is_meta) fluxrig_write_map(b, (fluxrig_span){value, (size_t)(r.p - value)}, e, is_meta);
    else fluxrig_put(b, value, (size_t)(r.p - value));
  }
}

/* The answer's bytes as the host reads them: ptr << 32 | len (the host frees them). */
static inline int64_t fluxrig_answer(fluxrig_buf *b) { return (int64_t)((uint64_t)(uintptr_t)b->p << 32 | (uint64_t)b->len); }

/* Pass the message on, changed by `e`. */
static __attribute__((unused)) int64_t fluxrig_ok(const fluxrig_edit *e) {
  fluxrig_buf b = {0, 0, 0};
  fluxrig_write_msg(&b, e);
  return fluxrig_answer(&b);
}

/* Refuse the message; a FLUXAR caller gets `reason`. */
static __attribute__((unused)) int64_t fluxrig_reject(const char *reason) {
  fluxrig_buf b = {0, 0, 0};
  fluxrig_put_head(&b, 5, 2);
  fluxrig_put_text(&b, "status", 6);
  fluxrig_put_int(&b, 1);
  fluxrig_put_text(&b, "reason", 6);
  fluxrig_put_text(&b, reason, strlen(reason));
  return fluxrig_answer(&b);
}

/* Discard the message (counted by the host). */
static inline int64_t fluxrig_drop(void) { return 0; }

/* Pass `n` messages on at once: each is the input with its own edits. */
static __attribute__((unused)) int64_t fluxrig_fanout(const fluxrig_edit *edits, int n) {
  fluxrig_buf b = {0, 0, 0};
  fluxrig_put_head(&b, 5, 2);
  fluxrig_put_text(&b, "status", 6);
  fluxrig_put_int(&b, 0);
  fluxrig_put_text(&b, "msgs", 4);
  fluxrig_put_head(&b, 4, (uint64_t)n);
  for (int i = 0; i < n; i++) fluxrig_write_msg(&b, &edits[i]);
  return fluxrig_answer(&b);
}

/* Send a message out of the gear now (before the answer); 0 when the host took it. */
static __attribute__((unused)) int fluxrig_emit(const fluxrig_edit *e) {
  fluxrig_buf b = {0, 0, 0};
  fluxrig_write_msg(&b, e);
  int rc = fluxrig_host_emit(b.p, (int32_t)b.len);
  free(b.p);
  return rc;
}

/* ---- KV (the gear needs allow_kv: true) ------------------------------------------------------ */

/* The value of `key`, malloc'd (free it), NULL when absent. */
static uint8_t *fluxrig_kv_get(const char *key, size_t *len) {
  int64_t packed = fluxrig_host_kv_get(key, (int32_t)strlen(key));
  *len = (size_t)(uint32_t)packed;
  return packed == 0 ? NULL : (uint8_t *)(uintptr_t)(uint32_t)((uint64_t)packed >> 32);
}

static inline int fluxrig_kv_put(const char *key, const void *value, size_t len) {
  return fluxrig_host_kv_put(key, (int32_t)strlen(key), (const uint8_t *)value, (int32_t)len);
}

/* ---- the entrypoint ------------------------------------------------------------------------- */

/* Defines `process`: the host hands it a fluxMsg; the body answers with fluxrig_ok, _reject, _drop or _fanout. */
#define FLUXRIG_PROCESS(msg)                                                  \
  static int64_t fluxrig_handle(const fluxrig_msg *msg);                      \
  __attribute__((export_name("process"))) int64_t process(uint8_t *ptr, int32_t len) { \
    fluxrig_msg m;                                                            \
    if (!fluxrig_read_msg(ptr, len, &m)) return fluxrig_reject("not a fluxMsg with data"); \
    return fluxrig_handle(&m);                                                \
  }                                                                           \
  static int64_t fluxrig_handle(const fluxrig_msg *msg)

#endif
