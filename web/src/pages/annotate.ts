// Annotate: the reader's queue and the image workspace.

import { ApiError, get, type Annotation, type Item, type Payload } from '../api';
import type { Cleanup, PageCtx } from '../main';
import { navigate } from '../main';
import { askReason, fail, fmtTime, h, notify, typing } from '../ui';
import { mountWorkspace, projectRules, type Workspace } from '../workspace';
import { flagTask, skipTask, tasksApi, usesWorkflow, type Task } from '../tasks';

/** The annotate page: your next task (or, outside the workflow, the item in `?item=`). */
export async function annotatePage(root: HTMLElement, ctx: PageCtx): Promise<Cleanup> {
  const project = ctx.project!;
  const rules = await projectRules(project);
  const def = rules.schema.definition;
  const api = tasksApi(project, ctx.me.user.username, usesWorkflow(def.kind, def.mode, rules.policyVersion));
  let ws: Workspace | null = null;
  let busy = false;
  const queueBox = h('div.queue#queue');
  const host = h('div.work');
  root.append(h('div.annotate', null, queueBox, host));

  const renderQueue = async (task: Task | null, reason = '') => {
    if (api.mode === 'tasks') {
      queueBox.replaceChildren(h('h3', null, 'Your task'),
        task ? h('p', null, `Task ${task.id} · item ${task.item_id}`, h('br'),
          h('span.muted', null, task.lease_expires_at ? `held until ${fmtTime(task.lease_expires_at)}` : '')) : h('p.muted', null, reason || 'Nothing waiting.'),
        h('p.muted', null, 'The workflow hands out one task at a time: blinded, never the same item twice.'));
      return;
    }
    const rows = await api.pending();
    queueBox.replaceChildren(h('h3', null, `To label (${rows.length})`),
      rows.length ? h('ol', null, rows.slice(0, 50).map((t) => h('li', { className: t.item_id === task?.item_id ? 'current' : '' },
        h('a', { href: `/annotate?project=${project}&item=${t.item_id}` }, `Item ${t.item_id}`)))) : h('p.muted', null, 'Every item has your label.'));
  };

  let currentTask: Task | null = null;
  const open = async (task: Task | null, reason = '') => {
    currentTask = task;
    ws?.destroy();
    ws = null;
    host.replaceChildren();
    delete host.dataset.ready;
    if (task && task.stage !== 'annotate' && task.stage !== 'calibrate') {
      // The workflow's best task for you is a review or an adjudication.
      navigate(`/${task.stage === 'review' ? 'review' : 'adjudicate'}?project=${project}`, true);
      return;
    }
    if (!task) {
      host.append(h('div.empty#queue-empty', null, h('h2', null, 'All done'), h('p', null, reason || 'No task is waiting for you in this project. Thank you!')));
      await renderQueue(null, reason);
      return;
    }
    const item = await get<Item>(`/projects/${project}/items/${task.item_id}`);
    const mine = api.mode === 'items'
      ? await get<{ items: Annotation[] }>(`/projects/${project}/items/${item.id}/annotations?limit=200`)
        .then((p) => p.items.filter((a) => a.author === ctx.me.user.username)).catch(() => [] as Annotation[])
      : [];
    const previous = mine.length ? mine[mine.length - 1] : null;
    const submit = h('button.primary#submit', { onclick: () => void doSubmit(), title: 'Submit (Enter)' }, 'Submit ⏎');
    const skip = h('button#skip', {
      onclick: () => void doSkip(),
      disabled: task.stage === 'calibrate',
      title: task.stage === 'calibrate' ? 'Calibration cases cannot be skipped'
        : api.mode === 'tasks' ? 'Give the task back unread: another reader takes it and you are not offered this item again (S)'
          : 'Next item without labelling this one (S)',
    }, 'Skip');
    const flag = h('button#flag', {
      onclick: () => void doFlag(),
      disabled: api.mode !== 'tasks',
      title: api.mode === 'tasks' ? 'Flag the item as unclear: no label is recorded and it goes to a senior reader with your reason'
        : 'Flagging needs the workflow (this project is labelled item by item)',
    }, 'Flag unclear');
    const draft = task.context?.draft;
    const draftHint = draft ? h('p.muted', null, draft.payload
      ? 'A model drafted the objects on the image: keep, edit or erase them, then submit.'
      : `Model draft: ${draft.label} — accept it or choose another class.`) : null;
    const actions = h('div.actions', null,
      previous ? h('p.muted', null, `You labelled this item before (annotation ${previous.id}); submitting makes a new revision.`) : null,
      draftHint,
      h('div.row', null, submit, skip, flag));
    const initial: Payload | null = previous?.payload ?? draft?.payload ?? (draft?.label ? { label: draft.label } : null);
    if (task.stage === 'calibrate') actions.prepend(h('p.muted#calibration', null, 'Calibration: your first items have a known answer; your score decides whether you join the queue.'));
    ws = await mountWorkspace(host, { project, user: ctx.me.user.username, item, stage: 'annotate', rules, initial, actions });
    host.dataset.ready = '1';
    host.dataset.item = String(item.id);
    if (api.mode === 'items') history.replaceState(null, '', `/annotate?project=${project}&item=${item.id}`);
    await renderQueue(task);

    async function doSubmit(): Promise<void> {
      if (!ws || busy) return;
      const problems = ws.problems();
      if (problems.length) {
        notify(`Not yet: ${problems.join('; ')}.`, 'error');
        return;
      }
      busy = true;
      submit.disabled = true;
      try {
        const out = await api.submit(task!, ws.payload(), ws.elapsed(), previous?.id ?? null);
        ws.done();
        notify(`Item ${item.id} submitted.${out.next_step ? ` ${out.next_step}` : ''}`, 'ok');
        const next = await api.next(item.id);
        await open(next.task, next.reason);
      } catch (err) {
        if (err instanceof ApiError && err.status === 409) {
          notify(`${err.plain} Your drawing is kept on this computer.`, 'error');
        } else {
          fail(err);
        }
      } finally {
        busy = false;
        submit.disabled = false;
      }
    }
    async function doSkip(): Promise<void> {
      if (busy || skip.disabled) return;
      busy = true;
      try {
        if (api.mode === 'tasks') {
          const out = await skipTask(project, task!);
          ws?.done();
          notify(`Item ${item.id} skipped. ${out.next_step}`, 'ok');
        }
        const next = await api.next(item.id);
        await open(next.task, next.reason);
      } catch (err) {
        fail(err);
      } finally {
        busy = false;
      }
    }
  };

  async function doFlag(): Promise<void> {
    const current = currentTask;
    if (busy || !current || api.mode !== 'tasks') return;
    const reason = await askReason('Why is this item unclear?', 'e.g. motion artefact, wrong body part (required)');
    if (reason === null || !reason.trim()) return;
    busy = true;
    try {
      const out = await flagTask(project, current, reason.trim());
      ws?.done();
      notify(`Item ${current.item_id} flagged. ${out.next_step}`, 'ok');
      const next = await api.next(current.item_id);
      await open(next.task, next.reason);
    } catch (err) {
      fail(err);
    } finally {
      busy = false;
    }
  }

  const onKey = (e: KeyboardEvent) => {
    if (typing(e) || document.querySelector('dialog[open]') || !ws) return;
    if (e.key === 'Enter') (document.getElementById('submit') as HTMLButtonElement | null)?.click();
    else if (e.key === 's' && !e.ctrlKey && !e.metaKey) (document.getElementById('skip') as HTMLButtonElement | null)?.click();
    else return;
    e.preventDefault();
  };
  document.addEventListener('keydown', onKey);

  try {
    const wanted = Number(ctx.params.get('item'));
    if (wanted && api.mode === 'items') {
      await open(await api.open(wanted));
    } else {
      const next = await api.next(null);
      await open(next.task, next.reason);
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && ctx.params.get('item')) {
      notify(err.plain, 'error');
      navigate(`/annotate?project=${project}`, true);
    } else {
      fail(err);
    }
  }
  return () => {
    document.removeEventListener('keydown', onKey);
    ws?.destroy();
  };
}
