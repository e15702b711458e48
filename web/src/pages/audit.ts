// Audit log viewer: the hash-chained events filtered by the server (actor, action, entity,
// time), page by page with the cursor, the filters kept in the URL so a view can be shared;
// chain verification for global auditors and administrators.

import { ApiError, get, type AuditEvent } from '../api';
import type { Cleanup, PageCtx } from '../main';
import { fail, fmtTime, h, table } from '../ui';

interface Verify {
  ok: boolean;
  n_events: number;
  head: { seq: number; hash: string } | null;
  broken_seq: number | null;
  reason: string | null;
}

interface EventPage {
  items: AuditEvent[];
  next_cursor: string | null;
}

/** The filters the API takes, by URL/query name. `since`/`until` are ISO 8601 UTC. */
const FIELDS = ['actor', 'action', 'entity_type', 'entity_id', 'since', 'until'] as const;
type Field = (typeof FIELDS)[number];
type Filters = Record<Field, string> & { order: 'desc' | 'asc'; scope: string };

/** Events per page (`?limit=` in the address overrides it, 1–500). */
const PAGE = 100;
const ACTIONS = ['create', 'update', 'delete', 'login', 'login_failed', 'logout', 'denied', 'import', 'export', 'download',
  'release', 'consensus', 'flag', 'skip', 'enqueue', 'requeue', 'prelabel'];
const ENTITIES = ['annotations', 'tasks', 'reviews', 'consensus', 'items', 'escalations', 'releases', 'release_signatures',
  'users', 'memberships', 'projects', 'label_schemas', 'guidelines', 'workflow_policies', 'web_sessions'];

/** `2024-05-01T09:30:00Z` as the local `YYYY-MM-DDTHH:MM:SS` a datetime-local input shows. */
export function toLocalInput(iso: string): string {
  const d = new Date(iso);
  if (!iso || isNaN(d.getTime())) return '';
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A datetime-local value (local time) as ISO 8601 UTC; blank stays blank. */
export function fromLocalInput(value: string): string {
  if (!value) return '';
  const d = new Date(value);
  return isNaN(d.getTime()) ? value : d.toISOString();
}

/** The audit page: one project's events (or all, for administrators and global auditors). */
export async function auditPage(root: HTMLElement, ctx: PageCtx): Promise<Cleanup> {
  const global = ctx.me.user.role === 'admin' || ctx.me.user.role === 'auditor';
  const asked = Number(new URLSearchParams(location.search).get('limit'));
  const pageSize = Number.isInteger(asked) && asked >= 1 && asked <= 500 ? asked : PAGE;
  const fromUrl = (): Filters => {
    const q = new URLSearchParams(location.search);
    const out = { order: q.get('order') === 'asc' ? 'asc' : 'desc', scope: global && q.get('scope') === 'all' ? '' : (ctx.project ?? '') } as Filters;
    for (const f of FIELDS) out[f] = q.get(f) ?? '';
    if (!ctx.project && global) out.scope = '';
    return out;
  };

  const scope = h('select#audit-scope', { name: 'scope' },
    ctx.project ? h('option', { value: ctx.project }, `project ${ctx.project}`) : null,
    global ? h('option', { value: '' }, 'all projects') : null);
  const actor = h('input#f-actor', { name: 'actor', placeholder: 'user name', size: 12, maxLength: 100 });
  const action = h('input#f-action', { name: 'action', placeholder: 'create, login, denied…', size: 14, maxLength: 64, list: 'audit-actions' });
  const entity = h('input#f-entity', { name: 'entity_type', placeholder: 'annotations, tasks…', size: 14, maxLength: 64, list: 'audit-entities' });
  const entityId = h('input#f-entity-id', { name: 'entity_id', placeholder: 'id', size: 8, maxLength: 100 });
  const since = h('input#f-since', { name: 'since', type: 'datetime-local', step: 1 });
  const until = h('input#f-until', { name: 'until', type: 'datetime-local', step: 1 });
  const order = h('select#f-order', { name: 'order' },
    h('option', { value: 'desc' }, 'newest first'), h('option', { value: 'asc' }, 'oldest first'));
  const inputs: Record<Field, HTMLInputElement> = { actor, action, entity_type: entity, entity_id: entityId, since, until };
  const error = h('p#audit-error.form-error', { role: 'alert' });
  const count = h('span#audit-count.muted');
  const results = h('div#audit-results');
  const more = h('button#audit-more', { type: 'button', hidden: true }, 'Load more');
  const chain = h('div#chain');
  let shown: AuditEvent[] = [];
  let cursor: string | null = null;
  let active: Filters = fromUrl();
  let generation = 0;

  const fill = (f: Filters) => {
    scope.value = f.scope;
    order.value = f.order;
    for (const name of FIELDS) {
      inputs[name].value = name === 'since' || name === 'until' ? toLocalInput(f[name]) : f[name];
    }
  };
  const read = (): Filters => {
    const out = { order: order.value === 'asc' ? 'asc' : 'desc', scope: scope.value } as Filters;
    for (const name of FIELDS) {
      const v = inputs[name].value.trim();
      out[name] = name === 'since' || name === 'until' ? fromLocalInput(v) : v;
    }
    return out;
  };
  const query = (f: Filters, withCursor: string | null): string => {
    const q = new URLSearchParams();
    if (f.scope) q.set('project', f.scope);
    for (const name of FIELDS) if (f[name]) q.set(name, f[name]);
    q.set('order', f.order);
    q.set('limit', String(pageSize));
    if (withCursor) q.set('cursor', withCursor);
    return q.toString();
  };
  /** Keep the URL in step with the filters, so the view can be reloaded or shared. */
  const syncUrl = (f: Filters) => {
    const q = new URLSearchParams();
    if (ctx.project) q.set('project', ctx.project);
    if (!f.scope && global) q.set('scope', 'all');
    for (const name of FIELDS) if (f[name]) q.set(name, f[name]);
    if (f.order !== 'desc') q.set('order', f.order);
    if (pageSize !== PAGE) q.set('limit', String(pageSize));
    const next = `/audit?${q.toString()}`;
    if (location.pathname + location.search !== next) history.replaceState(null, '', next);
  };

  const render = () => {
    const filtered = FIELDS.some((name) => active[name]);
    count.textContent = `${shown.length} event${shown.length === 1 ? '' : 's'}${cursor ? ' (more to load)' : ''}${filtered ? ' matching the filters' : ''}`;
    more.hidden = !cursor;
    if (!shown.length) {
      results.replaceChildren(h('p.muted#audit-none', null, 'No event matches these filters.'));
      return;
    }
    results.replaceChildren(table(['#', 'when', 'actor', 'action', 'entity', 'change', 'hash'],
      shown.map((e) => [
        String(e.seq),
        h('span', { title: e.at }, fmtTime(e.at)),
        h('button.link', { onclick: () => void apply({ ...read(), actor: e.actor }), title: `Only ${e.actor}'s events` }, e.actor),
        e.action,
        h('button.link', {
          onclick: () => void apply({ ...read(), entity_type: e.entity_type, entity_id: e.entity_id ?? '' }),
          title: 'The history of this entity',
        }, `${e.entity_type} ${e.entity_id ?? ''}`),
        h('details', null, h('summary', null, summarise(e)),
          h('pre.json', null, `before: ${e.before}\nafter:  ${e.after}`)),
        h('code', { title: e.hash }, e.hash.slice(0, 10)),
      ]), 'audit-table'));
  };

  const markInvalid = (field: string | null) => {
    for (const [name, input] of Object.entries(inputs)) {
      input.toggleAttribute('aria-invalid', name === field);
      input.classList.toggle('invalid', name === field);
    }
  };

  /** Fetch a page for `f` (the first, or the next one after `cursor`). */
  const load = async (f: Filters, after: string | null) => {
    const mine = ++generation;
    try {
      const page = await get<EventPage>(`/audit/events?${query(f, after)}`);
      if (mine !== generation) return;
      shown = after ? [...shown, ...page.items] : page.items;
      cursor = page.next_cursor;
      error.textContent = '';
      markInvalid(null);
      render();
    } catch (err) {
      if (mine !== generation) return;
      if (err instanceof ApiError && err.status === 422) {
        // A filter the server refused: say which, keep the form as typed.
        error.textContent = err.plain;
        markInvalid(err.field);
        shown = [];
        cursor = null;
        count.textContent = '';
        more.hidden = true;
        results.replaceChildren();
        return;
      }
      fail(err);
    }
  };

  const apply = async (f: Filters) => {
    active = f;
    fill(f);
    syncUrl(f);
    results.replaceChildren(h('p.muted', null, 'Loading…'));
    await load(f, null);
  };

  more.addEventListener('click', () => void load(active, cursor));
  const form = h('form#audit-filters.filters', {
    onsubmit: (e: Event) => {
      e.preventDefault();
      void apply(read());
    },
  },
  h('label', null, 'scope', scope),
  h('label', null, 'actor', actor),
  h('label', null, 'action', action),
  h('label', null, 'entity type', entity),
  h('label', null, 'entity id', entityId),
  h('label', null, 'from', since),
  h('label', null, 'before', until),
  h('label', null, 'order', order),
  h('button.primary#audit-apply', { type: 'submit' }, 'Apply'),
  h('button#audit-clear', {
    type: 'button',
    onclick: () => void apply({ ...Object.fromEntries(FIELDS.map((n) => [n, ''])), order: 'desc', scope: scope.value } as Filters),
  }, 'Clear'),
  h('datalist#audit-actions', null, ACTIONS.map((a) => h('option', { value: a }))),
  h('datalist#audit-entities', null, ENTITIES.map((a) => h('option', { value: a }))));
  for (const select of [scope, order]) select.addEventListener('change', () => void apply(read()));

  const verify = async () => {
    chain.replaceChildren(h('span.muted', null, 'Walking the chain…'));
    try {
      const v = await get<Verify>('/audit/verify');
      chain.dataset.ok = v.ok ? '1' : '0';
      chain.replaceChildren(v.ok
        ? h('p.diff-added#chain-result', null, `✔ Chain intact: ${v.n_events} events, every hash recomputed and linked to the one before.`,
          v.head ? h('span.muted', null, ` Head #${v.head.seq} `, h('code', { title: v.head.hash }, v.head.hash.slice(0, 16))) : null)
        : h('p.diff-removed#chain-result', null, `✘ Chain broken at event #${v.broken_seq}: ${v.reason ?? 'hash mismatch'}. `,
          v.broken_seq != null ? h('button.link', {
            onclick: () => void apply({ ...read(), since: '', until: '', actor: '', action: '', entity_type: '', entity_id: '', order: 'asc' }),
          }, 'Show the log') : null,
          ` (${v.n_events} events read)`));
    } catch (err) {
      chain.replaceChildren();
      fail(err);
    }
  };

  root.append(h('h2', null, 'Audit log'),
    h('p.muted', null, 'Every write, sign-in, import, export, release and refusal is an append-only, hash-chained event. '
      + 'Filters are applied by the server and kept in the address, so a filtered view can be shared; times are your local time.'),
    form, error,
    h('div.row', null, count, global ? h('button#verify', { type: 'button', onclick: () => void verify() }, 'Verify chain') : null),
    chain, results, more);
  await apply(active);
}

function summarise(e: AuditEvent): string {
  try {
    const after = JSON.parse(e.after || 'null');
    if (after && typeof after === 'object') {
      const keys = Object.keys(after).slice(0, 4);
      return keys.map((k) => `${k}=${JSON.stringify(after[k]).slice(0, 30)}`).join(' ');
    }
  } catch {
    /* not JSON */
  }
  return (e.after || e.before || '').slice(0, 60);
}
