// Adjudicate: every reader's label side by side and overlaid, the consensus with its
// uncertainty, the readers' skill figures; the final label with a required reason.

import { ApiError, get, type Annotation, type Consensus, type Item, type Payload } from '../api';
import { barChart } from '../charts';
import type { Cleanup, PageCtx } from '../main';
import { navigate } from '../main';
import { fail, fmtNum, fmtTime, h, notify, typing } from '../ui';
import { mountWorkspace, projectRules, type Workspace } from '../workspace';
import { escalations, nextTask, readerSummaries, sendAdjudication, usesWorkflow, type Task } from '../tasks';
import { READER_COLOURS, Viewer, imageIdsFor, type Overlay } from '../viewer';

function labelText(p: Payload | undefined | null): string {
  if (!p) return '—';
  if (p.label) return String(p.label);
  if (p.labels) return p.labels.join(', ') || '(none)';
  if (p.objects) {
    const counts = new Map<string, number>();
    for (const o of p.objects) counts.set(`${o.type} ${o.label}`, (counts.get(`${o.type} ${o.label}`) ?? 0) + 1);
    return [...counts].map(([k, n]) => `${n}× ${k}`).join(', ') || '(nothing drawn)';
  }
  return JSON.stringify(p);
}

/** The adjudication page: your next escalated item from the workflow. */
export async function adjudicatePage(root: HTMLElement, ctx: PageCtx): Promise<Cleanup> {
  const project = ctx.project!;
  const rules = await projectRules(project);
  const def = rules.schema.definition;
  const escBox = h('div.queue#escalations');
  const host = h('div.work');
  root.append(h('div.annotate', null, escBox, host));
  let ws: Workspace | null = null;
  let minis: Viewer[] = [];
  let busy = false;

  const renderEscalations = async () => {
    const rows = await escalations(project);
    escBox.replaceChildren(h('h3', null, `Escalations (${rows.length})`),
      rows.length ? h('ol', null, rows.map((e) => h('li', { className: e.overdue ? 'overdue' : '' },
        `Item ${e.item_id}`, h('br'), h('span.muted', null, `${e.reason.slice(0, 60)} · due ${fmtTime(e.due_at)}${e.overdue ? ` · ${e.hours_overdue.toFixed(0)} h overdue` : ''}`)))) : h('p.muted', null, 'No open escalation.'));
  };

  if (!usesWorkflow(def.kind, def.mode)) {
    host.append(h('div.empty', null, h('h2', null, 'No adjudication queue here'),
      h('p', null, `This project labels ${def.kind}es; the workflow's adjudication queue runs single or ordinal classification projects.`)));
    return;
  }

  const clear = () => {
    ws?.destroy();
    ws = null;
    minis.forEach((m) => m.destroy());
    minis = [];
    host.replaceChildren();
    delete host.dataset.ready;
  };

  const open = async (task: Task | null, reason: string) => {
    clear();
    await renderEscalations().catch(fail);
    if (task && task.stage !== 'adjudicate') {
      navigate(`/${task.stage === 'review' ? 'review' : 'annotate'}?project=${project}`, true);
      return;
    }
    if (!task) {
      host.append(h('div.empty#queue-empty', null, h('h2', null, 'Nothing to adjudicate'), h('p', null, reason || 'No escalated item is waiting for you.')));
      return;
    }
    const item = await get<Item>(`/projects/${project}/items/${task.item_id}`);
    const all = await get<{ items: Annotation[] }>(`/projects/${project}/items/${item.id}/annotations?limit=200`).then((p) => p.items);
    const byId = new Map(all.map((a) => [a.id, a]));
    const reads = (task.context?.reads ?? []).map((r, k) => ({
      ...r, color: READER_COLOURS[k % READER_COLOURS.length], payload: byId.get(r.annotation_id)?.payload ?? { label: r.label },
    }));
    const [skills, consensus] = await Promise.all([
      readerSummaries(project),
      get<Consensus>(`/projects/${project}/items/${item.id}/consensus`).catch((err) => {
        if (err instanceof ApiError && (err.status === 404 || err.status === 403)) return null;
        throw err;
      }),
    ]);
    const skill = new Map(skills.map((s) => [s.reader, s]));
    const reasonBox = h('textarea#adjudication-reason', { rows: 3, placeholder: 'Reason for the final label (required)', required: true });
    const finalBtn = h('button.primary#finalise', { onclick: () => void finalise(), title: 'Give the final label (Ctrl+Enter)' }, 'Final label ⏎');

    const cards = h('div.readers#reader-cards', null, reads.map((r, k) => h('div.panel.reader-card', { dataset: { reader: r.reader } },
      h('div.row', null, h('span.swatch', { style: { background: r.color } }), h('strong', null, r.reader),
        h('span.muted', null, skill.get(r.reader)?.accuracy != null ? ` gold accuracy ${fmtNum(skill.get(r.reader)!.accuracy, 2)} (${skill.get(r.reader)!.n_gold})` : ' no gold score yet')),
      h('p.reader-label', null, labelText(r.payload)),
      h('button', { dataset: { pick: String(k) }, onclick: () => ws?.setPayload(r.payload), title: `Start from ${r.reader}'s label (Alt+${k + 1})` }, `Use ${r.reader}'s label`),
      r.payload.objects?.length ? h('div.viewer-host.mini', { dataset: { mini: String(k) } }) : null)));

    const posterior = consensus?.posterior && typeof consensus.posterior === 'object'
      ? Object.entries(consensus.posterior as Record<string, unknown>).filter(([, v]) => typeof v === 'number') as [string, number][]
      : [];
    const consensusPanel = h('section.panel#consensus', null, h('h3', null, 'Consensus'),
      consensus ? h('p', null, `${consensus.method}: `, h('strong', null, labelText(consensus.label as Payload)),
        ` · confidence ${fmtNum(consensus.confidence, 2)} · agreement ${fmtNum(consensus.agreement, 2)} · ${consensus.status}`) : h('p.muted', null, 'No consensus computed for this item.'),
      posterior.length ? barChart(posterior.map(([label, value]) => ({ label, value })), { domain: [0, 1], height: 160 }) : null);

    const esc = task.context?.escalation;
    const review = task.context?.review;
    const actions = h('div.actions', null,
      h('h3', null, 'Final label'),
      h('p.muted', null, 'Choose the class (1–9) or start from a reader\'s label (Alt+1…), then give the reason.'),
      reasonBox, finalBtn,
      h('h3', null, 'Why it is here'),
      h('p#escalation-reason', null, esc ? `${esc.reason} (due ${fmtTime(esc.due_at)})` : 'Readers disagree.'),
      review ? h('p.muted', null, `Review by ${review.reviewer}: ${review.escalated ? 'escalated' : review.label ?? ''}`) : null);
    const top = h('div.adjudicate-top', null, cards, consensusPanel);
    host.append(top);
    const wsHost = h('div.adjudicate-ws');
    host.append(wsHost);
    const overlays: Overlay[] = reads.filter((r) => r.payload.objects?.length).map((r) => ({ name: r.reader, color: r.color, shapes: r.payload.objects! }));
    ws = await mountWorkspace(wsHost, { project, user: ctx.me.user.username, item, stage: 'adjudicate', rules, actions, overlays });
    for (const el of cards.querySelectorAll<HTMLElement>('[data-mini]')) {
      const r = reads[Number(el.dataset.mini)];
      const mini = new Viewer(el, { editable: false, classes: def.classes.map((c) => c.name) });
      minis.push(mini);
      await mini.load(await imageIdsFor(project, item));
      mini.setOverlays([{ name: r.reader, color: r.color, shapes: r.payload.objects! }]);
    }
    host.dataset.ready = '1';

    async function finalise(): Promise<void> {
      if (!ws || busy) return;
      const problems = ws.problems();
      if (problems.length) {
        notify(`Not yet: ${problems.join('; ')}.`, 'error');
        return;
      }
      const why = reasonBox.value.trim();
      if (!why) {
        notify('Give the reason for the final label: it is kept with the label for audit.', 'error');
        reasonBox.focus();
        return;
      }
      busy = true;
      finalBtn.disabled = true;
      try {
        const out = await sendAdjudication(project, task!, { payload: ws.payload(), reason: why, time_spent_s: ws.elapsed() });
        ws.done();
        notify(`Final label recorded. ${out.next_step}`, 'ok');
        const next = await nextTask(project);
        await open(next.task, next.reason);
      } catch (err) {
        if (err instanceof ApiError && err.status === 409) notify(`Another adjudicator got there first, or your lease ran out: ${err.detail}`, 'error');
        else fail(err);
      } finally {
        busy = false;
        finalBtn.disabled = false;
      }
    }
  };

  const onKey = (e: KeyboardEvent) => {
    if (document.querySelector('dialog[open]') || !ws) return;
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      (document.getElementById('finalise') as HTMLButtonElement | null)?.click();
      e.preventDefault();
      return;
    }
    if (typing(e)) return;
    const alt = /^Digit([1-9])$/.exec(e.code);
    if (alt && e.altKey) {
      (document.querySelector(`[data-pick="${Number(alt[1]) - 1}"]`) as HTMLButtonElement | null)?.click();
      e.preventDefault();
      e.stopImmediatePropagation();
    }
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
    clear();
  };
}
