// Throughput, p99 and errors per rack over the last minutes (uPlot, on canvas), from the traffic
// samples the Mixer derives from the racks' telemetry. A table under the charts gives the newest
// figures in words, for screen readers and for anyone who wants a number rather than a line.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { Sample } from './api.js';
import { clear, coalesced, el } from './dom.js';
import type { FleetState } from './state.js';

const PALETTE = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#0891b2', '#65a30d', '#dc2626'];
const REDRAW_MS = 1000;

interface Metric {
  id: string;
  title: string;
  unit: string;
  read: (s: Sample) => number | null;
}

const METRICS: Metric[] = [
  { id: 'calls', title: 'Throughput', unit: 'calls/s', read: (s) => s.calls_per_s },
  { id: 'p99', title: 'p99 latency', unit: 'ms', read: (s) => s.p99_ms },
  { id: 'errors', title: 'Errors', unit: 'per sample', read: (s) => s.errors },
];

export function chartsView(state: FleetState): HTMLElement {
  const minutes = el('select', { id: 'chart-minutes' }, ...[1, 5, 15].map((m) => el('option', { value: String(m), selected: m === 5 }, `last ${m} min`)));
  const figures = el('div', { class: 'charts' });
  const summary = el('div', { class: 'chart-summary' });
  const section = el(
    'section',
    { 'aria-labelledby': 'charts-title' },
    el('h2', { id: 'charts-title' }, 'Traffic'),
    el('div', { class: 'chooser' }, el('label', { for: 'chart-minutes' }, 'Window'), minutes),
    figures,
    summary,
  );
  const plots = new Map<string, uPlot>();
  let racksDrawn = '';
  // The x axis spans the whole window, so a quiet rack's minutes show as quiet, not as a zoom.
  let span: [number, number] = [0, 1];

  const draw = () => {
    if (section.offsetParent === null) return; // hidden: drawn when shown
    const now = Date.now() / 1000;
    const since = now - Number(minutes.value) * 60;
    span = [since, now];
    const racks = [...state.samples.keys()].filter((r) => state.racks.has(r)).sort();
    const width = Math.max(320, figures.clientWidth - 8);
    if (racks.join(',') !== racksDrawn) {
      for (const p of plots.values()) p.destroy();
      plots.clear();
      clear(figures);
      racksDrawn = racks.join(',');
    }
    for (const m of METRICS) {
      const tables = racks.map((r) => {
        const list = (state.samples.get(r) ?? []).filter((s) => s.time / 1000 >= since);
        return [list.map((s) => s.time / 1000), list.map((s) => m.read(s))] as uPlot.AlignedData;
      });
      const data: uPlot.AlignedData = tables.length === 0 ? [[]] : tables.length === 1 ? tables[0]! : uPlot.join(tables);
      const values = data.slice(1).flatMap((ys) => (ys as Array<number | null | undefined>).filter((y): y is number => typeof y === 'number'));
      let plot = plots.get(m.id);
      if (plot === undefined) {
        const holder = el('figure', { class: 'chart', id: `chart-${m.id}`, 'aria-label': `${m.title} per rack (${m.unit}), chart` });
        holder.appendChild(el('figcaption', {}, `${m.title} (${m.unit})`));
        figures.appendChild(holder);
        plot = new uPlot(
          {
            width,
            height: 200,
            // A sample without calls has no p99: a gap, with lone points drawn as dots.
            series: [{}, ...racks.map((r, i) => ({ label: r, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: false }))],
            axes: [{}, { label: m.unit, size: 60 }],
            scales: { x: { time: true, range: () => span }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
            legend: { show: true },
          },
          data,
          holder,
        );
        plots.set(m.id, plot);
      } else {
        if (plot.width !== width) plot.setSize({ width, height: 200 });
        plot.setData(data);
      }
      // What the canvas shows, for anything that cannot look at it (tests, scripts).
      plot.root.parentElement?.setAttribute('data-points', String(values.length));
      plot.root.parentElement?.setAttribute('data-max', String(values.length === 0 ? 0 : Math.max(...values)));
    }
    clear(summary);
    summary.appendChild(summaryTable(state, racks));
  };

  const soon = coalesced(draw, REDRAW_MS);
  state.addEventListener('samples', soon);
  state.addEventListener('racks', soon);
  minutes.addEventListener('change', draw);
  window.addEventListener('resize', soon);
  section.addEventListener('shown', draw);
  return section;
}

function summaryTable(state: FleetState, racks: string[]): HTMLElement {
  return el(
    'table',
    {},
    el('caption', {}, 'Newest sample per rack'),
    el('thead', {}, el('tr', {}, ...['Rack', 'Calls/s', 'p99', 'Errors', 'At'].map((h) => el('th', { scope: 'col' }, h)))),
    el(
      'tbody',
      {},
      ...racks.map((r) => {
        const s = state.latest(r);
        return el(
          'tr',
          { 'data-rack': r },
          el('th', { scope: 'row' }, r),
          el('td', { class: 'number', 'data-calls': s === undefined ? '' : String(s.calls_per_s) }, s === undefined ? '—' : s.calls_per_s.toFixed(1)),
          el('td', { class: 'number' }, s?.p99_ms == null ? '—' : `${s.p99_ms.toFixed(2)} ms`),
          el('td', { class: 'number' }, s === undefined ? '—' : String(s.errors)),
          el('td', {}, s === undefined ? '—' : new Date(s.time).toLocaleTimeString([], { hour12: false })),
        );
      }),
    ),
  );
}
