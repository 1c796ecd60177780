/**
 * A Jupyter kernel client over ZeroMQ (messaging protocol 5.3): finds a kernelspec, starts the kernel
 * process with a connection file on free loopback ports, signs and verifies messages (HMAC-SHA256),
 * runs code and streams its iopub messages back, interrupts, shuts down, and notices when the kernel
 * process dies. It knows nothing about notebooks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as Zmq from 'zeromq';
import { UserError } from '../errors';

export interface KernelSpec {
  name: string;
  argv: string[];
  displayName: string;
  language: string;
  env: Record<string, string>;
  interruptMode: 'signal' | 'message';
  /** The folder holding kernel.json (substituted for `{resource_dir}`); absent for the built-in tslab. */
  resourceDir?: string;
}

export interface MessageHeader {
  msg_id: string;
  msg_type: string;
  session: string;
  username: string;
  date: string;
  version: string;
}

export interface JupyterMessage {
  header: MessageHeader;
  parent_header: Partial<MessageHeader>;
  metadata: Record<string, unknown>;
  // Content shapes differ per msg_type; readers narrow them where they use them.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  content: Record<string, any>;
  buffers: Buffer[];
}

export interface KernelExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all (e.g. ENOENT). */
  error?: string;
}

export interface ExecuteReply {
  status: 'ok' | 'error' | 'abort' | string;
  execution_count?: number | null;
  ename?: string;
  evalue?: string;
  traceback?: string[];
}

export type ExecuteOutcome =
  | { kind: 'done'; reply: ExecuteReply }
  | { kind: 'died'; exit: KernelExit }
  | { kind: 'timeout'; reply?: ExecuteReply }
  | { kind: 'cancelled'; reason: string; reply?: ExecuteReply };

export interface ExecuteOptions {
  /** Give up on the cell after this many ms: interrupt the kernel and report a timeout. */
  timeoutMs?: number;
  /** Aborting interrupts the kernel and ends the call with `cancelled`. */
  signal?: AbortSignal;
}

export interface StartOptions {
  cwd: string;
  /** How long to wait for the first kernel_info_reply. */
  startTimeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

const PROTOCOL_VERSION = '5.3';
const DELIMITER = '<IDS|MSG>';
/** After an interrupt, how long the kernel gets to answer the interrupted request. */
const INTERRUPT_GRACE_MS = 3000;
/** After execute_reply, how long to wait for the `idle` status that closes the request's iopub output. */
const IDLE_AFTER_REPLY_MS = 3000;
const PROCESS_OUTPUT_TAIL = 64 * 1024;

/** Jupyter data folders in `jupyter --paths` order; kernelspecs live in `<dir>/kernels/<name>/kernel.json`. */
export function jupyterDataDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs = (env.JUPYTER_PATH ?? '').split(path.delimiter).filter((d) => d !== '');
  const xdg = env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  dirs.push(env.JUPYTER_DATA_DIR || path.join(xdg, 'jupyter'));
  dirs.push('/usr/local/share/jupyter', '/usr/share/jupyter');
  return [...new Set(dirs.map((d) => path.resolve(d)))];
}

function parseKernelJson(file: string, name: string): KernelSpec {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UserError(`kernelspec ${file} is not valid JSON (${(err as Error).message}); re-run ./kernel-setup.sh`);
  }
  const j = raw as { argv?: unknown; display_name?: unknown; language?: unknown; env?: unknown; interrupt_mode?: unknown };
  if (!Array.isArray(j.argv) || j.argv.length === 0 || !j.argv.every((a) => typeof a === 'string')) {
    throw new UserError(`kernelspec ${file}: "argv" must be a non-empty list of strings`);
  }
  return {
    name,
    argv: j.argv as string[],
    displayName: typeof j.display_name === 'string' ? j.display_name : name,
    language: typeof j.language === 'string' ? j.language : '',
    env: j.env && typeof j.env === 'object' ? (j.env as Record<string, string>) : {},
    interruptMode: j.interrupt_mode === 'message' ? 'message' : 'signal',
    resourceDir: path.dirname(file),
  };
}

/** The kernelspec registered under `name` (case-insensitive, as jupyter_client), or undefined. */
export function findKernelSpec(name: string, env: NodeJS.ProcessEnv = process.env): KernelSpec | undefined {
  const wanted = name.toLowerCase();
  for (const dir of jupyterDataDirs(env)) {
    const file = path.join(dir, 'kernels', wanted, 'kernel.json');
    if (fs.existsSync(file)) return parseKernelJson(file, wanted);
  }
  return undefined;
}

/** tslab from this project's node_modules, run by the current node: works with no Jupyter installed. */
export function projectTslabSpec(): KernelSpec {
  const bin = path.join(path.dirname(require.resolve('tslab/package.json')), 'bin', 'tslab');
  return {
    name: 'tslab',
    argv: [process.execPath, bin, 'kernel', '--config-path', '{connection_file}'],
    displayName: 'TypeScript (tslab)',
    language: 'typescript',
    env: {},
    interruptMode: 'signal',
  };
}

/** A registered kernelspec, else (for `tslab`) the project's own tslab. */
export function resolveKernelSpec(name: string, env: NodeJS.ProcessEnv = process.env): KernelSpec {
  const found = findKernelSpec(name, env);
  if (found) return found;
  if (name.toLowerCase() === 'tslab') return projectTslabSpec();
  const searched = jupyterDataDirs(env).map((d) => path.join(d, 'kernels')).join(', ');
  throw new UserError(`no Jupyter kernel named "${name}" (looked in ${searched}); pass --kernel tslab or register it`);
}

/** zeromq's native addon, loaded on first use so other imgclass commands don't pay for it. */
function zmq(): typeof Zmq {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return require('zeromq') as typeof Zmq;
}

/** Ports given to kernels of this process lately: free again until their kernel binds them. */
const handedOut: number[] = [];

/**
 * `count` distinct free loopback ports. Every probe stays bound until all are chosen (a probe closed
 * early can hand its port to the next one, and a kernel given one port twice cannot bind its
 * sockets), and ports handed to a kernel started moments ago (two kernels start at once when one is
 * warmed ahead) are skipped.
 */
async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    while (ports.length < count) {
      const srv = net.createServer();
      srv.unref();
      servers.push(srv);
      const port = await new Promise<number>((resolve, reject) => {
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => resolve((srv.address() as net.AddressInfo).port));
      });
      if (!handedOut.includes(port)) ports.push(port);
    }
    handedOut.push(...ports);
    handedOut.splice(0, Math.max(0, handedOut.length - 200));
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** Serializes sends: a zeromq.js socket allows one pending send at a time. */
class Sender {
  private chain: Promise<void> = Promise.resolve();
  constructor(private readonly socket: Zmq.Dealer) {}
  send(frames: (string | Buffer)[]): Promise<void> {
    const next = this.chain.then(() => this.socket.send(frames));
    this.chain = next.catch(() => undefined);
    return next;
  }
}

type Waiter = (m: JupyterMessage) => void;

export class KernelClient {
  readonly spec: KernelSpec;
  /** kernel_info_reply content, once started. */
  info: Record<string, unknown> = {};
  exit: KernelExit | null = null;

  private readonly key: string;
  private readonly session = crypto.randomUUID();
  private readonly proc: ChildProcess;
  private readonly connDir: string;
  private readonly shell = new (zmq().Dealer)({ linger: 0 });
  private readonly control = new (zmq().Dealer)({ linger: 0 });
  private readonly stdin = new (zmq().Dealer)({ linger: 0 });
  private readonly iopub = new (zmq().Subscriber)({ linger: 0 });
  private readonly hb = new (zmq().Request)({ linger: 0, relaxed: true, correlate: true });
  private readonly shellSender = new Sender(this.shell);
  private readonly controlSender = new Sender(this.control);
  private readonly stdinSender = new Sender(this.stdin);
  private readonly replyWaiters = new Map<string, Waiter>();
  private readonly iopubWaiters = new Map<string, Waiter>();
  private readonly exited: Promise<KernelExit>;
  private processOutput = '';
  private processOutputDropped = 0;
  private closed = false;
  /** Called when the kernel asks for input (allow_stdin is false, so only misbehaving kernels do). */
  onInputRequest: (prompt: string) => void = () => undefined;

  private constructor(spec: KernelSpec, proc: ChildProcess, key: string, connDir: string, ports: Record<string, number>) {
    this.spec = spec;
    this.proc = proc;
    this.key = key;
    this.connDir = connDir;
    this.exited = new Promise((resolve) => {
      const done = (e: KernelExit): void => {
        if (!this.exit) this.exit = e;
        resolve(this.exit);
      };
      proc.on('exit', (code, signal) => done({ code, signal }));
      proc.on('error', (err) => done({ code: null, signal: null, error: err.message }));
    });
    const keep = (chunk: Buffer): void => {
      this.processOutput += chunk.toString('utf8');
      if (this.processOutput.length > PROCESS_OUTPUT_TAIL) {
        const cut = this.processOutput.length - PROCESS_OUTPUT_TAIL;
        this.processOutputDropped += cut;
        this.processOutput = this.processOutput.slice(cut);
      }
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);

    const addr = (p: number): string => `tcp://127.0.0.1:${p}`;
    this.shell.connect(addr(ports.shell_port));
    this.control.connect(addr(ports.control_port));
    this.stdin.connect(addr(ports.stdin_port));
    this.iopub.connect(addr(ports.iopub_port));
    this.iopub.subscribe();
    this.hb.connect(addr(ports.hb_port));
    void this.receiveLoop(this.shell, (m) => this.replyWaiters.get(m.parent_header.msg_id ?? '')?.(m));
    void this.receiveLoop(this.control, (m) => this.replyWaiters.get(m.parent_header.msg_id ?? '')?.(m));
    void this.receiveLoop(this.iopub, (m) => this.iopubWaiters.get(m.parent_header.msg_id ?? '')?.(m));
    void this.receiveLoop(this.stdin, (m) => {
      if (m.header.msg_type !== 'input_request') return;
      this.onInputRequest(String(m.content.prompt ?? ''));
      void this.stdinSender.send(this.encode('input_reply', { value: '' }, m.header).frames).catch(() => undefined);
    });
  }

  /** Start the kernel described by `spec` and wait until it answers kernel_info_request. */
  static async start(spec: KernelSpec, opts: StartOptions): Promise<KernelClient> {
    const names = ['shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port'];
    const portList = await freePorts(names.length);
    const ports = Object.fromEntries(names.map((n, i) => [n, portList[i]!])) as Record<string, number>;
    const key = crypto.randomBytes(32).toString('hex');
    const connDir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-kernel-'));
    const connFile = path.join(connDir, 'kernel.json');
    const conn = { ...ports, ip: '127.0.0.1', key, transport: 'tcp', signature_scheme: 'hmac-sha256', kernel_name: spec.name };
    fs.writeFileSync(connFile, JSON.stringify(conn, null, 1), { mode: 0o600 });
    const argv = spec.argv.map((a) =>
      a.replace(/\{connection_file\}/g, connFile).replace(/\{resource_dir\}/g, spec.resourceDir ?? ''),
    );
    // A session of its own (as jupyter_client does): SIGINT from the terminal reaches only the runner,
    // which decides what the kernel gets, and the whole group (with anything a cell spawned) can be killed.
    const proc = spawn(argv[0]!, argv.slice(1), {
      cwd: opts.cwd,
      env: { ...(opts.env ?? process.env), ...spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const client = new KernelClient(spec, proc, key, connDir, ports);
    liveKernels.add(client);
    try {
      await client.waitReady(opts.startTimeoutMs ?? 60_000);
    } catch (err) {
      await client.shutdown();
      throw err;
    }
    return client;
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** The kernel process's own stdout/stderr (not its iopub streams), last 64 KiB. */
  get processOutputTail(): string {
    return this.processOutput;
  }

  /** Position in the kernel's process output, to read what it printed since then with `processOutputSince`. */
  get processOutputMark(): number {
    return this.processOutputDropped + this.processOutput.length;
  }

  processOutputSince(mark: number): string {
    return this.processOutput.slice(Math.max(0, mark - this.processOutputDropped));
  }

  /** Resolves when the kernel process has exited. */
  whenExited(): Promise<KernelExit> {
    return this.exited;
  }

  private sign(parts: string[]): string {
    const h = crypto.createHmac('sha256', this.key);
    for (const p of parts) h.update(p);
    return h.digest('hex');
  }

  private encode(msgType: string, content: object, parent: Partial<MessageHeader> = {}): { header: MessageHeader; frames: string[] } {
    const header: MessageHeader = {
      msg_id: crypto.randomUUID(),
      msg_type: msgType,
      session: this.session,
      username: os.userInfo().username,
      date: new Date().toISOString(),
      version: PROTOCOL_VERSION,
    };
    const parts = [header, parent, {}, content].map((x) => JSON.stringify(x));
    return { header, frames: [DELIMITER, this.sign(parts), ...parts] };
  }

  private decode(frames: Buffer[]): JupyterMessage | undefined {
    const i = frames.findIndex((f) => f.length === DELIMITER.length && f.toString('latin1') === DELIMITER);
    if (i < 0 || frames.length < i + 6) return undefined;
    const [sig, header, parent, metadata, content] = frames.slice(i + 1, i + 6).map((f) => f.toString('utf8'));
    const expected = Buffer.from(this.sign([header!, parent!, metadata!, content!]));
    const got = Buffer.from(sig!);
    // Unsigned or forged messages are dropped, as jupyter_client does.
    if (got.length !== expected.length || !crypto.timingSafeEqual(got, expected)) return undefined;
    return {
      header: JSON.parse(header!),
      parent_header: JSON.parse(parent!),
      metadata: JSON.parse(metadata!),
      content: JSON.parse(content!),
      buffers: frames.slice(i + 6),
    };
  }

  private async receiveLoop(socket: Zmq.Dealer | Zmq.Subscriber, deliver: (m: JupyterMessage) => void): Promise<void> {
    try {
      for await (const frames of socket) {
        const m = this.decode(frames);
        if (m) deliver(m);
      }
    } catch {
      // The socket was closed: the loop ends with it.
    }
  }

  /** Send a request on shell or control; resolves with its reply. */
  private request(channel: 'shell' | 'control', msgType: string, content: object, onIopub?: Waiter): { msgId: string; reply: Promise<JupyterMessage>; idle: Promise<void>; dispose: () => void } {
    const { header, frames } = this.encode(msgType, content);
    const msgId = header.msg_id;
    let gotReply!: Waiter;
    let gotIdle!: () => void;
    const reply = new Promise<JupyterMessage>((r) => (gotReply = r));
    const idle = new Promise<void>((r) => (gotIdle = r));
    this.replyWaiters.set(msgId, gotReply);
    this.iopubWaiters.set(msgId, (m) => {
      if (m.header.msg_type === 'status') {
        if (m.content.execution_state === 'idle') gotIdle();
      } else onIopub?.(m);
    });
    const sender = channel === 'shell' ? this.shellSender : this.controlSender;
    void sender.send(frames).catch(() => undefined);
    return {
      msgId,
      reply,
      idle,
      dispose: () => {
        this.replyWaiters.delete(msgId);
        this.iopubWaiters.delete(msgId);
      },
    };
  }

  /**
   * Ask kernel_info until both its reply (shell) and its `idle` status (iopub) arrive: iopub is a
   * PUB/SUB pair, so output sent before the subscription is connected is lost ("slow joiner").
   */
  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const pending: ReturnType<KernelClient['request']>[] = [];
    try {
      while (Date.now() < deadline) {
        if (this.exit) throw new Error(`kernel "${this.spec.name}" exited while starting (${describeExit(this.exit)})${this.tailForReport()}`);
        const r = this.request('shell', 'kernel_info_request', {});
        pending.push(r);
        const ready = await Promise.race([
          Promise.all([r.reply, r.idle]).then(([m]) => m),
          this.exited.then(() => undefined),
          sleep(Math.min(500, Math.max(0, deadline - Date.now()))).then(() => undefined),
        ]);
        if (ready) {
          this.info = ready.content;
          return;
        }
      }
      throw new Error(`kernel "${this.spec.name}" did not answer within ${(timeoutMs / 1000).toFixed(0)} s (--start_timeout)${this.tailForReport()}`);
    } finally {
      for (const r of pending) r.dispose();
    }
  }

  private tailForReport(): string {
    const t = this.processOutput.trim();
    return t ? `; its output:\n${t.split('\n').slice(-20).join('\n')}` : '';
  }

  /**
   * Run `code`, passing every iopub message of the request except status to `onOutput`, until the
   * kernel is idle again. On timeout or abort the kernel is interrupted and given a moment to answer
   * (so its stack trace arrives); the caller decides whether to go on.
   */
  async execute(code: string, onOutput: (m: JupyterMessage) => void, opts: ExecuteOptions = {}): Promise<ExecuteOutcome> {
    if (this.exit) return { kind: 'died', exit: this.exit };
    const r = this.request(
      'shell',
      'execute_request',
      { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: true },
      onOutput,
    );
    const finished = r.reply.then(async (m) => {
      await Promise.race([r.idle, sleep(IDLE_AFTER_REPLY_MS)]);
      return m.content as ExecuteReply;
    });
    const died = this.exited.then((exit) => ({ kind: 'died' as const, exit }));
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const stop = new Promise<{ kind: 'timeout' } | { kind: 'cancelled'; reason: string }>((resolve) => {
      if (opts.timeoutMs !== undefined && opts.timeoutMs > 0) timer = setTimeout(() => resolve({ kind: 'timeout' }), opts.timeoutMs);
      if (opts.signal) {
        onAbort = () => resolve({ kind: 'cancelled', reason: String(opts.signal?.reason ?? 'cancelled') });
        if (opts.signal.aborted) onAbort();
        else opts.signal.addEventListener('abort', onAbort, { once: true });
      }
    });
    try {
      const first = await Promise.race([finished.then((reply) => ({ kind: 'done' as const, reply })), died, stop]);
      if (first.kind !== 'timeout' && first.kind !== 'cancelled') return first;
      await this.interrupt();
      const after = await Promise.race([finished, died, sleep(INTERRUPT_GRACE_MS).then(() => undefined)]);
      const reply = after && !('kind' in after) ? after : undefined;
      return first.kind === 'timeout' ? { kind: 'timeout', reply } : { kind: 'cancelled', reason: first.reason, reply };
    } finally {
      if (timer) clearTimeout(timer);
      if (onAbort) opts.signal?.removeEventListener('abort', onAbort);
      r.dispose();
    }
  }

  /** Interrupt the running request: SIGINT to the kernel's process group, or interrupt_request when the spec asks for messages. */
  async interrupt(): Promise<void> {
    if (this.exit) return;
    if (this.spec.interruptMode === 'message') {
      const r = this.request('control', 'interrupt_request', {});
      await Promise.race([r.reply, sleep(1000)]);
      r.dispose();
      return;
    }
    this.signal('SIGINT');
  }

  private signal(sig: NodeJS.Signals): void {
    const pid = this.proc.pid;
    if (pid === undefined || this.exit) return;
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        // Already gone.
      }
    }
  }

  /** Heartbeat: whether the kernel echoes a ping within `timeoutMs`. */
  async ping(timeoutMs = 1000): Promise<boolean> {
    if (this.exit || this.closed) return false;
    const nonce = crypto.randomBytes(8).toString('hex');
    try {
      await this.hb.send(nonce);
      const echoed = await Promise.race([this.hb.receive(), sleep(timeoutMs).then(() => undefined)]);
      return !!echoed && echoed[0]?.toString() === nonce;
    } catch {
      return false;
    }
  }

  /**
   * Ask the kernel to shut down (control channel), then escalate to SIGTERM and SIGKILL of its
   * process group; close the sockets and remove the connection file. Safe to call twice.
   */
  async shutdown(graceMs = 2000): Promise<void> {
    if (!this.exit && this.proc.pid !== undefined) {
      const r = this.request('control', 'shutdown_request', { restart: false });
      await Promise.race([this.exited, sleep(graceMs)]);
      r.dispose();
      if (!this.exit) {
        this.signal('SIGTERM');
        await Promise.race([this.exited, sleep(1000)]);
      }
      if (!this.exit) {
        this.signal('SIGKILL');
        await Promise.race([this.exited, sleep(1000)]);
      }
    }
    this.close();
  }

  /** Kill the kernel's process group now. */
  kill(): void {
    this.signal('SIGKILL');
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of [this.shell, this.control, this.stdin, this.iopub, this.hb]) s.close();
    fs.rmSync(this.connDir, { recursive: true, force: true });
    liveKernels.delete(this);
  }
}

export function describeExit(e: KernelExit): string {
  if (e.error) return e.error;
  if (e.signal) return `killed by ${e.signal}`;
  return `exit code ${e.code}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

// Kernels run in their own session, so nothing else ends them if the runner exits without shutting
// them down (an uncaught error, process.exit): kill them on the way out.
const liveKernels = new Set<KernelClient>();
process.on('exit', () => {
  for (const k of liveKernels) k.kill();
});
