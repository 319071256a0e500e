// Fixtures shared by the unit tests.
import type { EventType, Layer, Pull, PullEvent } from './api';

export function layer(over: Partial<Layer> = {}): Layer {
  return {
    digest: 'sha256:aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111',
    mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    totalBytes: 1000,
    downloadedBytes: 0,
    state: 'waiting',
    ...over,
  };
}

export function pull(over: Partial<Pull> = {}): Pull {
  return {
    id: 'p1',
    nodeName: 'node-a',
    imageRef: 'docker.io/library/nginx:1.27',
    state: 'active',
    totalBytes: 1000,
    downloadedBytes: 0,
    bytesPerSec: 0,
    percent: 0,
    layerCount: 1,
    layersDone: 0,
    totalKnown: true,
    startedAt: '2026-01-01T00:00:00Z',
    updatedAt: '2026-01-01T00:00:00Z',
    pods: [{ namespace: 'default', podName: 'web-1', container: 'nginx' }],
    layers: [layer()],
    ...over,
  };
}

/** An event as the server sends it: layer.* events carry the pull without its layers. */
export function event(type: EventType, p: Pull, l?: Layer): PullEvent {
  const { layers, ...summary } = p;
  return {
    schemaVersion: 'v1',
    timestamp: '2026-01-01T00:00:01Z',
    type,
    nodeName: p.nodeName,
    pull: type.startsWith('layer.') ? (summary as Pull) : p,
    ...(l ? { layer: l } : {}),
  };
}

/** A minimal stand-in for the browser's EventSource. */
export class FakeES {
  static all: FakeES[] = [];
  readyState = 0;
  closed = false;
  listeners = new Map<string, ((e: MessageEvent) => void)[]>();
  constructor(public url: string) {
    FakeES.all.push(this);
  }
  addEventListener(type: string, fn: (e: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  emit(type: string, data?: unknown, lastEventId = '') {
    const e = { type, data: JSON.stringify(data), lastEventId } as MessageEvent;
    for (const fn of this.listeners.get(type) ?? []) fn(e);
  }
  static last() {
    return FakeES.all[FakeES.all.length - 1];
  }
}
