// The fraud scorer of fraud-scorer.ts, in C: scores a payment from its data fields and a
// blocklist kept in KV (key "fraud/blocklist", merchant ids separated by commas); rejects at 70.
//   amount > 1000: +40, > 500: +20      card_country != country: +25
//   merchant on the blocklist: +60      hour < 6: +10      tx_last_hour > 5: +20
#include <stdio.h>

#include "fluxrig.h"

#define THRESHOLD 70

static int on_blocklist(const char *merchant, size_t len) {
  if (merchant == NULL || len == 0) return 0;
  size_t n;
  uint8_t *list = fluxrig_kv_get("fraud/blocklist", &n);
  if (list == NULL) return 0;
  int found = 0;
  for (size_t i = 0; i <= n && !found;) {
    size_t j = i;
    while (j < n && list[j] != ',') j++;
    size_t a = i, b = j;
    while (a < b && list[a] == ' ') a++;
    while (b > a && list[b - 1] == ' ') b--;
    found = b - a == len && memcmp(list + a, merchant, len) == 0;
    i = j + 1;
  }
  free(list);
  return found;
}

FLUXRIG_PROCESS(msg) {
  int64_t score = 0;
  double amount = fluxrig_get_number(msg, "amount", 0);
  if (amount > 1000) score += 40;
  else if (amount > 500) score += 20;
  size_t country_len, card_len, merchant_len;
  const char *country = fluxrig_get_text(msg, "country", &country_len);
  const char *card = fluxrig_get_text(msg, "card_country", &card_len);
  if (country_len > 0 && card_len > 0 && (country_len != card_len || memcmp(country, card, card_len) != 0)) score += 25;
  const char *merchant = fluxrig_get_text(msg, "merchant", &merchant_len);
  if (on_blocklist(merchant, merchant_len)) score += 60;
  if (fluxrig_has(msg, "hour") && fluxrig_get_number(msg, "hour", 0) < 6) score += 10;
  if (fluxrig_get_number(msg, "tx_last_hour", 0) > 5) score += 20;
  if (score >= THRESHOLD) {
    char reason[64];
    snprintf(reason, sizeof reason, "fraud score %lld >= %d", (long long)score, THRESHOLD);
    return fluxrig_reject(reason);
  }
  char text[24];
  snprintf(text, sizeof text, "%lld", (long long)score);
  fluxrig_edit edit;
  fluxrig_edit_begin(&edit, msg);
  fluxrig_set_int(&edit, "fraud_score", score);
  fluxrig_set_meta(&edit, "fraud.score", text);
  fluxrig_set_text(&edit, "decision", "approved");
  return fluxrig_ok(&edit);
}
