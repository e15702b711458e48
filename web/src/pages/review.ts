// Review: the annotator's label (for boxes and masks: their objects) drawn on the image; accept,
// correct (edit the label or the objects), reject or escalate with a comment.

import { ApiError, get, type Annotation, type Item, type Payload, type Shape } from '../api';
import type { Cleanup, PageCtx } from '../main';
import { navigate } from '../main';
import { askReason, fail, h, notify, typing } from '../ui';
import { mountWorkspace, projectRules, type Workspace } from '../workspace';
import { nextTask, sendReview, usesWorkflow, type Task } from '../tasks';
import { READER_COLOURS } from '../viewer';

/** The review page: your next review task from the workflow. */
export async function reviewPage(root: HTMLElement, ctx: PageCtx): Promise<Cleanup> {
  const project = ctx.project!;
  const rules = await projectRules(project);
  const def = rules.schema.definition;
  const host = h('div.work');
  root.append(host);
  let ws: Workspace | null = null;
  let busy = false;

  const geometric = def.kind === 'box' || def.kind === 'polygon' || def.kind === 'mask';
  if (!usesWorkflow(def.kind, def.mode, rules.policyVersion)) {
    host.append(h('div.empty', null, h('h2', null, 'No review queue here'),
      h('p', null, def.kind === 'measurement'
        ? 'The workflow does not run measurement projects.'
        : `This project labels ${def.kind}es item by item: a manager sets a workflow policy to send reads to review.`)));
    return;
  }

  const open = async (task: Task | null, reason: string) => {
    ws?.destroy();
    ws = null;
    host.replaceChildren();
    delete host.dataset.ready;
    if (task && task.stage !== 'review') {
      navigate(`/${task.stage === 'adjudicate' ? 'adjudicate' : 'annotate'}?project=${project}`, true);
      return;
    }
    if (!task) {
      host.append(h('div.empty#queue-empty', null, h('h2', null, 'Nothing to review'), h('p', null, reason || 'No review is waiting for you.')));
      return;
    }
    const item = await get<Item>(`/projects/${project}/items/${task.item_id}`);
    const under = task.context?.under_review;
    const reads = await get<{ items: Annotation[] }>(`/projects/${project}/items/${item.id}/annotations?limit=200`).then((p) => p.items);
    const read = reads.find((a) => a.id === under?.annotation_id) ?? null;
    const author = read?.author ?? 'annotator';
    const original: Payload = under?.payload ?? read?.payload ?? (under?.label ? { label: under.label } : {});
    const said = original.objects ? objectSummary(original.objects) : original.labels ? original.labels.join(', ') || '(none)' : original.label ?? '—';
    const comment = h('textarea#review-comment', { rows: 3, placeholder: 'Comment (required to reject or escalate)' });
    const decide = async (decision: 'accept' | 'correct' | 'reject' | 'escalate') => {
      if (!ws || busy) return;
      let text = comment.value.trim();
      if ((decision === 'reject' || decision === 'escalate') && !text) {
        const asked = await askReason(decision === 'reject' ? 'Why reject this label?' : 'Why escalate to a senior reader?');
        if (!asked) return;
        text = asked;
        comment.value = asked;
      }
      const payload = decision === 'correct' ? ws.payload() : undefined;
      if (decision === 'correct' && payload && sameLabel(payload, original)) {
        notify(geometric
          ? 'A correction must change the objects: edit, draw or erase them (B, M, E), or accept.'
          : 'A correction must change the label: choose another class (1–9), or accept.', 'error');
        return;
      }
      busy = true;
      try {
        const out = await sendReview(project, task, { decision, payload, comment: text, time_spent_s: ws.elapsed() });
        ws.done();
        notify(`Review recorded (${decision}). ${out.next_step}`, 'ok');
        const next = await nextTask(project);
        await open(next.task, next.reason);
      } catch (err) {
        if (err instanceof ApiError && err.status === 409) notify(`Another reviewer got there first, or your lease ran out: ${err.detail}`, 'error');
        else fail(err);
      } finally {
        busy = false;
      }
    };
    const actions = h('div.actions', null,
      h('p', null, h('span.swatch', { style: { background: READER_COLOURS[0] } }), `${author} said `, h('strong#under-review', null, said)),
      h('p.muted', null, geometric
        ? `${author}'s objects are drawn in their colour and loaded for editing: to correct, move, redraw or erase them (box B, brush M, eraser E) and press Correct.`
        : 'To correct, choose the right class (1–9) and press Correct.'),
      comment,
      h('div.row', null,
        h('button.primary#accept', { onclick: () => void decide('accept'), title: 'Accept (A)' }, 'Accept'),
        h('button#correct', { onclick: () => void decide('correct'), title: 'Correct (C)' }, 'Correct'),
        h('button.danger#reject', { onclick: () => void decide('reject'), title: 'Reject (R)' }, 'Reject'),
        h('button#escalate', { onclick: () => void decide('escalate'), title: 'Escalate (X)' }, 'Escalate')));
    ws = await mountWorkspace(host, {
      project, user: ctx.me.user.username, item, stage: 'review', rules, actions,
      initial: original,
      overlays: original.objects?.length ? [{ name: author, color: READER_COLOURS[0], shapes: original.objects }] : [],
    });
    host.dataset.ready = '1';
  };

  const onKey = (e: KeyboardEvent) => {
    if (typing(e) || document.querySelector('dialog[open]') || !ws) return;
    const ids: Record<string, string> = { a: 'accept', c: 'correct', r: 'reject', x: 'escalate' };
    const id = ids[e.key];
    if (!id || e.ctrlKey || e.metaKey) return;
    (document.getElementById(id) as HTMLButtonElement | null)?.click();
    e.preventDefault();
    e.stopImmediatePropagation();
  };
  document.addEventListener('keydown', onKey, true);
  try {
    const next = await nextTask(project);
    await open(next.task, next.reason);
  } catch (err) {
    fail(err);
  }
  return () => {
    document.removeEventListener('keydown', onKey, true);
    ws?.destroy();
  };
}

/** "1× box nodule, 1× mask nodule". */
function objectSummary(objects: Shape[]): string {
  const counts = new Map<string, number>();
  for (const o of objects) counts.set(`${o.type} ${o.label}`, (counts.get(`${o.type} ${o.label}`) ?? 0) + 1);
  return [...counts].map(([k, n]) => `${n}× ${k}`).join(', ') || '(nothing drawn)';
}

/** Whether two labels say the same (class, classes, or the same objects). */
function sameLabel(a: Payload, b: Payload): boolean {
  if (a.objects || b.objects) return JSON.stringify(a.objects ?? []) === JSON.stringify(b.objects ?? []);
  if (a.labels || b.labels) return JSON.stringify([...(a.labels ?? [])].sort()) === JSON.stringify([...(b.labels ?? [])].sort());
  return a.label === b.label;
}
