// JSON-like business documents of a chosen size: repetitive keys, varied values, as the
// payloads compression is for.

/** Rows of transactions adding up to about `bytes` bytes of JSON. */
export function transactions(bytes: number): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  for (let i = 0, size = 2; size < bytes; i++) {
    const row = { id: `txn-${100_000 + i}`, amount: (i * 37) % 1000, currency: i % 3 ? 'EUR' : 'USD', merchant: `m-${i % 17}`, approved: i % 5 !== 0 };
    rows.push(row);
    size += JSON.stringify(row).length + 1;
  }
  return rows;
}
