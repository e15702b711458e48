// Small DOM helpers: element builder, notices, markdown, formatting.

import { ApiError } from './api';

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, unknown>;

type Tags = HTMLElementTagNameMap;
/** The tag of an element spec such as `button.primary#submit`. */
type TagOf<S extends string> = S extends `${infer T}.${string}` ? TagOf<T>
  : S extends `${infer T}#${string}` ? TagOf<T>
    : S extends keyof Tags ? S : 'div';

/** Build an element: `h('button.primary#submit', {onclick}, 'Submit')`. */
export function h<S extends string>(
  spec: S,
  attrs: Attrs | null = null,
  ...children: (Child | Child[])[]
): Tags[TagOf<S>] {
  const tag = /^[a-z0-9]+/.exec(spec)?.[0] ?? 'div';
  const id = /#([\w-]+)/.exec(spec)?.[1];
  const classes = [...spec.matchAll(/\.([\w-]+)/g)].map((m) => m[1]);
  const el = document.createElement(tag) as Tags[TagOf<S>];
  if (id) el.id = id;
  if (classes.length) el.className = classes.join(' ');
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value as EventListener);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'style' && typeof value === 'object') {
      Object.assign(el.style, value);
    } else if (key in el && key !== 'list') {
      (el as unknown as Record<string, unknown>)[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Show a notice at the top of the page (errors stay until dismissed). */
export function notify(message: string, kind: 'info' | 'error' | 'ok' = 'info'): void {
  const bar = document.getElementById('notices');
  if (!bar) return;
  const note = h('div.notice', { role: kind === 'error' ? 'alert' : 'status', dataset: { kind } },
    h('span', null, message),
    h('button.link', { onclick: () => note.remove(), title: 'Dismiss' }, '×'));
  note.classList.add(kind);
  bar.append(note);
  if (kind !== 'error') setTimeout(() => note.remove(), 4000);
}

/** Tell the user what went wrong, plainly. */
export function fail(err: unknown): void {
  if (err instanceof ApiError) {
    if (err.status === 401) return; // the sign-in page explains it
    notify(err.plain, 'error');
  } else {
    notify(`Something went wrong: ${String(err)}`, 'error');
  }
}

export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A small, safe Markdown subset: headings, lists, paragraphs, bold, italics, code, links. */
export function markdown(text: string): string {
  const inline = (s: string) =>
    esc(s)
      .replace(/\*\*(.+?)\*\*/g, '<strong>$1</strong>')
      .replace(/\*(.+?)\*/g, '<em>$1</em>')
      .replace(/`(.+?)`/g, '<code>$1</code>')
      .replace(/\[(.+?)\]\((https?:\/\/[^)\s]+|\/[^)\s]*)\)/g, '<a href="$2" rel="noopener">$1</a>');
  const out: string[] = [];
  let list = false;
  for (const line of text.split('\n')) {
    const heading = /^(#{1,4})\s+(.*)$/.exec(line);
    const item = /^\s*[-*]\s+(.*)$/.exec(line);
    if (!item && list) {
      out.push('</ul>');
      list = false;
    }
    if (heading) out.push(`<h${heading[1].length + 2}>${inline(heading[2])}</h${heading[1].length + 2}>`);
    else if (item) {
      if (!list) out.push('<ul>');
      list = true;
      out.push(`<li>${inline(item[1])}</li>`);
    } else if (line.trim()) out.push(`<p>${inline(line)}</p>`);
  }
  if (list) out.push('</ul>');
  return out.join('\n');
}

export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** An instant in UTC, to the second: "2025-03-04 12:07:30 UTC". */
export function fmtUtc(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d.getTime()) ? iso : `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** How far `iso` lies from `now` (both ISO 8601), in words: "4 min ago", "in 7 min",
 * "2 h 5 min ago", "3 d ago", "just now", "in under a minute". */
export function fmtRelative(iso: string, now: string): string {
  const seconds = (new Date(iso).getTime() - new Date(now).getTime()) / 1000;
  if (!isFinite(seconds)) return '—';
  const span = Math.abs(seconds);
  if (span < 60) return seconds < 0 ? 'just now' : 'in under a minute';
  const minutes = Math.floor(span / 60);
  const words = minutes < 60 ? `${minutes} min`
    : minutes < 48 * 60 ? `${Math.floor(minutes / 60)} h${minutes % 60 ? ` ${minutes % 60} min` : ''}`
      : `${Math.floor(minutes / 1440)} d`;
  return seconds < 0 ? `${words} ago` : `in ${words}`;
}

export function fmtNum(v: unknown, digits = 3): string {
  return typeof v === 'number' && isFinite(v) ? v.toFixed(digits) : '—';
}

export function fmtDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, '0')}`;
}

/** A table from rows. */
export function table(headers: string[], rows: (Child | Child[])[][], cls = ''): HTMLTableElement {
  return h('table', { className: cls },
    h('thead', null, h('tr', null, headers.map((t) => h('th', null, t)))),
    h('tbody', null, rows.map((r) => h('tr', null, r.map((c) => h('td', null, c))))));
}

/** Ask for a reason; resolves `null` when cancelled. */
export function askReason(title: string, placeholder = 'Reason (required)'): Promise<string | null> {
  return new Promise((resolve) => {
    const input = h('textarea', { placeholder, rows: 3, required: true, id: 'reason-input' });
    const done = (value: string | null) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    const ok = h('button.primary', { type: 'submit', id: 'reason-ok' }, 'OK');
    const form = h('form', {
      onsubmit: (e: Event) => {
        e.preventDefault();
        const value = input.value.trim();
        if (!value) {
          input.focus();
          return;
        }
        done(value);
      },
    }, h('h3', null, title), input,
    h('div.row', null, ok, h('button', { type: 'button', onclick: () => done(null) }, 'Cancel')));
    const dialog = h('dialog', null, form);
    dialog.addEventListener('cancel', () => done(null));
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

/** True when the key event comes from a text field (shortcuts stay out of the way). */
export function typing(e: KeyboardEvent): boolean {
  const t = e.target as HTMLElement | null;
  return !!t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable);
}
