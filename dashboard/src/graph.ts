// A scenario drawn as a graph: one band per rack, its gears in the order the scenario declares
// them, and each wire an arrow labelled with its ports and lane (guaranteed lanes dashed). Wires
// that run backwards (an answer going back to the gear that asked) arc below the band; wires
// across racks run between bands. A table beside it says the same for screen readers.
import type { ScenarioGraph } from './api.js';
import { el, svg } from './dom.js';

const GEAR_W = 150;
const GEAR_H = 46;
const GAP_X = 90;
const BAND_H = 170;
const PAD = 24;
const TITLE_H = 26;

export function graphFigure(graph: ScenarioGraph): HTMLElement {
  const columns = Math.max(1, ...graph.racks.map((r) => r.gears.length));
  const width = PAD * 2 + columns * GEAR_W + (columns - 1) * GAP_X;
  const height = PAD + graph.racks.length * (BAND_H + PAD);
  const canvas = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-labelledby': 'graph-title' });
  canvas.appendChild(
    svg(
      'defs',
      {},
      ...(['hot', 'guaranteed'] as const).map((lane) =>
        svg(
          'marker',
          { id: `arrow-${lane}`, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
          svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: `arrowhead ${lane}` }),
        ),
      ),
    ),
  );
  const where = new Map<string, { x: number; y: number; band: number }>();
  graph.racks.forEach((rack, band) => {
    const top = PAD + band * (BAND_H + PAD);
    canvas.appendChild(svg('rect', { x: PAD / 2, y: top, width: width - PAD, height: BAND_H, rx: 8, class: 'band' }));
    canvas.appendChild(
      svg('text', { x: PAD, y: top + 18, class: 'band-title' }, `rack ${rack.rack}${rack.groups.length > 0 ? ` (groups ${rack.groups.join(', ')})` : ''}`),
    );
    rack.gears.forEach((gear, i) => {
      const x = PAD + i * (GEAR_W + GAP_X);
      const y = top + TITLE_H + (BAND_H - TITLE_H - GEAR_H) / 2 - 14;
      where.set(`${rack.rack}/${gear.name}`, { x, y, band });
      canvas.appendChild(
        svg(
          'g',
          { class: 'gear', 'data-gear': gear.name },
          svg('rect', { x, y, width: GEAR_W, height: GEAR_H, rx: 6 }),
          svg('text', { x: x + GEAR_W / 2, y: y + 19, 'text-anchor': 'middle', class: 'gear-name' }, gear.name),
          svg('text', { x: x + GEAR_W / 2, y: y + 36, 'text-anchor': 'middle', class: 'gear-type' }, gear.type),
        ),
      );
    });
  });
  const seen = new Map<string, number>();
  for (const w of graph.wires) {
    const a = where.get(`${w.from.rack}/${w.from.gear}`);
    const b = where.get(`${w.to.rack}/${w.to.gear}`);
    if (a === undefined || b === undefined) continue;
    const pair = `${w.from.rack}/${w.from.gear}>${w.to.rack}/${w.to.gear}`;
    const nth = seen.get(pair) ?? 0;
    seen.set(pair, nth + 1);
    let d: string;
    let label: { x: number; y: number };
    if (a.band !== b.band) {
      const down = b.band > a.band;
      const [x1, y1] = [a.x + GEAR_W / 2 + nth * 14, down ? a.y + GEAR_H : a.y];
      const [x2, y2] = [b.x + GEAR_W / 2 + nth * 14, down ? b.y : b.y + GEAR_H];
      d = `M ${x1} ${y1} C ${x1} ${(y1 + y2) / 2}, ${x2} ${(y1 + y2) / 2}, ${x2} ${y2}`;
      label = { x: (x1 + x2) / 2 + 8, y: (y1 + y2) / 2 };
    } else if (b.x > a.x) {
      const y = a.y + 14 + nth * 16;
      d = `M ${a.x + GEAR_W} ${y} L ${b.x} ${y}`;
      label = { x: (a.x + GEAR_W + b.x) / 2, y: y - 5 };
    } else {
      // Backwards, or a gear wired to itself: an arc under the band's gears.
      const depth = 30 + nth * 18;
      const [x1, x2, y] = [a.x + GEAR_W / 2 + 20, b.x + GEAR_W / 2 - 20, a.y + GEAR_H];
      d = `M ${x1} ${y} C ${x1} ${y + depth}, ${x2} ${y + depth}, ${x2} ${y}`;
      label = { x: (x1 + x2) / 2, y: y + depth * 0.75 + 12 };
    }
    canvas.appendChild(
      svg(
        'g',
        { class: `wire ${w.lane}` },
        svg('path', { d, 'marker-end': `url(#arrow-${w.lane})` }),
        svg('text', { x: label.x, y: label.y, 'text-anchor': 'middle' }, `${w.from.port} → ${w.to.port}${w.lane === 'guaranteed' ? ' (guaranteed)' : ''}`),
      ),
    );
  }
  const wires = el(
    'table',
    { class: 'wires' },
    el('caption', {}, `Wires of ${graph.name} v${graph.version}`),
    el('thead', {}, el('tr', {}, ...['From', 'To', 'Lane'].map((h) => el('th', { scope: 'col' }, h)))),
    el(
      'tbody',
      {},
      ...graph.wires.map((w) =>
        el(
          'tr',
          {},
          el('td', {}, `${w.from.rack}.${w.from.gear}.${w.from.port}`),
          el('td', {}, `${w.to.rack}.${w.to.gear}.${w.to.port}`),
          el('td', { class: `lane ${w.lane}` }, w.lane),
        ),
      ),
    ),
  );
  return el(
    'figure',
    { class: 'graph' },
    el(
      'figcaption',
      { id: 'graph-title' },
      `${graph.name} v${graph.version}: ${graph.racks.length} racks, ${graph.wires.length} wires (hot solid, guaranteed dashed)`,
    ),
    el('div', { class: 'graph-canvas' }, canvas),
    el('details', {}, el('summary', {}, 'The wires as a table'), wires),
  );
}
