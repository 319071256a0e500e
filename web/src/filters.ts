// View filters, kept in the URL query string so a copied link reproduces the view. The
// parameter names are those of GET /api/v1/pulls, so the same query works against the API.

import { PULL_STATES, type Pull, type PullState } from './api';

export interface Filters {
  namespace: string;
  node: string;
  pod: string;
  /** Substring of the image reference, case-insensitive. */
  image: string;
  /** One state, or '' for all. */
  state: PullState | '';
}

export const FILTER_KEYS = ['namespace', 'node', 'pod', 'image', 'state'] as const;

export const emptyFilters: Filters = { namespace: '', node: '', pod: '', image: '', state: '' };

export function isEmpty(f: Filters): boolean {
  return FILTER_KEYS.every((k) => f[k] === '');
}

export function parseFilters(search: string): Filters {
  const q = new URLSearchParams(search);
  const get = (k: string) => (q.get(k) ?? '').trim();
  const state = get('state');
  return {
    namespace: get('namespace'),
    node: get('node'),
    pod: get('pod'),
    image: get('image'),
    // An unknown state in a hand-edited link would hide everything; ignore it instead.
    state: (PULL_STATES as readonly string[]).includes(state) ? (state as PullState) : '',
  };
}

/** Query string without "?", fixed key order, empty filters left out. */
export function formatFilters(f: Filters): string {
  const q = new URLSearchParams();
  for (const k of FILTER_KEYS) if (f[k]) q.set(k, f[k]);
  return q.toString();
}

/** The URL for the current location with these filters, keeping the path prefix and hash. */
export function filtersURL(f: Filters, loc: { pathname: string; hash: string }): string {
  const qs = formatFilters(f);
  return `${loc.pathname}${qs ? `?${qs}` : ''}${loc.hash}`;
}

/**
 * namespace, node, pod and state match exactly; image is a case-insensitive substring.
 * namespace and pod together must match the same pod, so "ns-a / web" does not match a
 * pull waited on by ns-a/db and ns-b/web.
 */
export function matches(p: Pull, f: Filters): boolean {
  if (f.state && p.state !== f.state) return false;
  if (f.node && p.nodeName !== f.node) return false;
  if (f.image && !p.imageRef.toLowerCase().includes(f.image.toLowerCase())) return false;
  if (f.namespace || f.pod) {
    const hit = p.pods.some(
      (r) => (!f.namespace || r.namespace === f.namespace) && (!f.pod || r.podName === f.pod),
    );
    if (!hit) return false;
  }
  return true;
}

export function filterPulls(pulls: readonly Pull[], f: Filters): Pull[] {
  return isEmpty(f) ? pulls.slice() : pulls.filter((p) => matches(p, f));
}
