// Type declarations of the pgbroker package: a pg-compatible Pool over
// libpgbroker, and the API of the pool pgbroker replaces.
import { EventEmitter } from 'events';

export interface PoolConfig {
  /** The broker's run directory; default $PGBROKER_DIR, else libpgbroker's default (/run/pgbroker for root, $XDG_RUNTIME_DIR/pgbroker or /tmp/pgbroker-UID otherwise). */
  dir?: string;
  /** The broker sizes the pool of backends; here: how many released pool.connect() connections are kept for reuse (POSTGRES_POOL_SIZE, else 25). */
  max?: number;
  /** Statements one Pool keeps in flight at once; more wait in the Pool (128). */
  maxInFlight?: number;
  /** Type parsers for every query of the Pool and its clients (pg's option); a query's own types come first. */
  types?: CustomTypesConfig;
  [key: string]: unknown;
}

export interface FieldDef {
  name: string;
  tableID: number;
  columnID: number;
  dataTypeID: number;
  dataTypeSize: number;
  dataTypeModifier: number;
  format: 'text';
}

export interface QueryResult<R = any> {
  command: string | null;
  rowCount: number | null;
  oid: number | null;
  rows: R[];
  fields: FieldDef[];
  rowAsArray: boolean;
}

export interface CustomTypesConfig {
  getTypeParser(oid: number, format?: 'text' | 'binary'): (value: string) => any;
}

export interface QueryConfig<I extends readonly unknown[] = readonly unknown[]> {
  text: string;
  values?: I;
  rowMode?: 'array';
  types?: CustomTypesConfig;
  name?: string;
}

export interface Submittable {
  submit: (connection: any) => void;
}

export type QueryCallback<R = any> = (err: Error | null, result: QueryResult<R>) => void;

/** An error with pg's fields; code is the SQLSTATE, or the broker's PB... code. */
export class DatabaseError extends Error {
  code: string;
  severity?: string;
  detail?: string;
  hint?: string;
  position?: string;
  internalPosition?: string;
  internalQuery?: string;
  where?: string;
  schema?: string;
  table?: string;
  column?: string;
  dataType?: string;
  constraint?: string;
  file?: string;
  line?: string;
  routine?: string;
}

export interface Queryable {
  query<R = any>(text: string, values?: readonly unknown[]): Promise<QueryResult<R>>;
  query<R = any>(config: QueryConfig, values?: readonly unknown[]): Promise<QueryResult<R>>;
  query<R = any>(text: string, callback: QueryCallback<R>): void;
  query<R = any>(text: string, values: readonly unknown[], callback: QueryCallback<R>): void;
  query<R = any>(config: QueryConfig, callback: QueryCallback<R>): void;
  /** Declared for pg compatibility; a Submittable (pg-cursor) is refused at run time. */
  query<T extends Submittable>(stream: T): T;
}

/** A session of its own: statements run in order; release() ends it cleanly. */
export interface Client extends Queryable {}
export class Client extends EventEmitter {
  release(err?: Error | boolean): void;
}

export interface Pool extends Queryable {}
export class Pool extends EventEmitter {
  constructor(config?: PoolConfig);
  readonly options: PoolConfig;
  readonly totalCount: number;
  readonly idleCount: number;
  readonly waitingCount: number;
  readonly expiredCount: number;
  ending: boolean;
  ended: boolean;
  connect(): Promise<Client>;
  connect(callback: (err: Error | null, client: Client, done: (release?: any) => void) => void): void;
  end(): Promise<void>;
  end(callback: (err?: Error) => void): void;
  on(event: 'error', listener: (err: Error) => void): this;
  on(event: 'connect' | 'acquire', listener: (client: Client) => void): this;
  on(event: 'release', listener: (err: Error | undefined, client: Client) => void): this;
  on(event: string, listener: (...args: any[]) => void): this;
}

export const types: CustomTypesConfig & {
  setTypeParser(oid: number, parser: (value: string) => any): void;
  setTypeParser(oid: number, format: 'text' | 'binary', parser: (value: string) => any): void;
  builtins: Record<string, number>;
};

// --- the original pool's API ---

export interface RetryOptions {
  /** Tries in all (5). */
  maxRetries?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  backoffMultiplier?: number;
  jitterPct?: number;
  /** Default: transient and known not applied (pgb_sqlstate_retry_safe). */
  shouldRetry?: (err: any) => boolean;
  onRetry?: (err: any, attempt: number, delayMs: number) => void;
}

export interface TransactionOptions {
  isolationLevel?: 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE';
  maxRetries?: number;
}

export type BatchQuery = string | { text: string; values?: readonly unknown[] };

export interface QueryStats {
  total: number;
  failed: number;
  successRate: number;
}

export interface PoolHealth {
  total: number;
  idle: number;
  active: number;
  waiting: number;
  healthy: boolean;
  utilizationPercent: number;
  timestamp: Date;
}

export interface HealthCheck {
  status: 'healthy' | 'degraded' | 'unhealthy';
  reasons: string[];
  recommendations: string[];
  metrics: PoolHealth;
  queries: QueryStats & { meanMs: number; slow: number };
  trend: 'improving' | 'stable' | 'degrading';
}

export class PoolHealthMonitor {
  constructor(pool?: Pool | { options: { dir?: string } } | null, options?: { slowQueryMs?: number });
  getHealth(): PoolHealth;
  checkHealth(): HealthCheck;
  recordQuery(durationMs: number, ok?: boolean): void;
  sample(): PoolHealth;
  getHistory(): PoolHealth[];
  getTrend(): 'improving' | 'stable' | 'degrading';
  startMonitoring(intervalMs?: number): void;
  stopMonitoring(): void;
  isMonitoring(): boolean;
}

export class CircuitBreaker {
  constructor(threshold?: number, resetMs?: number);
  execute<T>(op: () => Promise<T>): Promise<T>;
  getState(): 'closed' | 'open' | 'half-open';
  reset(): void;
}

export function getPool(config?: PoolConfig): Promise<Pool>;
export function closePool(): Promise<void>;
export function query<R = any>(text: string | QueryConfig, values?: readonly unknown[], options?: RetryOptions): Promise<QueryResult<R>>;
export function withTransaction<T>(fn: (client: Client, attempt: number) => Promise<T>, options?: TransactionOptions): Promise<T>;
export function batch(queries: BatchQuery[]): Promise<QueryResult[]>;
export function parallel(queries: BatchQuery[]): Promise<QueryResult[]>;
export function getQueryStats(): QueryStats;
export function resetQueryStats(): void;
export function getMetrics(): {
  totalCount: number;
  idleCount: number;
  waitingCount: number;
  utilizationPercent: number;
  healthy: boolean;
  queries: QueryStats & { retried: number; meanMs: number };
  timestamp: Date;
};
export function getHealthMonitor(): PoolHealthMonitor;
export function enableHealthMonitoring(intervalMs?: number): PoolHealthMonitor;
export function disableHealthMonitoring(): void;
export function withRetry<T>(op: (attempt: number) => Promise<T>, options?: RetryOptions): Promise<T>;
export function isTransient(err: any): boolean;
export function isRetrySafe(err: any): boolean;

declare const pgbroker: {
  Pool: typeof Pool;
  Client: typeof Client;
  DatabaseError: typeof DatabaseError;
  types: typeof types;
};
export default pgbroker;
