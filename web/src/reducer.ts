// The client's copy of the server's pulls, built from the SSE stream of GET /api/v1/events.
//
// Messages are applied in batches (one per animation frame, see stream.ts), so the reducer
// copies the map once per batch, not once per event, and only pulls an event touched get a
// new object: memoized rows of untouched pulls do not re-render.

import type { Layer, Pull, PullEvent } from './api';

export type StreamMessage =
  | { kind: 'snapshot'; pulls: Pull[] }
  // id is the SSE `id:`; undefined when the server sent none (then order cannot be checked).
  | { kind: 'event'; id: number | undefined; event: PullEvent };

export interface PullsState {
  pulls: ReadonlyMap<string, Pull>;
  /** SSE id of the last applied event; 0 after a snapshot until the next event. */
  lastId: number;
  /** Whether a snapshot has arrived: before that "no pulls" means "don't know yet". */
  loaded: boolean;
}

export const initialPullsState: PullsState = { pulls: new Map(), lastId: 0, loaded: false };

/**
 * Go encodes a nil slice as null; the contract says arrays, but one bad producer must not
 * crash every row that iterates them.
 */
export function normalizePull(p: Pull): Pull {
  if (Array.isArray(p.pods) && Array.isArray(p.layers)) return p;
  return { ...p, pods: Array.isArray(p.pods) ? p.pods : [], layers: Array.isArray(p.layers) ? p.layers : [] };
}

/** Replaces (by digest) or appends the layer an event names. */
function withLayer(p: Pull, layer: Layer): Pull {
  const i = p.layers.findIndex((l) => l.digest === layer.digest);
  const layers = p.layers.slice();
  if (i >= 0) layers[i] = layer;
  else layers.push(layer);
  return { ...p, layers };
}

export function applyMessages(state: PullsState, msgs: readonly StreamMessage[]): PullsState {
  if (msgs.length === 0) return state;
  let pulls: Map<string, Pull> | null = null; // copied on first change
  let { lastId, loaded } = state;
  const mutable = () => (pulls ??= new Map(state.pulls));

  for (const m of msgs) {
    if (m.kind === 'snapshot') {
      pulls = new Map();
      for (const p of m.pulls ?? []) if (p && p.id) pulls.set(p.id, normalizePull(p));
      // Resume ordering from scratch: after a snapshot the server sends only newer events,
      // and if it restarted its ids began again at 1, which must not look like duplicates.
      lastId = 0;
      loaded = true;
      continue;
    }
    const { id, event } = m;
    if (id !== undefined) {
      // A replay after reconnecting can repeat events we already hold.
      if (id <= lastId) continue;
      lastId = id;
    }
    const p = event?.pull;
    if (!p || !p.id) continue;
    switch (event.type) {
      case 'pull.removed':
        mutable().delete(p.id);
        break;
      case 'pull.queued':
      case 'pull.started':
      case 'pull.progress':
      case 'pull.stalled':
      case 'pull.resumed':
      case 'pull.completed':
      case 'pull.cached':
      case 'pull.failed':
        mutable().set(p.id, normalizePull(p));
        break;
      case 'layer.started':
      case 'layer.progress':
      case 'layer.completed': {
        // The event's pull is a summary without layers (PullEvent.Apply in Go): its
        // figures are current, the layers held are kept and the event's layer replaces
        // the one with its digest.
        const held = (pulls ?? state.pulls).get(p.id);
        const np = normalizePull({ ...p, layers: held?.layers ?? [] });
        mutable().set(p.id, event.layer ? withLayer(np, event.layer) : np);
        break;
      }
      default:
      // Unknown types are ignored, as the v1 contract asks of clients.
    }
  }
  if (pulls === null && lastId === state.lastId && loaded === state.loaded) return state;
  return { pulls: pulls ?? state.pulls, lastId, loaded };
}

/** Newest first, like GET /api/v1/pulls; the id breaks ties so the order is stable. */
export function sortPulls(pulls: Iterable<Pull>): Pull[] {
  // Parse each start time once, not once per comparison: this runs every frame.
  const keyed = Array.from(pulls, (p) => ({ p, t: Date.parse(p.startedAt) || 0 }));
  keyed.sort((a, b) => b.t - a.t || (a.p.id < b.p.id ? -1 : a.p.id > b.p.id ? 1 : 0));
  return keyed.map((k) => k.p);
}
