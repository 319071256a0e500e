// The live connection to GET /api/v1/events (docs/architecture.md): an EventSource whose
// messages are buffered and handed over once per animation frame, so a burst of events for
// 1,000 pulls costs one React render, not one per event.

import { useEffect, useReducer, useState } from 'react';
import { eventSeq, type PullEvent, type PullList } from './api';
import { applyMessages, initialPullsState, type PullsState, type StreamMessage } from './reducer';

export type ConnState = 'connecting' | 'live' | 'reconnecting';

/** Relative, never "/api/...": the UI may be served under the apiserver's proxy prefix. */
export const EVENTS_URL = 'api/v1/events';

export interface StreamOptions {
  onMessages: (msgs: StreamMessage[]) => void;
  onConn: (c: ConnState) => void;
  url?: string;
  /** Injected by tests. */
  EventSource?: typeof EventSource;
  /** First delay before reopening a stream the browser gave up on; doubles up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

export interface PullStream {
  close(): void;
}

// EventSource.CLOSED, spelled out so an injected fake needs no static constants.
const CLOSED = 2;

export function openPullStream(opts: StreamOptions): PullStream {
  const ES = opts.EventSource ?? globalThis.EventSource;
  const url = opts.url ?? EVENTS_URL;
  const baseBackoff = opts.backoffMs ?? 1000;
  const maxBackoff = opts.maxBackoffMs ?? 30000;

  let es: EventSource | null = null;
  let closed = false;
  let backoff = baseBackoff;
  let reopenTimer: ReturnType<typeof setTimeout> | undefined;
  // Id of the last event or snapshot received ("epoch-seq"): where a reopened stream
  // resumes. The server answers an id of another epoch (it restarted) with a snapshot.
  let lastId = '';

  let buffer: StreamMessage[] = [];
  let raf: number | undefined;
  let flushTimer: ReturnType<typeof setTimeout> | undefined;

  const flush = () => {
    if (raf !== undefined) cancelAnimationFrame(raf);
    clearTimeout(flushTimer);
    raf = flushTimer = undefined;
    if (buffer.length === 0 || closed) return;
    const msgs = buffer;
    buffer = [];
    opts.onMessages(msgs);
  };

  const enqueue = (m: StreamMessage) => {
    // Everything before a snapshot is replaced by it: drop it rather than apply it.
    if (m.kind === 'snapshot') buffer = [];
    buffer.push(m);
    if (raf !== undefined || flushTimer !== undefined) return;
    if (typeof requestAnimationFrame === 'function') raf = requestAnimationFrame(flush);
    // Background tabs get no animation frames; the timer keeps the buffer from growing
    // without bound there (browsers run it about once a second).
    flushTimer = setTimeout(flush, 250);
  };

  const onSnapshot = (e: MessageEvent) => {
    let list: PullList;
    try {
      list = JSON.parse(e.data);
    } catch {
      console.warn('pulltrace: bad snapshot', e.data);
      return;
    }
    // The server gives every snapshot the id of the last event it covers; one without an
    // id would leave the browser's lastEventId of an earlier connection, so it resets.
    lastId = eventSeq(e.lastEventId) === undefined ? '' : e.lastEventId;
    opts.onConn('live');
    enqueue({ kind: 'snapshot', pulls: Array.isArray(list?.pulls) ? list.pulls : [] });
  };

  const onEvent = (e: MessageEvent) => {
    let event: PullEvent;
    try {
      event = JSON.parse(e.data);
    } catch {
      console.warn('pulltrace: bad event', e.type, e.data);
      return;
    }
    if (!event || typeof event.type !== 'string') return; // not a PullEvent
    const id = eventSeq(e.lastEventId);
    if (id !== undefined) lastId = e.lastEventId;
    enqueue({ kind: 'event', id, event });
  };

  const open = () => {
    if (closed) return;
    // After the browser gave up, resume where we were; the server replays what is still
    // in its window or starts over with a snapshot.
    const u = lastId !== '' ? `${url}${url.includes('?') ? '&' : '?'}lastEventId=${encodeURIComponent(lastId)}` : url;
    const src = new ES(u);
    es = src;
    src.addEventListener('open', () => {
      backoff = baseBackoff;
      opts.onConn('live');
    });
    src.addEventListener('error', () => {
      if (closed || es !== src) return;
      opts.onConn('reconnecting');
      // CONNECTING: the browser retries by itself, sending Last-Event-ID. CLOSED: it gave
      // up (an HTTP error status, a wrong content type), so we retry, backing off.
      if (src.readyState === CLOSED) {
        src.close();
        es = null;
        reopenTimer = setTimeout(open, backoff);
        backoff = Math.min(backoff * 2, maxBackoff);
      }
    });
    // The snapshot is a named event; PullEvents are plain messages, their type inside.
    src.addEventListener('snapshot', onSnapshot as EventListener);
    src.addEventListener('message', onEvent as EventListener);
  };

  opts.onConn('connecting');
  open();

  return {
    close() {
      closed = true;
      clearTimeout(reopenTimer);
      if (raf !== undefined) cancelAnimationFrame(raf);
      clearTimeout(flushTimer);
      es?.close();
      es = null;
      buffer = [];
    },
  };
}

/** The pulls and the connection state, live from the server. */
export function usePullStream(): { state: PullsState; conn: ConnState } {
  const [state, dispatch] = useReducer(applyMessages, initialPullsState);
  const [conn, setConn] = useState<ConnState>('connecting');
  useEffect(() => {
    const s = openPullStream({ onMessages: dispatch, onConn: setConn });
    return () => s.close();
  }, []);
  return { state, conn };
}
