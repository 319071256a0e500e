import { describe, expect, it } from 'vitest';
import { formatSince, staleMessage } from './nodes';

const now = Date.parse('2026-12-01T10:03:00Z');

describe('staleMessage', () => {
  it('is null for a fresh node', () => {
    expect(staleMessage({ name: 'n1', stale: false, refused: false, containerdConnected: true, lastReportAt: '2026-12-01T10:02:58Z' }, now)).toBeNull();
  });
  it('says how long a stale node has been silent', () => {
    expect(
      staleMessage({ name: 'worker-3', stale: true, refused: false, containerdConnected: true, lastReportAt: '2026-12-01T10:00:00Z' }, now),
    ).toBe('no fresh data from node worker-3 for 3m: its agent is not reporting');
  });
  it('says why reports are refused', () => {
    expect(
      staleMessage(
        { name: 'n2', stale: false, refused: true, refusedReason: 'invalid report: bad digest', containerdConnected: true, lastReportAt: '2026-12-01T10:02:15Z' },
        now,
      ),
    ).toBe('no fresh data from node n2 for 45s: its reports are refused (invalid report: bad digest)');
  });
  it('handles a node never heard from', () => {
    expect(staleMessage({ name: 'n3', stale: true, refused: true, containerdConnected: false }, now)).toBe(
      'no data from node n3 yet: its reports are refused (no reason given)',
    );
  });
});

describe('formatSince', () => {
  it.each([
    [0, '0s'],
    [59.9, '59s'],
    [180, '3m'],
    [7200, '2h'],
    [200000, '2d'],
    [-5, '0s'],
  ])('%d -> %s', (s, want) => expect(formatSince(s)).toBe(want));
});
