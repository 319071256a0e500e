// Display formatting. Every function is pure and total: bad input (NaN, negative, missing)
// gives a dash rather than "NaN MiB", because numbers come straight off the wire.

export const DASH = '—';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** Binary units, one decimal from KiB up: 0 B, 512 B, 1.5 KiB, 12.0 MiB, 1.2 GiB. */
export function formatBytes(n: number | undefined | null): string {
  if (n == null || !Number.isFinite(n) || n < 0) return DASH;
  if (n < 1024) return `${Math.round(n)} B`;
  let v = n;
  let u = 0;
  // Step up while the value would print as 1024.0 or more, so 1048575 B reads "1.0 MiB"
  // rather than "1024.0 KiB".
  while (v >= 1023.95 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${UNITS[u]}`;
}

/** Bytes per second, e.g. "3.4 MiB/s". */
export function formatRate(bytesPerSec: number | undefined | null): string {
  const s = formatBytes(bytesPerSec);
  return s === DASH ? s : `${s}/s`;
}

const pad2 = (n: number) => String(n).padStart(2, '0');

/**
 * A duration as its two largest units, seconds always two digits once minutes show, so the
 * width barely changes from tick to tick: 7s, 1m 05s, 2h 03m, 3d 04h.
 */
export function formatDuration(seconds: number | undefined | null): string {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return DASH;
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad2(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad2(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${pad2(Math.floor((s % 86400) / 3600))}h`;
}

/** Time left; absent (no rate known, or finished) is a dash. */
export function formatEta(etaSeconds: number | undefined | null): string {
  return formatDuration(etaSeconds);
}

/** Time since an RFC 3339 instant, relative to `nowMs`. Clock skew never shows negative. */
export function formatAge(since: string | undefined | null, nowMs: number): string {
  if (!since) return DASH;
  const t = Date.parse(since);
  if (Number.isNaN(t)) return DASH;
  return formatDuration(Math.max(0, (nowMs - t) / 1000));
}

/** Percent with one decimal, clamped to 0-100. */
export function formatPercent(p: number | undefined | null): string {
  return `${clampPercent(p).toFixed(1)}%`;
}

export function clampPercent(p: number | undefined | null): number {
  if (p == null || !Number.isFinite(p)) return 0;
  return Math.min(100, Math.max(0, p));
}

/**
 * The 12 hex characters people recognise from `docker images`: strips containerd's
 * "layer-" ref prefix and the algorithm ("sha256:").
 */
export function shortDigest(digest: string | undefined | null): string {
  if (!digest) return DASH;
  let d = digest.startsWith('layer-') ? digest.slice('layer-'.length) : digest;
  const colon = d.indexOf(':');
  if (colon >= 0) d = d.slice(colon + 1);
  return d.slice(0, 12);
}

/**
 * The part of a media type that tells layers apart: "tar+gzip", "tar+zstd", "tar",
 * "config", "manifest", "index". Docker's "tar.gzip" is spelled the OCI way.
 */
export function shortMediaType(mt: string | undefined | null): string {
  if (!mt) return DASH;
  const m = mt.toLowerCase();
  const diff = /(?:\.layer(?:\.nondistributable)?\.v1|\.rootfs(?:\.foreign)?\.diff)\.(.+)$/.exec(m);
  if (diff) return diff[1].replace(/^tar\./, 'tar+');
  if (m.endsWith('.image.layer.v1') || m.endsWith('.rootfs.diff')) return 'tar';
  if (m.includes('image.config') || m.includes('container.image')) return 'config';
  if (m.includes('manifest.list') || m.includes('image.index')) return 'index';
  if (m.includes('manifest')) return 'manifest';
  const slash = m.lastIndexOf('/');
  return slash >= 0 ? m.slice(slash + 1) : m;
}
