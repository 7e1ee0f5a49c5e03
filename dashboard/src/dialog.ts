// Every action is confirmed in a modal <dialog> (the browser keeps focus inside it and Escape
// cancels it), and its outcome is announced in the page's live region.
import { el } from './dom.js';

export interface Question {
  title: string;
  message: string;
  confirm: string;
  /** Controls the operator fills in before confirming (a command's arguments). */
  fields?: HTMLElement;
  danger?: boolean;
}

export function ask(q: Question): Promise<boolean> {
  const heading = el('h2', { id: 'dialog-title' }, q.title);
  const ok = el('button', { type: 'submit', value: 'ok', class: q.danger === true ? 'danger' : 'primary' }, q.confirm);
  const cancel = el('button', { type: 'submit', value: 'cancel', formnovalidate: true }, 'Cancel');
  const dialog = el(
    'dialog',
    { 'aria-labelledby': 'dialog-title', 'aria-describedby': 'dialog-message' },
    el('form', { method: 'dialog' }, heading, el('p', { id: 'dialog-message' }, q.message), q.fields, el('div', { class: 'buttons' }, cancel, ok)),
  );
  document.body.appendChild(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'ok');
    });
    dialog.showModal();
    // Cancel has the focus: a stray Enter does not approve or remove anything.
    cancel.focus();
  });
}

/** Announces what happened (screen readers read the live region; everyone sees the last one). */
export function report(text: string, ok: boolean): void {
  const region = document.getElementById('report');
  if (region === null) return;
  region.textContent = text;
  region.className = ok ? 'report ok' : 'report failed';
}
