// Dashboards: progress, agreement with confidence intervals, readers, queues and escalations.

import { ApiError, all, get, type Annotation, type Consensus, type Item } from '../api';
import { barChart, heatmap, lineChart, trendChart, type Bar } from '../charts';
import type { Cleanup, PageCtx } from '../main';
import { fail, fmtNum, fmtRelative, fmtTime, fmtUtc, h, table } from '../ui';
import { projectRules } from '../workspace';
import {
  agreementTrend, classAgreement, costReport, escalations, overdueCheck, queueOverview, readerSummaries, readersAgreement,
  type AgreementTrend, type OverdueCheck,
} from '../tasks';

interface AgreementOut {
  metric: string;
  value: number | null;
  ci: [number, number] | null;
  n_items: number;
  n_annotators: number;
  level: string | null;
  reason?: string | null;
}

function panel(title: string, ...body: (Node | string | null)[]): HTMLElement {
  return h('section.panel', null, h('h3', null, title), body);
}

const RUNNERS: Record<string, string> = { inprocess: 'the server', procrastinate: 'a worker', cli: 'the command line' };

/** The periodic overdue check in words: when it last ran (relative, by the server's clock, and
 * in UTC), how many escalations of this project it raised, its period and next due time, and a
 * warning when it is off or late (nobody keeping time). */
export function overdueCheckBlock(c: OverdueCheck): HTMLElement {
  const every = `${c.period_minutes} min`;
  const last = c.last_started_at
    ? `Overdue escalations last checked ${fmtRelative(c.last_started_at, c.as_of)} (${fmtUtc(c.last_started_at)}) by ${RUNNERS[c.runner] ?? (c.runner || 'an unknown runner')}: ${c.status || 'no outcome'}; raised in this project at that check: ${c.raised}.`
    : 'Overdue escalations have never been checked by the timer.';
  let warning: string | null = null;
  if (!c.enabled) {
    warning = 'The overdue check is off (escalation_check_minutes: 0): overdue escalations are raised a tier only by hand (truthset escalations KEY --raise-overdue).';
  } else if (c.late) {
    warning = (c.last_started_at
      ? `The overdue check is late: it last ran ${fmtRelative(c.last_started_at, c.as_of)}, more than two periods (2 × ${every}).`
      : 'The overdue check has never run.')
      + ' No truthset serve or worker is keeping time, so overdue escalations are not being raised.';
  }
  return h('div#overdue-check', { dataset: { state: !c.enabled ? 'off' : c.late ? 'late' : 'ok' } },
    warning ? h('p.notice.warn#overdue-warning', null, `⚠ ${warning}`) : null,
    h('p#overdue-last', null, last),
    c.enabled && c.next_due_at
      ? h('p#overdue-next', null, `Checked every ${every}; next check due ${fmtUtc(c.next_due_at)} (${fmtRelative(c.next_due_at, c.as_of)}).`)
      : null,
    c.status === 'failed' && c.error ? h('p.notice.error#overdue-error', null, `The last check failed: ${c.error}`) : null);
}

/** The dashboards of the current project. */
export async function dashboardPage(root: HTMLElement, ctx: PageCtx): Promise<Cleanup> {
  const project = ctx.project!;
  const rules = await projectRules(project);
  const grid = h('div.grid2#dashboards');
  root.append(h('h2', null, 'Dashboards'), grid);
  const [items, annotations, consensus] = await Promise.all([
    all<Item>(`/projects/${project}/items`),
    all<Annotation>(`/projects/${project}/annotations`).catch(() => [] as Annotation[]),
    all<Consensus>(`/projects/${project}/consensus`).catch(() => [] as Consensus[]),
  ]);

  // -- progress -------------------------------------------------------------------------------
  const human = annotations.filter((a) => a.source === 'human');
  const times = human.map((a) => new Date(a.created_at).getTime()).sort((a, b) => a - b);
  const finalTimes = consensus.map((c) => new Date((c as unknown as { created_at: string }).created_at).getTime()).sort((a, b) => a - b);
  const cumulative = (ts: number[]): [number, number][] => ts.map((t, k) => [t, k + 1]);
  const byStatus = new Map<string, number>();
  for (const i of items) byStatus.set(i.status, (byStatus.get(i.status) ?? 0) + 1);
  const labelled = new Set(human.map((a) => a.item_id)).size;
  grid.append(panel('Progress',
    h('p', null, `items: ${items.length} · labelled at least once: ${labelled} · reads: ${human.length} · with a consensus: ${consensus.length}`),
    barChart([...byStatus].map(([label, value]) => ({ label, value })), { format: (v) => String(Math.round(v)) }),
    times.length ? lineChart([
      { name: 'reads', color: '#3d8bfd', points: cumulative(times) },
      { name: 'consensus', color: '#3fb950', points: cumulative(finalTimes) },
    ]) : h('p.muted', null, 'No reads yet.')));

  // -- agreement ------------------------------------------------------------------------------
  const agreementPanel = panel('Agreement between readers (95% bootstrap intervals)', h('p.muted', null, 'Computing…'));
  grid.append(agreementPanel);
  void (async () => {
    const kind = rules.schema.definition;
    if (kind.kind !== 'classification') {
      agreementPanel.lastElementChild!.replaceWith(h('p.muted', null, `Agreement coefficients apply to classification schemas; this project labels ${kind.kind}es.`));
      return;
    }
    const level = kind.mode === 'ordinal' ? 'ordinal' : 'nominal';
    const bars: Bar[] = [];
    const rows: (string | Node)[][] = [];
    for (const [metric, lvl] of [['krippendorff', level], ['fleiss', 'nominal'], ['ac1', 'nominal'], ['percent', 'nominal']] as const) {
      try {
        const r = await get<AgreementOut>(`/projects/${project}/agreement?metric=${metric}&level=${lvl}&ci=true`);
        if (r.value !== null) bars.push({ label: `${metric}${metric === 'krippendorff' ? ` (${lvl})` : ''}`, value: r.value, lo: r.ci?.[0], hi: r.ci?.[1] });
        rows.push([metric, lvl, fmtNum(r.value), r.ci ? `[${fmtNum(r.ci[0])}, ${fmtNum(r.ci[1])}]` : '—', String(r.n_items), r.reason ?? '']);
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 400) throw err;
        rows.push([metric, lvl, '—', '—', '0', err.detail]);
      }
    }
    agreementPanel.lastElementChild!.replaceWith(h('div', null,
      bars.length ? barChart(bars, { domain: [Math.min(0, ...bars.map((b) => b.lo ?? b.value)), 1] }) : h('p.muted', null, 'Not enough overlapping reads yet.'),
      table(['coefficient', 'level', 'value', '95% CI', 'items', 'note'], rows)));
  })().catch(fail);

  // -- agreement per class (one-vs-rest, bootstrap intervals) ---------------------------------
  if (rules.schema.definition.kind === 'classification') {
    const perClass = panel('Agreement per class (one-vs-rest alpha, 95% bootstrap intervals)', h('p.muted', null, 'Computing…'));
    grid.append(perClass);
    void classAgreement(project).then((r) => {
      if (!r) {
        perClass.remove();
        return;
      }
      const defined = r.classes.filter((c) => c.value !== null);
      perClass.lastElementChild!.replaceWith(h('div#class-agreement', null,
        defined.length ? barChart(defined.map((c) => ({ label: c.class, value: c.value!, lo: c.ci?.[0], hi: c.ci?.[1] })),
          { domain: [Math.min(0, ...defined.map((c) => c.ci?.[0] ?? c.value!)), 1] }) : null,
        table(['class', 'alpha', '95% CI', 'items', 'note'], r.classes.map((c) => [
          c.class, fmtNum(c.value), c.ci ? `[${fmtNum(c.ci[0])}, ${fmtNum(c.ci[1])}]` : '—', String(c.n_items), c.reason ?? '',
        ]))));
    }).catch((err) => {
      if (err instanceof ApiError && (err.status === 400 || err.status === 422)) {
        perClass.lastElementChild!.replaceWith(h('p.muted', null, err.detail));
        return;
      }
      fail(err);
    });
  }

  // -- agreement over time (per week or day, 95% bootstrap intervals) ---------------------------
  if (rules.schema.definition.kind === 'classification') {
    const level = rules.schema.definition.mode === 'ordinal' ? 'ordinal' : 'nominal';
    const period = h('select#trend-period', null, h('option', { value: 'week' }, 'per week'), h('option', { value: 'day' }, 'per day'));
    const body = h('div#agreement-trend', null, h('p.muted', null, 'Computing…'));
    const trendPanel = panel(`Agreement over time (Krippendorff's alpha, ${level}, 95% bootstrap intervals)`, period, body);
    grid.append(trendPanel);
    const draw = (trend: AgreementTrend) => {
      const points = trend.periods.map((p) => ({
        x: new Date(p.start).getTime(), y: p.value, lo: p.ci?.[0] ?? null, hi: p.ci?.[1] ?? null,
        title: `${fmtTime(p.start)}: ${p.value === null ? p.reason ?? 'undefined' : fmtNum(p.value)} (${p.n_items} items, ${p.n_reads} reads)`,
      }));
      body.dataset.periods = String(trend.periods.length);
      body.replaceChildren(
        trend.periods.length ? trendChart(points, { domain: [Math.min(0, ...points.map((p) => p.lo ?? p.y ?? 0)), 1] }) : h('p.muted', null, 'No reads yet.'),
        table([trend.period === 'week' ? 'week of' : 'day', 'alpha', '95% CI', 'items finished', 'compared', 'note'], trend.periods.slice().reverse().map((p) => [
          new Date(p.start).toLocaleDateString(), fmtNum(p.value), p.ci ? `[${fmtNum(p.ci[0])}, ${fmtNum(p.ci[1])}]` : '—',
          String(p.n_items), String(p.n_compared), p.reason ?? '',
        ])),
        h('p.muted', null, 'An item counts in the period of its last read; a dip after a guideline change or a new reader shows here.'));
    };
    const loadTrend = async (first: boolean) => {
      try {
        let trend = await agreementTrend(project, period.value as 'day' | 'week', 'krippendorff', level);
        if (!trend) {
          trendPanel.remove();
          return;
        }
        // Everything in one week: show days instead, so the plot has a shape.
        if (first && trend.period === 'week' && trend.periods.length < 2) {
          const daily = await agreementTrend(project, 'day', 'krippendorff', level);
          if (daily && daily.periods.length > 1) {
            trend = daily;
            period.value = 'day';
          }
        }
        draw(trend);
      } catch (err) {
        if (err instanceof ApiError && (err.status === 400 || err.status === 422)) {
          body.replaceChildren(h('p.muted', null, err.detail));
          return;
        }
        fail(err);
      }
    };
    period.addEventListener('change', () => void loadTrend(false));
    void loadTrend(true);
  }

  // -- queue and cost (managers, admins, auditors) ----------------------------------------------
  const [overview, cost] = await Promise.all([queueOverview(project), costReport(project)]);
  if (overview) {
    const stages = [...new Set(overview.counts.map((c) => c.stage))];
    const statuses = [...new Set(overview.counts.map((c) => c.status))];
    const count = (stage: string, status: string) => overview.counts.find((c) => c.stage === stage && c.status === status)?.n ?? 0;
    grid.append(panel('Queue',
      h('p#queue-escalations', null, `open escalations: ${overview.escalations.open} · overdue: ${overview.escalations.overdue}`),
      overview.stages.length ? barChart(overview.stages.map((st) => ({ label: `${st.stage} (${st.outstanding})`, value: st.oldest_age_hours ?? 0 })),
        { format: (v) => `${v.toFixed(1)} h` }) : h('p.muted', null, 'Nothing outstanding.'),
      stages.length ? table(['stage', ...statuses, 'oldest outstanding'], stages.map((st) => [
        st, ...statuses.map((x) => String(count(st, x))),
        fmtTime(overview.stages.find((o) => o.stage === st)?.oldest_created_at ?? null),
      ])) : h('p.muted', null, 'No tasks yet.')));
  }
  if (cost) {
    const rows = (list: typeof cost.by_policy) => list.map((r) => [
      r.group, String(r.items), fmtNum(r.labels_per_item, 2), fmtNum(r.minutes_per_item, 2), fmtNum(r.est_accuracy, 3), `${(100 * r.adjudicated).toFixed(0)}%`,
    ]);
    const heads = ['items', 'labels / item', 'reader-minutes / item', 'est. accuracy', 'adjudicated'];
    // Multi-label and geometric projects: an item counts in every class present in its final
    // label, so the class rows say how many of their items count elsewhere too.
    const each = cost.class_counting === 'each_class_present';
    grid.append(panel('Cost per final label',
      cost.by_policy.length ? h('div#cost', null,
        table(['policy', ...heads], rows(cost.by_policy)),
        each
          ? table(['class present', ...heads, 'also in other classes'], rows(cost.by_class).map((cells, k) => [...cells, String(cost.by_class[k].in_other_classes ?? 0)]), 'cost-classes')
          : table(['class', ...heads], rows(cost.by_class), 'cost-classes'),
        each ? h('p.muted#cost-class-note', null, 'An item counts in every class present in its final label (its objects\' classes or its set of labels; "(no class)": none), so the class rows may add up to more items than the policy rows. Estimated accuracy per class: the posterior that the class is present (multi-label) or the item\'s agreement between readers (boxes, polygons, masks); adjudicated and reviewed labels count 1.') : null)
        : h('p.muted', null, 'No final labels yet.'),
      h('p.muted', null, `known-answer overhead: ${cost.known_answer.reads} reads, ${fmtNum(cost.known_answer.minutes, 1)} reader-minutes`)));
  }

  // -- readers' known-answer figures and escalations (the workflow service) ---------------------
  const [skills, escalated, check] = await Promise.all([readerSummaries(project), escalations(project, 'all'), overdueCheck(project)]);

  // Reader leaderboard and confusion matrices against the final consensus (the workflow
  // service computes them; overseers only).
  const skill = new Map(skills.map((r) => [r.reader, r]));
  const board = rules.schema.definition.kind === 'classification'
    ? await readersAgreement(project).catch((err) => {
      if (err instanceof ApiError && (err.status === 400 || err.status === 422)) return null;
      throw err;
    })
    : null;
  if (board && board.readers.length) {
    const compared = board.readers.filter((r) => r.compared > 0);
    const pick = h('select#confusion-reader', null, compared.map((r) => h('option', { value: r.reader }, r.reader)));
    const holder = h('div#confusion');
    const draw = () => {
      const r = board.readers.find((x) => x.reader === pick.value);
      holder.replaceChildren(r ? heatmap(board.classes, board.classes, r.confusion, { title: `${r.reader}: rows = reader, columns = consensus` }) : h('p.muted', null, 'No reads compared with a final consensus yet.'));
    };
    pick.addEventListener('change', draw);
    grid.append(panel('Reader leaderboard (agreement with the final consensus, 95% bootstrap intervals)',
      compared.length ? barChart(compared.map((r) => ({ label: r.reader, value: r.agreement ?? 0, lo: r.ci?.[0], hi: r.ci?.[1] })), { domain: [0, 1] }) : null,
      table(['reader', 'reads', 'agrees with consensus', '95% CI', "Cohen's kappa", 'median time (s)', 'gold accuracy', 'status'], board.readers.map((r) => [
        r.reader, String(r.reads), r.compared ? `${(100 * r.agreed / r.compared).toFixed(0)}% of ${r.compared}` : '—',
        r.ci ? `[${fmtNum(r.ci[0], 2)}, ${fmtNum(r.ci[1], 2)}]` : '—', fmtNum(r.kappa, 2),
        fmtNum(r.median_time_s, 1), fmtNum(skill.get(r.reader)?.accuracy ?? null, 2),
        [skill.get(r.reader)?.calibration, skill.get(r.reader)?.suspended].filter(Boolean).join(' · '),
      ]), 'leaderboard')));
    grid.append(panel('Confusion against the consensus', pick, holder));
    draw();
  }

  if (skills.length) {
    grid.append(panel('Readers on known answers (gold and calibration)',
      barChart(skills.filter((r) => r.accuracy != null).map((r) => ({ label: r.reader, value: r.accuracy! })), { domain: [0, 1] }),
      table(['reader', 'gold reads', 'accuracy', 'lowest class sensitivity', 'calibration', 'suspended for'], skills.map((r) => [
        r.reader, String(r.n_gold), fmtNum(r.accuracy, 2), fmtNum(r.min_sensitivity, 2), r.calibration ?? '—', r.suspended || '—',
      ]))));
  }
  const prelabels = await get<{ min_acceptance: number; classes: { class_name: string; status: string; n: number; accepted: number; edited: number; rejected: number; window_acceptance: number | null; reason: string }[] }>(
    `/projects/${project}/prelabel/acceptance`).catch((err) => {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return null;
    throw err;
  });
  if (prelabels && prelabels.classes.some((c) => c.n > 0)) {
    grid.append(panel(`Pre-label acceptance per class (drafting pauses under ${fmtNum(prelabels.min_acceptance, 2)})`,
      barChart(prelabels.classes.filter((c) => c.n > 0).map((c) => ({
        label: c.class_name, value: c.window_acceptance ?? c.accepted / c.n,
        color: c.status === 'paused' ? '#ff6b6b' : undefined,
      })), { domain: [0, 1] }),
      table(['class', 'drafts', 'accepted', 'edited', 'rejected', 'recent acceptance', 'status'], prelabels.classes.map((c) => [
        c.class_name, String(c.n), String(c.accepted), String(c.edited), String(c.rejected), fmtNum(c.window_acceptance, 2),
        c.status === 'paused' ? `paused: ${c.reason}` : c.status,
      ]))));
  }
  const open = escalated.filter((e) => e.status === 'open');
  const now = Date.now();
  const ages = open.map((e) => ({ label: `item ${e.item_id}`, value: e.overdue ? e.hours_overdue : (new Date(e.due_at).getTime() - now) / -3.6e6, color: e.overdue ? '#ff6b6b' : '#3d8bfd' }));
  grid.append(panel('Escalations (hours past deadline; negative: time left)',
    check ? overdueCheckBlock(check) : null,
    open.length ? barChart(ages, { format: (v) => v.toFixed(0) }) : null,
    escalated.length
      ? table(['item', 'tiers', 'reason', 'status', 'due', 'overdue'], escalated.map((e) => [String(e.item_id), `${e.from_tier} → ${e.to_tier}`, e.reason, e.status, fmtTime(e.due_at), e.overdue ? `⚠ ${e.hours_overdue.toFixed(1)} h` : '']))
      : h('p.muted', null, 'No escalations.')));
}
