import { describe, expect, it } from 'vitest';
import {
  emptyFilters,
  filterPulls,
  filtersURL,
  formatFilters,
  isEmpty,
  matches,
  parseFilters,
  type Filters,
} from './filters';
import { pull } from './testdata';

const f = (over: Partial<Filters>): Filters => ({ ...emptyFilters, ...over });

const pulls = [
  pull({
    id: 'nginx-a',
    nodeName: 'node-a',
    imageRef: 'docker.io/library/nginx:1.27',
    state: 'active',
    pods: [
      { namespace: 'shop', podName: 'web-1', container: 'nginx' },
      { namespace: 'blog', podName: 'db-0', container: 'sidecar' },
    ],
  }),
  pull({
    id: 'redis-b',
    nodeName: 'node-b',
    imageRef: 'ghcr.io/acme/Redis:7',
    state: 'failed',
    pods: [{ namespace: 'blog', podName: 'web-1', container: 'redis' }],
  }),
  pull({ id: 'pause-a', nodeName: 'node-a', imageRef: 'registry.k8s.io/pause:3.10', state: 'cached', pods: [] }),
];
const ids = (fl: Filters) => filterPulls(pulls, fl).map((p) => p.id);

describe('matches', () => {
  it('no filter shows everything', () => {
    expect(isEmpty(emptyFilters)).toBe(true);
    expect(ids(emptyFilters)).toEqual(['nginx-a', 'redis-b', 'pause-a']);
  });
  it('node is exact', () => {
    expect(ids(f({ node: 'node-a' }))).toEqual(['nginx-a', 'pause-a']);
    expect(ids(f({ node: 'node' }))).toEqual([]);
  });
  it('namespace matches any waiting pod', () => {
    expect(ids(f({ namespace: 'blog' }))).toEqual(['nginx-a', 'redis-b']);
    expect(ids(f({ namespace: 'shop' }))).toEqual(['nginx-a']);
  });
  it('pod alone matches the name in any namespace', () => {
    expect(ids(f({ pod: 'web-1' }))).toEqual(['nginx-a', 'redis-b']);
  });
  it('namespace and pod must name the same pod', () => {
    expect(ids(f({ namespace: 'blog', pod: 'web-1' }))).toEqual(['redis-b']);
    expect(ids(f({ namespace: 'shop', pod: 'db-0' }))).toEqual([]);
  });
  it('image is a case-insensitive substring', () => {
    expect(ids(f({ image: 'redis' }))).toEqual(['redis-b']);
    expect(ids(f({ image: 'K8S.IO/pau' }))).toEqual(['pause-a']);
  });
  it('state is exact', () => {
    expect(ids(f({ state: 'failed' }))).toEqual(['redis-b']);
    expect(ids(f({ state: 'cached' }))).toEqual(['pause-a']);
  });
  it('combines with AND', () => {
    expect(ids(f({ node: 'node-a', image: 'nginx', state: 'active' }))).toEqual(['nginx-a']);
    expect(matches(pulls[0], f({ node: 'node-a', state: 'failed' }))).toBe(false);
  });
});

describe('URL', () => {
  it('round-trips every field', () => {
    const all = f({ namespace: 'blog', node: 'node-b', pod: 'web-1', image: 'acme/redis', state: 'failed' });
    const qs = formatFilters(all);
    expect(qs).toBe('namespace=blog&node=node-b&pod=web-1&image=acme%2Fredis&state=failed');
    expect(parseFilters(`?${qs}`)).toEqual(all);
  });
  it('leaves empty fields out and parses a missing one as empty', () => {
    expect(formatFilters(f({ image: 'nginx' }))).toBe('image=nginx');
    expect(formatFilters(emptyFilters)).toBe('');
    expect(parseFilters('')).toEqual(emptyFilters);
    expect(parseFilters('?image=nginx')).toEqual(f({ image: 'nginx' }));
  });
  it('escapes and unescapes odd characters', () => {
    const odd = f({ image: 'a b&c=d?#e' });
    expect(parseFilters(formatFilters(odd))).toEqual(odd);
  });
  it('ignores an unknown state and unrelated parameters', () => {
    expect(parseFilters('?state=exploded&foo=1&node=n1')).toEqual(f({ node: 'n1' }));
  });
  it('keeps the path prefix and hash', () => {
    const loc = { pathname: '/api/v1/namespaces/pulltrace/services/pulltrace-server:8080/proxy/', hash: '#x' };
    expect(filtersURL(f({ node: 'n1' }), loc)).toBe(`${loc.pathname}?node=n1#x`);
    expect(filtersURL(emptyFilters, loc)).toBe(`${loc.pathname}#x`);
  });
});
