// The labelling workspace shared by the annotate and review pages: viewer + tools + classes +
// guideline + timer + keyboard shortcuts, with the unsaved drawing kept in localStorage.

import { all, get, type Guideline, type Item, type Payload, type Schema, type SchemaDef, type Shape } from './api';
import { dropDraft, loadDraft, saveDraft } from './drafts';
import { fmtDuration, h, markdown, notify, typing } from './ui';
import { MprView, PRESETS, Viewer, imageIdsFor, isDicom, type Overlay, type ToolName } from './viewer';

export interface ProjectRules {
  schema: Schema;
  guideline: Guideline | null;
  /** Version of the workflow policy in force (0: none set, the default policy). */
  policyVersion: number;
}

const rulesCache = new Map<string, ProjectRules>();

/** The current schema and guideline of a project. */
export async function projectRules(project: string): Promise<ProjectRules> {
  const cached = rulesCache.get(project);
  if (cached) return cached;
  const schemas = await get<Schema[]>(`/projects/${project}/schemas`);
  const [guidelines, policy] = await Promise.all([
    get<Guideline[]>(`/projects/${project}/guidelines`).catch(() => [] as Guideline[]),
    get<{ version: number }>(`/projects/${project}/policy`).catch(() => ({ version: 0 })),
  ]);
  const latest = <T extends { version: number }>(rows: T[]) => rows.reduce<T | null>((a, b) => (!a || b.version > a.version ? b : a), null);
  const rules = { schema: latest(schemas)!, guideline: latest(guidelines), policyVersion: policy.version };
  rulesCache.set(project, rules);
  return rules;
}

export interface WorkspaceOptions {
  project: string;
  user: string;
  item: Item;
  /** The stage the draft belongs to (annotate, review, adjudicate). */
  stage: string;
  rules: ProjectRules;
  /** Start from this label (a draft overrides it). */
  initial?: Payload | null;
  /** Read-only overlays of other readers' labels. */
  overlays?: Overlay[];
  /** Extra controls in the side panel (e.g. review decisions). */
  actions: HTMLElement;
  /** Show the drawing tools. */
  editable?: boolean;
}

/** A mounted workspace. */
export interface Workspace {
  viewer: Viewer;
  /** The label as it stands now (classification choice + drawn objects). */
  payload(): Payload;
  /** Seconds spent on this item (the timer). */
  elapsed(): number;
  /** Forget the local draft (after the server accepted the work). */
  done(): void;
  /** Problems that block submitting (empty when the label is complete). */
  problems(): string[];
  /** Replace the label on screen with `payload` (e.g. one reader's label, to start from). */
  setPayload(payload: Payload): void;
  destroy(): void;
}

const TOOL_KEYS: [string, ToolName, string][] = [
  ['w', 'wl', 'Window/level'], ['p', 'pan', 'Pan'], ['z', 'zoom', 'Zoom'], ['b', 'box', 'Box'],
  ['g', 'polygon', 'Polygon'], ['m', 'brush', 'Brush (mask)'], ['e', 'eraser', 'Eraser'],
];

function toolsFor(def: SchemaDef): ToolName[] {
  if (def.kind === 'box') return ['box', 'brush', 'eraser'];
  if (def.kind === 'polygon') return ['polygon'];
  if (def.kind === 'mask') return ['brush', 'eraser', 'box'];
  return [];
}

/** Mount the workspace in `root`; resolves once the first image is on screen. */
export async function mountWorkspace(root: HTMLElement, o: WorkspaceOptions): Promise<Workspace> {
  const def = o.rules.schema.definition;
  const classes = def.classes.map((c) => c.name);
  const editable = o.editable ?? true;
  const draft = editable ? loadDraft(o.user, o.project, o.item.id, o.stage) : null;
  const start = performance.now() - (draft?.elapsed ?? 0) * 1000;
  let chosen = new Set<string>();
  const initial = draft?.payload ?? o.initial ?? null;
  if (initial?.label) chosen.add(initial.label);
  for (const l of initial?.labels ?? []) chosen.add(l);
  let measurement: number | null = typeof initial?.value === 'number' ? initial.value : null;
  const readOnlyPolygons: Shape[] = (initial?.objects ?? []).filter((s) => s.type === 'polygon');

  // -- layout ---------------------------------------------------------------------------------
  const viewerHost = h('div.viewer-host', { id: 'viewer' });
  const status = h('div.viewer-status');
  const timer = h('span.timer#timer', { title: 'Time on this item' }, '0:00');
  const classList = h('div.classes#classes');
  const toolBar = h('div.tools#tools');
  const presetBar = h('div.presets#presets');
  const guideline = h('aside.guideline#guideline');
  const side = h('section.side', null,
    h('div.item-head', null,
      h('strong', null, `Item ${o.item.id}`), h('span.muted', null, ` ${o.item.modality ?? ''} ${o.item.body_part ?? ''}`),
      timer),
    h('h3', null, def.kind === 'classification' ? `Label (${def.mode})` : `Class of new ${def.kind}es`),
    classList,
    def.kind === 'measurement' ? h('label', null, `Value (${def.measurement?.unit ?? ''})`,
      h('input#measurement', {
        type: 'number', step: 'any', value: measurement ?? '',
        oninput: (e: Event) => {
          const v = parseFloat((e.target as HTMLInputElement).value);
          measurement = isFinite(v) ? v : null;
          persist();
        },
      })) : null,
    def.kind === 'classification' ? o.actions : null,
    editable && toolsFor(def).length ? h('h3', null, 'Tools') : h('h3', null, 'View'),
    toolBar,
    h('h3', null, 'Window'),
    presetBar,
    def.kind === 'classification' ? null : o.actions,
    h('details.help', null, h('summary', null, 'Keyboard'),
      h('ul', null,
        h('li', null, '1–9: choose class · Shift+1–5: window preset'),
        h('li', null, 'W/P/Z: window, pan, zoom · B/G/M/E: box, polygon, brush, eraser'),
        h('li', null, '↑/↓ or wheel: slice · Space: cine · R: reset · I: invert · [ ]: brush size'),
        h('li', null, 'Enter: submit · S: skip · Ctrl+Z: clear drawing · review: A/C/R/X · adjudicate: Alt+1…, Ctrl+Enter'))));
  const layout = h('div.workspace', null, side, h('div.center', null, viewerHost, status), guideline);
  root.append(layout);

  // guideline beside the image
  guideline.innerHTML = o.rules.guideline
    ? `<h3>Guideline v${o.rules.guideline.version}</h3>${markdown(o.rules.guideline.body)}`
    : '<h3>Guideline</h3><p class="muted">No guideline yet.</p>';
  guideline.append(h('h4', null, 'Classes'), h('dl', null, def.classes.flatMap((c) => [
    h('dt', null, c.name, c.risk ? h('span.risk', { dataset: { risk: c.risk } }, c.risk) : null),
    h('dd', null, c.definition ?? ''),
  ])));

  // -- viewer ---------------------------------------------------------------------------------
  const viewer = new Viewer(viewerHost, { editable, classes });
  const itemIds = await imageIdsFor(o.project, o.item);
  await viewer.load(itemIds);
  // A DICOM series of three or more slices can be shown as three orthogonal planes.
  const dicomInstances = o.item.media.filter((m) => m.media_type === 'application/dicom').length;
  const dicomSeries = dicomInstances >= 3 ? itemIds.filter(isDicom) : [];
  // A volume's masks are one 3D mask per class, painted on the slices or in the three planes.
  const paints = editable && toolsFor(def).includes('brush');
  viewer.volumeMasks = paints && dicomSeries.length >= 3;
  let mpr: MprView | null = null;
  const toggleMpr = async () => {
    if (mpr) {
      mpr.destroy();
      mpr.host.remove();
      mpr = null;
      delete viewerHost.dataset.mpr;
      viewer.refreshLabelmap();
      return;
    }
    const box = h('div.mpr-host#mpr-views');
    viewerHost.append(box);
    mpr = new MprView(box, paints ? viewer.segmentation : null);
    try {
      await mpr.load(dicomSeries);
      const tool = viewer.tool;
      mpr.setTool(tool === 'brush' || tool === 'eraser' ? tool : 'wl');
      viewerHost.dataset.mpr = '1';
    } catch (err) {
      notify(`Cannot show this series in three planes: ${String(err)}`, 'error');
      mpr.destroy();
      box.remove();
      mpr = null;
    }
  };
  const overlays = [...(o.overlays ?? [])];
  if (readOnlyPolygons.length && editable) overlays.push({ name: 'draft', color: '#ffffff', shapes: readOnlyPolygons });
  viewer.setOverlays(overlays);
  if (editable && initial?.objects?.length) {
    try {
      viewer.restore(initial.objects);
    } catch (err) {
      notify(`Part of your earlier drawing could not be shown again (${String(err)}); it is still kept.`, 'error');
    }
  }
  if (draft) notify(`Restored your unsaved work from ${new Date(draft.savedAt).toLocaleTimeString()}.`, 'ok');

  const renderClasses = () => {
    classList.replaceChildren(...def.classes.map((c, k) => h('button.class', {
      className: `class${chosen.has(c.name) ? ' chosen' : ''}${viewer.activeClass === k && def.kind !== 'classification' ? ' active' : ''}`,
      dataset: { cls: c.name },
      title: c.definition ?? '',
      onclick: () => pickClass(k),
    }, h('kbd', null, String(k + 1)), ` ${c.name}`)));
  };
  const pickClass = (k: number) => {
    const name = classes[k];
    if (!name) return;
    if (def.kind === 'classification') {
      if (def.mode === 'multi') {
        if (chosen.has(name)) chosen.delete(name);
        else chosen.add(name);
      } else {
        chosen = new Set([name]);
      }
    }
    viewer.setClass(k);
    renderClasses();
    persist();
  };
  const setTool = (tool: ToolName) => {
    viewer.setTool(tool);
    if (mpr && (tool === 'wl' || tool === 'brush' || tool === 'eraser')) mpr.setTool(tool);
    for (const b of toolBar.querySelectorAll('button')) b.classList.toggle('active', b.dataset.tool === tool);
  };
  const allowed = new Set<ToolName>(['wl', 'pan', 'zoom', ...(editable ? toolsFor(def) : [])]);
  toolBar.append(...TOOL_KEYS.filter(([, t]) => allowed.has(t)).map(([key, tool, label]) =>
    h('button.tool', { dataset: { tool }, onclick: () => setTool(tool), title: `${label} (${key.toUpperCase()})` },
      h('kbd', null, key.toUpperCase()), ` ${label}`)));
  presetBar.append(
    ...PRESETS.map(([label, key, ww, wc]) => h('button', { onclick: () => viewer.setWindow(ww, wc), title: `W ${ww} / C ${wc} (Shift+${key})` }, label)),
    h('button', { onclick: () => viewer.reset(), title: 'Reset (R)' }, 'Reset'),
    h('button', { onclick: () => viewer.invert(), title: 'Invert (I)' }, 'Invert'),
    ...(viewer.imageIds.length > 1 ? [h('button#cine', { onclick: () => viewer.toggleCine(), title: 'Cine (Space)' }, 'Cine')] : []),
    ...(dicomSeries.length >= 3 ? [h('button#mpr', { onclick: () => void toggleMpr(), title: 'Axial / sagittal / coronal views of the series (V)' }, 'MPR')] : []));
  renderClasses();
  setTool(editable && toolsFor(def).length ? toolsFor(def)[0] : 'wl');

  const showStatus = () => {
    const n = viewer.imageIds.length;
    status.textContent = `Image ${viewer.frame() + 1} / ${n}${n > 1 ? ' — ↑/↓ or wheel to scroll, Space for cine' : ''}`;
    viewer.element.dataset.imageId = viewer.imageIds[viewer.frame()] ?? ''; // the image on screen
  };
  viewer.element.addEventListener('CORNERSTONE_STACK_NEW_IMAGE', showStatus);
  showStatus();

  // -- state ----------------------------------------------------------------------------------
  const payload = (): Payload => {
    if (def.kind === 'classification') {
      return def.mode === 'multi' ? { labels: [...chosen].sort() } : chosen.size ? { label: [...chosen][0] } : {};
    }
    if (def.kind === 'measurement') {
      return { value: measurement ?? NaN, label: [...chosen][0] ?? classes[0] };
    }
    const drawn = editable ? viewer.shapes() : [];
    return { objects: [...drawn, ...(editable ? readOnlyPolygons : [])] };
  };
  const elapsed = () => (performance.now() - start) / 1000;
  let saveTimer = 0;
  let closed = false;
  const persist = () => {
    if (!editable || closed) return;
    clearTimeout(saveTimer);
    saveTimer = window.setTimeout(() => {
      saveDraft(o.user, o.project, o.item.id, o.stage, { payload: payload(), elapsed: elapsed() });
    }, 250);
  };
  viewer.onChange(persist);
  const tick = window.setInterval(() => {
    timer.textContent = fmtDuration(elapsed());
  }, 1000);
  const keepOnUnload = () => {
    if (editable && !closed) saveDraft(o.user, o.project, o.item.id, o.stage, { payload: payload(), elapsed: elapsed() });
  };
  window.addEventListener('beforeunload', keepOnUnload);

  const onKey = (e: KeyboardEvent) => {
    if (typing(e) || document.querySelector('dialog[open]')) return;
    const digit = /^Digit([1-9])$/.exec(e.code);
    if (digit && e.shiftKey) {
      const preset = PRESETS[Number(digit[1]) - 1];
      if (preset) viewer.setWindow(preset[2], preset[3]);
    } else if (digit && !e.ctrlKey && !e.altKey && !e.metaKey) {
      pickClass(Number(digit[1]) - 1);
    } else if (e.key === 'ArrowUp' || e.key === 'ArrowLeft') {
      viewer.scroll(-1);
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowRight') {
      viewer.scroll(1);
    } else if (e.key === ' ') {
      viewer.toggleCine();
    } else if (e.key === 'z' && (e.ctrlKey || e.metaKey)) {
      if (editable) viewer.clear();
    } else if (e.key === 'v' && dicomSeries.length >= 3) {
      void toggleMpr();
    } else if (e.key === 'r') {
      viewer.reset();
    } else if (e.key === 'i') {
      viewer.invert();
    } else if (e.key === '[' || e.key === ']') {
      const delta = e.key === '[' ? -2 : 2;
      notify(mpr?.editable ? `Brush ${mpr.brushSize(delta)} mm (three planes)` : `Brush ${viewer.brushSize(delta)} px`);
    } else {
      const tool = TOOL_KEYS.find(([key]) => key === e.key.toLowerCase() && !e.ctrlKey && !e.metaKey);
      if (tool && allowed.has(tool[1])) setTool(tool[1]);
      else return;
    }
    e.preventDefault();
  };
  document.addEventListener('keydown', onKey);

  return {
    viewer,
    payload,
    elapsed,
    done: () => {
      closed = true;
      clearTimeout(saveTimer);
      dropDraft(o.user, o.project, o.item.id, o.stage);
    },
    problems: () => {
      const p = payload();
      if (def.kind === 'classification' && !p.label && !(p.labels?.length)) return ['choose a class (keys 1–9)'];
      if (def.kind === 'measurement' && !isFinite(Number(p.value))) return ['enter the measured value'];
      if (def.kind !== 'classification' && def.kind !== 'measurement' && !(p.objects?.length)) {
        return [`draw at least one ${def.kind} (or skip / flag the item)`];
      }
      return [];
    },
    setPayload: (p: Payload) => {
      chosen = new Set(p.labels ?? (p.label ? [p.label] : []));
      if (typeof p.value === 'number') measurement = p.value;
      if (editable && def.kind !== 'classification' && def.kind !== 'measurement') {
        viewer.clear();
        viewer.restore(p.objects ?? []);
      }
      renderClasses();
      persist();
    },
    destroy: () => {
      keepOnUnload();
      closed = true;
      clearInterval(tick);
      clearTimeout(saveTimer);
      window.removeEventListener('beforeunload', keepOnUnload);
      document.removeEventListener('keydown', onKey);
      mpr?.destroy();
      viewer.destroy();
      layout.remove();
    },
  };
}

/** Items of a project (the queue when no task service answers). */
export function listItems(project: string): Promise<Item[]> {
  return all<Item>(`/projects/${project}/items`);
}
