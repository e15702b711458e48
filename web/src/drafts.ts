// Unsaved work kept in localStorage, so a reload, a crash or an expired session loses nothing.

import type { Payload } from './api';

export interface Draft {
  payload: Payload;
  elapsed: number;
  savedAt: string;
}

const PREFIX = 'truthset.draft.';

function key(user: string, project: string, item: number, stage: string): string {
  return `${PREFIX}${user}.${project}.${stage}.${item}`;
}

/** Keep the unsaved label of `item`. */
export function saveDraft(user: string, project: string, item: number, stage: string, draft: Omit<Draft, 'savedAt'>): void {
  try {
    localStorage.setItem(key(user, project, item, stage), JSON.stringify({ ...draft, savedAt: new Date().toISOString() }));
  } catch {
    /* storage full: the drawing stays on screen */
  }
}

/** The unsaved label of `item`, if any. */
export function loadDraft(user: string, project: string, item: number, stage: string): Draft | null {
  const text = localStorage.getItem(key(user, project, item, stage));
  if (!text) return null;
  try {
    return JSON.parse(text) as Draft;
  } catch {
    return null;
  }
}

/** Forget the draft (after a successful submit). */
export function dropDraft(user: string, project: string, item: number, stage: string): void {
  localStorage.removeItem(key(user, project, item, stage));
}
