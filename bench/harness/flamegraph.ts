// A flame graph of V8 CPU profiles (.cpuprofile, from node --cpu-prof), one per thread, as a
// self-contained HTML page (inline SVG, hover titles, no scripts): where a thread's time went,
// read bottom-up, each frame as wide as its share of the samples.

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
}
interface Frame {
  name: string;
  samples: number;
  children: Map<string, Frame>;
}

const WIDTH = 1200;
const ROW = 16;
const MIN_WIDTH = 0.5;

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url.replace(/^.*\/(dist|node_modules)\//, '').replace(/^file:\/\//, '');
  return `${functionName || '(anonymous)'}${file === '' ? '' : ` ${file}:${lineNumber + 1}`}`;
}

/** The samples of a profile merged into one tree by call path; "(idle)" is left out. */
function mergeTree(profile: CpuProfile): { root: Frame; idle: number; total: number } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const counts = new Map<number, number>();
  for (const s of profile.samples) counts.set(s, (counts.get(s) ?? 0) + 1);
  const root: Frame = { name: 'all', samples: 0, children: new Map() };
  let idle = 0;
  for (const [id, count] of counts) {
    const path: ProfileNode[] = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) path.unshift(byId.get(at)!);
    if (path.at(-1)?.callFrame.functionName === '(idle)') {
      idle += count;
      continue;
    }
    let frame = root;
    frame.samples += count;
    for (const node of path.slice(1)) {
      const name = frameName(node);
      let child = frame.children.get(name);
      if (child === undefined) {
        child = { name, samples: 0, children: new Map() };
        frame.children.set(name, child);
      }
      child.samples += count;
      frame = child;
    }
  }
  return { root, idle, total: profile.samples.length };
}

function depthOf(frame: Frame): number {
  let deepest = 0;
  for (const c of frame.children.values()) deepest = Math.max(deepest, depthOf(c));
  return deepest + 1;
}

const escapeHtml = (t: string) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');

function color(name: string): string {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  const wasm = name.startsWith('wasm-function') || name.includes('wasm/');
  return wasm ? `hsl(${200 + (h % 30)},70%,65%)` : `hsl(${10 + (h % 40)},85%,${60 + (h % 15)}%)`;
}

function svgOf(root: Frame, busyTotal: number): string {
  const rows = depthOf(root);
  const height = rows * ROW;
  const rects: string[] = [];
  const draw = (frame: Frame, x: number, depth: number, width: number) => {
    if (width < MIN_WIDTH) return;
    const y = height - (depth + 1) * ROW;
    const share = ((frame.samples / busyTotal) * 100).toFixed(1);
    const label = width > 40 ? `<text x="${x + 3}" y="${y + 12}" font-size="11">${escapeHtml(frame.name.slice(0, Math.floor(width / 7)))}</text>` : '';
    rects.push(
      `<g><title>${escapeHtml(frame.name)}: ${share}% of busy time</title><rect x="${x.toFixed(1)}" y="${y}" width="${width.toFixed(1)}" height="${ROW - 1}" fill="${color(frame.name)}"/>${label}</g>`,
    );
    let cx = x;
    for (const child of [...frame.children.values()].sort((a, b) => b.samples - a.samples)) {
      const w = (child.samples / frame.samples) * width;
      draw(child, cx, depth + 1, w);
      cx += w;
    }
  };
  draw(root, 0, 0, WIDTH);
  return `<svg width="${WIDTH}" height="${height}" xmlns="http://www.w3.org/2000/svg" font-family="monospace">${rects.join('')}</svg>`;
}

/** One page with a flame graph per profile. `profiles` pairs a heading with a parsed .cpuprofile. */
export function flameGraphPage(title: string, profiles: Array<{ heading: string; profile: CpuProfile }>, notes: string[]): string {
  const sections = profiles.map(({ heading, profile }) => {
    const { root, idle, total } = mergeTree(profile);
    const busy = total === 0 ? 0 : Math.round(((total - idle) / total) * 100);
    return `<h2>${escapeHtml(heading)}</h2><p>busy ${busy}% of the profiled time (idle left out); hover a frame for its share.</p>${svgOf(root, Math.max(1, root.samples))}`;
  });
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em}svg text{pointer-events:none}</style></head><body>
<h1>${escapeHtml(title)}</h1><ul>${notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('')}</ul>${sections.join('\n')}</body></html>\n`;
}
