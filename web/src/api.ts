// The REST client: session cookie + single-use CSRF tokens, errors told plainly.

export const API = '/api/v1';
/** DICOMweb (QIDO-RS / WADO-RS) of a project: `${DICOMWEB}/{key}`. */
export const DICOMWEB = '/dicomweb/projects';

/** An error reply of the API (`{error, field, detail}`), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    public detail: string,
    public field: string | null = null,
  ) {
    super(detail);
  }

  /** What to tell the user, in plain words. */
  get plain(): string {
    if (this.status === 0) {
      return 'Cannot reach the server. Check your connection and try again — nothing you drew is lost.';
    }
    if (this.status === 401) {
      return 'Your session has expired. Sign in again — your unsaved drawing is kept on this computer.';
    }
    if (this.status === 409) {
      return `Someone else got there first: ${this.detail}. Reload to see the current state.`;
    }
    if (this.status === 412 || this.status === 428) {
      return `This changed since you opened it: ${this.detail}. Reload and try again.`;
    }
    if (this.status === 403) return `Not allowed: ${this.detail}`;
    if (this.status === 404) return `Not found: ${this.detail}`;
    if (this.status === 429) return `Too many attempts: ${this.detail}`;
    if (this.status >= 500) return `The server could not complete the request (${this.status}). Try again.`;
    return this.field ? `${this.detail} (field: ${this.field})` : this.detail;
  }
}

const CSRF_KEY = 'truthset.csrf';
let csrfToken: string | null = sessionStorage.getItem(CSRF_KEY);
/** Unsafe requests run one after the other: each consumes the CSRF token and gets the next. */
let unsafeChain: Promise<unknown> = Promise.resolve();
const listeners: ((e: ApiError) => void)[] = [];

/** Be told of every session expiry (to send the user to the sign-in page). */
export function onAuthLost(fn: (e: ApiError) => void): void {
  listeners.push(fn);
}

export function setCsrf(token: string | null): void {
  csrfToken = token;
  if (token) sessionStorage.setItem(CSRF_KEY, token);
  else sessionStorage.removeItem(CSRF_KEY);
}

async function raw(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response: Response;
  try {
    response = await fetch(path.startsWith('/') && !path.startsWith(API) ? API + path : path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (exc) {
    throw new ApiError(0, 'network', String(exc));
  }
  const next = response.headers.get('X-CSRF-Token');
  if (next) setCsrf(next);
  return response;
}

async function toError(response: Response): Promise<ApiError> {
  let code = 'error';
  let detail = response.statusText || `HTTP ${response.status}`;
  let field: string | null = null;
  try {
    const data = await response.json();
    code = data.error ?? code;
    detail = data.detail ?? detail;
    field = data.field ?? null;
  } catch {
    /* not JSON */
  }
  return new ApiError(response.status, code, detail, field);
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response = await raw(method, path, body);
  if (response.status === 403 && method !== 'GET') {
    const err = await toError(response);
    if (err.code !== 'csrf') throw err;
    // The token was used by another tab or lost on reload: fetch a fresh one, retry once.
    const fresh = await raw('GET', '/auth/csrf');
    if (!fresh.ok) throw await toError(fresh);
    setCsrf((await fresh.json()).csrf_token);
    response = await raw(method, path, body);
  }
  if (!response.ok) {
    const err = await toError(response);
    if (err.status === 401 && !path.endsWith('/auth/login')) listeners.forEach((fn) => fn(err));
    throw err;
  }
  if (response.status === 204) return undefined as T;
  const type = response.headers.get('Content-Type') ?? '';
  return (type.includes('json') ? await response.json() : await response.text()) as T;
}

/** GET a JSON resource. */
export function get<T>(path: string): Promise<T> {
  return call<T>('GET', path);
}

/** An unsafe request (POST/PUT/PATCH/DELETE), serialised behind the others. */
export function send<T>(method: 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const run = unsafeChain.then(() => call<T>(method, path, body));
  unsafeChain = run.catch(() => undefined);
  return run;
}

export const post = <T>(path: string, body?: unknown): Promise<T> => send<T>('POST', path, body ?? {});

/** Every item of a cursor-paginated list (up to `max`). */
export async function all<T>(path: string, max = 5000): Promise<T[]> {
  const out: T[] = [];
  let cursor: string | null = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page: { items: T[]; next_cursor: string | null } = await get(
      `${path}${sep}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
    );
    out.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && out.length < max);
  return out;
}

// -- the shapes the pages use -------------------------------------------------------------
export interface User {
  id: number;
  username: string;
  display_name: string;
  role: string;
  tier: number;
  specialty: string;
  active: boolean;
}
export interface Membership {
  project: string;
  username: string;
  role: string;
}
export interface Me {
  user: User;
  via: string;
  memberships: Membership[];
}
export interface Project {
  id: number;
  key: string;
  name: string;
  description: string;
  schema_version: number;
  guideline_version: number | null;
}
export interface LabelClass {
  name: string;
  definition?: string;
  risk?: string;
  code?: string;
}
export interface SchemaDef {
  name: string;
  kind: 'classification' | 'box' | 'polygon' | 'mask' | 'measurement';
  mode?: 'single' | 'multi' | 'ordinal';
  classes: LabelClass[];
  measurement?: { unit: string; minimum?: number; maximum?: number };
  description?: string;
}
export interface Schema {
  version: number;
  definition: SchemaDef;
}
export interface Guideline {
  version: number;
  body: string;
  change_note: string;
}
export interface Media {
  index: number;
  sha256: string;
  media_type: string;
  name?: string | null;
  width?: number | null;
  height?: number | null;
  /** DICOM media: the de-identified SOP Instance UID DICOMweb serves it under. */
  sop_instance_uid?: string | null;
  frames?: number | null;
}
export interface Item {
  id: number;
  external_id: string;
  kind: string;
  status: string;
  modality: string | null;
  body_part: string | null;
  media: Media[];
  study_instance_uid?: string | null;
  series_instance_uid?: string | null;
}
export interface Annotation {
  id: number;
  item_id: number;
  author: string | null;
  source: string;
  payload: Payload;
  schema_version: number;
  guideline_version: number | null;
  parent_id: number | null;
  time_spent_s: number | null;
  created_at: string;
}
export interface Consensus {
  id: number;
  item_id: number;
  method: string;
  label: Record<string, unknown>;
  posterior: Record<string, unknown>;
  confidence: number | null;
  agreement: number | null;
  status: string;
  input_annotation_ids: unknown[];
}
export interface AuditEvent {
  seq: number;
  at: string;
  actor: string;
  action: string;
  entity_type: string;
  entity_id: string | null;
  project_id: number | null;
  before: string;
  after: string;
  hash: string;
}

/** COCO uncompressed RLE of one image: column-major runs starting with background. */
export interface Rle {
  size: [number, number];
  counts: number[];
}

/** A 3D mask of a volume item: `shape` is [slices, rows, columns] (slice = the item's image
 * index) and `runs` the C-order [start, length, ...] runs of foreground voxels. */
export interface VolumeMask {
  shape: [number, number, number];
  runs: number[];
}

/** A geometric object in image pixel coordinates (frame = index of the image in the item). */
export type Shape =
  | { type: 'box'; label: string; frame: number; bbox: [number, number, number, number] }
  | { type: 'polygon'; label: string; frame: number; points: number[] }
  | { type: 'mask'; label: string; frame: number; rle: Rle }
  | { type: 'mask'; label: string; frame?: undefined; mask: VolumeMask };

/** A shape drawn on one image (3D masks split into their slices). */
export type PlanarShape = Exclude<Shape, { mask: VolumeMask }>;

export interface Payload {
  label?: string;
  labels?: string[];
  value?: number;
  objects?: Shape[];
  [k: string]: unknown;
}
