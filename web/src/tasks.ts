// Where work comes from. The workflow task service (POST tasks/next, tasks/{id}/submit,
// reviews, adjudications) leases one task at a time; projects outside the workflow (a box,
// polygon, mask or multi-label project without a workflow policy, or a measurement project)
// are labelled item by item through the annotations endpoint.

import { ApiError, all, get, post, type Annotation, type Item, type Payload, type Shape } from './api';

/** A fused finding of a geometric consensus: an object plus who saw it. */
export type Finding = Shape & {
  finding?: number;
  support?: number;
  readers?: string[];
  score?: number;
  iou?: number;
  dice?: number;
};

/** What the readers' objects (or multi-label reads) add up to, for the adjudicator. */
export interface ConsensusView {
  method: string;
  payload: { objects?: Finding[]; minority?: Finding[]; labels?: string[] };
  agreement: number | null;
  confidence: number | null;
  target: number | null;
  posterior: Record<string, number>;
  parameters: { pairs?: [string, string, number][]; n_readers?: number; metric?: string; iou_threshold?: number; min_support?: number; [k: string]: unknown };
  reason: string | null;
}

/** A reader's skill figures, carried by each read of an adjudication task (never by an
 * annotate or review task): known-answer accuracy, agreement with the final consensus of their
 * other items, and what the stored consensus method says of them. */
export interface ReaderSkill {
  gold: { reads: number; accuracy: number | null };
  /** `percent` (classification), `exact` (multi-label), `f1` (boxes, polygons), `dice` (masks). */
  consensus: { metric: string; items: number; agreed: number | null; agreement: number | null };
  method: { method: string; skill: number | null; diagonal: Record<string, number> | null } | null;
}

export interface TaskContext {
  /** Geometric and multi-label projects: `label` is null and `payload` holds the read. */
  under_review?: { annotation_id: number; label: string | null; payload?: Payload };
  reads?: { annotation_id: number; reader: string; label: string | null; payload?: Payload; skill?: ReaderSkill | null }[];
  review?: { reviewer: string; label: string | null; escalated: boolean; payload?: Payload | null };
  escalation?: { reason: string; due_at: string };
  draft?: { label: string | null; payload?: Payload };
  consensus?: ConsensusView | null;
}

export interface Task {
  /** The task id (null in item mode). */
  id: number | null;
  item_id: number;
  stage: string;
  status?: string;
  lease_expires_at?: string | null;
  context?: TaskContext;
}

export interface NextTask {
  task: Task | null;
  reason: string;
}

export interface TasksApi {
  /** `tasks`: the server's workflow leases the work; `items`: the reader labels items in order. */
  mode: 'tasks' | 'items';
  next(after: number | null): Promise<NextTask>;
  open(itemId: number): Promise<Task>;
  submit(task: Task, payload: Payload, elapsed: number, parentId: number | null): Promise<{ next_step?: string }>;
  /** Items still to label (item mode only). */
  pending(): Promise<Task[]>;
}

interface TaskOut {
  task_id: number;
  item_id: number;
  stage: string;
  lease_expires_at: string | null;
  context: TaskContext;
}

function fromOut(t: TaskOut): Task {
  return { id: t.task_id, item_id: t.item_id, stage: t.stage, lease_expires_at: t.lease_expires_at, context: t.context };
}

/** Lease the next task of `project` (or get back the one you hold). */
export async function nextTask(project: string): Promise<NextTask> {
  const out = await post<{ task: TaskOut | null; reason: string }>(`/projects/${project}/tasks/next`);
  return { task: out.task ? fromOut(out.task) : null, reason: out.reason };
}

/** Whether the project runs the workflow: single or ordinal classification always; box,
 * polygon, mask and multi-label schemas once the project has a workflow policy (version 1 or
 * later); measurements never (the task service takes no measurement schema). */
export function usesWorkflow(kind: string, mode: string | undefined, policyVersion: number): boolean {
  if (kind === 'measurement') return false;
  if (kind === 'classification' && mode !== 'multi') return true;
  return policyVersion > 0;
}

/** Only the fields of an object that make a label (drops a finding's `support`, `readers`,
 * scores): what the adjudicator starts from when taking the consensus. */
export function plainObject(o: Finding | Shape): Shape {
  const { finding: _f, support: _s, readers: _r, score: _sc, iou: _i, dice: _d, ...rest } = o as Finding;
  return rest as Shape;
}

function taskMode(project: string): TasksApi {
  return {
    mode: 'tasks',
    next: () => nextTask(project),
    async open() {
      const got = await nextTask(project);
      if (!got.task) throw new ApiError(404, 'not_found', got.reason || 'no task is waiting for you');
      return got.task;
    },
    async submit(task, payload, elapsed) {
      return post(`/projects/${project}/tasks/${task.id}/submit`, { payload, time_spent_s: round(elapsed) });
    },
    async pending() {
      return [];
    },
  };
}

function round(seconds: number): number {
  return Math.round(seconds * 10) / 10;
}

/** Item mode: every item of the project, the ones you have not labelled first. */
function itemMode(project: string, me: string): TasksApi {
  const pending = async (): Promise<Task[]> => {
    const [items, mine] = await Promise.all([
      all<Item>(`/projects/${project}/items`),
      all<Annotation>(`/projects/${project}/annotations`),
    ]);
    const done = new Set(mine.filter((a) => a.author === me).map((a) => a.item_id));
    return items.filter((i) => i.status !== 'quarantined' && !done.has(i.id))
      .map((i) => ({ id: null, item_id: i.id, stage: 'annotate', status: 'to label' }));
  };
  return {
    mode: 'items',
    pending,
    async next(after) {
      const rows = await pending();
      const task = rows.find((t) => after === null || t.item_id > after) ?? rows.find((t) => t.item_id !== after) ?? null;
      return { task, reason: task ? '' : 'every item has your label' };
    },
    async open(itemId) {
      await get<Item>(`/projects/${project}/items/${itemId}`);
      return { id: null, item_id: itemId, stage: 'annotate' };
    },
    async submit(task, payload, elapsed, parentId) {
      await post(`/projects/${project}/items/${task.item_id}/annotations`, {
        payload, time_spent_s: round(elapsed), parent_id: parentId ?? undefined,
      });
      return {};
    },
  };
}

/** The work source of `project` for `me`. */
export function tasksApi(project: string, me: string, workflow: boolean): TasksApi {
  return workflow ? taskMode(project) : itemMode(project, me);
}

/** Decide a review task. */
export function sendReview(project: string, task: Task, body: { decision: string; payload?: Payload; comment: string; time_spent_s: number }): Promise<{ next_step: string }> {
  return post(`/projects/${project}/tasks/${task.id}/reviews`, { ...body, time_spent_s: round(body.time_spent_s) });
}

/** Give the final label of an escalated item. */
export function sendAdjudication(project: string, task: Task, body: { payload: Payload; reason: string; time_spent_s: number }): Promise<{ next_step: string }> {
  return post(`/projects/${project}/tasks/${task.id}/adjudications`, { ...body, time_spent_s: round(body.time_spent_s) });
}

export interface ReaderSummary {
  reader: string;
  n_gold: number;
  accuracy: number | null;
  min_sensitivity: number | null;
  calibration: string | null;
  suspended: string;
}

export interface Escalation {
  id: number;
  item_id: number;
  item: string;
  from_tier: number;
  to_tier: number;
  reason: string;
  status: string;
  due_at: string;
  overdue: boolean;
  hours_overdue: number;
  assignee: string | null;
}

/** Readers' known-answer figures (accuracy, calibration, suspensions); empty when not allowed. */
export async function readerSummaries(project: string): Promise<ReaderSummary[]> {
  try {
    return await get<ReaderSummary[]>(`/projects/${project}/readers`);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return [];
    throw err;
  }
}

/** Open (or all) escalations. */
export async function escalations(project: string, status: 'open' | 'all' = 'open'): Promise<Escalation[]> {
  try {
    return await get<Escalation[]>(`/projects/${project}/escalations?status=${status}`);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return [];
    throw err;
  }
}

/** Give back a task you hold unread: the slot returns to the pool and you are not offered
 * the item again. */
export function skipTask(project: string, task: Task): Promise<{ next_step: string }> {
  return post(`/projects/${project}/tasks/${task.id}/skip`);
}

/** Flag a task you hold as unclear: no read is recorded, the item goes to adjudication with
 * the reason. */
export function flagTask(project: string, task: Task, reason: string): Promise<{ next_step: string }> {
  return post(`/projects/${project}/tasks/${task.id}/flag`, { reason });
}

export interface QueueOverview {
  as_of: string;
  counts: { stage: string; status: string; n: number }[];
  stages: { stage: string; outstanding: number; oldest_created_at: string | null; oldest_age_hours: number | null }[];
  escalations: { open: number; overdue: number };
}

/** The periodic check that raises overdue escalations (GET /escalations/check). */
export interface OverdueCheck {
  enabled: boolean;
  period_minutes: number;
  last_started_at: string | null;
  last_finished_at: string | null;
  status: string;
  runner: string;
  runs: number;
  raised: number;
  error: string;
  next_due_at: string | null;
  late: boolean;
  as_of: string;
  open: number;
  overdue: number;
}

export interface CostRow {
  group: string;
  items: number;
  labels_per_item: number;
  minutes_per_item: number;
  est_accuracy: number | null;
  adjudicated: number;
  /** Class rows: items of the row that count in another class row too; null on policy rows. */
  in_other_classes: number | null;
}

export interface CostReport {
  by_policy: CostRow[];
  by_class: CostRow[];
  known_answer: { reads: number; minutes: number };
  /** final_class: one final class per item; each_class_present: every class in its final
   * label (multi-label, geometric), so class rows may add up to more items. */
  class_counting: 'final_class' | 'each_class_present';
}

export interface ClassAgreement {
  metric: string;
  classes: { class: string; value: number | null; ci: [number, number] | null; n_items: number; reason: string | null }[];
}

async function orNull<T>(path: string): Promise<T | null> {
  try {
    return await get<T>(path);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return null;
    throw err;
  }
}

/** Slots per stage and status, oldest outstanding slot per stage, overdue escalations; null
 * when not allowed (managers, admins, auditors only). */
export function queueOverview(project: string): Promise<QueueOverview | null> {
  return orNull<QueueOverview>(`/projects/${project}/queue`);
}

/** Cost per final label by policy version and by class; null when not allowed. */
export function costReport(project: string): Promise<CostReport | null> {
  return orNull<CostReport>(`/projects/${project}/cost`);
}

/** When overdue escalations were last raised by the timer, when next, and whether anyone keeps
 * time; null when not allowed. */
export function overdueCheck(project: string): Promise<OverdueCheck | null> {
  return orNull<OverdueCheck>(`/projects/${project}/escalations/check`);
}

/** One-vs-rest agreement per class with 95% bootstrap intervals; null when not allowed. */
export function classAgreement(project: string): Promise<ClassAgreement | null> {
  return orNull<ClassAgreement>(`/projects/${project}/agreement/classes?metric=krippendorff&ci=true`);
}

export interface PeriodAgreement {
  start: string;
  end: string;
  n_items: number;
  n_reads: number;
  n_compared: number;
  value: number | null;
  ci: [number, number] | null;
  reason: string | null;
}

export interface AgreementTrend {
  metric: string;
  level: string;
  period: 'day' | 'week';
  periods: PeriodAgreement[];
}

export interface ReaderVsConsensus {
  reader: string;
  reads: number;
  compared: number;
  agreed: number;
  agreement: number | null;
  ci: [number, number] | null;
  kappa: number | null;
  median_time_s: number | null;
  confusion: number[][];
}

export interface ReadersAgreement {
  classes: string[];
  readers: ReaderVsConsensus[];
}

/** Agreement per day or week with 95% bootstrap intervals; null when not allowed. */
export function agreementTrend(project: string, period: 'day' | 'week', metric: string, level: string): Promise<AgreementTrend | null> {
  return orNull<AgreementTrend>(`/projects/${project}/agreement/trend?period=${period}&metric=${metric}&level=${level}&ci=true`);
}

/** Every reader against the final consensus (leaderboard, kappa, confusion); null when not
 * allowed. */
export function readersAgreement(project: string): Promise<ReadersAgreement | null> {
  return orNull<ReadersAgreement>(`/projects/${project}/agreement/readers`);
}
