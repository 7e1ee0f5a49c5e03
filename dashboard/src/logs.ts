// A tail of the fleet's log lines and events, as the Mixer receives them from the racks'
// telemetry, filtered by rack and level. A change of filter follows the stream again with it.
import { describe, LEVELS, type LogRecord, retryDelayMs } from './api.js';
import { clear, clock, el } from './dom.js';
import type { FleetState } from './state.js';

/** Lines kept on the page; older ones leave the top. */
const TAIL = 500;
const BACKLOG = 100;

export function logsView(state: FleetState): HTMLElement {
  const rack = el('select', { id: 'logs-rack' }, el('option', { value: '' }, 'all racks'));
  const level = el('select', { id: 'logs-level' }, ...LEVELS.map((l) => el('option', { value: l, selected: l === 'info' }, `${l} and above`)));
  const status = el('p', { class: 'muted', 'aria-live': 'polite' });
  const lines = el('ol', { class: 'log-lines', 'aria-label': 'Log lines, oldest first' });
  let following: AbortController | undefined;

  const fillRacks = () => {
    const chosen = rack.value;
    clear(rack);
    rack.appendChild(el('option', { value: '' }, 'all racks'));
    for (const name of [...state.racks.keys()].sort()) rack.appendChild(el('option', { value: name, selected: name === chosen }, name));
  };

  const follow = () => {
    following?.abort();
    const controller = new AbortController();
    following = controller;
    clear(lines);
    const query = new URLSearchParams({ level: level.value, limit: String(BACKLOG) });
    if (rack.value !== '') query.set('rack', rack.value);
    status.textContent = `Following ${rack.value === '' ? 'all racks' : rack.value}, ${level.value} and above.`;
    void (async () => {
      for (let attempt = 0; !controller.signal.aborted; attempt++) {
        try {
          await state.api.follow(`/logs/follow?${query}`, (e) => e.event === 'log' && add(e.data as LogRecord), controller.signal);
        } catch (err) {
          if (controller.signal.aborted) return;
          status.textContent = `The log stream stopped (${describe(err)}); following again.`;
        }
        await new Promise((resolve) => setTimeout(resolve, retryDelayMs(attempt)));
        // What arrived while away comes again with the backlog; start a clean tail.
        clear(lines);
      }
    })();
  };

  const add = (r: LogRecord) => {
    const fields = r.fields === '' || r.fields === '{}' ? null : el('span', { class: 'fields' }, r.fields);
    lines.appendChild(
      el(
        'li',
        { class: `log ${r.kind} level-${r.level}`, 'data-rack': r.rack },
        el('time', { datetime: new Date(r.time).toISOString() }, clock(r.time)),
        el('span', { class: 'rack' }, r.rack),
        el('span', { class: `level ${r.level}` }, r.kind === 'event' ? 'event' : r.level),
        el('span', { class: 'msg' }, r.msg),
        fields,
      ),
    );
    while (lines.childElementCount > TAIL) lines.firstElementChild!.remove();
    if (stuckToBottom) lines.scrollTop = lines.scrollHeight;
  };
  // The tail scrolls along unless the reader scrolled up to read.
  let stuckToBottom = true;
  lines.addEventListener('scroll', () => {
    stuckToBottom = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 8;
  });

  rack.addEventListener('change', follow);
  level.addEventListener('change', follow);
  state.addEventListener('racks', fillRacks);
  const section = el(
    'section',
    { 'aria-labelledby': 'logs-title' },
    el('h2', { id: 'logs-title' }, 'Logs'),
    el('div', { class: 'chooser' }, el('label', { for: 'logs-rack' }, 'Rack'), rack, el('label', { for: 'logs-level' }, 'Level'), level),
    status,
    lines,
  );
  // Followed only while the view is shown: a hidden tail would stream for nobody.
  section.addEventListener('shown', () => {
    fillRacks();
    follow();
  });
  section.addEventListener('hidden', () => {
    following?.abort();
    following = undefined;
  });
  return section;
}
