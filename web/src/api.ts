// TypeScript mirror of pkg/api/types.go, field for field: same JSON names, and a field is
// optional (`?`) exactly where Go has omitempty or a pointer. Times are RFC 3339 strings.
// Keep one field per line: tests compare this file with the Go definition.

export const SCHEMA_VERSION = 'v1';

export type PullState = 'active' | 'completed' | 'cached' | 'failed' | 'stalled' | 'queued';

export const PULL_STATES: readonly PullState[] = [
  'active',
  'queued',
  'stalled',
  'failed',
  'completed',
  'cached',
];

export type LayerState = 'waiting' | 'downloading' | 'done' | 'exists' | 'failed';

export const LAYER_STATES: readonly LayerState[] = ['waiting', 'downloading', 'done', 'exists', 'failed'];

/** Whether no more bytes will arrive for a pull in this state (PullState.Finished in Go). */
export function pullFinished(s: PullState): boolean {
  return s === 'completed' || s === 'cached' || s === 'failed';
}

export interface PodRef {
  namespace: string;
  podName: string;
  container: string;
  /** The pod's workload: Deployment (through its ReplicaSet), DaemonSet, StatefulSet, Job. */
  ownerKind?: string;
  ownerName?: string;
}

/** One blob of a pull. `digest` has no containerd "layer-" prefix. */
export interface Layer {
  digest: string;
  mediaType?: string;
  totalBytes: number;
  downloadedBytes: number;
  state: LayerState;
}

/** One image being pulled on one node. Byte counts are compressed bytes. */
export interface Pull {
  id: string;
  nodeName: string;
  imageRef: string;
  repository?: string;
  manifestDigest?: string;
  indexDigest?: string;
  state: PullState;
  totalBytes: number;
  downloadedBytes: number;
  bytesPerSec: number;
  etaSeconds?: number;
  percent: number;
  layerCount: number;
  layersDone: number;
  totalKnown: boolean;
  startedAt: string;
  completedAt?: string;
  updatedAt: string;
  error?: string;
  backOff?: boolean;
  pods: PodRef[];
  layers: Layer[];
}

export type EventType =
  | 'pull.queued'
  | 'pull.started'
  | 'pull.progress'
  | 'pull.stalled'
  | 'pull.resumed'
  | 'pull.completed'
  | 'pull.cached'
  | 'pull.failed'
  | 'layer.started'
  | 'layer.progress'
  | 'layer.completed'
  | 'pull.removed';

/** Every event type, in lifecycle order (EventTypes in Go). */
export const EVENT_TYPES: readonly EventType[] = [
  'pull.queued',
  'pull.started',
  'pull.progress',
  'pull.stalled',
  'pull.resumed',
  'pull.completed',
  'pull.cached',
  'pull.failed',
  'layer.started',
  'layer.progress',
  'layer.completed',
  'pull.removed',
];

/**
 * One SSE data payload of GET /api/v1/events: a plain message (no `event:` name), its type
 * inside. layer.* events carry the pull's summary (no `layers`) and the one layer.
 */
export interface PullEvent {
  schemaVersion: string;
  timestamp: string;
  type: EventType;
  nodeName: string;
  pull: Pull;
  layer?: Layer;
}

/** A full snapshot of one node's pulls, POSTed by its agent to /api/v1/report. */
export interface AgentReport {
  schemaVersion: string;
  nodeName: string;
  agentVersion?: string;
  agentId: string;
  sequence: number;
  timestamp: string;
  heartbeat?: boolean;
  containerdConnected: boolean;
  pulls: Pull[];
}

/** The server's answer to an accepted report. */
export interface ReportResponse {
  resync?: boolean;
  rejected?: PullRejection[];
  rejectedCount?: number;
  ignored?: string;
}

/** One pull the server left out of an applied report. */
export interface PullRejection {
  index: number;
  id?: string;
  error: string;
}

/** Body of GET /api/v1/pulls and data of the SSE `snapshot` event. */
export interface PullList {
  schemaVersion: string;
  metadata?: ListMeta;
  pulls: Pull[];
}

/** Pages a list as Kubernetes does: pass `continue` back with the same filter. */
export interface ListMeta {
  continue?: string;
  remainingItemCount?: number;
}

/**
 * The sequence number of an SSE id "epoch-seq" (EventID in Go), or undefined when the id is
 * not one. Sequence numbers order events within one server process; a new process sends a
 * snapshot first, which resets the order.
 */
export function eventSeq(id: string): number | undefined {
  const i = id.lastIndexOf('-');
  if (i <= 0) return undefined;
  const tail = id.slice(i + 1);
  if (!/^[0-9]+$/.test(tail)) return undefined;
  return Number(tail);
}

/** How fresh the server's data about one node is (GET /api/v1/nodes). */
export interface NodeStatus {
  name: string;
  lastReportAt?: string;
  stale: boolean;
  refused: boolean;
  refusedAt?: string;
  refusedReason?: string;
  containerdConnected: boolean;
}

/** Body of GET /api/v1/nodes. */
export interface NodeList {
  nodes: NodeStatus[];
}

/** Every JSON error body. */
export interface ErrorResponse {
  error: string;
}

/** Body of GET /api/v1/version. */
export interface ServerVersion {
  version: string;
  schemaVersion?: string;
}

/** How pulls are grouped across nodes (GroupBy in Go). */
export type GroupBy = 'image' | 'workload';

export const GROUP_BYS: readonly GroupBy[] = ['image', 'workload'];

/** A workload: the owner of the pods a group's pulls serve. */
export interface WorkloadRef {
  namespace: string;
  kind: string;
  name: string;
}

/** A group's pulls (one per node and image) by state. */
export interface GroupCounts {
  active: number;
  queued: number;
  stalled: number;
  failed: number;
  completed: number;
  cached: number;
}

/** One node's pull within a group, as the slowest lists show it. */
export interface GroupNode {
  nodeName: string;
  pullId: string;
  imageRef: string;
  state: PullState;
  percent: number;
  bytesPerSec: number;
  downloadedBytes: number;
  totalBytes: number;
  etaSeconds?: number;
  pods: PodRef[];
}

/** The failed pulls of a group that share one error text. */
export interface GroupFailure {
  reason: string;
  count: number;
  nodes: string[];
}

/** The pulls of one image, or one workload, across nodes. */
export interface Group {
  key: string;
  by: GroupBy;
  workload?: WorkloadRef;
  images: string[];
  nodes: number;
  counts: GroupCounts;
  downloadedBytes: number;
  totalBytes: number;
  bytesPerSec: number;
  percent: number;
  etaSeconds?: number;
  slowestByPercent: GroupNode[];
  slowestByRate: GroupNode[];
  failures: GroupFailure[];
  startedAt: string;
  finishedAt?: string;
}

/** Body of GET /api/v1/groups and data of the group stream's `snapshot` event. */
export interface GroupList {
  schemaVersion: string;
  by: GroupBy;
  groups: Group[];
}

export type GroupEventType = 'group.updated' | 'group.removed';

export const GROUP_EVENT_TYPES: readonly GroupEventType[] = ['group.updated', 'group.removed'];

/** One data message of GET /api/v1/groups/events: a group's summary, at a bounded rate. */
export interface GroupEvent {
  schemaVersion: string;
  timestamp: string;
  type: GroupEventType;
  group: Group;
}
