import { memo, type KeyboardEvent, type MouseEvent } from 'react';
import type { Layer, Pull } from './api';
import { useNow } from './clock';
import {
  DASH,
  clampPercent,
  formatAge,
  formatBytes,
  formatEta,
  formatPercent,
  formatRate,
  shortDigest,
  shortMediaType,
} from './format';
import { emptyFilters, formatFilters } from './filters';

export const COLUMN_COUNT = 9;

function Age({ since }: { since: string }) {
  const now = useNow();
  return <>{formatAge(since, now)}</>;
}

function Bar({ percent, label, indeterminate }: { percent: number; label: string; indeterminate?: boolean }) {
  const pc = clampPercent(percent);
  return (
    <div
      className={`bar${indeterminate ? ' bar-unknown' : ''}`}
      role="progressbar"
      aria-label={label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.round(pc * 10) / 10}
    >
      {/* transform, not width: scaling composites without relayout of 1,000 rows */}
      <div className="fill" style={{ transform: `scaleX(${pc / 100})` }} />
    </div>
  );
}

function layerPercent(l: Layer): number {
  if (l.state === 'done' || l.state === 'exists') return 100;
  return l.totalBytes > 0 ? (Math.min(l.downloadedBytes, l.totalBytes) * 100) / l.totalBytes : 0;
}

function LayerTable({ pull }: { pull: Pull }) {
  if (pull.layers.length === 0) {
    return (
      <p className="layers-empty">
        {pull.state === 'queued' ? 'Queued: no layers until the node starts this pull.' : 'No layers known yet.'}
      </p>
    );
  }
  return (
    <table className="layers">
      <thead>
        <tr>
          <th scope="col">Layer</th>
          <th scope="col">Type</th>
          <th scope="col" className="num">Size</th>
          <th scope="col">Progress</th>
          <th scope="col">State</th>
        </tr>
      </thead>
      <tbody>
        {pull.layers.map((l) => (
          <tr key={l.digest} className={`layer layer-${l.state}`}>
            <td className="digest" title={l.digest}>
              {shortDigest(l.digest)}
            </td>
            <td className="mediatype" title={l.mediaType}>
              {shortMediaType(l.mediaType)}
            </td>
            <td className="num lsize">
              {l.state === 'downloading' || l.state === 'failed'
                ? `${formatBytes(l.downloadedBytes)} / ${formatBytes(l.totalBytes)}`
                : formatBytes(l.totalBytes)}
            </td>
            <td className="lbar">
              <Bar percent={layerPercent(l)} label={`layer ${shortDigest(l.digest)}`} />
            </td>
            <td className="lstate-cell">
              <span className="lstate">{l.state}</span>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export interface PullRowProps {
  pull: Pull;
  expanded: boolean;
  onToggle: (id: string) => void;
  onPod: (namespace: string, pod: string) => void;
}

/**
 * One pull: a focusable summary row, and its layers when expanded. Memoized: the reducer
 * gives a pull a new object only when an event changed it, so unchanged rows skip render.
 */
export const PullRow = memo(function PullRow({ pull: p, expanded, onToggle, onPod }: PullRowProps) {
  const active = p.state === 'active' || p.state === 'stalled';
  const queued = p.state === 'queued';
  const toggle = () => onToggle(p.id);
  const onKeyDown = (e: KeyboardEvent) => {
    // Only the row itself: Enter on a pod link inside it follows the link.
    if (e.target !== e.currentTarget) return;
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault(); // Space would scroll the page
      toggle();
    }
  };
  const podClick = (e: MouseEvent, ns: string, pod: string) => {
    e.stopPropagation();
    // Plain clicks filter in place; modified clicks open the link's view in a new tab.
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    onPod(ns, pod);
  };
  const pct = p.state === 'completed' || p.state === 'cached' ? 100 : p.percent;

  return (
    // A div grid, not a table: each pull is its own layout container, so the browser skips
    // layout and paint of the rows scrolled out of view (content-visibility in styles.css).
    <div className={`pull state-${p.state}${expanded ? ' expanded' : ''}`}>
      <div
        className="grid-row pull-row"
        role="row"
        tabIndex={0}
        aria-expanded={expanded}
        data-pull-id={p.id}
        data-image={p.imageRef}
        data-state={p.state}
        onClick={toggle}
        onKeyDown={onKeyDown}
      >
        <div role="cell" className="c-image">
          <span className="chevron" aria-hidden="true" />
          <span className="image" title={p.imageRef}>
            {p.imageRef ? breakable(p.imageRef) : DASH}
          </span>
          {/* Shown only where the node column is hidden (medium widths, phones). */}
          <span className="image-node">{p.nodeName}</span>
          {p.error && (
            <div className="error" role="note">
              {p.error}
            </div>
          )}
          {queued && (
            <div className="hint">
              waiting for the node to start this pull ({p.pods.length} pod{p.pods.length === 1 ? '' : 's'})
            </div>
          )}
        </div>
        <div role="cell" className="c-node" data-label="node" title={p.nodeName}>
          {p.nodeName}
        </div>
        <div role="cell" className="c-pods" data-label="pods">
          {p.pods.length === 0
            ? DASH
            : p.pods.map((r) => (
                <a
                  key={`${r.namespace}/${r.podName}/${r.container}`}
                  className="pod"
                  href={`?${formatFilters({ ...emptyFilters, namespace: r.namespace, pod: r.podName })}`}
                  title={`filter: pod ${r.namespace}/${r.podName}${r.container ? ` (container ${r.container})` : ''}`}
                  onClick={(e) => podClick(e, r.namespace, r.podName)}
                >
                  {r.namespace}/{r.podName}
                </a>
              ))}
        </div>
        <div role="cell" className="c-state">
          <span className={`badge badge-${p.state}`}>{p.state}</span>
        </div>
        <div role="cell" className="c-progress">
          <Bar percent={pct} label={`pull ${p.imageRef}`} indeterminate={!p.totalKnown && !queued && active} />
          <span className="pct">{queued ? DASH : formatPercent(pct)}</span>
        </div>
        <div role="cell" className="c-bytes num" data-label="downloaded">
          {queued ? DASH : `${formatBytes(p.downloadedBytes)} / ${p.totalKnown || p.totalBytes > 0 ? formatBytes(p.totalBytes) : '?'}`}
        </div>
        <div role="cell" className="c-speed num" data-label="speed">
          {active ? formatRate(p.bytesPerSec) : DASH}
        </div>
        <div role="cell" className="c-eta num" data-label="eta">
          {active ? formatEta(p.etaSeconds) : DASH}
        </div>
        <div role="cell" className="c-age num" data-label="age" title={p.startedAt}>
          <Age since={p.startedAt} />
        </div>
      </div>
      {expanded && (
        <div className="layers-panel" role="row">
          <div role="cell" aria-colspan={COLUMN_COUNT}>
            <p className="details">
              <code>{p.imageRef}</code>
              {p.manifestDigest && (
                <>
                  {' · manifest '}
                  <code title={p.manifestDigest}>{shortDigest(p.manifestDigest)}</code>
                </>
              )}
              {` · ${p.layersDone}/${p.layerCount} layers · started ${new Date(p.startedAt).toLocaleString()}`}
              {p.completedAt && ` · finished ${new Date(p.completedAt).toLocaleString()}`}
            </p>
            <LayerTable pull={p} />
          </div>
        </div>
      )}
    </div>
  );
});

// breakable lets a long reference wrap after "/" and ":" (registry, path, tag) instead of in
// the middle of a name: a zero-width space is a break opportunity that copies as nothing.
function breakable(ref: string): string {
  return ref.replace(/([/:@])/g, '$1\u200b');
}
