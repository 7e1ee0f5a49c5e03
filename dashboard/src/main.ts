// The fleet dashboard. It asks for the Mixer's API token once per browser session (kept in
// sessionStorage, sent as a bearer token on every request); without an accepted token it shows
// nothing. Four views, chosen by the address's #fragment so each can be bookmarked.
import './style.css';
import { ApiError, MixerApi } from './api.js';
import { chartsView } from './charts.js';
import { clear, el } from './dom.js';
import { fleetView } from './fleet.js';
import { logsView } from './logs.js';
import { scenariosView } from './scenarios.js';
import { FleetState } from './state.js';

const TOKEN_KEY = 'fluxrig.mixer.token';
const VIEWS = [
  { id: 'fleet', title: 'Fleet', make: fleetView },
  { id: 'scenarios', title: 'Scenarios', make: scenariosView },
  { id: 'traffic', title: 'Traffic', make: chartsView },
  { id: 'logs', title: 'Logs', make: logsView },
] as const;

const main = document.getElementById('main')!;
const header = document.getElementById('session')!;

function askToken(problem?: string): void {
  clear(main);
  clear(header);
  document.title = 'fluxrig Mixer: sign in';
  const input = el('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'token-hint' });
  const error = el('p', { class: 'error', role: 'alert' }, problem ?? '');
  const form = el(
    'form',
    { class: 'token', 'aria-labelledby': 'token-title' },
    el('h2', { id: 'token-title' }, 'Sign in to this Mixer'),
    el('label', { for: 'token' }, 'API token'),
    input,
    el(
      'p',
      { id: 'token-hint', class: 'hint' },
      'The Mixer prints where its token is when it starts (by default .fluxrig/mixer/api-token). It is kept for this browser session only.',
    ),
    el('button', { type: 'submit', class: 'primary' }, 'Open the dashboard'),
    error,
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void open(input.value.trim());
  });
  main.appendChild(form);
  input.focus();
}

async function open(token: string): Promise<void> {
  const api = new MixerApi(token);
  try {
    await api.request('GET', '/racks');
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    return askToken(err instanceof ApiError && err.status === 401 ? 'That token was refused.' : `The Mixer cannot be reached: ${(err as Error).message}`);
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  const state = new FleetState(api);
  state.addEventListener('unauthorized', () => {
    state.close();
    sessionStorage.removeItem(TOKEN_KEY);
    askToken('The Mixer no longer accepts this token.');
  });
  dashboard(state);
  state.start();
}

function dashboard(state: FleetState): void {
  clear(main);
  clear(header);
  const connection = el('span', { class: 'connection', role: 'status' }, 'connecting…');
  state.addEventListener('connection', () => {
    connection.textContent = state.connection === 'live' ? 'live' : state.connection === 'reconnecting' ? 'reconnecting…' : 'connecting…';
    connection.className = `connection ${state.connection}`;
  });
  const signOut = el('button', { type: 'button' }, 'Forget token');
  signOut.addEventListener('click', () => {
    state.close();
    sessionStorage.removeItem(TOKEN_KEY);
    location.hash = '';
    askToken();
  });
  header.append(connection, signOut);

  const links = VIEWS.map((v) => el('a', { href: `#${v.id}` }, v.title));
  main.appendChild(el('nav', { 'aria-label': 'Views' }, el('ul', {}, ...links.map((a) => el('li', {}, a)))));
  const sections = VIEWS.map((v) => {
    const s = v.make(state);
    s.id = `view-${v.id}`;
    s.hidden = true;
    main.appendChild(s);
    return s;
  });
  let index = 0;
  const route = () => {
    // Another fragment (the skip link's #main) keeps the view it is on.
    const wanted = VIEWS.findIndex((v) => `#${v.id}` === location.hash);
    if (wanted >= 0) index = wanted;
    sections.forEach((s, i) => {
      const shown = i === index;
      if (s.hidden === shown) {
        s.hidden = !shown;
        s.dispatchEvent(new Event(shown ? 'shown' : 'hidden'));
      }
      if (shown) links[i]!.setAttribute('aria-current', 'page');
      else links[i]!.removeAttribute('aria-current');
    });
    document.title = `fluxrig Mixer: ${VIEWS[index]!.title}`;
  };
  window.addEventListener('hashchange', () => {
    route();
    // Keyboard and screen-reader users land on the view they chose.
    const heading = sections.find((s) => !s.hidden)?.querySelector('h2');
    if (heading !== null && heading !== undefined) {
      heading.tabIndex = -1;
      heading.focus();
    }
  });
  route();
}

const kept = sessionStorage.getItem(TOKEN_KEY);
if (kept === null) askToken();
else void open(kept);
