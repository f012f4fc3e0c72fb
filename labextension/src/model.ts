/**
 * The wire model of the REST API (`/tfk8s/api/jobs`), field by field as
 * `tfk8s_jupyter/server/manager.py` (`job_model`, `job_detail`) builds it.
 * Times are Unix seconds (floats); `null` means "not known (yet)".
 */

/** Job phases; the last three are terminal. */
export type JobPhase =
  'pending' | 'running' | 'succeeded' | 'failed' | 'stopped';

/** Replica states as reported by every backend. */
export type ReplicaState =
  | 'pending'
  | 'starting'
  | 'running'
  | 'restarting'
  | 'succeeded'
  | 'failed'
  | 'stopped'
  /** Stopped for good by a scale-down (`PATCH {"workers": N}`); never restarted, its log kept. */
  | 'removed';

/** Number of replicas in each state, e.g. `{running: 3, pending: 1}`. */
export type ReplicaCounts = { [state: string]: number };

/** The short series a list row draws as a sparkline. */
export interface ISparkline {
  /** Metric drawn (`loss` when the job reports it), or null before the first point. */
  metric: string | null;
  /** `step` (per-step points) or `epoch` (only epoch ends were reported), or null. */
  kind: 'step' | 'epoch' | null;
  /** At most 60 values, evenly thinned, always ending with the latest one. */
  values: number[];
}

/** One job in `GET /tfk8s/api/jobs`. */
export interface IJob {
  /** Job name (DNS-1123 label, unique per backend). */
  name: string;
  /** Where it runs: `local` or `kubernetes`. */
  backend: string;
  /** Kubernetes flavor (`native` Jobs or `tfjob`), null for local jobs. */
  flavor: string | null;
  /** `parameter_server`, `multi_worker_mirrored` or `mirrored`. */
  strategy: string;
  /** User who submitted it (the JupyterHub user under JupyterHub). */
  owner: string | null;
  /** Kubernetes namespace, null for local jobs. */
  namespace: string | null;
  /** Current phase. */
  phase: JobPhase;
  /** True once the phase is terminal (succeeded, failed or stopped). */
  done: boolean;
  /** One sentence from the backend: the diagnosis or the error. */
  message: string | null;
  /** When the job was submitted. */
  created: number;
  /** When it reached a terminal phase, null while it runs. */
  finished: number | null;
  /** Replica counts by state. */
  counts: ReplicaCounts;
  /** Total number of replicas (chief, workers, ps). */
  replicas_total: number;
  /** Latest epoch reported by the training cell, counted from 1 as Keras prints it. */
  epoch: number | null;
  /** Latest step reported by the training cell. */
  step: number | null;
  /** Latest value of every numeric metric, e.g. `{loss: 0.12, accuracy: 0.97}`. */
  last_metrics: { [metric: string]: number };
  /** The error the training cell raised, if any. */
  error: string | null;
  /** Where the job came from: notebook and cell, e.g. `forecast.ipynb [7]`; null when not from a notebook. */
  origin: string | null;
  /** The row's sparkline. */
  sparkline: ISparkline;
}

/** A backend that could not be listed (no kubeconfig, API down); its jobs are missing. */
export interface IBackendWarning {
  /** Backend name. */
  backend: string;
  /** One sentence: what is wrong and what to do. */
  message: string;
}

/** `GET /tfk8s/api/jobs`. */
export interface IJobsResponse {
  /** The current user's jobs, newest first. */
  jobs: IJob[];
  /** One entry per backend that failed to answer. */
  warnings: IBackendWarning[];
  /** Backends that were asked. */
  backends: string[];
  /** The user whose jobs these are. */
  owner: string;
  /** The configured `TFK8s` defaults, where "Train this cell on the cluster" starts. */
  defaults?: ITrainOptions;
}

/** One replica in the job detail. */
export interface IReplica {
  /** `chief`, `worker` or `ps`. */
  role: string;
  /** Index within the role. */
  index: number;
  /** `<role>-<index>`, the name logs are asked for. */
  name: string;
  /** Current state. */
  state: ReplicaState;
  /** Restarts so far. */
  restarts: number;
  /** Local process id, null on Kubernetes or before start. */
  pid: number | null;
  /** `host:port` locally, the pod name on Kubernetes. */
  host: string | null;
  /** Exit code once ended. */
  exit_code: number | null;
  /** When the current process/pod started. */
  started: number | null;
  /** One sentence about this replica (why it failed or restarted). */
  message: string | null;
  /** Local: `warm` (a warm pool process became the replica) or `cold` (a new process); null otherwise. */
  launch: string | null;
}

/** One metric series: parallel arrays, at most 2,000 points. */
export interface ISeries {
  /** Step (per-step series) or epoch (per-epoch series). */
  x: number[];
  /** Metric values. */
  y: number[];
}

/** `GET /tfk8s/api/jobs/{name}`: the list model plus detail. */
export interface IJobDetail extends IJob {
  /** Every replica. */
  replicas: IReplica[];
  /** Metric series by kind, then by metric name. */
  series: {
    /** Per-step points. */
    step: { [metric: string]: ISeries };
    /** Per-epoch points (x = epoch counted from 1). */
    epoch: { [metric: string]: ISeries };
  };
  /** Metric points received in total (before downsampling). */
  n_points: number;
  /** Checkpoints written so far. */
  checkpoints: number;
  /** One-line notes from the backend (e.g. that a job without storage loses its artifacts with its pods). */
  notes: string[];
  /** Each resize of the running job, oldest first. */
  history: IResize[];
  /** The settings it was submitted with; `{}` when the backend cannot read them back. */
  spec: IJobSettings;
  /** Whether the job has TensorBoard logs (the job view's TensorBoard button). */
  tensorboard: boolean;
}

/** `POST jobs/<name>/tensorboard`: the job's TensorBoard, started or reused, on 127.0.0.1. */
export interface ITensorBoardResponse {
  name: string;
  /** Where it answers, e.g. `http://127.0.0.1:6006/`. */
  url: string;
  port: number;
  /** Its process (a child of the Jupyter server). */
  pid: number;
  /** Whether it was already running. */
  reused: boolean;
}

/** One resize of a running job (`JobStatus.history`). */
export interface IResize {
  /** When it happened (seconds since the epoch). */
  time: number;
  /** Workers before. */
  from: number;
  /** Workers after. */
  to: number;
  /** `live` (workers stopped, the chief carried on) or `restart`. */
  how: string;
  /** The replicas removed. */
  removed?: string[];
  /** The replicas brought back by a restart of every replica. */
  restored?: string[];
  /** A restart-resize: the epoch of the checkpoint the new shape continued from (counted from 0). */
  epoch?: number;
  /** A restart-resize: the last step reported before it. */
  step?: number;
}

/**
 * The part of a job's `JobSpec` (`tfk8s_jupyter/spec.py`) the detail shows: `job_detail` keeps these
 * keys of `JobSpec.to_json()` plus `reporting_replica`. Either every field is there or none is.
 */
export interface IJobSettings {
  /** Parameter servers (0 for all-reduce strategies). */
  ps?: number;
  /** Workers (a parameter-server job's chief comes on top of them). */
  workers?: number;
  /** GPUs per worker and chief (parameter servers get none). */
  gpus?: number;
  /** CPU per replica as a Kubernetes quantity (`"2"`, `"500m"`), null when not limited. */
  cpu?: string | null;
  /** Memory per replica as a Kubernetes quantity (`"4Gi"`), null when not limited. */
  memory?: string | null;
  /** Container image of the replicas on Kubernetes (`c.TFK8s.image` unless set per job), null when unset. */
  image?: string | null;
  /** Restarts allowed per replica before the job fails. */
  max_restarts?: number;
  /** The replica whose stdout carries the metrics and whose exit decides the job: `chief-0` or `worker-0`. */
  reporting_replica?: string;
}

/** `GET /tfk8s/api/jobs/{name}/logs`. */
export interface ILogsResponse {
  /** Job name. */
  name: string;
  /** Replica whose log this is. */
  replica: string;
  /** Replicas whose logs can be asked for (plus `supervisor` for local jobs). */
  replicas: string[];
  /** Lines asked for. */
  tail: number;
  /** The last `tail` lines. */
  text: string;
}

/** Error body of every failed request. */
export interface IErrorResponse {
  /** One sentence: what went wrong and how to fix it. */
  message: string;
  /** HTTP status. */
  status: number;
}

/** The settings the "Train this cell" form asks for. */
export interface ITrainOptions {
  /** `auto`, `parameter_server`, `multi_worker_mirrored` or `mirrored`. */
  strategy: string;
  /** Parameter servers. */
  ps: number;
  /** Workers. */
  workers: number;
  /** GPUs per worker and chief. */
  gpus: number;
  /** `local` or `kubernetes`. */
  backend: string;
}

/** One row of the cluster preflight (`%tfk8s_check`, `tk.check()`, `POST /tfk8s/api/check`). */
export interface ICheckRow {
  /** What was checked: `namespace`, `permissions`, `create jobs`, `GPUs`, `quota`, `image`, ... */
  name: string;
  /** `✓` passed, `✗` failed, `–` not checked (no permission to look, or not asked). */
  mark: string;
  /** False only for `✗`. */
  ok: boolean;
  /** One sentence: what was found, and for a `✗` the fix. */
  message: string;
}

/** `GET|POST /tfk8s/api/check`: would a job with these options run on the cluster? */
export interface ICheckReport {
  /** The kubeconfig context checked (`current context` when none was named). */
  context: string;
  /** The namespace checked. */
  namespace: string;
  /** True when no row failed. */
  ok: boolean;
  /** One line: `preflight of namespace N (context): ready.` or `... : K problem(s).` */
  summary: string;
  /** Every row, in the order they were checked. */
  checks: ICheckRow[];
}

/** What the "Check cluster" form sends (empty fields: the configured defaults). */
export interface ICheckOptions {
  /** kubeconfig context. */
  context?: string;
  /** Namespace. */
  namespace?: string;
  /** Image to check with a one-off pod (the check then takes up to a minute or two). */
  image?: string;
  /** GPUs per worker to check capacity for. */
  gpus?: number;
}
