import { act, cleanup, fireEvent, render, screen, within } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { App } from './App';
import { FakeES, event, layer, pull } from './testdata';

const frame = () => act(() => vi.advanceTimersByTime(300));

describe('App', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeES.all = [];
    vi.stubGlobal('EventSource', FakeES);
    window.history.replaceState(null, '', '/prefix/proxy/');
  });
  afterEach(() => {
    cleanup();
    vi.unstubAllGlobals();
    vi.useRealTimers();
  });

  const nginx = pull({
    id: 'a',
    imageRef: 'docker.io/library/nginx:1.27',
    nodeName: 'node-a',
    totalBytes: 10 * 1024 * 1024,
    downloadedBytes: 2 * 1024 * 1024,
    percent: 20,
    bytesPerSec: 1024 * 1024,
    etaSeconds: 65,
    layers: [
      layer({ digest: 'sha256:0123456789abcdef' + '0'.repeat(48), state: 'downloading', downloadedBytes: 500 }),
    ],
  });
  const redis = pull({
    id: 'b',
    imageRef: 'ghcr.io/acme/redis:7',
    nodeName: 'node-b',
    state: 'failed',
    error: 'unexpected EOF',
    pods: [{ namespace: 'blog', podName: 'cache-0', container: 'redis' }],
  });

  function start() {
    render(<App />);
    const es = FakeES.last();
    act(() => {
      es.emit('open');
      es.emit('snapshot', { pulls: [nginx, redis] });
    });
    frame();
    return es;
  }

  it('shows a row per pull with live numbers', () => {
    const es = start();
    expect(screen.getByRole('status').textContent).toContain('live');
    const row = document.querySelector('[data-pull-id="a"]') as HTMLElement;
    expect(row.textContent).toContain('2.0 MiB / 10.0 MiB');
    expect(row.textContent).toContain('1.0 MiB/s');
    expect(row.textContent).toContain('1m 05s');
    expect(within(row).getByRole('progressbar').getAttribute('aria-valuenow')).toBe('20');
    expect(screen.getByText('unexpected EOF')).toBeTruthy();

    act(() => es.emit('message', event('pull.progress', { ...nginx, downloadedBytes: 5 * 1024 * 1024, percent: 50 }), 'e1-1'));
    frame();
    expect(within(row).getByRole('progressbar').getAttribute('aria-valuenow')).toBe('50');
    expect(row.textContent).toContain('5.0 MiB / 10.0 MiB');
  });

  it('counts per state and throughput in the header', () => {
    start();
    const header = document.querySelector('header')!;
    expect(header.querySelector('.chip-active .count')!.textContent).toBe('1');
    expect(header.querySelector('.chip-failed .count')!.textContent).toBe('1');
    expect(header.textContent).toContain('1.0 MiB/s');
  });

  it('Enter and Space toggle the layers', () => {
    start();
    const row = document.querySelector('[data-pull-id="a"]') as HTMLElement;
    expect(row.getAttribute('aria-expanded')).toBe('false');
    fireEvent.keyDown(row, { key: 'Enter' });
    expect(row.getAttribute('aria-expanded')).toBe('true');
    expect(screen.getByText('0123456789ab')).toBeTruthy();
    expect(screen.getByText('tar+gzip')).toBeTruthy();
    fireEvent.keyDown(row, { key: ' ' });
    expect(screen.queryByText('0123456789ab')).toBeNull();
  });

  it('a pod link filters by namespace and pod and writes the URL', () => {
    start();
    fireEvent.click(screen.getByText('blog/cache-0'));
    expect(window.location.pathname).toBe('/prefix/proxy/');
    expect(window.location.search).toBe('?namespace=blog&pod=cache-0');
    expect(document.querySelector('[data-pull-id="a"]')).toBeNull();
    expect(document.querySelector('[data-pull-id="b"]')).not.toBeNull();
  });

  it('reads the filters from the URL', () => {
    window.history.replaceState(null, '', '/prefix/proxy/?node=node-a');
    start();
    expect((document.querySelector('input[name=node]') as HTMLInputElement).value).toBe('node-a');
    expect(document.querySelector('[data-pull-id="a"]')).not.toBeNull();
    expect(document.querySelector('[data-pull-id="b"]')).toBeNull();
  });

  it('removes a pull on pull.removed', () => {
    const es = start();
    act(() => es.emit('message', event('pull.removed', redis), 'e1-5'));
    frame();
    expect(document.querySelector('[data-pull-id="b"]')).toBeNull();
  });
});
