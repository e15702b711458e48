// The single-page application: sign-in, navigation, routing between the pages.

import './style.css';
import { ApiError, get, onAuthLost, send, setCsrf, type Me, type Project } from './api';
import { fail, h, notify } from './ui';
import { loginPage } from './pages/login';
import { annotatePage } from './pages/annotate';
import { reviewPage } from './pages/review';
import { adjudicatePage } from './pages/adjudicate';
import { dashboardPage } from './pages/dashboard';
import { releasesPage } from './pages/releases';
import { jobsPage } from './pages/jobs';
import { auditPage } from './pages/audit';

/** What every page gets. */
export interface PageCtx {
  me: Me;
  project: string | null;
  projects: Project[];
  params: URLSearchParams;
  /** Roles of the signed-in user in the current project (plus their global role). */
  roles: Set<string>;
}

export type Cleanup = (() => void) | void;
type Page = (root: HTMLElement, ctx: PageCtx) => Promise<Cleanup>;

const ROUTES: Record<string, { title: string; page: Page; roles?: string[] }> = {
  '/annotate': { title: 'Annotate', page: annotatePage, roles: ['annotator', 'reviewer', 'adjudicator', 'manager', 'admin'] },
  '/review': { title: 'Review', page: reviewPage, roles: ['reviewer', 'manager', 'admin'] },
  '/adjudicate': { title: 'Adjudicate', page: adjudicatePage, roles: ['adjudicator', 'manager', 'admin'] },
  '/dashboard': { title: 'Dashboards', page: dashboardPage },
  '/releases': { title: 'Releases', page: releasesPage },
  // Who may read a project's jobs: stats.read in auth/policy.py (others get the API's refusal).
  '/jobs': { title: 'Jobs', page: jobsPage, roles: ['manager', 'admin', 'auditor'] },
  '/audit': { title: 'Audit log', page: auditPage, roles: ['auditor', 'manager', 'admin'] },
};

let me: Me | null = null;
let projects: Project[] = [];
let cleanup: Cleanup;
const PROJECT_KEY = 'truthset.project';

let generation = 0;

/** Go to `path` (pushes history) and render it (after the current call stack, so a page may
 * navigate while it renders). */
export function navigate(path: string, replace = false): void {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  setTimeout(() => void render(), 0);
}

function currentProject(params: URLSearchParams): string | null {
  const wanted = params.get('project') ?? localStorage.getItem(PROJECT_KEY);
  const found = projects.find((p) => p.key === wanted) ?? projects[0];
  if (found) localStorage.setItem(PROJECT_KEY, found.key);
  return found?.key ?? null;
}

function rolesIn(project: string | null): Set<string> {
  const roles = new Set<string>();
  if (!me) return roles;
  roles.add(me.user.role);
  for (const m of me.memberships) if (m.project === project) roles.add(m.role);
  return roles;
}

async function loadMe(): Promise<boolean> {
  try {
    me = await get<Me>('/auth/me');
    const page = await get<{ items: Project[] }>('/projects?limit=200');
    projects = page.items;
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      me = null;
      return false;
    }
    throw err;
  }
}

function homeFor(roles: Set<string>): string {
  if (roles.has('adjudicator')) return '/adjudicate';
  if (roles.has('reviewer')) return '/review';
  if (roles.has('annotator')) return '/annotate';
  if (roles.has('auditor')) return '/audit';
  return '/dashboard';
}

function shell(path: string, ctx: PageCtx): HTMLElement {
  const nav = Object.entries(ROUTES)
    .filter(([, r]) => !r.roles || r.roles.some((role) => ctx.roles.has(role)))
    .map(([p, r]) => h('a', {
      href: `${p}${ctx.project ? `?project=${ctx.project}` : ''}`,
      className: p === path ? 'active' : '',
      dataset: { nav: p.slice(1) },
    }, r.title));
  const picker = h('select', {
    id: 'project-picker', title: 'Project',
    onchange: (e: Event) => {
      const key = (e.target as HTMLSelectElement).value;
      localStorage.setItem(PROJECT_KEY, key);
      navigate(`${path}?project=${key}`);
    },
  }, projects.map((p) => h('option', { value: p.key, selected: p.key === ctx.project }, p.name || p.key)));
  const user = ctx.me.user;
  return h('header.top', null,
    h('a.brand', { href: '/' }, 'Truthset'),
    h('nav', null, nav),
    h('div.spacer'),
    projects.length ? picker : null,
    h('span.who', { title: `${user.role}, tier ${user.tier}` }, `${user.display_name || user.username} · ${[...ctx.roles].join(', ')}`),
    h('button.link#logout', {
      onclick: async () => {
        try {
          await send('POST', '/auth/logout');
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 401)) fail(err);
        }
        setCsrf(null);
        me = null;
        navigate('/login');
      },
    }, 'Sign out'));
}

async function render(): Promise<void> {
  const mine = ++generation;
  if (typeof cleanup === 'function') cleanup();
  cleanup = undefined;
  const app = document.getElementById('app')!;
  const url = new URL(location.href);
  let path = url.pathname.replace(/\/+$/, '') || '/';
  app.replaceChildren();
  const notices = h('div#notices');
  if (path === '/login') {
    app.append(notices);
    const root = h('main.login');
    app.append(root);
    loginPage(root, async () => {
      await loadMe();
      const next = url.searchParams.get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/', true);
    }, url.searchParams.get('expired') === '1');
    return;
  }
  if (!me && !(await loadMe().catch((err) => (fail(err), false)))) {
    if (mine !== generation) return;
    navigate(`/login?next=${encodeURIComponent(url.pathname + url.search)}`, true);
    return;
  }
  if (mine !== generation) return;
  const project = currentProject(url.searchParams);
  const ctx: PageCtx = { me: me!, project, projects, params: url.searchParams, roles: rolesIn(project) };
  if (!ROUTES[path]) {
    path = homeFor(ctx.roles);
    history.replaceState(null, '', `${path}${project ? `?project=${project}` : ''}`);
  }
  const route = ROUTES[path];
  document.title = `${route.title} · Truthset`;
  const main = h('main', { className: `page page-${path.slice(1)}` });
  app.append(shell(path, ctx), notices, main);
  if (!project && path !== '/audit') {
    main.append(h('p.empty', null, 'You are not a member of any project yet. Ask a manager to add you.'));
    return;
  }
  try {
    const done = await route.page(main, ctx);
    // A newer render (a navigation while this page loaded) owns the screen now.
    if (mine !== generation) {
      if (typeof done === 'function') done();
    } else {
      cleanup = done;
    }
  } catch (err) {
    if (mine === generation) fail(err);
  }
}

onAuthLost(() => {
  me = null;
  if (location.pathname !== '/login') {
    notify('Your session has expired. Sign in again — your unsaved drawing is kept on this computer.', 'error');
    navigate(`/login?expired=1&next=${encodeURIComponent(location.pathname + location.search)}`, true);
  }
});

document.addEventListener('click', (e) => {
  const a = (e.target as HTMLElement).closest('a');
  if (!a || a.target || e.ctrlKey || e.metaKey || e.shiftKey) return;
  const href = a.getAttribute('href');
  if (!href || !href.startsWith('/') || href.startsWith('/api/') || href.startsWith('/docs')) return;
  e.preventDefault();
  navigate(href);
});
window.addEventListener('popstate', () => void render());
window.addEventListener('offline', () => notify('You are offline. Your drawing is kept on this computer; submit when you are back online.', 'error'));
void render();
