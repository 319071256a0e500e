import { describe, expect, it } from 'vitest';
import {
  DASH,
  formatAge,
  formatBytes,
  formatDuration,
  formatEta,
  formatPercent,
  formatRate,
  shortDigest,
  shortMediaType,
} from './format';

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1, '1 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [1048575, '1.0 MiB'],
    [5 * 1024 * 1024, '5.0 MiB'],
    [1.25 * 1024 ** 3, '1.3 GiB'],
    [3 * 1024 ** 4, '3.0 TiB'],
  ])('%d -> %s', (n, want) => expect(formatBytes(n)).toBe(want));

  it('dashes what is not a byte count', () => {
    for (const v of [undefined, null, NaN, -1, Infinity]) expect(formatBytes(v as number)).toBe(DASH);
  });
});

describe('formatRate', () => {
  it('is bytes per second', () => {
    expect(formatRate(0)).toBe('0 B/s');
    expect(formatRate(2.5 * 1024 * 1024)).toBe('2.5 MiB/s');
    expect(formatRate(undefined)).toBe(DASH);
  });
});

describe('formatDuration / formatEta', () => {
  it.each([
    [0, '0s'],
    [7.4, '7s'],
    [59, '59s'],
    [60, '1m 00s'],
    [65, '1m 05s'],
    [3599, '59m 59s'],
    [3600, '1h 00m'],
    [7380, '2h 03m'],
    [86400 + 4 * 3600, '1d 04h'],
  ])('%d s -> %s', (s, want) => {
    expect(formatDuration(s)).toBe(want);
    expect(formatEta(s)).toBe(want);
  });

  it('dashes an absent ETA', () => {
    expect(formatEta(undefined)).toBe(DASH);
    expect(formatEta(-5)).toBe(DASH);
    expect(formatEta(NaN)).toBe(DASH);
  });
});

describe('formatAge', () => {
  const start = '2026-01-01T00:00:00Z';
  const t0 = Date.parse(start);
  it('counts from the start', () => {
    expect(formatAge(start, t0 + 5_000)).toBe('5s');
    expect(formatAge(start, t0 + 65_000)).toBe('1m 05s');
    expect(formatAge(start, t0 + 2 * 3600_000 + 60_000)).toBe('2h 01m');
  });
  it('never goes negative under clock skew', () => {
    expect(formatAge(start, t0 - 10_000)).toBe('0s');
  });
  it('dashes a missing or bad time', () => {
    expect(formatAge('', t0)).toBe(DASH);
    expect(formatAge('yesterday', t0)).toBe(DASH);
  });
});

describe('formatPercent', () => {
  it('has one decimal and stays in 0-100', () => {
    expect(formatPercent(42.123)).toBe('42.1%');
    expect(formatPercent(100)).toBe('100.0%');
    expect(formatPercent(140)).toBe('100.0%');
    expect(formatPercent(-3)).toBe('0.0%');
    expect(formatPercent(undefined)).toBe('0.0%');
  });
});

describe('shortDigest', () => {
  const hex = '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
  it('strips the algorithm', () => expect(shortDigest(`sha256:${hex}`)).toBe('0123456789ab'));
  it('strips containerd layer- prefix', () => expect(shortDigest(`layer-sha256:${hex}`)).toBe('0123456789ab'));
  it('handles other algorithms and bare hex', () => {
    expect(shortDigest(`sha512:${hex}`)).toBe('0123456789ab');
    expect(shortDigest(hex)).toBe('0123456789ab');
  });
  it('dashes an empty digest', () => expect(shortDigest('')).toBe(DASH));
});

describe('shortMediaType', () => {
  it.each([
    ['application/vnd.oci.image.layer.v1.tar+gzip', 'tar+gzip'],
    ['application/vnd.oci.image.layer.v1.tar+zstd', 'tar+zstd'],
    ['application/vnd.oci.image.layer.v1.tar', 'tar'],
    ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'tar+gzip'],
    ['application/vnd.docker.image.rootfs.diff.tar.gzip', 'tar+gzip'],
    ['application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', 'tar+gzip'],
    ['application/vnd.oci.image.config.v1+json', 'config'],
    ['application/vnd.docker.container.image.v1+json', 'config'],
    ['application/vnd.oci.image.manifest.v1+json', 'manifest'],
    ['application/vnd.docker.distribution.manifest.list.v2+json', 'index'],
    ['application/vnd.oci.image.index.v1+json', 'index'],
    ['application/octet-stream', 'octet-stream'],
  ])('%s -> %s', (mt, want) => expect(shortMediaType(mt)).toBe(want));
  it('dashes a missing type', () => expect(shortMediaType(undefined)).toBe(DASH));
});
