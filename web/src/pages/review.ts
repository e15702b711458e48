// Review: the annotator's label drawn on the image; accept, correct, reject or escalate.

import { ApiError, get, type Annotation, type Item } from '../api';
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

  if (!usesWorkflow(def.kind, def.mode)) {
    host.append(h('div.empty', null, h('h2', null, 'No review queue here'),
      h('p', null, `This project labels ${def.kind}es; the workflow's review queue runs single or ordinal classification projects.`)));
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
      if (decision === 'correct' && payload?.label === under?.label) {
        notify('A correction must change the label: choose another class (1–9), or accept.', 'error');
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
      h('p', null, h('span.swatch', { style: { background: READER_COLOURS[0] } }), `${author} said `, h('strong#under-review', null, under?.label ?? '—')),
      h('p.muted', null, 'To correct, choose the right class (1–9) and press Correct.'),
      comment,
      h('div.row', null,
        h('button.primary#accept', { onclick: () => void decide('accept'), title: 'Accept (A)' }, 'Accept'),
        h('button#correct', { onclick: () => void decide('correct'), title: 'Correct (C)' }, 'Correct'),
        h('button.danger#reject', { onclick: () => void decide('reject'), title: 'Reject (R)' }, 'Reject'),
        h('button#escalate', { onclick: () => void decide('escalate'), title: 'Escalate (X)' }, 'Escalate')));
    ws = await mountWorkspace(host, {
      project, user: ctx.me.user.username, item, stage: 'review', rules, actions,
      initial: read?.payload ?? (under ? { label: under.label } : null),
      overlays: read?.payload.objects?.length ? [{ name: author, color: READER_COLOURS[0], shapes: read.payload.objects }] : [],
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
