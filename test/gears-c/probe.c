// A C test gear: data.op says what to do, to exercise the ABI and WASI from C.
//   ok: set data.seen = "c"        reject: refuse          drop: discard
//   fanout: data.n copies, each with data.copy = i           kv: put data.value at data.key, read it back
//   print: printf data.text (stdout -> the gear's log)      trap: __builtin_trap
//   exit: exit(3) (proc_exit)      env: data.name's value in data.value
//   read: data.path's first line in data.text, or its errno in data.errno
//   write: write data.text to data.path; data.errno on failure
#include <errno.h>
#include <stdio.h>

#include "fluxrig.h"

static int op_is(const fluxrig_msg *m, const char *op) {
  size_t n;
  const char *v = fluxrig_get_text(m, "op", &n);
  return v != NULL && n == strlen(op) && memcmp(v, op, n) == 0;
}

static char *text_field(const fluxrig_msg *m, const char *key) {
  size_t n;
  const char *v = fluxrig_get_text(m, key, &n);
  char *out = malloc(n + 1);
  if (v != NULL) memcpy(out, v, n);
  out[n] = 0;
  return out;
}

static char line[256];

FLUXRIG_PROCESS(msg) {
  fluxrig_edit edit;
  fluxrig_edit_begin(&edit, msg);
  if (op_is(msg, "reject")) return fluxrig_reject("c says no");
  if (op_is(msg, "drop")) return fluxrig_drop();
  if (op_is(msg, "trap")) __builtin_trap();
  if (op_is(msg, "exit")) exit(3);
  if (op_is(msg, "fanout")) {
    int n = (int)fluxrig_get_number(msg, "n", 2);
    fluxrig_edit copies[8];
    if (n > 8) n = 8;
    for (int i = 0; i < n; i++) {
      fluxrig_edit_begin(&copies[i], msg);
      fluxrig_set_int(&copies[i], "copy", i);
    }
    return fluxrig_fanout(copies, n);
  }
  if (op_is(msg, "kv")) {
    char *key = text_field(msg, "key");
    char *value = text_field(msg, "value");
    fluxrig_kv_put(key, value, strlen(value));
    size_t n;
    uint8_t *got = fluxrig_kv_get(key, &n);
    snprintf(line, sizeof line, "%.*s", (int)n, got == NULL ? "" : (const char *)got);
    free(got);
    fluxrig_set_text(&edit, "read_back", line);
  } else if (op_is(msg, "print")) {
    char *text = text_field(msg, "text");
    printf("%s\n", text);
    fprintf(stderr, "stderr: %s\n", text);
  } else if (op_is(msg, "env")) {
    char *name = text_field(msg, "name");
    const char *value = getenv(name);
    fluxrig_set_text(&edit, "value", value == NULL ? "(unset)" : value);
  } else if (op_is(msg, "read")) {
    char *path = text_field(msg, "path");
    FILE *f = fopen(path, "r");
    if (f == NULL) fluxrig_set_int(&edit, "errno", errno);
    else {
      if (fgets(line, sizeof line, f) == NULL) line[0] = 0;
      line[strcspn(line, "\n")] = 0;
      fclose(f);
      fluxrig_set_text(&edit, "text", line);
    }
  } else if (op_is(msg, "write")) {
    char *path = text_field(msg, "path");
    FILE *f = fopen(path, "w");
    if (f == NULL) fluxrig_set_int(&edit, "errno", errno);
    else {
      char *text = text_field(msg, "text");
      fputs(text, f);
      fclose(f);
      fluxrig_set_text(&edit, "written", "yes");
    }
  }
  fluxrig_set_text(&edit, "seen", "c");
  return fluxrig_ok(&edit);
}
