// The fraud scorer of fraud-scorer.ts, in Rust: scores a payment from its data fields and a
// blocklist kept in KV (key "fraud/blocklist", merchant ids separated by commas); rejects at 70.
//   amount > 1000: +40, > 500: +20      card_country != country: +25
//   merchant on the blocklist: +60      hour < 6: +10      tx_last_hour > 5: +20
#[path = "../sdk-rust/fluxrig.rs"]
mod fluxrig;

use fluxrig::{Answer, Msg};

const THRESHOLD: i64 = 70;

fn on_blocklist(merchant: &str) -> bool {
    if merchant.is_empty() {
        return false;
    }
    match fluxrig::kv_get("fraud/blocklist") {
        Some(list) => list.split(|b| *b == b',').any(|entry| std::str::from_utf8(entry).map(|e| e.trim_matches(' ') == merchant).unwrap_or(false)),
        None => false,
    }
}

fn handle<'a>(msg: &Msg<'a>) -> Answer<'a> {
    let mut score: i64 = 0;
    let amount = msg.number("amount").unwrap_or(0.0);
    if amount > 1000.0 {
        score += 40;
    } else if amount > 500.0 {
        score += 20;
    }
    match (msg.text("country"), msg.text("card_country")) {
        (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() && c != k => score += 25,
        _ => {}
    }
    if on_blocklist(msg.text("merchant").unwrap_or("")) {
        score += 60;
    }
    if msg.has("hour") && msg.number("hour").unwrap_or(0.0) < 6.0 {
        score += 10;
    }
    if msg.number("tx_last_hour").unwrap_or(0.0) > 5.0 {
        score += 20;
    }
    if score >= THRESHOLD {
        return Answer::Reject(format!("fraud score {} >= {}", score, THRESHOLD));
    }
    Answer::Ok(msg.edit().set_int("fraud_score", score).set_meta("fraud.score", &score.to_string()).set_text("decision", "approved"))
}

crate::gear!(handle);
