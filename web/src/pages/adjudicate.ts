// Adjudicate: every reader's label side by side and overlaid in distinct colours (a legend with
// a toggle per reader), the consensus with its uncertainty (for boxes and masks: the fused
// findings with how many readers saw each), the readers' skill figures; the final label — picked
// from a reader or the consensus, edited with the drawing tools — with a required reason.

import { ApiError, get, type Annotation, type Consensus, type Item, type Payload } from '../api';
import { barChart } from '../charts';
import type { Cleanup, PageCtx } from '../main';
import { navigate } from '../main';
import { fail, fmtNum, fmtTime, h, notify, table, typing } from '../ui';
import { mountWorkspace, projectRules, type Workspace } from '../workspace';
import {
  escalations, nextTask, plainObject, sendAdjudication, usesWorkflow,
  type ConsensusView, type Finding, type ReaderSkill, type Task,
} from '../tasks';
import { READER_COLOURS, Viewer, imageIdsFor, type Overlay } from '../viewer';

/** Colour of the fused consensus on the image. */
const CONSENSUS_COLOUR = '#ffffff';

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

const METRIC_NAMES: Record<string, string> = { percent: 'agreement', exact: 'exact agreement', f1: 'matched F1', dice: 'Dice' };

function pct(v: number | null): string {
  return v == null ? '—' : `${Math.round(v * 100)}%`;
}

/** A reader's skill figures, as the adjudication task carries them (this item's readers only). */
function skillFigures(s: ReaderSkill | null | undefined): HTMLElement {
  if (!s) return h('ul.skills.muted', null, h('li', null, 'No figures for this reader.'));
  const c = s.consensus;
  const gold = s.gold.reads
    ? `Known answers: ${pct(s.gold.accuracy)} of ${s.gold.reads} read${s.gold.reads === 1 ? '' : 's'}`
    : 'Known answers: none read yet';
  const other = `other item${c.items === 1 ? '' : 's'}`;
  const against = !c.items ? 'Final consensus: none of their other items is final yet'
    : c.agreed != null ? `Final consensus: agreed on ${c.agreed} of ${c.items} ${other} (${pct(c.agreement)})`
      : `Final consensus: ${METRIC_NAMES[c.metric] ?? c.metric} ${fmtNum(c.agreement, 2)} over ${c.items} ${other}`;
  const m = s.method;
  const fitted = m ? `${m.method} model: skill ${fmtNum(m.skill, 2)}${m.diagonal
    ? ` · right per class ${Object.entries(m.diagonal).map(([k, v]) => `${k} ${fmtNum(v, 2)}`).join(', ')}` : ''}` : null;
  return h('ul.skills', null,
    h('li', { dataset: { figure: 'gold' } }, gold),
    h('li', { dataset: { figure: 'consensus' } }, against),
    fitted ? h('li', { dataset: { figure: 'method' } }, fitted) : null);
}

/** "2 of 3 (ana, ben)". */
function supportText(f: Finding, n: number): string {
  return `${f.support ?? f.readers?.length ?? '?'} of ${n}${f.readers?.length ? ` (${f.readers.join(', ')})` : ''}`;
}

/** The adjudication page: your next escalated item from the workflow. */
export async function adjudicatePage(root: HTMLElement, ctx: PageCtx): Promise<Cleanup> {
  const project = ctx.project!;
  const rules = await projectRules(project);
  const def = rules.schema.definition;
  const geometric = def.kind === 'box' || def.kind === 'polygon' || def.kind === 'mask';
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

  if (!usesWorkflow(def.kind, def.mode, rules.policyVersion)) {
    host.append(h('div.empty', null, h('h2', null, 'No adjudication queue here'),
      h('p', null, def.kind === 'measurement'
        ? 'The workflow does not run measurement projects.'
        : `This project labels ${def.kind}es item by item: a manager sets a workflow policy to send disagreements here.`)));
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
      ...r,
      color: READER_COLOURS[k % READER_COLOURS.length],
      payload: r.payload ?? byId.get(r.annotation_id)?.payload ?? (r.label ? { label: r.label } : {}) as Payload,
    }));
    const stored = await get<Consensus>(`/projects/${project}/items/${item.id}/consensus`).catch((err) => {
      if (err instanceof ApiError && (err.status === 404 || err.status === 403)) return null;
      throw err;
    });
    const fused: ConsensusView | null = task.context?.consensus ?? null;
    const reasonBox = h('textarea#adjudication-reason', { rows: 3, placeholder: 'Reason for the final label (required)', required: true });
    const finalBtn = h('button.primary#finalise', { onclick: () => void finalise(), title: 'Give the final label (Ctrl+Enter)' }, 'Final label ⏎');

    // -- what is drawn over the image: each reader, the consensus, its minority findings --------
    const nReaders = fused?.parameters.n_readers ?? reads.length;
    const findings = (fused?.payload.objects ?? []) as Finding[];
    const minority = (fused?.payload.minority ?? []) as Finding[];
    const caption = (f: Finding, out: boolean) => `${out ? 'minority ' : ''}#${f.finding ?? '?'} ${f.label} · ${f.support ?? '?'}/${nReaders}`;
    const layers: { key: string; overlay: Overlay; shown: boolean }[] = [
      ...reads.filter((r) => r.payload.objects?.length).map((r) => ({
        key: r.reader, shown: true, overlay: { name: r.reader, color: r.color, shapes: r.payload.objects! } as Overlay,
      })),
      ...(findings.length ? [{
        key: 'consensus', shown: true,
        overlay: { name: 'consensus', color: CONSENSUS_COLOUR, shapes: findings.map((f) => ({ ...plainObject(f), caption: caption(f, false) })) } as Overlay,
      }] : []),
      ...(minority.length ? [{
        key: 'minority', shown: true,
        overlay: { name: 'minority', color: CONSENSUS_COLOUR, dashed: true, shapes: minority.map((f) => ({ ...plainObject(f), caption: caption(f, true) })) } as Overlay,
      }] : []),
    ];
    const shownOverlays = () => layers.filter((l) => l.shown).map((l) => l.overlay);
    const toggle = (key: string, on: boolean) => {
      const layer = layers.find((l) => l.key === key);
      if (!layer) return;
      layer.shown = on;
      ws?.viewer.setOverlays(shownOverlays());
    };
    const legend = geometric && layers.length ? h('div.legend#overlay-legend', null,
      h('strong', null, 'On the image: '),
      layers.map((l) => h('label.legend-item', { dataset: { layer: l.key } },
        h('input', { type: 'checkbox', checked: true, onchange: (e: Event) => toggle(l.key, (e.target as HTMLInputElement).checked) }),
        h('span.swatch', { style: { background: l.overlay.color, outline: l.overlay.dashed ? '1px dashed #000' : '' } }),
        l.key === 'consensus' ? 'consensus' : l.key === 'minority' ? 'minority findings' : l.key))) : null;

    const startFrom = (payload: Payload, who: string) => {
      ws?.setPayload(payload);
      notify(`Started from ${who}. Edit with the tools (box B, brush M, eraser E), then give the reason.`, 'info');
    };
    const cards = h('div.readers#reader-cards', null, reads.map((r, k) => h('div.panel.reader-card', { dataset: { reader: r.reader } },
      h('div.row', null, h('span.swatch', { style: { background: r.color } }), h('strong', null, r.reader)),
      h('p.reader-label', null, labelText(r.payload)),
      skillFigures(r.skill),
      h('button', { dataset: { pick: String(k) }, onclick: () => startFrom(r.payload, `${r.reader}'s label`), title: `Start from ${r.reader}'s label (Alt+${k + 1})` },
        r.payload.objects ? `Use ${r.reader}'s objects` : `Use ${r.reader}'s label`),
      r.payload.objects?.length ? h('div.viewer-host.mini', { dataset: { mini: String(k) } }) : null)));

    // -- the consensus and how sure it is -------------------------------------------------------
    const posterior = stored?.posterior && typeof stored.posterior === 'object'
      ? Object.entries(stored.posterior as Record<string, unknown>).filter(([, v]) => typeof v === 'number') as [string, number][]
      : Object.entries(fused?.posterior ?? {});
    const consensusPanel = h('section.panel#consensus', null, h('h3', null, 'Consensus'));
    if (fused && geometric) {
      const metric = def.kind === 'mask' ? 'Dice' : 'matched F1';
      consensusPanel.append(
        h('p#consensus-summary', null, `${fused.method}: `, h('strong', null, `${findings.length} finding${findings.length === 1 ? '' : 's'}`),
          ` seen by enough readers${minority.length ? `, ${minority.length} by too few` : ''} · ${metric} between readers `,
          h('strong', null, fmtNum(fused.agreement, 2)), ` (target ${fmtNum(fused.target, 2)})`),
        table(['#', 'class', 'image', 'seen by', 'overlap', ''], [...findings.map((f) => [f, false] as const), ...minority.map((f) => [f, true] as const)].map(([f, out]) => [
          String(f.finding ?? '—'), f.label, String((f.frame ?? 0) + 1), supportText(f, nReaders),
          fmtNum(f.iou ?? f.dice ?? null, 2) + (f.iou != null ? ' IoU' : f.dice != null ? ' Dice' : ''),
          out ? h('span.muted', null, 'too few readers: not in the consensus') : '',
        ]), 'findings'),
        h('p.muted', null, fused.parameters.pairs?.length ? `Reader pairs: ${fused.parameters.pairs.map(([a, b, v]) => `${a}–${b} ${fmtNum(v, 2)}`).join(' · ')}` : ''),
        h('button#use-consensus', {
          onclick: () => startFrom({ objects: findings.map((f) => plainObject(f)) }, 'the consensus'),
          title: 'Start from the fused consensus (Alt+0)', disabled: !findings.length,
        }, 'Use the consensus'));
    } else if (fused) {
      consensusPanel.append(h('p', null, `${fused.method}: `, h('strong', null, labelText(fused.payload as Payload)),
        ` · agreement ${fmtNum(fused.agreement, 2)} (target ${fmtNum(fused.target, 2)})`));
    } else if (stored) {
      consensusPanel.append(h('p', null, `${stored.method}: `, h('strong', null, labelText(stored.label as Payload)),
        ` · confidence ${fmtNum(stored.confidence, 2)} · agreement ${fmtNum(stored.agreement, 2)} · ${stored.status}`));
    } else {
      consensusPanel.append(h('p.muted', null, 'No consensus computed for this item.'));
    }
    if (posterior.length) consensusPanel.append(barChart(posterior.map(([label, value]) => ({ label, value })), { domain: [0, 1], height: 160 }));

    const esc = task.context?.escalation;
    const review = task.context?.review;
    const actions = h('div.actions', null,
      h('h3', null, 'Final label'),
      h('p.muted', null, geometric
        ? 'Start from a reader\'s objects (Alt+1…) or the consensus (Alt+0), edit them with the tools, then give the reason.'
        : 'Choose the class (1–9) or start from a reader\'s label (Alt+1…), then give the reason.'),
      reasonBox, finalBtn,
      h('h3', null, 'Why it is here'),
      h('p#escalation-reason', null, esc ? `${esc.reason} (due ${fmtTime(esc.due_at)})` : fused?.reason ?? 'Readers disagree.'),
      review ? h('p.muted', null, `Review by ${review.reviewer}: ${review.escalated ? 'escalated' : review.label ?? labelText(review.payload)}`) : null);
    const top = h('div.adjudicate-top', null, cards, consensusPanel);
    host.append(top);
    if (legend) host.append(legend);
    const wsHost = h('div.adjudicate-ws');
    host.append(wsHost);
    ws = await mountWorkspace(wsHost, { project, user: ctx.me.user.username, item, stage: 'adjudicate', rules, actions, overlays: shownOverlays() });
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
    const alt = /^Digit([0-9])$/.exec(e.code);
    if (alt && e.altKey) {
      const target = alt[1] === '0' ? '#use-consensus' : `[data-pick="${Number(alt[1]) - 1}"]`;
      (document.querySelector(target) as HTMLButtonElement | null)?.click();
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

