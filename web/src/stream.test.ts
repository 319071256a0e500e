import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { openPullStream, type ConnState } from './stream';
import type { StreamMessage } from './reducer';
import { FakeES, event, pull } from './testdata';

describe('openPullStream', () => {
  let batches: StreamMessage[][];
  let conns: ConnState[];
  beforeEach(() => {
    vi.useFakeTimers();
    FakeES.all = [];
    batches = [];
    conns = [];
  });
  afterEach(() => vi.useRealTimers());

  const open = () =>
    openPullStream({
      onMessages: (m) => batches.push(m),
      onConn: (c) => conns.push(c),
      EventSource: FakeES as unknown as typeof EventSource,
      backoffMs: 1000,
    });

  it('opens the relative events URL and reports the connection', () => {
    const s = open();
    expect(FakeES.last().url).toBe('api/v1/events');
    expect(conns).toEqual(['connecting']);
    FakeES.last().emit('open');
    expect(conns.at(-1)).toBe('live');
    s.close();
    expect(FakeES.last().closed).toBe(true);
  });

  it('hands over events in one batch per frame, with their ids', () => {
    const s = open();
    const es = FakeES.last();
    es.emit('snapshot', { schemaVersion: 'v1', pulls: [pull({ id: 'a' })] }, 'e1-6');
    es.emit('message', event('pull.progress', pull({ id: 'a' })), 'e1-7');
    es.emit('message', event('layer.progress', pull({ id: 'a' })), 'e1-8');
    // PullEvents are plain messages: a named event of that type is not one.
    es.emit('pull.progress', event('pull.progress', pull({ id: 'a' })), 'e1-9');
    expect(batches).toHaveLength(0); // nothing until the frame
    vi.advanceTimersByTime(300);
    expect(batches).toHaveLength(1);
    expect(batches[0].map((m) => (m.kind === 'event' ? m.id : 'snapshot'))).toEqual(['snapshot', 7, 8]);
    s.close();
  });

  it('drops buffered events that a newer snapshot replaces', () => {
    const s = open();
    const es = FakeES.last();
    es.emit('message', event('pull.progress', pull({ id: 'a' })), 'e1-1');
    es.emit('snapshot', { pulls: [] });
    vi.advanceTimersByTime(300);
    expect(batches[0]).toEqual([{ kind: 'snapshot', pulls: [] }]);
    s.close();
  });

  it('skips a message that is not JSON', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const s = open();
    const es = FakeES.last();
    for (const fn of es.listeners.get('message')!) fn({ data: '{nope', lastEventId: 'e1-3' } as MessageEvent);
    vi.advanceTimersByTime(300);
    expect(batches).toHaveLength(0);
    expect(warn).toHaveBeenCalled();
    warn.mockRestore();
    s.close();
  });

  it('leaves retrying to the browser while it is CONNECTING', () => {
    const s = open();
    const es = FakeES.last();
    es.readyState = 0;
    es.emit('error');
    expect(conns.at(-1)).toBe('reconnecting');
    vi.advanceTimersByTime(60_000);
    expect(FakeES.all).toHaveLength(1);
    s.close();
  });

  it('reopens with ?lastEventId after the browser gives up, backing off', () => {
    const s = open();
    let es = FakeES.last();
    es.emit('snapshot', { pulls: [] }, 'e1-40');
    es.emit('message', event('pull.progress', pull()), 'e1-41');
    es.emit('message', event('pull.progress', pull()), 'e1-42');
    es.readyState = 2;
    es.emit('error');
    expect(conns.at(-1)).toBe('reconnecting');
    vi.advanceTimersByTime(999);
    expect(FakeES.all).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(FakeES.all).toHaveLength(2);
    expect(FakeES.last().url).toBe('api/v1/events?lastEventId=e1-42');

    // Fails again: the next wait is twice as long.
    es = FakeES.last();
    es.readyState = 2;
    es.emit('error');
    vi.advanceTimersByTime(1999);
    expect(FakeES.all).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(FakeES.all).toHaveLength(3);

    // Success resets the backoff and the state.
    FakeES.last().emit('open');
    expect(conns.at(-1)).toBe('live');
    s.close();
  });

  it("resumes from a snapshot's own id", () => {
    const s = open();
    const es = FakeES.last();
    es.emit('message', event('pull.progress', pull()), 'e1-9');
    es.emit('snapshot', { pulls: [] }, 'e2-3'); // the server restarted: a new epoch
    es.readyState = 2;
    es.emit('error');
    vi.advanceTimersByTime(1000);
    expect(FakeES.last().url).toBe('api/v1/events?lastEventId=e2-3');
    s.close();
  });

  it('reopens without lastEventId after a snapshot without an id', () => {
    const s = open();
    const es = FakeES.last();
    es.emit('message', event('pull.progress', pull()), 'e1-9');
    es.emit('snapshot', { pulls: [] }, '');
    es.readyState = 2;
    es.emit('error');
    vi.advanceTimersByTime(1000);
    expect(FakeES.last().url).toBe('api/v1/events');
    s.close();
  });

  it('does nothing after close', () => {
    const s = open();
    const es = FakeES.last();
    es.emit('message', event('pull.progress', pull()), 'e1-1');
    s.close();
    es.readyState = 2;
    es.emit('error');
    vi.advanceTimersByTime(60_000);
    expect(batches).toHaveLength(0);
    expect(FakeES.all).toHaveLength(1);
  });
});
