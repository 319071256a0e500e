import { describe, expect, it } from 'vitest';
import type { EventType, Pull } from './api';
import { applyMessages, initialPullsState, sortPulls, type PullsState, type StreamMessage } from './reducer';
import { event, layer, pull } from './testdata';

const snap = (...pulls: Pull[]): StreamMessage => ({ kind: 'snapshot', pulls });
const ev = (id: number | undefined, type: EventType, p: Pull, l?: ReturnType<typeof layer>): StreamMessage => ({
  kind: 'event',
  id,
  event: event(type, p, l),
});
const run = (...msgs: StreamMessage[]) => applyMessages(initialPullsState, msgs);

describe('snapshot', () => {
  it('loads the pulls keyed by id', () => {
    const s = run(snap(pull({ id: 'a' }), pull({ id: 'b' })));
    expect(s.loaded).toBe(true);
    expect([...s.pulls.keys()].sort()).toEqual(['a', 'b']);
  });

  it('replaces everything held before', () => {
    const s1 = run(snap(pull({ id: 'a' })), ev(5, 'pull.started', pull({ id: 'b' })));
    const s2 = applyMessages(s1, [snap(pull({ id: 'c' }))]);
    expect([...s2.pulls.keys()]).toEqual(['c']);
  });

  it('restarts id ordering, so a restarted server is not taken for duplicates', () => {
    const s1 = run(snap(), ev(900, 'pull.started', pull({ id: 'old' })));
    expect(s1.lastId).toBe(900);
    const s2 = applyMessages(s1, [snap(), ev(1, 'pull.started', pull({ id: 'new' }))]);
    expect(s2.lastId).toBe(1);
    expect(s2.pulls.has('new')).toBe(true);
  });

  it('turns null pods and layers (a nil Go slice) into empty arrays', () => {
    const bad = { ...pull({ id: 'a' }), pods: null, layers: null } as unknown as Pull;
    const p = run(snap(bad)).pulls.get('a')!;
    expect(p.pods).toEqual([]);
    expect(p.layers).toEqual([]);
  });
});

describe('pull events', () => {
  it.each(['pull.started', 'pull.progress', 'pull.completed', 'pull.failed'] as EventType[])(
    '%s sets the pull',
    (type) => {
      const p = pull({
        id: 'a',
        state: type === 'pull.completed' ? 'completed' : type === 'pull.failed' ? 'failed' : 'active',
        downloadedBytes: 500,
        error: type === 'pull.failed' ? 'failed to resolve reference' : undefined,
      });
      const s = run(snap(pull({ id: 'a' })), ev(1, type, p));
      expect(s.pulls.get('a')).toEqual(p);
      expect(s.lastId).toBe(1);
    },
  );

  it('progress moves the numbers', () => {
    const s = run(
      snap(),
      ev(1, 'pull.started', pull({ id: 'a' })),
      ev(2, 'pull.progress', pull({ id: 'a', downloadedBytes: 300, percent: 30, bytesPerSec: 100, etaSeconds: 7 })),
      ev(3, 'pull.progress', pull({ id: 'a', downloadedBytes: 600, percent: 60, bytesPerSec: 150, etaSeconds: 2.6 })),
    );
    const p = s.pulls.get('a')!;
    expect(p.downloadedBytes).toBe(600);
    expect(p.percent).toBe(60);
    expect(p.etaSeconds).toBe(2.6);
  });

  it('pull.removed deletes the pull', () => {
    const s = run(snap(pull({ id: 'a' }), pull({ id: 'b' })), ev(1, 'pull.removed', pull({ id: 'a' })));
    expect([...s.pulls.keys()]).toEqual(['b']);
  });

  it('ignores unknown event types but keeps their id', () => {
    const s1 = run(snap(pull({ id: 'a' })));
    const s2 = applyMessages(s1, [ev(4, 'pull.teleported' as EventType, pull({ id: 'z' }))]);
    expect(s2.pulls).toBe(s1.pulls);
    expect(s2.lastId).toBe(4);
  });
});

describe('layer events', () => {
  const l1 = layer({ digest: 'sha256:' + '1'.repeat(64) });
  const l2 = layer({ digest: 'sha256:' + '2'.repeat(64) });

  it.each(['layer.started', 'layer.progress', 'layer.completed'] as EventType[])(
    '%s updates the pull and the named layer',
    (type) => {
      const base = pull({ id: 'a', layers: [l1, l2] });
      const changed = layer({
        ...l2,
        state: type === 'layer.completed' ? 'done' : 'downloading',
        downloadedBytes: type === 'layer.started' ? 0 : 800,
      });
      // The event's pull is a summary without layers; the held layers stay, the event's wins.
      const s = run(snap(base), ev(1, type, { ...base, downloadedBytes: 800 }, changed));
      const p = s.pulls.get('a')!;
      expect(p.downloadedBytes).toBe(800);
      expect(p.layers).toHaveLength(2);
      expect(p.layers[0]).toEqual(l1);
      expect(p.layers[1]).toEqual(changed);
    },
  );

  it('appends a layer the pull did not list yet', () => {
    const s = run(snap(pull({ id: 'a', layers: [l1] })), ev(1, 'layer.started', pull({ id: 'a', layers: [l1] }), l2));
    expect(s.pulls.get('a')!.layers.map((l) => l.digest)).toEqual([l1.digest, l2.digest]);
  });

  it('creates the pull if the snapshot did not have it', () => {
    const s = run(snap(), ev(1, 'layer.progress', pull({ id: 'a', layers: [] }), l1));
    expect(s.pulls.get('a')!.layers).toEqual([l1]);
  });
});

describe('ordering', () => {
  it('ignores a duplicate id', () => {
    const s = run(
      snap(),
      ev(1, 'pull.started', pull({ id: 'a', downloadedBytes: 0 })),
      ev(2, 'pull.progress', pull({ id: 'a', downloadedBytes: 500 })),
      ev(2, 'pull.progress', pull({ id: 'a', downloadedBytes: 999 })),
    );
    expect(s.pulls.get('a')!.downloadedBytes).toBe(500);
    expect(s.lastId).toBe(2);
  });

  it('ignores an older id arriving late (a replay after reconnect)', () => {
    const s1 = run(snap(), ev(10, 'pull.progress', pull({ id: 'a', downloadedBytes: 900 })));
    const s2 = applyMessages(s1, [
      ev(9, 'pull.progress', pull({ id: 'a', downloadedBytes: 800 })),
      ev(10, 'pull.progress', pull({ id: 'a', downloadedBytes: 900 })),
      ev(11, 'pull.progress', pull({ id: 'a', downloadedBytes: 950 })),
    ]);
    expect(s2.pulls.get('a')!.downloadedBytes).toBe(950);
    expect(s2.lastId).toBe(11);
  });

  it('a late pull.removed does not delete a pull that came back', () => {
    const s = run(
      snap(),
      ev(2, 'pull.started', pull({ id: 'a' })),
      ev(1, 'pull.removed', pull({ id: 'a' })),
    );
    expect(s.pulls.has('a')).toBe(true);
  });

  it('applies events without an id', () => {
    const s = run(snap(), ev(undefined, 'pull.started', pull({ id: 'a' })));
    expect(s.pulls.has('a')).toBe(true);
    expect(s.lastId).toBe(0);
  });
});

describe('identity', () => {
  it('keeps untouched pulls as the same objects, so memoized rows skip render', () => {
    const a = pull({ id: 'a' });
    const b = pull({ id: 'b' });
    const s1 = run(snap(a, b));
    const s2 = applyMessages(s1, [ev(1, 'pull.progress', pull({ id: 'a', downloadedBytes: 10 }))]);
    expect(s2.pulls.get('b')).toBe(s1.pulls.get('b'));
    expect(s2.pulls.get('a')).not.toBe(s1.pulls.get('a'));
    expect(s1.pulls.get('a')!.downloadedBytes).toBe(0); // the old state is not mutated
  });

  it('returns the same state for an empty or all-duplicate batch', () => {
    const s1: PullsState = run(snap(), ev(3, 'pull.started', pull({ id: 'a' })));
    expect(applyMessages(s1, [])).toBe(s1);
    expect(applyMessages(s1, [ev(3, 'pull.progress', pull({ id: 'a' }))])).toBe(s1);
  });
});

describe('sortPulls', () => {
  it('is newest first with a stable tie-break', () => {
    const sorted = sortPulls([
      pull({ id: 'old', startedAt: '2026-01-01T00:00:00Z' }),
      pull({ id: 'b', startedAt: '2026-01-01T00:05:00Z' }),
      pull({ id: 'a', startedAt: '2026-01-01T00:05:00Z' }),
    ]);
    expect(sorted.map((p) => p.id)).toEqual(['a', 'b', 'old']);
  });
});
