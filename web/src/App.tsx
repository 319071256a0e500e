import { useCallback, useEffect, useMemo, useState, type ReactNode } from 'react';
import { PULL_STATES, type Pull, type PullState } from './api';
import { emptyFilters, filterPulls, filtersURL, isEmpty, parseFilters, type Filters } from './filters';
import { formatRate } from './format';
import { COLUMN_COUNT, PullRow } from './PullRow';
import { sortPulls } from './reducer';
import { useNow } from './clock';
import { staleMessage, useNodes } from './nodes';
import { usePullStream, type ConnState } from './stream';

const CONN_LABEL: Record<ConnState, string> = {
  connecting: 'connecting',
  live: 'live',
  reconnecting: 'reconnecting',
};

function Header({
  pulls,
  conn,
  filters,
  setState,
}: {
  pulls: readonly Pull[];
  conn: ConnState;
  filters: Filters;
  setState: (s: PullState | '') => void;
}) {
  const { counts, throughput } = useMemo(() => {
    const counts = Object.fromEntries(PULL_STATES.map((s) => [s, 0])) as Record<PullState, number>;
    let throughput = 0;
    for (const p of pulls) {
      if (p.state in counts) counts[p.state]++;
      if (p.state === 'active' && Number.isFinite(p.bytesPerSec)) throughput += p.bytesPerSec;
    }
    return { counts, throughput };
  }, [pulls]);

  return (
    <header className="top">
      <div className="brand">
        <h1>Pulltrace</h1>
        <span className={`conn conn-${conn}`} role="status" aria-live="polite">
          <span className="dot" aria-hidden="true" />
          {CONN_LABEL[conn]}
        </span>
      </div>
      <div className="stats" aria-label="pulls by state">
        {PULL_STATES.map((s) => (
          <button
            key={s}
            type="button"
            className={`chip chip-${s}`}
            aria-pressed={filters.state === s}
            title={filters.state === s ? 'show all states' : `show only ${s} pulls`}
            onClick={() => setState(filters.state === s ? '' : s)}
          >
            {s} <b className="count">{counts[s]}</b>
          </button>
        ))}
        <span className="stat">
          total <b className="count">{pulls.length}</b>
        </span>
        <span className="stat" title="sum of the speeds of active pulls">
          throughput <b className="rate">{formatRate(throughput)}</b>
        </span>
      </div>
    </header>
  );
}

/** A plain warning per node whose data is not fresh: stopped agent, refused reports. */
function StaleNodes() {
  const nodes = useNodes();
  const now = useNow();
  const stale = nodes.flatMap((n) => {
    const msg = staleMessage(n, now);
    return msg ? [{ name: n.name, msg }] : [];
  });
  if (stale.length === 0) return null;
  return (
    <div className="stale-nodes" role="alert">
      {stale.map((s) => (
        <p key={s.name}>{s.msg}</p>
      ))}
    </div>
  );
}

/** Distinct non-empty values, sorted, for the filter inputs' suggestion lists. */
function distinct(values: Iterable<string>): string[] {
  return Array.from(new Set(values))
    .filter(Boolean)
    .sort();
}

function FilterBar({
  pulls,
  filters,
  onChange,
  shown,
}: {
  pulls: readonly Pull[];
  filters: Filters;
  onChange: (f: Filters) => void;
  shown: number;
}) {
  const options = useMemo(
    () => ({
      namespace: distinct(pulls.flatMap((p) => p.pods.map((r) => r.namespace))),
      node: distinct(pulls.map((p) => p.nodeName)),
      pod: distinct(pulls.flatMap((p) => p.pods.map((r) => r.podName))),
    }),
    [pulls],
  );
  const text = (key: 'namespace' | 'node' | 'pod' | 'image', placeholder: string, list?: string[]) => (
    <label className="filter">
      <span>{key}</span>
      <input
        type="search"
        name={key}
        value={filters[key]}
        placeholder={placeholder}
        list={list ? `opts-${key}` : undefined}
        autoComplete="off"
        spellCheck={false}
        onChange={(e) => onChange({ ...filters, [key]: e.target.value })}
      />
      {list && (
        <datalist id={`opts-${key}`}>
          {list.map((v) => (
            <option key={v} value={v} />
          ))}
        </datalist>
      )}
    </label>
  );
  return (
    <form className="filters" role="search" onSubmit={(e) => e.preventDefault()}>
      {text('namespace', 'any', options.namespace)}
      {text('node', 'any', options.node)}
      {text('pod', 'any', options.pod)}
      {text('image', 'substring')}
      <label className="filter">
        <span>state</span>
        <select
          name="state"
          value={filters.state}
          onChange={(e) => onChange({ ...filters, state: e.target.value as PullState | '' })}
        >
          <option value="">any</option>
          {PULL_STATES.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </label>
      <div className="filter-summary">
        <span className="shown">
          {shown} of {pulls.length} shown
        </span>
        {!isEmpty(filters) && (
          <button type="button" className="clear" onClick={() => onChange(emptyFilters)}>
            clear filters
          </button>
        )}
      </div>
    </form>
  );
}

export function App() {
  const { state, conn } = usePullStream();
  const [filters, setFilters] = useState<Filters>(() => parseFilters(window.location.search));
  const [expanded, setExpanded] = useState<ReadonlySet<string>>(() => new Set());

  // The URL is the view: replaceState, not pushState, so typing does not fill the history.
  useEffect(() => {
    const url = filtersURL(filters, window.location);
    if (url !== window.location.pathname + window.location.search + window.location.hash) {
      window.history.replaceState(window.history.state, '', url);
    }
  }, [filters]);

  const all = useMemo(() => sortPulls(state.pulls.values()), [state.pulls]);
  const shown = useMemo(() => filterPulls(all, filters), [all, filters]);

  // Stable callbacks, so the memoized rows are not re-rendered by a new function identity.
  const onToggle = useCallback((id: string) => {
    setExpanded((prev) => {
      const next = new Set(prev);
      if (!next.delete(id)) next.add(id);
      return next;
    });
  }, []);
  const onPod = useCallback((namespace: string, pod: string) => {
    setFilters((f) => ({ ...f, namespace, pod }));
  }, []);
  const setState = useCallback((s: PullState | '') => setFilters((f) => ({ ...f, state: s })), []);

  let empty: ReactNode = null;
  if (!state.loaded) empty = conn === 'reconnecting' ? 'Cannot reach the server; retrying…' : 'Connecting…';
  else if (all.length === 0) empty = 'No pulls right now. Image pulls appear here as soon as a node starts one.';
  else if (shown.length === 0)
    empty = (
      <>
        No pulls match these filters.{' '}
        <button type="button" className="linklike" onClick={() => setFilters(emptyFilters)}>
          Clear filters
        </button>
      </>
    );

  return (
    <div className="app">
      <Header pulls={all} conn={conn} filters={filters} setState={setState} />
      <StaleNodes />
      <FilterBar pulls={all} filters={filters} onChange={setFilters} shown={shown.length} />
      <main>
        <div className="pulls" role="table" aria-label="image pulls" aria-rowcount={shown.length + 1}>
          <div className="pulls-head" role="rowgroup">
            <div className="grid-row head-row" role="row">
              <div role="columnheader" className="c-image">
                Image
              </div>
              <div role="columnheader" className="c-node">
                Node
              </div>
              <div role="columnheader" className="c-pods">
                Pods
              </div>
              <div role="columnheader" className="c-state">
                State
              </div>
              <div role="columnheader" className="c-progress">
                Progress
              </div>
              <div role="columnheader" className="c-bytes num">
                Downloaded
              </div>
              <div role="columnheader" className="c-speed num">
                Speed
              </div>
              <div role="columnheader" className="c-eta num">
                ETA
              </div>
              <div role="columnheader" className="c-age num">
                Age
              </div>
            </div>
          </div>
          <div className="pulls-body" role="rowgroup">
            {shown.map((p) => (
              <PullRow key={p.id} pull={p} expanded={expanded.has(p.id)} onToggle={onToggle} onPod={onPod} />
            ))}
            {empty && (
              <div className="empty" role="row">
                <div role="cell" aria-colspan={COLUMN_COUNT}>
                  {empty}
                </div>
              </div>
            )}
          </div>
        </div>
      </main>
    </div>
  );
}
