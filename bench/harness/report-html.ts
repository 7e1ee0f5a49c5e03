/** A self-contained HTML page with a latency-by-percentile plot (inline SVG, no scripts). */
export interface Series {
  label: string;
  /** [percentile, latency ms] */
  points: Array<[number, number]>;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#17becf'];

/** A page of latency-by-percentile plots, one per heading. */
export function latencyReport(title: string, plots: Array<{ heading: string; series: Series[] }>, notes: string[]): string {
  const escapeHtml = (t: string) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:820px}li{margin:.2em 0}</style></head><body>
<h1>${escapeHtml(title)}</h1>
${plots.map((p) => `<h2>${escapeHtml(p.heading)}</h2>${percentilePlot(p.series)}`).join('\n')}
<ul>${notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('')}</ul></body></html>\n`;
}

function percentilePlot(series: Series[]): string {
  const W = 760;
  const H = 420;
  const left = 70;
  const bottom = 50;
  const top = 20;
  const right = 20;
  // x: "number of nines", the usual HDR percentile axis: 0 = p0, 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99
  const nines = (p: number) => (p >= 100 ? 4.5 : -Math.log10(1 - p / 100));
  const xMax = 4.5;
  const yMax = Math.max(0.001, ...series.flatMap((s) => s.points.map(([, v]) => v))) * 1.1;
  const x = (p: number) => left + (nines(p) / xMax) * (W - left - right);
  const y = (v: number) => H - bottom - (v / yMax) * (H - top - bottom);
  const ticks = [
    [0, 'p0'],
    [90, 'p90'],
    [99, 'p99'],
    [99.9, 'p99.9'],
    [99.99, 'p99.99'],
    [100, 'max'],
  ] as const;
  const grid = ticks
    .map(
      ([p, label]) =>
        `<line x1="${x(p)}" y1="${top}" x2="${x(p)}" y2="${H - bottom}" stroke="#ddd"/><text x="${x(p)}" y="${H - bottom + 18}" text-anchor="middle" font-size="12">${label}</text>`,
    )
    .join('');
  const yTicks = Array.from({ length: 6 }, (_, i) => (yMax / 5) * i)
    .map(
      (v) =>
        `<line x1="${left}" y1="${y(v)}" x2="${W - right}" y2="${y(v)}" stroke="#eee"/><text x="${left - 6}" y="${y(v) + 4}" text-anchor="end" font-size="12">${v.toFixed(v < 10 ? 2 : 0)}</text>`,
    )
    .join('');
  const lines = series
    .map((s, i) => {
      const d = s.points.map(([p, v], j) => `${j === 0 ? 'M' : 'L'}${x(p).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
      return `<path d="${d}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2"/><text x="${W - right - 4}" y="${top + 16 + i * 16}" text-anchor="end" font-size="12" fill="${COLORS[i % COLORS.length]}">${s.label}</text>`;
    })
    .join('');
  return `<svg width="${W}" height="${H}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="latency by percentile">
<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>${grid}${yTicks}
<text x="${left}" y="${top - 6}" font-size="12">latency (ms)</text>
<text x="${(W + left) / 2}" y="${H - 10}" text-anchor="middle" font-size="12">percentile</text>${lines}</svg>`;
}
