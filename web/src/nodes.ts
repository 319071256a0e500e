// Freshness of each node's data (GET /api/v1/nodes): a node whose agent stopped reporting,
// or whose reports the server refuses, must not look like a node where nothing happens.

import { useEffect, useState } from 'react';
import type { NodeList, NodeStatus } from './api';

export const NODES_URL = 'api/v1/nodes';

/** Coarse age for a warning: 45s, 3m, 2h, 4d. */
export function formatSince(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/**
 * The warning for one node, or null when its data is fresh: the same words as
 * `kubectl pulltrace` (StaleNotice in Go).
 */
export function staleMessage(n: NodeStatus, nowMs: number): string | null {
  if (!n.stale && !n.refused) return null;
  const last = n.lastReportAt ? Date.parse(n.lastReportAt) : NaN;
  let msg = Number.isFinite(last)
    ? `no fresh data from node ${n.name} for ${formatSince((nowMs - last) / 1000)}`
    : `no data from node ${n.name} yet`;
  if (n.refused) msg += `: its reports are refused (${n.refusedReason || 'no reason given'})`;
  else if (n.stale) msg += ': its agent is not reporting';
  return msg;
}

/** Polls the node list; errors keep the last answer (the stream shows the connection state). */
export function useNodes(intervalMs = 5000, fetchFn: typeof fetch = globalThis.fetch): NodeStatus[] {
  const [nodes, setNodes] = useState<NodeStatus[]>([]);
  useEffect(() => {
    let stopped = false;
    const load = async () => {
      try {
        const res = await fetchFn(NODES_URL, { headers: { Accept: 'application/json' } });
        if (!res.ok) return;
        const body = (await res.json()) as NodeList;
        if (!stopped && Array.isArray(body?.nodes)) setNodes(body.nodes);
      } catch {
        // The server is unreachable: the connection badge already says so.
      }
    };
    void load();
    const t = setInterval(load, intervalMs);
    return () => {
      stopped = true;
      clearInterval(t);
    };
  }, [intervalMs, fetchFn]);
  return nodes;
}
