// Background jobs of a project: status and progress (refreshed while any job runs), cancel and
// start (managers and administrators). Everything comes from the jobs routes of the API.

import { ApiError, get, post } from '../api';
import type { Cleanup, PageCtx } from '../main';
import { fail, fmtUtc, h, notify } from '../ui';

/** A background job as `GET …/jobs/{id}` gives it. */
export interface Job {
  id: number;
  kind: string;
  status: string;
  backend: string;
  params: Record<string, unknown>;
  progress: { done: number; total: number | null };
  message: string;
  result: Record<string, unknown>;
  error: string;
  attempts: number;
  max_attempts: number;
  cancel_requested: boolean;
  created_by: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}
interface JobPage {
  items: Job[];
  next_cursor: string | null;
}
interface Model {
  name: string;
  version: string;
  kind: string;
  classes: string[];
  active: boolean;
}

/** Jobs still to finish: these are polled. */
const ACTIVE = new Set(['queued', 'running']);
/** Jobs per page of the list. */
const PAGE = 25;
/** Polling: every second while jobs move; 1.6 times longer after each poll where nothing
 * changed, up to 15 s. */
export const POLL_MIN_MS = 1000;
export const POLL_MAX_MS = 15000;

/** The delay before the next poll: back to the minimum when something changed, else longer. */
export function nextDelay(previous: number, changed: boolean): number {
  return changed ? POLL_MIN_MS : Math.min(POLL_MAX_MS, Math.round(Math.max(previous, POLL_MIN_MS) * 1.6));
}

/** What a poll compares to tell whether a job moved. */
function fingerprint(j: Job): string {
  return [j.status, j.progress.done, j.progress.total, j.message, j.cancel_requested, j.error, j.attempts].join('\u0000');
}

function text(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  const s = JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}…` : s;
}

/** `key value` pairs of a mapping (the project and the runner's own `_` keys left out). */
function pairs(m: Record<string, unknown>): string {
  return Object.entries(m)
    .filter(([k]) => k !== 'project' && !k.startsWith('_'))
    .map(([k, v]) => `${k}: ${text(v)}`)
    .join(' · ');
}

/** A random key so that a submission repeated after a lost reply does not queue twice. */
function newKey(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return `web-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** One row of the table, updated in place (so a poll never swaps a button under the pointer). */
interface Row {
  tr: HTMLTableRowElement;
  update(job: Job): void;
}

function jobRow(job: Job, canCancel: boolean, onCancel: (job: Job, button: HTMLButtonElement) => void): Row {
  const status = h('span.job-status');
  const bar = h('progress.job-bar');
  const count = h('span.job-count');
  const message = h('div.job-message.muted');
  const outcome = h('div.job-outcome');
  const started = h('td.job-started');
  const finished = h('td.job-finished');
  let current = job;
  const cancel = h('button.danger.job-cancel', { type: 'button', title: 'Cancel this job' }, 'Cancel');
  cancel.addEventListener('click', () => onCancel(current, cancel));
  const tr = h('tr', { dataset: { job: String(job.id) } },
    h('td', null, `#${job.id}`),
    h('td', null, h('strong', null, job.kind), h('div.muted.job-params', null, pairs(job.params))),
    h('td.job-by', null, job.created_by || '—'),
    h('td.job-created', null, fmtUtc(job.created_at)),
    started, finished,
    h('td', null, status),
    h('td.job-progress', null, h('div.row', null, bar, count), message),
    h('td', null, outcome),
    h('td', null, canCancel ? cancel : null));
  const update = (j: Job) => {
    current = j;
    tr.dataset.status = j.status;
    status.dataset.status = j.status;
    status.textContent = j.status === 'running' && j.cancel_requested ? 'running — cancelling' : j.status;
    const { done, total } = j.progress;
    if (total !== null && total > 0) {
      bar.max = total;
      bar.value = Math.min(done, total);
      count.textContent = `${done} / ${total}`;
    } else if (ACTIVE.has(j.status)) {
      bar.removeAttribute('value'); // indeterminate: the total is not known yet
      count.textContent = `${done} / ?`;
    } else {
      bar.max = 1;
      bar.value = j.status === 'succeeded' ? 1 : 0;
      count.textContent = `${done} / ${total ?? '—'}`;
    }
    message.textContent = j.message;
    started.textContent = fmtUtc(j.started_at);
    finished.textContent = fmtUtc(j.finished_at);
    const said = j.status === 'failed' && j.error ? h('div.job-error.form-error', null, j.error)
      : j.status === 'queued' && j.error ? h('div.job-error.form-error', null, `attempt ${j.attempts} of ${j.max_attempts} failed, retrying: ${j.error}`)
        : j.status === 'succeeded' ? h('span.job-result', null, pairs(j.result) || 'done') : null;
    outcome.replaceChildren(...(said ? [said] : []));
    const open = ACTIVE.has(j.status) && !j.cancel_requested;
    cancel.hidden = !open;
    cancel.disabled = !open;
  };
  update(job);
  return { tr, update };
}

/** The jobs page of the current project. */
export async function jobsPage(root: HTMLElement, ctx: PageCtx): Promise<Cleanup> {
  const project = ctx.project!;
  // Cancelling and starting jobs: project managers and administrators (auth/policy.py).
  const canManage = ctx.roles.has('manager') || ctx.roles.has('admin');
  const error = h('p#jobs-error.form-error', { role: 'alert' });
  const polling = h('span#jobs-polling.muted');
  const refreshButton = h('button#jobs-refresh', { type: 'button', title: 'Ask the server now' }, 'Refresh');
  const more = h('button#jobs-more', { type: 'button', hidden: true }, 'Load older jobs');
  const body = h('tbody');
  const listBox = h('div#jobs', { dataset: { polling: 'off' } },
    h('table.jobs-table', null,
      h('thead', null, h('tr', null, ['job', 'kind', 'started by', 'created', 'started', 'finished', 'status', 'progress', 'result or error', ''].map((t) => h('th', null, t)))),
      body),
    h('p.empty#jobs-none', { hidden: true }, 'No jobs in this project yet.'),
    more);
  root.append(h('h2', null, 'Jobs'),
    h('p.muted', null, 'Pre-labelling, consensus recomputation, acceptance tracking, release builds and exports run in the background. ',
      'Times are UTC. The list refreshes itself while a job is queued or running.'),
    h('div.row', null, refreshButton, polling), error);

  // -- the list, refreshed while any job runs -----------------------------------------------
  const jobs = new Map<number, Job>();
  const rows = new Map<number, Row>();
  let cursor: string | null = null;
  let delay = POLL_MIN_MS;
  let timer = 0;
  let stopped = false;
  let inFlight = false;
  let again = false;

  const setPolling = (state: 'on' | 'off' | 'paused' | 'stopped', words: string) => {
    listBox.dataset.polling = state;
    polling.textContent = words;
  };

  const draw = () => {
    const ids = [...jobs.keys()].sort((a, b) => b - a);
    ids.forEach((id, k) => {
      const job = jobs.get(id)!;
      let row = rows.get(id);
      if (!row) {
        row = jobRow(job, canManage, (j, button) => void cancelJob(j, button));
        rows.set(id, row);
      } else {
        row.update(job);
      }
      if (body.children[k] !== row.tr) body.insertBefore(row.tr, body.children[k] ?? null);
    });
    (listBox.querySelector('#jobs-none') as HTMLElement).hidden = ids.length > 0;
    more.hidden = cursor === null;
  };

  /** Merge `fresh` into the list; true when a job appeared or moved. */
  const merge = (fresh: Job[]): boolean => {
    let changed = false;
    for (const j of fresh) {
      const before = jobs.get(j.id);
      if (!before || fingerprint(before) !== fingerprint(j)) changed = true;
      jobs.set(j.id, j);
    }
    return changed;
  };

  const schedule = (changed: boolean) => {
    clearTimeout(timer);
    if (stopped) return;
    if (document.hidden) {
      setPolling('paused', 'Refreshing paused while this tab is hidden.');
      return;
    }
    const running = [...jobs.values()].filter((j) => ACTIVE.has(j.status)).length;
    if (!running) {
      setPolling('off', 'No job is queued or running: not refreshing.');
      return;
    }
    delay = nextDelay(delay, changed);
    setPolling('on', `${running} job${running === 1 ? '' : 's'} queued or running: next refresh in ${Math.round(delay / 1000)} s.`);
    timer = window.setTimeout(() => void refresh(false), delay);
  };

  /** Ask the server for the newest page and every unfinished job shown below it. */
  const refresh = async (reset: boolean): Promise<void> => {
    if (stopped) return;
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    clearTimeout(timer);
    let changed = reset;
    try {
      const first = await get<JobPage>(`/projects/${project}/jobs/page?limit=${PAGE}`);
      if (jobs.size === 0) cursor = first.next_cursor;
      const seen = new Set(first.items.map((j) => j.id));
      const older = [...jobs.values()].filter((j) => ACTIVE.has(j.status) && !seen.has(j.id));
      const followed = await Promise.all(older.map((j) => get<Job>(`/projects/${project}/jobs/${j.id}`)));
      changed = merge([...first.items, ...followed]) || changed;
      error.textContent = '';
      draw();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 403 || err.status === 404)) {
        // No (longer a) right to see this project's jobs: say so and stop asking.
        stopped = true;
        clearTimeout(timer);
        error.textContent = err.plain;
        setPolling('stopped', '');
        return;
      }
      if (err instanceof ApiError && err.status === 401) return; // the sign-in page explains
      error.textContent = err instanceof ApiError ? err.plain : `Something went wrong: ${String(err)}`;
    } finally {
      inFlight = false;
    }
    if (again) {
      again = false;
      void refresh(true);
      return;
    }
    schedule(changed);
  };

  const cancelJob = async (job: Job, button: HTMLButtonElement) => {
    button.disabled = true;
    try {
      const after = await post<Job>(`/projects/${project}/jobs/${job.id}/cancel`);
      merge([after]);
      draw();
      notify(after.status === 'cancelled' ? `Job #${job.id} cancelled.`
        : `Job #${job.id} asked to stop: it stops at its next progress report.`, 'ok');
    } catch (err) {
      // The API's refusal, as it said it (e.g. the job finished meanwhile, or no right).
      error.textContent = err instanceof ApiError ? err.plain : `Something went wrong: ${String(err)}`;
      if (!(err instanceof ApiError)) fail(err);
      button.disabled = false;
    }
    await refresh(true);
  };

  more.addEventListener('click', async () => {
    if (!cursor) return;
    more.disabled = true;
    try {
      const page = await get<JobPage>(`/projects/${project}/jobs/page?limit=${PAGE}&cursor=${encodeURIComponent(cursor)}`);
      cursor = page.next_cursor;
      const changed = merge(page.items);
      draw();
      schedule(changed);
    } catch (err) {
      error.textContent = err instanceof ApiError ? err.plain : `Something went wrong: ${String(err)}`;
    } finally {
      more.disabled = false;
    }
  });
  refreshButton.addEventListener('click', () => void refresh(true));

  const onVisibility = () => {
    if (document.hidden) {
      clearTimeout(timer);
      if (!stopped) setPolling('paused', 'Refreshing paused while this tab is hidden.');
    } else {
      void refresh(true);
    }
  };
  document.addEventListener('visibilitychange', onVisibility);
  const cleanup = () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  };

  // -- first load: the refusal, plainly, for those who may not see jobs --------------------
  await refresh(true);
  if (stopped) {
    root.append(h('p.muted#jobs-refused', null, 'The jobs of a project are shown to its managers, administrators and auditors.'));
    return cleanup;
  }
  if (canManage) root.append(await startForm(project, (job) => {
    merge([job]);
    draw();
    void refresh(true);
  }));
  root.append(listBox);
  return cleanup;
}

/** The form that queues a job (`POST …/jobs`) with the parameters each kind takes. */
async function startForm(project: string, started: (job: Job) => void): Promise<HTMLElement> {
  const models = await get<Model[]>(`/projects/${project}/prelabel/models`).catch((err) => {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return [] as Model[];
    throw err;
  });
  const active = models.filter((m) => m.active);
  const kind = h('select#job-kind', { name: 'kind' },
    h('option', { value: 'prelabel' }, 'Pre-label with a registered model'),
    h('option', { value: 'consensus' }, 'Recompute the consensus'),
    h('option', { value: 'acceptance' }, 'Record draft acceptance'),
    h('option', { value: 'export' }, 'Export the current reads'),
    h('option', { value: 'release' }, 'Build a release'));
  const model = h('select#job-model', { name: 'model' },
    active.map((m) => h('option', { value: JSON.stringify([m.name, m.version]) }, `${m.name} v${m.version} (${m.kind}; ${m.classes.join(', ')})`)));
  const method = h('input#job-method', { name: 'method', value: 'mv', size: 10, maxLength: 32, placeholder: 'mv, ds, glad…' });
  const minReads = h('input#job-min-reads', { name: 'min_reads', type: 'number', min: 1, step: 1, value: '1', size: 4 });
  const exportName = h('input#job-export-name', { name: 'name', placeholder: 'reads.csv', size: 18, maxLength: 120 });
  const format = h('select#job-export-format', { name: 'format' }, h('option', { value: 'csv' }, 'CSV'), h('option', { value: 'parquet' }, 'Parquet'));
  const releaseName = h('input#job-release-name', { name: 'name', placeholder: 'e.g. v3', size: 10, maxLength: 120 });
  const exclude = h('input#job-release-exclude', { name: 'exclude_unresolved', placeholder: 'reason to leave out unresolved items (optional)', size: 40 });
  const fields: Record<string, HTMLElement> = {
    prelabel: active.length
      ? h('label', null, 'Model', model)
      : h('p.muted#job-no-model', null, 'No drafting model is registered in this project (truthset prelabel register).'),
    consensus: h('div.row', null, h('label', null, 'Method', method), h('label', null, 'Reads needed', minReads)),
    acceptance: h('p.muted', null, 'Records the outcome of drafts read without the services and pauses classes whose acceptance fell.'),
    export: h('div.row', null, h('label', null, 'File name (in the workspace\'s exports folder)', exportName), h('label', null, 'Format', format)),
    release: h('div.row', null, h('label', null, 'Release name', releaseName), h('label', null, 'Unresolved items', exclude)),
  };
  const holder = h('div#job-params');
  const submit = h('button.primary#job-submit', { type: 'submit' }, 'Start');
  const error = h('p#job-start-error.form-error', { role: 'alert' });
  const show = () => {
    holder.replaceChildren(fields[kind.value]);
    submit.disabled = kind.value === 'prelabel' && !active.length;
    error.textContent = '';
  };
  kind.addEventListener('change', show);
  show();
  let key = newKey();
  const params = (): Record<string, unknown> => {
    const trimmed = (i: HTMLInputElement) => i.value.trim();
    switch (kind.value) {
      case 'prelabel': {
        const [name, version] = JSON.parse(model.value) as [string, string];
        return { model: name, version };
      }
      case 'consensus':
        return { method: trimmed(method), min_reads: Number(minReads.value) };
      case 'export':
        return { name: trimmed(exportName), format: format.value };
      case 'release':
        return { name: trimmed(releaseName), ...(trimmed(exclude) ? { exclude_unresolved: trimmed(exclude) } : {}) };
      default:
        return {};
    }
  };
  const form = h('form#job-start-form', {
    onsubmit: async (e: Event) => {
      e.preventDefault();
      submit.disabled = true;
      error.textContent = '';
      try {
        const job = await post<Job>(`/projects/${project}/jobs`, { kind: kind.value, params: params(), idempotency_key: key });
        key = newKey();
        notify(`Job #${job.id} (${job.kind}) queued.`, 'ok');
        started(job);
      } catch (err) {
        // The API names what it refused and which parameter (e.g. params.name). Only after a
        // lost reply (status 0) may the job exist: then the same key finds it, not a second.
        if (!(err instanceof ApiError && err.status === 0)) key = newKey();
        error.textContent = err instanceof ApiError ? err.plain : `Something went wrong: ${String(err)}`;
      } finally {
        submit.disabled = kind.value === 'prelabel' && !active.length;
      }
    },
  }, h('div.row', null, h('label', null, 'Job', kind), holder), h('div.row', null, submit), error);
  return h('details.panel#job-start', { open: true }, h('summary', null, 'Start a job'), form);
}
