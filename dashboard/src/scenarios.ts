// The scenario view: push a scenario file (the Mixer validates it before any rack sees it, and
// its problems are listed here with file:line:column), the active scenario drawn as a graph, and
// its rollout on each rack, refreshed whenever a rack's record changes.
import { ApiError, describe, type RolloutRow, type ScenarioGraph } from './api.js';
import { report } from './dialog.js';
import { clear, coalesced, el } from './dom.js';
import { graphFigure } from './graph.js';
import type { FleetState } from './state.js';

export function scenariosView(state: FleetState): HTMLElement {
  const file = el('input', { type: 'file', id: 'scenario-file', accept: '.yaml,.yml,application/yaml,text/yaml', required: true });
  const racks = el('input', {
    type: 'text',
    id: 'scenario-racks',
    placeholder: 'north, south',
    autocomplete: 'off',
    'aria-describedby': 'scenario-racks-hint',
  });
  const problems = el('div', { id: 'push-problems', class: 'problems', role: 'alert' });
  const push = el('button', { type: 'submit', class: 'primary' }, 'Validate and push');
  const form = el(
    'form',
    { class: 'push', 'aria-labelledby': 'push-title' },
    el('h3', { id: 'push-title' }, 'Push a scenario'),
    el('label', { for: 'scenario-file' }, 'Scenario file (YAML)'),
    file,
    el('label', { for: 'scenario-racks' }, 'Also send to racks (optional)'),
    racks,
    el('p', { id: 'scenario-racks-hint', class: 'hint' }, 'Names separated by commas; the scenario’s own racks, deploy and groups are always included.'),
    push,
    problems,
  );
  const chooser = el('select', { id: 'scenario-choice' });
  const graphSlot = el('div', { class: 'graph-slot' });
  const rollout = el('div', { class: 'rollout', 'aria-live': 'polite' });
  let chosen: string | undefined;

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void (async () => {
      clear(problems);
      const picked = file.files?.[0];
      if (picked === undefined) return;
      push.disabled = true;
      try {
        const yaml = await picked.text();
        const extra = racks.value
          .split(',')
          .map((r) => r.trim())
          .filter((r) => r !== '');
        const stored = await state.api.request<{ name: string; version: number }>('POST', '/scenarios', { yaml, file: picked.name, racks: extra });
        report(`Scenario ${stored.name} v${stored.version} pushed; its rollout is below.`, true);
        chosen = stored.name;
        await show();
      } catch (err) {
        const issues = err instanceof ApiError ? err.issues : [];
        problems.appendChild(el('p', {}, issues.length > 0 ? `${picked.name} was not pushed: no rack received it.` : `Not pushed: ${describe(err)}`));
        if (issues.length > 0)
          problems.appendChild(el('ul', {}, ...issues.map((i) => el('li', {}, el('code', {}, `${i.file}:${i.line}:${i.column}`), `: ${i.message}`))));
        report(`${picked.name} was not pushed.`, false);
      } finally {
        push.disabled = false;
      }
    })();
  });

  const fillChooser = () => {
    const names = [...state.scenarios.keys()].sort();
    if (chosen === undefined || !state.scenarios.has(chosen)) chosen = newest(state);
    clear(chooser);
    for (const n of names) chooser.appendChild(el('option', { value: n, selected: n === chosen }, `${n} v${state.scenarios.get(n)!.version}`));
    chooser.disabled = names.length === 0;
  };
  chooser.addEventListener('change', () => {
    chosen = chooser.value;
    void show();
  });

  let drawn = '';
  const show = async () => {
    fillChooser();
    if (chosen === undefined) {
      clear(graphSlot);
      graphSlot.appendChild(el('p', { class: 'empty' }, 'No scenario pushed yet.'));
      clear(rollout);
      return;
    }
    const name = chosen;
    try {
      const [graph, rows] = await Promise.all([
        state.api.request<ScenarioGraph>('GET', `/scenarios/${name}/graph`),
        state.api.request<RolloutRow[]>('GET', `/scenarios/${name}/status`),
      ]);
      if (name !== chosen) return;
      // The graph changes only with a push; redrawing it on every heartbeat would lose a reader's place.
      const key = `${graph.name}:${graph.version}`;
      if (key !== drawn) {
        clear(graphSlot);
        graphSlot.appendChild(graphFigure(graph));
        drawn = key;
      }
      clear(rollout);
      rollout.appendChild(rolloutTable(name, rows));
    } catch (err) {
      clear(rollout);
      rollout.appendChild(el('p', { class: 'error' }, `Cannot show ${name}: ${describe(err)}`));
    }
  };
  // Rollout progress follows the racks' records: refreshed at most every 250 ms while they change.
  const later = coalesced(() => void show(), 250);
  state.addEventListener('racks', later);
  state.addEventListener('scenarios', later);

  return el(
    'section',
    { 'aria-labelledby': 'scenarios-title' },
    el('h2', { id: 'scenarios-title' }, 'Scenarios'),
    el(
      'div',
      { class: 'scenario-layout' },
      form,
      el('div', { class: 'scenario-main' }, el('div', { class: 'chooser' }, el('label', { for: 'scenario-choice' }, 'Scenario'), chooser), rollout, graphSlot),
    ),
  );
}

function newest(state: FleetState): string | undefined {
  let best: { name: string; at: number } | undefined;
  for (const s of state.scenarios.values()) if (best === undefined || s.pushed_at > best.at) best = { name: s.name, at: s.pushed_at };
  return best?.name;
}

function rolloutTable(name: string, rows: RolloutRow[]): HTMLElement {
  const applied = rows.filter((r) => r.state === 'applied').length;
  return el(
    'div',
    {},
    el(
      'p',
      { class: 'progress-line' },
      el('label', { for: 'rollout-progress' }, `Rollout of ${name}: ${applied} of ${rows.length} racks applied `),
      el('progress', { id: 'rollout-progress', max: String(Math.max(1, rows.length)), value: String(applied) }),
    ),
    el(
      'table',
      { class: 'rollout-table' },
      el('caption', {}, `Rollout of ${name} per rack`),
      el('thead', {}, el('tr', {}, ...['Rack', 'Desired', 'Applied', 'State', 'Online'].map((h) => el('th', { scope: 'col' }, h)))),
      el(
        'tbody',
        {},
        ...rows.map((r) =>
          el(
            'tr',
            { 'data-rack': r.rack, 'data-state': r.state },
            el('th', { scope: 'row' }, r.rack),
            el('td', {}, r.desired === null ? '—' : `v${r.desired}`),
            el('td', { 'data-applied': r.applied === null ? '' : String(r.applied) }, r.applied === null ? '—' : `v${r.applied}`),
            el('td', {}, el('span', { class: `state ${r.state}` }, r.state), r.error === null ? null : el('div', { class: 'error' }, r.error)),
            el('td', {}, r.online ? 'yes' : 'no'),
          ),
        ),
      ),
    ),
  );
}
