// The fleet view: one row per rack, updated in place as the Mixer's events arrive, and the
// operator's actions on each rack, each confirmed and reported.
import { describe, LEVELS, type Rack } from './api.js';
import { ask, report } from './dialog.js';
import { ago, bytes, clear, el } from './dom.js';
import { displayStatus, type FleetState } from './state.js';

interface Action {
  label: string;
  rack: string;
  message: string;
  run: () => Promise<unknown>;
  danger?: boolean;
}

export function fleetView(state: FleetState): HTMLElement {
  const body = el('tbody');
  const empty = el('p', { class: 'empty' }, 'No rack has said hello yet. Start one with: npx fluxrig rack --mixer nats://MIXER:4222 --name NAME');
  const table = el(
    'table',
    { class: 'fleet' },
    el('caption', {}, 'Racks enrolled with this Mixer'),
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        ...['Rack', 'Status', 'Labels', 'Scenario (applied / desired)', 'Last heartbeat', 'Calls/s', 'p99', 'RSS', 'Actions'].map((h) =>
          el('th', { scope: 'col' }, h),
        ),
      ),
    ),
    body,
  );
  const section = el('section', { 'aria-labelledby': 'fleet-title' }, el('h2', { id: 'fleet-title' }, 'Fleet'), empty, table);

  const render = () => {
    const racks = [...state.racks.values()].sort((a, b) => a.name.localeCompare(b.name));
    empty.hidden = racks.length > 0;
    table.hidden = racks.length === 0;
    // Rows are replaced in place, keyed by rack: a focused button keeps its place across updates.
    const focused = document.activeElement instanceof HTMLElement ? document.activeElement.dataset.key : undefined;
    clear(body);
    for (const rack of racks) body.appendChild(row(state, rack));
    if (focused !== undefined) (body.querySelector(`[data-key="${CSS.escape(focused)}"]`) as HTMLElement | null)?.focus();
  };
  state.addEventListener('racks', render);
  state.addEventListener('samples', render);
  // "3 s ago" ages on screen; the data itself only changes by events.
  setInterval(() => {
    for (const cell of body.querySelectorAll<HTMLElement>('[data-seen]')) cell.textContent = ago(Number(cell.dataset.seen));
  }, 1000);
  render();
  return section;
}

function row(state: FleetState, rack: Rack): HTMLTableRowElement {
  const status = displayStatus(rack);
  const sample = state.latest(rack.name);
  const hb = rack.heartbeat;
  const scenario = (ref: Rack['applied']) => (ref === null ? '—' : `${ref.scenario} v${ref.version}`);
  const actions = el('td', { class: 'actions' });
  for (const a of actionsFor(state, rack)) {
    actions
      .appendChild(
        el(
          'button',
          { type: 'button', 'data-key': `${rack.name}:${a.label}`, 'aria-label': `${a.label} ${rack.name}`, class: a.danger === true ? 'danger' : '' },
          a.label,
        ),
      )
      .addEventListener('click', () => void confirmAndRun(a));
  }
  const command = el('button', { type: 'button', 'data-key': `${rack.name}:command`, 'aria-label': `Send a command to ${rack.name}` }, 'Command…');
  command.addEventListener('click', () => void commandDialog(state, rack.name));
  actions.appendChild(command);
  return el(
    'tr',
    { 'data-rack': rack.name },
    el('th', { scope: 'row' }, rack.name),
    el(
      'td',
      {},
      el('span', { class: `status ${status}`, 'data-status': status }, status),
      status === 'offline' ? el('span', { class: 'muted' }, ` (${rack.status})`) : null,
    ),
    el('td', { class: 'labels' }, ...Object.entries(rack.labels).map(([k, v]) => el('span', { class: 'label' }, `${k}=${v}`))),
    el(
      'td',
      { 'data-applied': rack.applied === null ? '' : `${rack.applied.scenario}:${rack.applied.version}` },
      scenario(rack.applied),
      rack.desired !== null && (rack.applied === null || rack.desired.version !== rack.applied.version || rack.desired.scenario !== rack.applied.scenario)
        ? el('span', { class: 'muted' }, ` / ${scenario(rack.desired)}`)
        : null,
      rack.apply_error === null ? null : el('div', { class: 'error' }, rack.apply_error),
    ),
    el('td', { 'data-seen': String(rack.last_seen) }, ago(rack.last_seen)),
    el(
      'td',
      { class: 'number', 'data-calls': sample === undefined ? '' : String(sample.calls_per_s) },
      sample === undefined ? '—' : sample.calls_per_s.toFixed(sample.calls_per_s < 10 ? 1 : 0),
    ),
    el('td', { class: 'number' }, hb?.p99_ms == null ? '—' : `${hb.p99_ms.toFixed(1)} ms`),
    el('td', { class: 'number' }, hb === null ? '—' : bytes(hb.rss)),
    actions,
  );
}

function actionsFor(state: FleetState, rack: Rack): Action[] {
  const name = rack.name;
  const post = (what: string) => () => state.api.request('POST', `/racks/${name}/${what}`);
  const out: Action[] = [];
  if (rack.status === 'pending' || rack.status === 'denied')
    out.push({
      label: 'Approve',
      rack: name,
      message: `Adopt ${name} (machine ${rack.machine_id}): it gets a passport and runs the scenarios pushed to it.`,
      run: post('approve'),
    });
  if (rack.status === 'pending') out.push({ label: 'Deny', rack: name, message: `Refuse ${name}: it is told it is denied.`, run: post('deny'), danger: true });
  if (rack.status === 'active')
    out.push({ label: 'Suspend', rack: name, message: `Stop ${name}'s gears; it stays enrolled until activated.`, run: post('suspend'), danger: true });
  if (rack.status === 'suspended') out.push({ label: 'Activate', rack: name, message: `Start ${name}'s gears again.`, run: post('activate') });
  out.push({
    label: 'Remove',
    rack: name,
    message: `Forget ${name}: its record and figures go; if it runs, it must say hello and be approved again.`,
    run: () => state.api.request('DELETE', `/racks/${name}`),
    danger: true,
  });
  return out;
}

async function confirmAndRun(a: Action): Promise<void> {
  if (!(await ask({ title: `${a.label} ${a.rack}?`, message: a.message, confirm: a.label, danger: a.danger }))) return;
  try {
    await a.run();
    report(`${a.label}: done for ${a.rack}.`, true);
  } catch (err) {
    report(`${a.label} ${a.rack} failed: ${describe(err)}`, false);
  }
}

async function commandDialog(state: FleetState, name: string): Promise<void> {
  const command = el('select', { id: 'command-name' }, ...['log-level', 'reload', 'shutdown'].map((c) => el('option', { value: c }, c)));
  const level = el(
    'select',
    { id: 'command-level' },
    el('option', { value: '' }, 'unchanged'),
    ...[...LEVELS, 'silent'].map((l) => el('option', { value: l }, l)),
  );
  const telemetry = el(
    'select',
    { id: 'command-telemetry' },
    el('option', { value: '' }, 'unchanged'),
    ...[...LEVELS, 'silent'].map((l) => el('option', { value: l }, l)),
  );
  const levels = el(
    'div',
    { class: 'levels' },
    el('label', { for: 'command-level' }, 'Local log level'),
    level,
    el('label', { for: 'command-telemetry' }, 'Level sent to the Mixer'),
    telemetry,
  );
  command.addEventListener('change', () => {
    levels.hidden = command.value !== 'log-level';
  });
  const fields = el('div', { class: 'fields' }, el('label', { for: 'command-name' }, 'Command'), command, levels);
  const confirmed = await ask({
    title: `Command ${name}`,
    message: 'log-level changes what the rack logs and sends; reload re-reads its scenario; shutdown stops the rack process.',
    confirm: 'Send',
    fields,
  });
  if (!confirmed) return;
  const body: Record<string, string> = { command: command.value };
  if (command.value === 'log-level') {
    if (level.value === '' && telemetry.value === '') return report(`log-level for ${name}: choose a level to change.`, false);
    if (level.value !== '') body.level = level.value;
    if (telemetry.value !== '') body.telemetry = telemetry.value;
  }
  try {
    const answer = await state.api.request<{ ok: boolean; error: string | null }>('POST', `/racks/${name}/commands`, body);
    report(answer.ok ? `${command.value}: ${name} did it.` : `${command.value}: ${name} refused: ${answer.error ?? 'no reason given'}`, answer.ok);
  } catch (err) {
    report(`${command.value} for ${name} failed: ${describe(err)}`, false);
  }
}
