// Releases: list, details, diff against an earlier release, verify, sign, create.

import { API, ApiError, get, post } from '../api';
import type { Cleanup, PageCtx } from '../main';
import { fail, fmtTime, h, notify, table } from '../ui';

interface Signature {
  username: string;
  printed_name: string;
  meaning: string;
  signed_at: string;
}
interface Release {
  name: string;
  status: string;
  created_at: string;
  created_by: string;
  parent: string | null;
  schema_version: number;
  guideline_version: number | null;
  manifest_sha256: string;
  merkle_root: string;
  included: number;
  excluded: number;
  signatures: Signature[];
}
interface ReleaseDetail extends Release {
  files: { name: string; size: number; media_type: string }[];
  checks: Record<string, unknown>;
}
interface Diff {
  from: { release: string; included: number };
  to: { release: string; included: number };
  added: { item: string; label: string; why?: string }[];
  removed: { item: string; label: string; reason?: string }[];
  label_changed: { item: string; from: string; to: string; why?: string; to_source?: string }[];
  split_changed: { item: string; from: string; to: string }[];
  guideline_changes: { version: number; change_note: string }[];
  schema_changes: { version: number; classes: string[] }[];
  summary: Record<string, number>;
}

/** The releases page of the current project. */
export async function releasesPage(root: HTMLElement, ctx: PageCtx): Promise<Cleanup> {
  const project = ctx.project!;
  const listBox = h('div#release-list');
  const detail = h('div#release-detail');
  const canCreate = ctx.roles.has('manager') || ctx.roles.has('admin');
  root.append(h('h2', null, 'Releases'),
    h('p.muted', null, 'Immutable, versioned dataset snapshots: manifest of hashes, per-label provenance, diff, signed approvals.'),
    ...(canCreate ? [createForm(project, () => void refresh())] : []), listBox, detail);

  let releases: Release[] = [];
  const refresh = async (select?: string) => {
    releases = await get<Release[]>(`/projects/${project}/releases`);
    listBox.replaceChildren(releases.length
      ? table(['release', 'status', 'created', 'by', 'parent', 'items in / out', 'signatures', 'manifest'],
        [...releases].reverse().map((r) => [
          h('a', { href: '#', dataset: { release: r.name }, onclick: (e: Event) => { e.preventDefault(); void show(r.name); } }, r.name),
          r.status, fmtTime(r.created_at), r.created_by, r.parent ?? '—', `${r.included} / ${r.excluded}`,
          r.signatures.length ? r.signatures.map((s) => `${s.printed_name || s.username} (${s.meaning})`).join(', ') : 'unsigned',
          h('code', { title: r.manifest_sha256 }, r.manifest_sha256.slice(0, 12)),
        ]), 'releases-table')
      : h('p.muted', null, 'No release yet.'));
    const wanted = select ?? ctx.params.get('release') ?? releases[releases.length - 1]?.name;
    if (wanted) await show(wanted);
  };

  const show = async (name: string) => {
    const r = await get<ReleaseDetail>(`/projects/${project}/releases/${encodeURIComponent(name)}`);
    const diffBox = h('div#release-diff');
    const verifyOut = h('span');
    const against = h('select#diff-against', null, releases.filter((x) => x.name !== name).map((x) => h('option', { value: x.name, selected: x.name === r.parent }, x.name)));
    const meaning = h('select#sign-meaning', null, ['reviewed', 'approved for training', 'approved for validation'].map((m) => h('option', { value: m }, m)));
    const password = h('input#sign-password', { type: 'password', placeholder: 'your password', autocomplete: 'current-password' });
    detail.replaceChildren(h('section.panel', null,
      h('h3', null, `Release ${r.name}`),
      h('p', null, `${r.included} items in, ${r.excluded} out · schema v${r.schema_version} · guideline v${r.guideline_version ?? '—'} · Merkle root `, h('code', null, r.merkle_root.slice(0, 16))),
      h('div.row', null,
        h('button#verify-release', {
          onclick: async () => {
            try {
              const v = await get<{ ok: boolean; rebuilt_identical: boolean; problems: string[] }>(`/projects/${project}/releases/${encodeURIComponent(name)}/verify`);
              verifyOut.textContent = v.ok ? '✔ verified: rebuilt byte-identical, blobs and signatures intact' : `✘ ${v.problems.join('; ') || 'rebuild differs'}`;
              verifyOut.className = v.ok ? 'diff-added' : 'diff-removed';
            } catch (err) {
              fail(err);
            }
          },
        }, 'Verify'), verifyOut),
      h('h4', null, 'Files'),
      table(['file', 'size', 'type'], r.files.map((f) => [
        h('a', { href: `${API}/projects/${project}/releases/${encodeURIComponent(name)}/files/${f.name}`, target: '_blank' }, f.name),
        `${(f.size / 1024).toFixed(1)} kB`, f.media_type])),
      h('h4', null, 'Signatures'),
      r.signatures.length ? table(['signer', 'meaning', 'when'], r.signatures.map((s) => [s.printed_name || s.username, s.meaning, fmtTime(s.signed_at)])) : h('p.muted', null, 'Not signed yet.'),
      h('form.row', {
        onsubmit: async (e: Event) => {
          e.preventDefault();
          try {
            await post(`/projects/${project}/releases/${encodeURIComponent(name)}/signatures`, { password: password.value, meaning: meaning.value });
            notify(`Signed ${name} as “${meaning.value}”.`, 'ok');
            password.value = '';
            await refresh(name);
          } catch (err) {
            if (err instanceof ApiError && err.status === 403 && err.field === 'password') notify('Wrong password: the signature was refused (and the attempt recorded).', 'error');
            else fail(err);
          }
        },
      }, h('strong', null, 'Sign:'), meaning, password, h('button.primary#sign', { type: 'submit' }, 'Sign release')),
      h('h4', null, 'Diff'),
      releases.length > 1 ? h('div.row', null, 'against', against, h('button#show-diff', { onclick: () => void showDiff() }, 'Show diff')) : h('p.muted', null, 'Only one release so far.'),
      diffBox));

    const showDiff = async () => {
      try {
        const d = await get<Diff>(`/projects/${project}/releases/${encodeURIComponent(name)}/diff?against=${encodeURIComponent(against.value)}`);
        diffBox.replaceChildren(...([
          h('p', null, `${d.from.release} (${d.from.included} items) → ${d.to.release} (${d.to.included} items): `,
            Object.entries(d.summary).map(([k, v]) => `${v} ${k.replace('_', ' ')}`).join(', ')),
          d.guideline_changes.length ? h('p', null, 'Guideline: ', d.guideline_changes.map((g) => `v${g.version} — ${g.change_note}`).join('; ')) : null,
          d.schema_changes.length ? h('p', null, 'Schema: ', d.schema_changes.map((s) => `v${s.version} (${s.classes.join(', ')})`).join('; ')) : null,
          table(['change', 'item', 'label', 'why'], [
            ...d.added.map((x) => [h('span.diff-added', null, 'added'), x.item, x.label, x.why ?? '']),
            ...d.removed.map((x) => [h('span.diff-removed', null, 'removed'), x.item, x.label, x.reason ?? '']),
            ...d.label_changed.map((x) => [h('span.diff-changed', null, 'label changed'), x.item, `${x.from} → ${x.to}`, `${x.why ?? ''} ${x.to_source ? `(${x.to_source})` : ''}`]),
            ...d.split_changed.map((x) => [h('span.diff-changed', null, 'split changed'), x.item, `${x.from} → ${x.to}`, '']),
          ])] as (HTMLElement | null)[]).filter((n): n is HTMLElement => n !== null));
      } catch (err) {
        fail(err);
      }
    };
    if (r.parent) await showDiff();
  };

  await refresh().catch(fail);
}

function createForm(project: string, done: () => void): HTMLElement {
  const name = h('input#release-name', { placeholder: 'name, e.g. v3', required: true, size: 10 });
  const parent = h('input#release-parent', { placeholder: 'parent (optional)', size: 10 });
  const unresolved = h('input#release-exclude-unresolved', { placeholder: 'reason to leave out unresolved items (optional)', size: 40 });
  return h('details.panel', null, h('summary', null, 'New release'),
    h('form.row', {
      onsubmit: async (e: Event) => {
        e.preventDefault();
        try {
          await post(`/projects/${project}/releases`, {
            name: name.value.trim(), parent: parent.value.trim() || undefined,
            exclude_unresolved: unresolved.value.trim() || undefined,
          });
          notify(`Release ${name.value} frozen.`, 'ok');
          done();
        } catch (err) {
          fail(err);
        }
      },
    }, name, parent, unresolved, h('button.primary', { type: 'submit' }, 'Freeze release')));
}
