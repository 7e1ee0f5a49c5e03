// Scores a payment from its data fields and a blocklist kept in KV; rejects at 70 or more.
//   amount > 1000: +40, > 500: +20      card_country != country: +25
//   merchant on the blocklist: +60      hour < 6: +10      tx_last_hour > 5: +20
// The blocklist is KV key "fraud/blocklist": merchant ids separated by commas.
import { FluxMsg, kvGetString, ok, processWith, reject, Result } from '../sdk';
export { alloc, free } from '../sdk';

const THRESHOLD: i64 = 70;

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

function onBlocklist(merchant: string): bool {
  if (merchant.length == 0) return false;
  const list = kvGetString('fraud/blocklist');
  if (list == null) return false;
  const entries = list.split(',');
  for (let i = 0; i < entries.length; i++) if (entries[i].trim() == merchant) return true;
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
