// fluxrig: arena (keeps nothing on the heap between messages)
// Scores a payment from its data fields and a blocklist kept in KV; rejects at 70 or more.
//   amount > 1000: +40, > 500: +20      card_country != country: +25
//   merchant on the blocklist: +60      hour < 6: +10      tx_last_hour > 5: +20
// The blocklist is KV key "fraud/blocklist": merchant ids separated by commas.
import { FluxMsg, kvGet, ok, processWith, reject, Result } from '@fluxrig/gear-sdk';
export { alloc, free, reset } from '@fluxrig/gear-sdk';

const THRESHOLD: i64 = 70;

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

/**
 * Whether `merchant` is one of the comma-separated entries (spaces around entries ignored).
 * Compared as UTF-8 bytes, straight from the KV value: no strings made per message.
 */
function onBlocklist(merchant: string): bool {
  if (merchant.length == 0) return false;
  const list = kvGet('fraud/blocklist');
  if (list == null) return false;
  const want = String.UTF8.encode(merchant);
  const wantLen = want.byteLength;
  const wantPtr = changetype<usize>(want);
  const base = list.dataStart;
  const end = list.length;
  let i = 0;
  while (i <= end) {
    let j = i;
    while (j < end && load<u8>(base + j) != 0x2c) j++; // ','
    let a = i;
    let b = j;
    while (a < b && load<u8>(base + a) == 0x20) a++;
    while (b > a && load<u8>(base + b - 1) == 0x20) b--;
    if (b - a == wantLen && memory.compare(base + a, wantPtr, wantLen) == 0) return true;
    i = j + 1;
  }
  return false;
}

function handle(msg: FluxMsg): Result {
  let score: i64 = 0;
  const amount = msg.getFloat('amount');
  if (amount > 1000) score += 40;
  else if (amount > 500) score += 20;
  const country = msg.getString('country');
  const cardCountry = msg.getString('card_country');
  if (country.length > 0 && cardCountry.length > 0 && country != cardCountry) score += 25;
  if (onBlocklist(msg.getString('merchant'))) score += 60;
  if (msg.has('hour') && msg.getInt('hour') < 6) score += 10;
  if (msg.getInt('tx_last_hour') > 5) score += 20;
  msg.setInt('fraud_score', score);
  msg.setMeta('fraud.score', score.toString());
  if (score >= THRESHOLD) return reject('fraud score ' + score.toString() + ' >= ' + THRESHOLD.toString());
  msg.setString('decision', 'approved');
  return ok(msg);
}
