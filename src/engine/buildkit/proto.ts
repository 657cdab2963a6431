/**
 * Encoding of the BuildKit messages we speak (buildkit.proto, a subset of BuildKit's own files), and the
 * gRPC method table built from it. protobufjs reads the .proto text once per process: only the broker
 * loads this module, never the wrapper.
 */
import protobuf from 'protobufjs';
import type { MethodDefinition } from '@grpc/grpc-js';
import protoText from './buildkit.proto' with { type: 'text' };
import type { LlbGraph, LlbRef } from '../../render/llb.ts';

const root = protobuf.parse(protoText, { keepCase: true }).root;

export interface Timestamp {
  seconds: number;
  nanos: number;
}
export interface SolveRequest {
  Ref: string;
  Exporter: string;
  ExporterAttrs: Record<string, string>;
  /** the build itself, as LLB; or a frontend that makes it */
  Definition?: Definition;
  Session: string;
  Frontend: string;
  FrontendAttrs: Record<string, string>;
  FrontendInputs?: Record<string, Definition>;
  /** not recorded in the engine's build history (BuildKit ≥ 0.11; older ones ignore the field) */
  Internal?: boolean;
}
export interface Definition {
  def: Uint8Array[];
  /** per op digest; BuildKit refuses an input definition whose ops have none */
  metadata: Record<string, { description: Record<string, string> }>;
}
export interface SolveResponse {
  ExporterResponse: Record<string, string>;
}
export interface StatusRequest {
  Ref: string;
}
export interface Vertex {
  digest: string;
  name: string;
  cached: boolean;
  started?: Timestamp;
  completed?: Timestamp;
  error: string;
}
export interface VertexLog {
  vertex: string;
  timestamp?: Timestamp;
  stream: number;
  msg: Uint8Array;
}
export interface StatusResponse {
  vertexes: Vertex[];
  /** progress within a vertex, e.g. `transferring context:` with the bytes sent so far */
  statuses: VertexStatus[];
  logs: VertexLog[];
}
export interface VertexStatus {
  ID: string;
  vertex: string;
  current: number;
  completed?: Timestamp;
}
export interface InfoResponse {
  buildkitVersion?: { package: string; version: string; revision: string };
}
export interface BytesMessage {
  data: Uint8Array;
}
export interface Stat {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  modTime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
}
export const PacketType = { STAT: 0, REQ: 1, DATA: 2, FIN: 3, ERR: 4 } as const;
export interface Packet {
  type: number;
  stat?: Stat;
  ID: number;
  data: Uint8Array;
}
/** A build held open: a solve in it (LLBBridge), its result kept by the engine until the build ends. */
export interface BridgeSolveRequest {
  Definition: Definition;
  Frontend: string;
  allowResultReturn: boolean;
  allowResultArrayRef: boolean;
  /** build the result now, not when it is first read */
  Evaluate: boolean;
}
export interface BridgeResult {
  refDeprecated?: string;
  ref?: { id: string };
}
export interface BridgeSolveResponse {
  ref: string;
  result?: BridgeResult;
}
export interface ReadFileRequest {
  Ref: string;
  FilePath: string;
  Range?: { Offset: number; Length: number };
}
export interface ReadDirRequest {
  Ref: string;
  DirPath: string;
  IncludePattern: string;
}
export interface HealthCheckResponse {
  status: number;
}

interface TypeMap {
  SolveRequest: SolveRequest;
  SolveResponse: SolveResponse;
  StatusRequest: StatusRequest;
  StatusResponse: StatusResponse;
  InfoRequest: Record<string, never>;
  InfoResponse: InfoResponse;
  BytesMessage: BytesMessage;
  Packet: Packet;
  BridgeSolveRequest: BridgeSolveRequest;
  BridgeSolveResponse: BridgeSolveResponse;
  ReadFileRequest: ReadFileRequest;
  ReadFileResponse: { Data: Uint8Array };
  ReadDirRequest: ReadDirRequest;
  ReadDirResponse: { entries: Stat[] };
  ReturnRequest: { result: BridgeResult };
  ReturnResponse: Record<string, never>;
  HealthCheckRequest: { service: string };
  HealthCheckResponse: HealthCheckResponse;
}

/**
 * The wire form of an LLB graph (src/render/llb.ts). An op's digest is the sha256 of its bytes as sent
 * (BuildKit computes it so too), so each op is encoded once, after the ops it names as inputs, and the
 * definition ends with an op that has only the result as input, as BuildKit's own clients end theirs.
 */
export function encodeGraph(graph: LlbGraph): { definition: Definition; digests: string[] } {
  const opType = root.lookupType('rcbx.Op');
  const digests: string[] = [];
  const def: Uint8Array[] = [];
  const metadata: Definition['metadata'] = {};
  const inputOf = (ref: LlbRef) => {
    const digest = digests[ref.op];
    if (digest === undefined) throw new Error(`LLB op refers to op ${ref.op}, which does not come before it`);
    return { digest, index: ref.output };
  };
  const encode = (op: object) => {
    const bytes = opType.encode(opType.fromObject(op)).finish();
    def.push(bytes);
    return `sha256:${new Bun.CryptoHasher('sha256').update(bytes).digest('hex')}`;
  };
  for (const op of graph.ops) {
    const { name, inputs, ...body } = op;
    if ('file' in body) {
      // bytes, not text: protobufjs would read a string as base64
      body.file = { actions: body.file.actions.map((a) => (typeof a.mkfile?.data === 'string' ? { ...a, mkfile: { ...a.mkfile, data: new TextEncoder().encode(a.mkfile.data) } } : a)) };
    }
    const digest = encode({ inputs: inputs.map(inputOf), ...body });
    digests.push(digest);
    if (name) metadata[digest] = { description: { 'llb.customname': name } };
  }
  encode({ inputs: [inputOf(graph.result)] });
  return { definition: { def, metadata }, digests };
}

/**
 * An LLB definition of a scratch filesystem holding these files: how the Dockerfile goes to the frontend
 * inside the Solve request (a frontend input) instead of through a session round trip.
 */
export function filesDefinition(files: ReadonlyArray<readonly [path: string, data: string | Uint8Array]>): Definition {
  // One FileOp on scratch: each mkfile acts on the previous action's result (an input index past the
  // op's inputs, of which there are none, names an earlier action); only the last one is the output.
  const actions = files.map(([path, data], i) => ({ input: i - 1, secondaryInput: -1, output: i === files.length - 1 ? 0 : -1, mkfile: { path, mode: 0o644, data, timestamp: -1 } }));
  return encodeGraph({ ops: [{ inputs: [], file: { actions }, name: `[internal] ${files.map(([path]) => path).join(' ')}` }], result: { op: 0, output: 0 } }).definition;
}

function codec<K extends keyof TypeMap>(name: K): { encode: (v: TypeMap[K]) => Buffer; decode: (b: Buffer) => TypeMap[K] } {
  const type = root.lookupType(`rcbx.${name}`);
  return {
    encode: (v) => Buffer.from(type.encode(type.fromObject(v as object)).finish()),
    decode: (b) => type.toObject(type.decode(b), { longs: Number, defaults: true }) as TypeMap[K],
  };
}

function method<Req extends keyof TypeMap, Res extends keyof TypeMap>(
  path: string,
  req: Req,
  res: Res,
  streams: { request?: boolean; response?: boolean } = {},
): MethodDefinition<TypeMap[Req], TypeMap[Res]> {
  const q = codec(req);
  const r = codec(res);
  return {
    path,
    requestStream: streams.request ?? false,
    responseStream: streams.response ?? false,
    requestSerialize: q.encode,
    requestDeserialize: q.decode,
    responseSerialize: r.encode,
    responseDeserialize: r.decode,
  };
}

/** moby.buildkit.v1.Control: what the client calls on the engine. */
export const control = {
  Solve: method('/moby.buildkit.v1.Control/Solve', 'SolveRequest', 'SolveResponse'),
  Status: method('/moby.buildkit.v1.Control/Status', 'StatusRequest', 'StatusResponse', { response: true }),
  Info: method('/moby.buildkit.v1.Control/Info', 'InfoRequest', 'InfoResponse'),
};

/** moby.buildkit.v1.frontend.LLBBridge: solves inside a build held open (its ID in the call's metadata). */
export const bridge = {
  Solve: method('/moby.buildkit.v1.frontend.LLBBridge/Solve', 'BridgeSolveRequest', 'BridgeSolveResponse'),
  ReadFile: method('/moby.buildkit.v1.frontend.LLBBridge/ReadFile', 'ReadFileRequest', 'ReadFileResponse'),
  ReadDir: method('/moby.buildkit.v1.frontend.LLBBridge/ReadDir', 'ReadDirRequest', 'ReadDirResponse'),
  Return: method('/moby.buildkit.v1.frontend.LLBBridge/Return', 'ReturnRequest', 'ReturnResponse'),
};

/** What the engine calls back on the client's session. */
export const sessionMethods = {
  FileSyncDiffCopy: method('/moby.filesync.v1.FileSync/DiffCopy', 'Packet', 'Packet', { request: true, response: true }),
  FileSendDiffCopy: method('/moby.filesync.v1.FileSend/DiffCopy', 'BytesMessage', 'BytesMessage', { request: true, response: true }),
  HealthCheck: method('/grpc.health.v1.Health/Check', 'HealthCheckRequest', 'HealthCheckResponse'),
};
