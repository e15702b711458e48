// The image workspace: Cornerstone3D stack viewport with window/level, zoom/pan, slice scrolling,
// cine, box / polygon annotation tools and a brush/eraser labelmap; read-only overlays of other
// readers' labels in distinct colours.

import * as cs from '@cornerstonejs/core';
import * as cst from '@cornerstonejs/tools';
import dicomImageLoader from '@cornerstonejs/dicom-image-loader';
import { API, DICOMWEB, get, type Item, type PlanarShape, type Rle, type Shape, type VolumeMask } from './api';

const { MouseBindings, KeyboardBindings, SegmentationRepresentations, Events: ToolEvents } = cst.Enums;

export type ToolName = 'wl' | 'pan' | 'zoom' | 'box' | 'polygon' | 'brush' | 'eraser';

/** Window presets: [label, key, width, centre]. */
export const PRESETS: [string, string, number, number][] = [
  ['Soft tissue', '1', 400, 40],
  ['Lung', '2', 1500, -600],
  ['Bone', '3', 1800, 400],
  ['Brain', '4', 80, 40],
  ['Abdomen', '5', 350, 50],
];

let initialised: Promise<void> | null = null;
let engine: cs.RenderingEngine | null = null;
let counter = 0;

/** Start Cornerstone once: core, the DICOM loader (web workers), tools, the raster loader. */
export function initImaging(): Promise<void> {
  initialised ??= (async () => {
    cs.init();
    dicomImageLoader.init({ maxWebWorkers: Math.max(1, Math.min(navigator.hardwareConcurrency || 2, 4)) });
    cst.init();
    registerRasterLoader();
    for (const tool of [
      cst.WindowLevelTool, cst.PanTool, cst.ZoomTool, cst.StackScrollTool, cst.RectangleROITool,
      cst.PlanarFreehandROITool, cst.BrushTool,
    ]) {
      cst.addTool(tool);
    }
    engine = new cs.RenderingEngine('truthset');
  })();
  return initialised;
}

// -- raster images (PNG/JPEG/TIFF items) ---------------------------------------------------------
const rasterMeta = new Map<string, { rows: number; columns: number }>();

function registerRasterLoader(): void {
  cs.imageLoader.registerImageLoader('raster', ((imageId: string) => {
    const url = imageId.slice('raster:'.length);
    const promise = (async () => {
      const response = await fetch(url, { credentials: 'same-origin' });
      if (!response.ok) throw new Error(`image ${response.status}`);
      const bitmap = await createImageBitmap(await response.blob());
      const canvas = document.createElement('canvas');
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
      const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
      ctx.drawImage(bitmap, 0, 0);
      const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
      const n = bitmap.width * bitmap.height;
      const rgb = new Uint8Array(n * 3);
      for (let i = 0; i < n; i++) {
        rgb[3 * i] = rgba[4 * i];
        rgb[3 * i + 1] = rgba[4 * i + 1];
        rgb[3 * i + 2] = rgba[4 * i + 2];
      }
      rasterMeta.set(imageId, { rows: bitmap.height, columns: bitmap.width });
      const voxelManager = cs.utilities.VoxelManager.createImageVoxelManager({
        width: bitmap.width, height: bitmap.height, scalarData: rgb, numberOfComponents: 3,
      });
      return {
        imageId, minPixelValue: 0, maxPixelValue: 255, slope: 1, intercept: 0,
        windowCenter: 128, windowWidth: 255, getPixelData: () => rgb, voxelManager,
        rows: bitmap.height, columns: bitmap.width, height: bitmap.height, width: bitmap.width,
        color: true, rgba: false, numberOfComponents: 3, columnPixelSpacing: 1, rowPixelSpacing: 1,
        invert: false, sizeInBytes: rgb.byteLength, dataType: 'Uint8Array',
      } as unknown as cs.Types.IImage;
    })();
    return { promise };
  }) as unknown as cs.Types.ImageLoaderFn);

  cs.metaData.addProvider((type: string, imageId: string) => {
    if (!imageId.startsWith('raster:')) return undefined;
    const size = rasterMeta.get(imageId) ?? { rows: 512, columns: 512 };
    switch (type) {
      case 'imagePixelModule':
        return {
          bitsAllocated: 8, bitsStored: 8, samplesPerPixel: 3, highBit: 7,
          photometricInterpretation: 'RGB', pixelRepresentation: 0, planarConfiguration: 0,
          rows: size.rows, columns: size.columns,
        };
      case 'imagePlaneModule':
        return {
          rows: size.rows, columns: size.columns, rowPixelSpacing: 1, columnPixelSpacing: 1,
          pixelSpacing: [1, 1], imagePositionPatient: [0, 0, 0],
          imageOrientationPatient: [1, 0, 0, 0, 1, 0], rowCosines: [1, 0, 0],
          columnCosines: [0, 1, 0], frameOfReferenceUID: 'truthset-raster', sliceThickness: 1,
        };
      case 'generalSeriesModule':
        return { modality: 'OT', seriesInstanceUID: imageId };
      case 'voiLutModule':
        return { windowCenter: [128], windowWidth: [255] };
      case 'modalityLutModule':
        return { rescaleSlope: 1, rescaleIntercept: 0 };
      default:
        return undefined;
    }
  }, 10000);
}

/**
 * The Cornerstone image ids of an item's media, in the item's order (one per frame for DICOM).
 *
 * DICOM items load through DICOMweb: QIDO-RS finds the item's instances in its series (hidden
 * ones, e.g. quarantined, are not found and refused here), WADO-RS metadata (DICOM JSON) is
 * registered with the DICOM image loader, and the frames are `wadors:` ids fetched as
 * multipart/related. Items without DICOM UIDs (PNG/JPEG/TIFF) use the REST media endpoint.
 */
export async function imageIdsFor(project: string, item: Item): Promise<string[]> {
  const study = item.study_instance_uid;
  const series = item.series_instance_uid;
  const sops = item.media.map((m) => (m.media_type === 'application/dicom' ? m.sop_instance_uid : null));
  if (study && series && item.media.length && sops.every((s) => s)) {
    return dicomwebImageIds(project, study, series, sops as string[]);
  }
  return item.media.map((m) => {
    const url = `${location.origin}${API}/projects/${project}/items/${item.id}/media/${m.index}`;
    return m.media_type === 'application/dicom' ? `wadouri:${url}` : `raster:${url}`;
  });
}

type DicomJson = Record<string, { vr: string; Value?: unknown[] } | undefined>;

function firstValue(attrs: DicomJson, tag: string): unknown {
  return attrs[tag]?.Value?.[0];
}

/** `wadors:` frame ids of these instances of one series (metadata registered first). */
async function dicomwebImageIds(project: string, study: string, series: string, sops: string[]): Promise<string[]> {
  await initImaging();
  const root = `${location.origin}${DICOMWEB}/${project}/studies/${study}/series/${series}`;
  // One instance: ask for it alone; a series item: the whole series in two requests.
  const one = sops.length === 1;
  const [found, metadata] = await Promise.all([
    get<DicomJson[]>(`${root}/instances${one ? `?SOPInstanceUID=${sops[0]}` : ''}`),
    get<DicomJson[]>(one ? `${root}/instances/${sops[0]}/metadata` : `${root}/metadata`),
  ]);
  const visible = new Set(found.map((a) => String(firstValue(a, '00080018'))));
  const bySop = new Map(metadata.map((m) => [String(firstValue(m, '00080018')), m]));
  const ids: string[] = [];
  for (const sop of sops) {
    const meta = bySop.get(sop);
    if (!visible.has(sop) || !meta) throw new Error(`DICOMweb does not serve instance ${sop}`);
    const base = `wadors:${root}/instances/${sop}/frames/`;
    // The loader keeps a multi-frame instance's metadata under its first frame.
    dicomImageLoader.wadors.metaDataManager.add(`${base}1`, meta as never);
    const frames = Math.max(1, Number(firstValue(meta, '00280008') ?? 1) || 1);
    for (let f = 1; f <= frames; f++) ids.push(`${base}${f}`);
  }
  return ids;
}

/** Whether an image id is read by the DICOM image loader (DICOMweb or a DICOM file). */
export function isDicom(imageId: string): boolean {
  return imageId.startsWith('wadors:') || imageId.startsWith('wadouri:');
}

/** Expand multi-frame DICOM instances into one image id per frame. */
async function expandFrames(ids: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const id of ids) {
    if (!id.startsWith('wadouri:')) { // raster, and DICOMweb ids (already one per frame)
      out.push(id);
      continue;
    }
    await cs.imageLoader.loadAndCacheImage(id);
    const frames = Number(
      (cs.metaData.get('multiframeModule', id) as { NumberOfFrames?: number } | undefined)
        ?.NumberOfFrames ?? 1,
    );
    if (frames > 1) {
      for (let f = 1; f <= frames; f++) out.push(`${id}?frame=${f}`);
    } else {
      out.push(id);
    }
  }
  return out;
}

/** One reader's labels drawn read-only over the image. A shape may carry a `caption` (drawn
 * instead of "name: class"); `dashed` outlines (e.g. findings outside the consensus). */
export interface Overlay {
  name: string;
  color: string;
  shapes: (Shape & { caption?: string })[];
  dashed?: boolean;
}

export const READER_COLOURS = ['#ff5d5d', '#4fc3ff', '#ffd24f', '#7dff8a', '#d98bff', '#ff9f43'];

/** The class colours used for masks (segment index = class index + 1). */
export const CLASS_COLOURS: [number, number, number][] = [
  [255, 80, 80], [80, 200, 255], [255, 210, 80], [120, 255, 140], [220, 140, 255],
  [255, 160, 70], [255, 255, 255], [140, 140, 255], [255, 120, 200],
];

interface ViewerOptions {
  /** Offer the drawing tools (box, polygon, brush, eraser). */
  editable: boolean;
  /** Class names; a mask segment index is the class index + 1. */
  classes: string[];
}

/** `shapes` with every 3D mask split into one mask per slice that has foreground. */
export function planar(shapes: Shape[]): PlanarShape[] {
  const out: PlanarShape[] = [];
  for (const shape of shapes) {
    if (!('mask' in shape)) {
      out.push(shape as PlanarShape);
      continue;
    }
    const [slices, rows, cols] = shape.mask.shape;
    const plane = rows * cols;
    const painted: Map<number, Uint8Array> = new Map();
    forEachVoxel(shape.mask, (index) => {
      const k = Math.floor(index / plane);
      if (k >= slices) return;
      let data = painted.get(k);
      if (!data) painted.set(k, (data = new Uint8Array(plane)));
      data[index - k * plane] = 1;
    });
    for (const [k, data] of [...painted].sort((a, b) => a[0] - b[0])) {
      out.push({ type: 'mask', label: shape.label, frame: k, rle: encodeRle(data, cols, rows, 1) });
    }
  }
  return out;
}

/** Call `fn(flatIndex)` for every foreground voxel of a 3D mask (C order). */
export function forEachVoxel(mask: VolumeMask, fn: (index: number) => void): void {
  for (let k = 0; k + 1 < mask.runs.length; k += 2) {
    const end = mask.runs[k] + mask.runs[k + 1];
    for (let i = mask.runs[k]; i < end; i++) fn(i);
  }
}

/** A Cornerstone stack viewport in `host`, with its own tool group and an overlay layer. */
export class Viewer {
  readonly viewportId: string;
  readonly element: HTMLDivElement;
  private overlayCanvas: HTMLCanvasElement;
  private toolGroup: NonNullable<ReturnType<typeof cst.ToolGroupManager.createToolGroup>>;
  imageIds: string[] = [];
  private segmentationId: string | null = null;
  private labelmapIds: string[] = [];
  private overlays: { name: string; color: string; dashed?: boolean; shapes: (PlanarShape & { caption?: string })[] }[] = [];
  /** Submit masks as one 3D mask per class over every image (a volume item), not per image. */
  volumeMasks = false;
  private activeTool: ToolName = 'wl';
  private cine = false;
  private changeListeners: (() => void)[] = [];
  private maskCache = new Map<string, HTMLCanvasElement>();
  activeClass = 0;
  private resizer: ResizeObserver | null = null;
  private readonly globalEvents = [
    ToolEvents.ANNOTATION_COMPLETED, ToolEvents.ANNOTATION_MODIFIED, ToolEvents.ANNOTATION_REMOVED,
    ToolEvents.SEGMENTATION_DATA_MODIFIED,
  ];
  private readonly onGlobal = (evt: Event) => {
    // A shape just drawn takes the class chosen when it was drawn.
    const annotation = (evt as CustomEvent<{ annotation?: cst.Types.Annotation }>).detail?.annotation;
    if (evt.type === ToolEvents.ANNOTATION_COMPLETED && annotation && this.imageIds.includes(String(annotation.metadata?.referencedImageId ?? ''))) {
      const data = annotation.data as { label?: string };
      if (!data.label) data.label = this.options.classes[this.activeClass];
    }
    this.changed();
  };

  constructor(private host: HTMLElement, private options: ViewerOptions) {
    this.viewportId = `vp-${++counter}`;
    host.classList.add('viewer');
    this.element = document.createElement('div');
    this.element.className = 'viewport';
    this.element.oncontextmenu = (e) => e.preventDefault();
    this.overlayCanvas = document.createElement('canvas');
    this.overlayCanvas.className = 'overlay';
    host.append(this.element, this.overlayCanvas);
    const group = cst.ToolGroupManager.createToolGroup(`tg-${this.viewportId}`);
    if (!group) throw new Error('could not create a tool group');
    this.toolGroup = group;
  }

  /** Show these images (first one first); resolves when the first image is on screen. */
  async load(imageIds: string[]): Promise<void> {
    await initImaging();
    this.imageIds = await expandFrames(imageIds);
    engine!.enableElement({
      viewportId: this.viewportId,
      element: this.element,
      type: cs.Enums.ViewportType.STACK,
      defaultOptions: { background: [0, 0, 0] as cs.Types.Point3 },
    });
    const group = this.toolGroup;
    for (const tool of [cst.WindowLevelTool, cst.PanTool, cst.ZoomTool, cst.StackScrollTool]) {
      group.addTool(tool.toolName);
    }
    if (this.options.editable) {
      const labelLine = { getTextLines: (data: { label?: string }) => [data.label || this.options.classes[this.activeClass]] };
      group.addTool(cst.RectangleROITool.toolName, labelLine);
      group.addTool(cst.PlanarFreehandROITool.toolName, labelLine);
      group.addToolInstance('Brush', cst.BrushTool.toolName, { activeStrategy: 'FILL_INSIDE_CIRCLE' });
      group.addToolInstance('Eraser', cst.BrushTool.toolName, { activeStrategy: 'ERASE_INSIDE_CIRCLE' });
    }
    group.addViewport(this.viewportId, 'truthset');
    group.setToolActive(cst.PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    group.setToolActive(cst.ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    group.setToolActive(cst.StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    group.setToolActive(cst.ZoomTool.toolName, {
      bindings: [{ mouseButton: MouseBindings.Secondary }, { mouseButton: MouseBindings.Primary, modifierKey: KeyboardBindings.Ctrl }],
    });
    this.setTool('wl');
    const viewport = this.viewport();
    await viewport.setStack(this.imageIds, 0);
    viewport.render();
    if (this.options.editable) await this.setupLabelmap();
    this.element.addEventListener(cs.Enums.Events.IMAGE_RENDERED, () => this.drawOverlays());
    for (const name of this.globalEvents) cs.eventTarget.addEventListener(name, this.onGlobal);
    this.resizer = new ResizeObserver(() => {
      engine?.resize(true, true);
      this.drawOverlays();
    });
    this.resizer.observe(this.host);
  }

  private async setupLabelmap(): Promise<void> {
    const derived = cs.imageLoader.createAndCacheDerivedLabelmapImages(this.imageIds);
    this.labelmapIds = derived.map((image) => image.imageId);
    this.segmentationId = `seg-${this.viewportId}`;
    const segments: Record<number, { label: string; segmentIndex: number }> = {};
    this.options.classes.forEach((name, k) => {
      segments[k + 1] = { label: name, segmentIndex: k + 1 };
    });
    cst.segmentation.addSegmentations([{
      segmentationId: this.segmentationId,
      representation: { type: SegmentationRepresentations.Labelmap, data: { imageIds: this.labelmapIds } },
      config: { segments } as never,
    }]);
    await cst.segmentation.addLabelmapRepresentationToViewport(this.viewportId, [
      { segmentationId: this.segmentationId },
    ]);
    this.setClass(this.activeClass);
    cst.utilities.segmentation.setBrushSizeForToolGroup(this.toolGroup.id, 8);
  }

  /** The stack viewport. */
  viewport(): cs.Types.IStackViewport {
    return engine!.getViewport(this.viewportId) as cs.Types.IStackViewport;
  }

  /** Make `tool` the left-button tool. */
  setTool(tool: ToolName): void {
    const group = this.toolGroup;
    const names: Record<ToolName, string> = {
      wl: cst.WindowLevelTool.toolName, pan: cst.PanTool.toolName, zoom: cst.ZoomTool.toolName,
      box: cst.RectangleROITool.toolName, polygon: cst.PlanarFreehandROITool.toolName,
      brush: 'Brush', eraser: 'Eraser',
    };
    const editing: ToolName[] = ['box', 'polygon', 'brush', 'eraser'];
    if (editing.includes(tool) && !this.options.editable) return;
    for (const [key, name] of Object.entries(names) as [ToolName, string][]) {
      if (!this.options.editable && editing.includes(key)) continue;
      if (key === 'pan' || key === 'zoom') continue; // keep their other-button bindings
      if (key !== tool) group.setToolPassive(name);
    }
    if (tool === 'pan') {
      group.setToolActive(names.pan, { bindings: [{ mouseButton: MouseBindings.Primary }, { mouseButton: MouseBindings.Auxiliary }] });
    } else if (tool === 'zoom') {
      group.setToolActive(names.zoom, { bindings: [{ mouseButton: MouseBindings.Primary }, { mouseButton: MouseBindings.Secondary }] });
    } else {
      group.setToolActive(names.pan, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
      group.setToolActive(names.zoom, { bindings: [{ mouseButton: MouseBindings.Secondary }, { mouseButton: MouseBindings.Primary, modifierKey: KeyboardBindings.Ctrl }] });
      group.setToolActive(names[tool], { bindings: [{ mouseButton: MouseBindings.Primary }] });
    }
    this.activeTool = tool;
    this.host.dataset.tool = tool;
  }

  get tool(): ToolName {
    return this.activeTool;
  }

  /** The class new shapes and brush strokes get. */
  setClass(index: number): void {
    this.activeClass = index;
    if (this.segmentationId) {
      cst.segmentation.segmentIndex.setActiveSegmentIndex(this.segmentationId, index + 1);
    }
  }

  /** Change the brush radius by `delta` (canvas pixels). */
  brushSize(delta: number): number {
    const id = this.toolGroup.id;
    const size = Math.max(1, Math.min(100, cst.utilities.segmentation.getBrushSizeForToolGroup(id) + delta));
    cst.utilities.segmentation.setBrushSizeForToolGroup(id, size);
    return size;
  }

  /** Apply a window (width, centre) to the image. */
  setWindow(width: number, centre: number): void {
    const viewport = this.viewport();
    viewport.setProperties({ voiRange: cs.utilities.windowLevel.toLowHighRange(width, centre) });
    viewport.render();
  }

  /** Back to the image's own window, zoom and position. */
  reset(): void {
    const viewport = this.viewport();
    viewport.resetProperties();
    viewport.resetCamera();
    viewport.render();
  }

  invert(): void {
    const viewport = this.viewport();
    viewport.setProperties({ invert: !viewport.getProperties().invert });
    viewport.render();
  }

  /** Move `delta` slices / frames. */
  scroll(delta: number): void {
    cs.utilities.scroll(this.viewport(), { delta });
  }

  /** Index of the image on screen. */
  frame(): number {
    return this.viewport().getCurrentImageIdIndex();
  }

  /** Start or stop cine playback; returns whether it now plays. */
  toggleCine(fps = 15): boolean {
    if (this.imageIds.length < 2) return false;
    this.cine = !this.cine;
    if (this.cine) cst.utilities.cine.playClip(this.element, { framesPerSecond: fps, loop: true });
    else cst.utilities.cine.stopClip(this.element);
    return this.cine;
  }

  /** Be told whenever the drawing changes. */
  onChange(fn: () => void): void {
    this.changeListeners.push(fn);
  }

  private changed(): void {
    this.changeListeners.forEach((fn) => fn());
  }

  private mine(): cst.Types.Annotation[] {
    const group = cst.annotation.state.getAllAnnotations();
    return group.filter((a) => this.imageIds.includes(String(a.metadata?.referencedImageId ?? '')));
  }

  /** Everything drawn on this viewer, as payload objects in image pixel coordinates. */
  shapes(): Shape[] {
    const out: Shape[] = [];
    const classes = this.options.classes;
    for (const a of this.mine()) {
      const imageId = String(a.metadata?.referencedImageId);
      const frame = this.imageIds.indexOf(imageId);
      const label = String((a.data as { label?: string }).label || classes[0]);
      const toImage = (p: cs.Types.Point3) => cs.utilities.worldToImageCoords(imageId, p) as [number, number];
      if (a.metadata?.toolName === cst.RectangleROITool.toolName) {
        const pts = (a.data.handles?.points ?? []).map(toImage);
        if (pts.length < 2) continue;
        const xs = pts.map((p) => p[0]);
        const ys = pts.map((p) => p[1]);
        const x0 = Math.min(...xs);
        const y0 = Math.min(...ys);
        out.push({
          type: 'box', label, frame,
          bbox: [r2(x0), r2(y0), r2(Math.max(...xs) - x0), r2(Math.max(...ys) - y0)],
        });
      } else if (a.metadata?.toolName === cst.PlanarFreehandROITool.toolName) {
        const line = ((a.data as { contour?: { polyline?: cs.Types.Point3[] } }).contour?.polyline ?? []);
        const points = line.map(toImage).flatMap(([x, y]) => [r2(x), r2(y)]);
        if (points.length >= 6) out.push({ type: 'polygon', label, frame, points });
      }
    }
    const planes = this.labelmapIds.map((id) => {
      const image = cs.cache.getImage(id);
      return image ? { data: image.voxelManager?.getScalarData() ?? image.getPixelData(), rows: image.rows, columns: image.columns } : null;
    });
    const same = planes.every((p) => p && p.rows === planes[0]!.rows && p.columns === planes[0]!.columns);
    if (this.volumeMasks && planes.length > 1 && same) {
      out.push(...volumeMaskObjects(planes.map((p) => p!.data), planes[0]!.rows, planes[0]!.columns, classes));
      return out;
    }
    planes.forEach((plane, frame) => {
      if (!plane) return;
      const { data } = plane;
      const values = new Set<number>();
      for (let i = 0; i < data.length; i++) if (data[i]) values.add(data[i]);
      for (const value of [...values].sort()) {
        out.push({
          type: 'mask', label: classes[value - 1] ?? classes[0], frame,
          rle: encodeRle(data, plane.columns, plane.rows, value),
        });
      }
    });
    return out;
  }

  /** Draw `shapes` back as editable annotations and labelmap (restoring a draft). */
  restore(shapes: Shape[]): void {
    for (const shape of shapes) {
      if ('mask' in shape) {
        this.paintVolumeMask(shape.mask, Math.max(1, this.options.classes.indexOf(shape.label) + 1));
        continue;
      }
      const imageId = this.imageIds[shape.frame];
      if (!imageId) continue;
      const world = (x: number, y: number) => cs.utilities.imageToWorldCoords(imageId, [x, y]) as cs.Types.Point3;
      if (shape.type === 'box') {
        const [x, y, w, h] = shape.bbox;
        const annotationUID = cs.utilities.uuidv4();
        cst.RectangleROITool.hydrate(this.viewportId, [
          world(x, y), world(x + w, y), world(x, y + h), world(x + w, y + h),
        ], { referencedImageId: imageId, annotationUID });
        const annotation = cst.annotation.state.getAnnotation(annotationUID);
        if (annotation) (annotation.data as { label?: string }).label = shape.label;
      } else if (shape.type === 'mask') {
        const image = cs.cache.getImage(this.labelmapIds[shape.frame]);
        if (!image) continue;
        const data = image.voxelManager?.getScalarData() ?? image.getPixelData();
        const value = Math.max(1, this.options.classes.indexOf(shape.label) + 1);
        decodeRle(shape.rle, (i) => {
          data[i] = value;
        });
        image.voxelManager?.setScalarData?.(data as never);
      }
      // Polygons come back read-only (drawn as an overlay) — freehand contours cannot be
      // re-hydrated portably; they are kept in the draft and submitted as drawn.
    }
    if (this.segmentationId) cst.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(this.segmentationId);
    this.viewport().render();
  }

  /** Paint a 3D mask into the per-image labelmaps (slice k = image k of the item). */
  private paintVolumeMask(mask: VolumeMask, value: number): void {
    const images = this.labelmapIds.map((id) => cs.cache.getImage(id));
    const plane = mask.shape[1] * mask.shape[2];
    const datas = images.map((image) => (image ? image.voxelManager?.getScalarData() ?? image.getPixelData() : null));
    if (images.some((image) => image && image.rows * image.columns !== plane)) {
      throw new Error(`a 3D mask of ${mask.shape.join('×')} does not fit these images`);
    }
    forEachVoxel(mask, (index) => {
      const k = Math.floor(index / plane);
      const data = datas[k];
      if (data) data[index - k * plane] = value;
    });
    images.forEach((image, k) => image?.voxelManager?.setScalarData?.(datas[k] as never));
  }

  /** The labelmap segmentation the brush paints into (null when not editable). */
  get segmentation(): string | null {
    return this.segmentationId;
  }

  /** Tell the viewer its labelmap changed elsewhere (e.g. painted in the three-plane view). */
  refreshLabelmap(): void {
    if (this.segmentationId) cst.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(this.segmentationId);
    this.viewport().render();
  }

  /** Remove every drawing of this viewer. */
  clear(): void {
    for (const a of this.mine()) cst.annotation.state.removeAnnotation(a.annotationUID!);
    for (const id of this.labelmapIds) {
      const image = cs.cache.getImage(id);
      const data = image?.voxelManager?.getScalarData() ?? image?.getPixelData();
      if (data) data.fill(0);
      image?.voxelManager?.setScalarData?.(data as never);
    }
    if (this.segmentationId) cst.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(this.segmentationId);
    this.viewport().render();
    this.changed();
  }

  /** Read-only overlays (other readers' labels) in their own colours. */
  setOverlays(overlays: Overlay[]): void {
    this.overlays = overlays.map((o) => ({ ...o, shapes: planar(o.shapes) }));
    this.maskCache.clear();
    this.drawOverlays();
  }

  private drawOverlays(): void {
    const canvas = this.overlayCanvas;
    const rect = this.element.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(rect.width * ratio);
    canvas.height = Math.round(rect.height * ratio);
    canvas.style.width = `${rect.width}px`;
    canvas.style.height = `${rect.height}px`;
    const ctx = canvas.getContext('2d')!;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!this.overlays.length || !this.imageIds.length) return;
    let viewport: cs.Types.IStackViewport;
    try {
      viewport = this.viewport();
    } catch {
      return;
    }
    const frame = viewport.getCurrentImageIdIndex();
    const imageId = this.imageIds[frame];
    const toCanvas = (x: number, y: number): [number, number] => {
      const c = viewport.worldToCanvas(cs.utilities.imageToWorldCoords(imageId, [x, y]) as cs.Types.Point3);
      return [c[0] * ratio, c[1] * ratio];
    };
    ctx.lineWidth = 2 * ratio;
    ctx.font = `${12 * ratio}px sans-serif`;
    for (const overlay of this.overlays) {
      ctx.strokeStyle = overlay.color;
      ctx.fillStyle = overlay.color;
      ctx.setLineDash(overlay.dashed ? [6 * ratio, 4 * ratio] : []);
      for (const shape of overlay.shapes) {
        if (shape.frame !== frame) continue;
        const caption = shape.caption ?? `${overlay.name}: ${shape.label}`;
        if (shape.type === 'box') {
          const [x, y, w, h] = shape.bbox;
          const corners = [toCanvas(x, y), toCanvas(x + w, y), toCanvas(x + w, y + h), toCanvas(x, y + h)];
          ctx.beginPath();
          corners.forEach(([cx, cy], k) => (k ? ctx.lineTo(cx, cy) : ctx.moveTo(cx, cy)));
          ctx.closePath();
          ctx.stroke();
          ctx.fillText(caption, corners[0][0] + 3, corners[0][1] - 4);
        } else if (shape.type === 'polygon') {
          ctx.beginPath();
          for (let k = 0; k < shape.points.length; k += 2) {
            const [cx, cy] = toCanvas(shape.points[k], shape.points[k + 1]);
            if (k) ctx.lineTo(cx, cy);
            else ctx.moveTo(cx, cy);
          }
          ctx.closePath();
          ctx.stroke();
          const [lx, ly] = toCanvas(shape.points[0], shape.points[1]);
          ctx.fillText(caption, lx + 3, ly - 4);
        } else if (shape.type === 'mask') {
          const key = `${overlay.name}|${overlay.color}|${shape.frame}|${shape.label}|${shape.rle.counts.length}`;
          let bitmap = this.maskCache.get(key);
          if (!bitmap) {
            bitmap = maskCanvas(shape.rle, overlay.color);
            this.maskCache.set(key, bitmap);
          }
          const [ox, oy] = toCanvas(0, 0);
          const [ax, ay] = toCanvas(1, 0);
          const [bx, by] = toCanvas(0, 1);
          ctx.save();
          ctx.setTransform(ax - ox, ay - oy, bx - ox, by - oy, ox, oy);
          ctx.imageSmoothingEnabled = false;
          ctx.globalAlpha = 0.45;
          ctx.drawImage(bitmap, 0, 0);
          ctx.restore();
        }
      }
    }
  }

  /** Free the viewport, its tool group and its labelmap. */
  destroy(): void {
    for (const name of this.globalEvents) cs.eventTarget.removeEventListener(name, this.onGlobal);
    this.resizer?.disconnect();
    this.changeListeners = [];
    try {
      if (this.cine) cst.utilities.cine.stopClip(this.element);
      for (const a of this.mine()) cst.annotation.state.removeAnnotation(a.annotationUID!);
      if (this.segmentationId) cst.segmentation.removeSegmentation(this.segmentationId);
      cst.ToolGroupManager.destroyToolGroup(this.toolGroup.id);
      engine?.disableElement(this.viewportId);
    } catch {
      /* already gone */
    }
  }
}

function r2(v: number): number {
  return Math.round(v * 100) / 100;
}

/** COCO uncompressed RLE (column-major runs, starting with background) of `data == value`. */
export function encodeRle(
  data: ArrayLike<number>, width: number, height: number, value: number,
): Rle {
  const counts: number[] = [];
  let current = 0;
  let run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const bit = data[y * width + x] === value ? 1 : 0;
      if (bit !== current) {
        counts.push(run);
        run = 0;
        current = bit;
      }
      run++;
    }
  }
  counts.push(run);
  return { size: [height, width], counts };
}

/** One 3D mask object per class painted in `planes` (one labelmap per image, row-major),
 * with C-order runs over [slices, rows, columns]. */
export function volumeMaskObjects(planes: ArrayLike<number>[], rows: number, columns: number, classes: string[]): Shape[] {
  const size = rows * columns;
  const values = new Set<number>();
  for (const data of planes) for (let i = 0; i < size; i++) if (data[i]) values.add(data[i]);
  const out: Shape[] = [];
  for (const value of [...values].sort((a, b) => a - b)) {
    const runs: number[] = [];
    let start = -1;
    planes.forEach((data, k) => {
      for (let i = 0; i < size; i++) {
        const on = data[i] === value;
        if (on && start < 0) start = k * size + i;
        else if (!on && start >= 0) {
          runs.push(start, k * size + i - start);
          start = -1;
        }
      }
    });
    if (start >= 0) runs.push(start, planes.length * size - start);
    out.push({ type: 'mask', label: classes[value - 1] ?? classes[0], mask: { shape: [planes.length, rows, columns], runs } });
  }
  return out;
}

/** Call `set(rowMajorIndex)` for every foreground pixel of a COCO uncompressed RLE. */
export function decodeRle(rle: Rle, set: (i: number) => void): void {
  const [height, width] = rle.size;
  let pos = 0;
  rle.counts.forEach((run, k) => {
    if (k % 2 === 1) {
      for (let j = pos; j < pos + run; j++) {
        const x = Math.floor(j / height);
        const y = j % height;
        if (x < width) set(y * width + x);
      }
    }
    pos += run;
  });
}

function maskCanvas(rle: Rle, color: string): HTMLCanvasElement {
  const [height, width] = rle.size;
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d')!;
  const image = ctx.createImageData(width, height);
  const [r, g, b] = hexRgb(color);
  decodeRle(rle, (i) => {
    image.data[4 * i] = r;
    image.data[4 * i + 1] = g;
    image.data[4 * i + 2] = b;
    image.data[4 * i + 3] = 255;
  });
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function hexRgb(color: string): [number, number, number] {
  const v = parseInt(color.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

/** Three orthographic views (axial, sagittal, coronal) of a DICOM series. Given the stack
 * viewer's labelmap segmentation, the brush and eraser paint it in 3D from any plane: the
 * volume labelmap is built on the same per-image labelmaps, so the stack view and the
 * submitted mask see every stroke. */
export class MprView {
  private viewportIds: string[] = [];
  private volumeId = '';
  private group: NonNullable<ReturnType<typeof cst.ToolGroupManager.createToolGroup>> | null = null;

  constructor(readonly host: HTMLElement, private segmentationId: string | null = null) {
    host.classList.add('mpr');
  }

  /** Whether the views paint the labelmap. */
  get editable(): boolean {
    return this.segmentationId !== null;
  }

  /** Build the volume from `imageIds` (a series with positions) and show the three planes. */
  async load(imageIds: string[]): Promise<void> {
    await initImaging();
    const n = ++counter;
    for (const id of imageIds) await cs.imageLoader.loadAndCacheImage(id); // metadata first
    this.volumeId = `cornerstoneStreamingImageVolume:truthset-mpr-${n}`;
    const volume = await cs.volumeLoader.createAndCacheVolume(this.volumeId, { imageIds });
    const axes = [
      ['axial', cs.Enums.OrientationAxis.AXIAL],
      ['sagittal', cs.Enums.OrientationAxis.SAGITTAL],
      ['coronal', cs.Enums.OrientationAxis.CORONAL],
    ] as const;
    const group = cst.ToolGroupManager.createToolGroup(`tg-mpr-${n}`);
    if (!group) throw new Error('could not create a tool group');
    this.group = group;
    for (const tool of [cst.WindowLevelTool, cst.PanTool, cst.ZoomTool, cst.StackScrollTool]) group.addTool(tool.toolName);
    if (this.segmentationId) {
      group.addToolInstance('Brush', cst.BrushTool.toolName, { activeStrategy: 'FILL_INSIDE_SPHERE' });
      group.addToolInstance('Eraser', cst.BrushTool.toolName, { activeStrategy: 'ERASE_INSIDE_SPHERE' });
    }
    for (const [name, orientation] of axes) {
      const element = document.createElement('div');
      element.className = 'mpr-view';
      element.dataset.plane = name;
      element.oncontextmenu = (e) => e.preventDefault();
      this.host.append(element);
      const viewportId = `mpr-${n}-${name}`;
      engine!.enableElement({
        viewportId, element, type: cs.Enums.ViewportType.ORTHOGRAPHIC,
        defaultOptions: { orientation, background: [0, 0, 0] as cs.Types.Point3 },
      });
      group.addViewport(viewportId, 'truthset');
      this.viewportIds.push(viewportId);
    }
    group.setToolActive(cst.PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    group.setToolActive(cst.ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    group.setToolActive(cst.StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    this.setTool('wl');
    volume.load();
    await cs.setVolumesForViewports(engine!, [{ volumeId: this.volumeId }], this.viewportIds);
    if (this.segmentationId) {
      for (const viewportId of this.viewportIds) {
        await cst.segmentation.addLabelmapRepresentationToViewport(viewportId, [{ segmentationId: this.segmentationId }]);
      }
      cst.utilities.segmentation.setBrushSizeForToolGroup(group.id, 6);
    }
    engine!.renderViewports(this.viewportIds);
    this.host.dataset.editable = this.segmentationId ? '1' : '0';
  }

  /** Make `tool` the left-button tool (brush and eraser paint spheres in the volume). */
  setTool(tool: 'wl' | 'brush' | 'eraser'): void {
    const group = this.group;
    if (!group || (tool !== 'wl' && !this.segmentationId)) return;
    for (const name of [cst.WindowLevelTool.toolName, ...(this.segmentationId ? ['Brush', 'Eraser'] : [])]) group.setToolPassive(name);
    const name = tool === 'wl' ? cst.WindowLevelTool.toolName : tool === 'brush' ? 'Brush' : 'Eraser';
    group.setToolActive(name, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    this.host.dataset.tool = tool;
  }

  /** Change the brush radius by `delta`. */
  brushSize(delta: number): number {
    if (!this.group) return 0;
    const size = Math.max(1, Math.min(100, cst.utilities.segmentation.getBrushSizeForToolGroup(this.group.id) + delta));
    cst.utilities.segmentation.setBrushSizeForToolGroup(this.group.id, size);
    return size;
  }

  /** Free the views, the tool group and the volume (the labelmap stays with the viewer). */
  destroy(): void {
    try {
      if (this.segmentationId) {
        for (const id of this.viewportIds) cst.segmentation.removeSegmentationRepresentations(id, { segmentationId: this.segmentationId });
      }
      if (this.group) cst.ToolGroupManager.destroyToolGroup(this.group.id);
      for (const id of this.viewportIds) engine?.disableElement(id);
      if (this.volumeId) cs.cache.removeVolumeLoadObject(this.volumeId);
    } catch {
      /* already gone */
    }
    this.host.replaceChildren();
  }
}
