// Audit log viewer: the hash-chained events with filters, and a chain check.

import { get, type AuditEvent } from '../api';
import type { Cleanup, PageCtx } from '../main';
import { fail, fmtTime, h, table } from '../ui';

interface Verify {
  ok: boolean;
  n_events: number;
  broken_seq: number | null;
  reason: string | null;
}

/** The audit page: one project's events (or all, for administrators and global auditors). */
export async function auditPage(root: HTMLElement, ctx: PageCtx): Promise<Cleanup> {
  const global = ctx.me.user.role === 'admin' || ctx.me.user.role === 'auditor';
  const scope = h('select#audit-scope', null,
    ctx.project ? h('option', { value: ctx.project }, `project ${ctx.project}`) : null,
    global ? h('option', { value: '' }, 'all projects') : null);
  const actor = h('input#f-actor', { placeholder: 'actor', size: 12 });
  const action = h('input#f-action', { placeholder: 'action (e.g. login, insert)', size: 18 });
  const entity = h('input#f-entity', { placeholder: 'entity type', size: 12 });
  const entityId = h('input#f-entity-id', { placeholder: 'entity id', size: 8 });
  const since = h('input#f-since', { type: 'datetime-local' });
  const until = h('input#f-until', { type: 'datetime-local' });
  const text = h('input#f-text', { placeholder: 'text in before/after', size: 16 });
  const count = h('span.muted');
  const results = h('div#audit-results');
  const chain = h('span#chain');
  let events: AuditEvent[] = [];
  let loadedScope: string | null = null;

  const load = async () => {
    const key = scope.value;
    if (loadedScope === key) return;
    results.replaceChildren(h('p.muted', null, 'Loading…'));
    const out: AuditEvent[] = [];
    let cursor: string | null = null;
    do {
      const page: { items: AuditEvent[]; next_cursor: string | null } = await get(
        `/audit/events?limit=500${key ? `&project=${key}` : ''}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      out.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && out.length < 20000);
    events = out.reverse(); // newest first
    loadedScope = key;
  };

  const show = () => {
    const has = (field: string, needle: string) => !needle || field.toLowerCase().includes(needle.toLowerCase());
    const t0 = since.value ? new Date(since.value).getTime() : -Infinity;
    const t1 = until.value ? new Date(until.value).getTime() : Infinity;
    const rows = events.filter((e) => has(e.actor, actor.value) && has(e.action, action.value)
      && has(e.entity_type, entity.value) && (!entityId.value || String(e.entity_id ?? '') === entityId.value.trim())
      && (!text.value || has(e.before + e.after, text.value))
      && new Date(e.at).getTime() >= t0 && new Date(e.at).getTime() <= t1);
    count.textContent = `${rows.length} of ${events.length} events`;
    results.replaceChildren(table(['#', 'when', 'actor', 'action', 'entity', 'change', 'hash'],
      rows.slice(0, 500).map((e) => [
        String(e.seq), fmtTime(e.at), e.actor, e.action, `${e.entity_type} ${e.entity_id ?? ''}`,
        h('details', null, h('summary', null, summarise(e)),
          h('pre.json', null, `before: ${e.before}\nafter:  ${e.after}`)),
        h('code', { title: e.hash }, e.hash.slice(0, 10)),
      ]), 'audit-table'));
    if (rows.length > 500) results.append(h('p.muted', null, 'Showing the newest 500; narrow the filters to see others.'));
  };

  const refresh = async () => {
    try {
      await load();
      show();
    } catch (err) {
      fail(err);
    }
  };
  for (const input of [actor, action, entity, entityId, text, since, until]) input.addEventListener('input', show);
  scope.addEventListener('change', () => void refresh());

  root.append(h('h2', null, 'Audit log'),
    h('p.muted', null, 'Every write is an append-only, hash-chained event. Filters apply to the loaded events.'),
    h('div.filters', null, scope, actor, action, entity, entityId, text,
      h('label', null, 'from', since), h('label', null, 'to', until), count,
      global ? h('button#verify', {
        onclick: async () => {
          try {
            const v = await get<Verify>('/audit/verify');
            chain.textContent = v.ok ? `✔ chain intact (${v.n_events} events)` : `✘ broken at #${v.broken_seq}: ${v.reason}`;
            chain.className = v.ok ? 'diff-added' : 'diff-removed';
          } catch (err) {
            fail(err);
          }
        },
      }, 'Verify chain') : null, chain),
    results);
  await refresh();
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
