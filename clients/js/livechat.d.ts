// Types of livechat-client and of the livechat protocol. Each frame of the server's
// docs/asyncapi.yaml has an interface here named after it (`messageWithMeta`: MessageWithMeta),
// with every field it lists; check_types.mjs (run by the tests) fails when one is missing.

// ---- frames a client sends ----

/** `publish`: a message for the room. */
export interface Publish {
  message: unknown;
  nonce?: string;
  reply_to?: number;
}
export interface Edit {
  edit: number;
  message: unknown;
}
export interface Delete {
  delete: number;
}
/** `react` (`react`: add, `unreact`: take back; one of them). */
export interface React {
  react?: number;
  unreact?: number;
  emoji: string;
}
export interface Read {
  read: number;
}
export interface RefreshToken {
  token: string;
}
export interface Typing {
  typing: boolean;
}

// ---- frames a client receives ----

export interface User {
  id?: string;
  name?: string;
}
/** A user in a presence snapshot, with how many connections they have in the room. */
export interface UserCount {
  id?: string;
  name?: string;
  connections: number;
}
/** By emoji: how many users, and whether the reader is one of them. */
export interface Reactions {
  [emoji: string]: { count: number; me: boolean };
}
/** The kind of client frame an error answers. */
export type RequestKind = 'message' | 'typing' | 'token' | 'frame' | 'edit' | 'delete' | 'react' | 'read';

/** A stored message in the original service's shape (clients without meta). */
export interface Message {
  message: unknown;
}
/** A stored message with its place in the room (this client always asks for it). */
export interface MessageWithMeta {
  id: number;
  room: string;
  message: unknown;
  ts: number;
  user?: User;
  nonce?: string;
  reply_to?: number;
}
export interface ErrorFrame {
  error: string;
  for: RequestKind;
  nonce?: string;
  id?: number;
}
export interface Barred {
  error: 'muted' | 'banned';
  for: RequestKind;
  nonce?: string;
  id?: number;
  reason: string;
  /** Milliseconds since the Unix epoch; absent: until a moderator lifts it. */
  until?: number;
}
export interface RateLimited {
  error: 'rate limited';
  for: RequestKind;
  nonce?: string;
  retry_after_ms: number;
}
export interface TokenRefreshed {
  event: 'token';
  room: string;
  exp: number;
}
export interface Gap {
  event: 'gap';
  room: string;
  from: number;
  to: number;
}
export interface Reset {
  event: 'reset';
  room: string;
  last: number;
  epoch: string;
}
export interface CaughtUp {
  event: 'caught_up';
  room: string;
  id: number;
  epoch: string;
}
export interface PresenceSnapshot {
  event: 'presence';
  room: string;
  members: number;
  users: UserCount[];
  truncated?: true;
}
export interface PresenceChange {
  event: 'presence';
  room: string;
  members: number;
  joined: User[];
  left: User[];
  truncated?: true;
}
export interface UserTyping {
  event: 'typing';
  room: string;
  user: User;
}
export interface Edited {
  event: 'edited';
  room: string;
  id: number;
  message: unknown;
  edited_ts: number;
  by?: User;
  reactions?: Reactions;
}
export interface Deleted {
  event: 'deleted';
  room: string;
  id: number;
  by?: User;
}
export interface Reaction {
  event: 'reaction';
  room: string;
  id: number;
  emoji: string;
  user: User;
  count: number;
  on: boolean;
}
export interface ReactionsNow {
  event: 'reactions';
  room: string;
  id: number;
  reactions: Reactions;
}
export interface ReadMoved {
  event: 'read';
  room: string;
  id: number;
}
export interface Seen {
  event: 'seen';
  room: string;
  user: User;
  id: number;
}

/** The connect URL's switches (`/ws/chat/{room}/?...`, `/sse/chat/{room}/?...`). */
export interface ConnectQuery {
  meta?: string;
  token?: string;
  name?: string;
  since?: string;
  epoch?: string;
  presence?: string;
  receipts?: string;
}

// ---- presence state ----

export interface PresenceState {
  /** Connections in the room (anonymous ones included). */
  members: number;
  /** Named users by `userKey`. */
  users: { [key: string]: User & { connections?: number } };
  /** The last full list was cut at the server's bound. */
  truncated: boolean;
}
export type PresenceCallback = (key: string, user: User & { connections?: number }) => void;

export const EMPTY_PRESENCE: Readonly<PresenceState>;
export function userKey(user: User | null | undefined): string | null;
export function syncState(
  state: PresenceState,
  snapshot: { members?: number; users: UserCount[]; truncated?: boolean },
  onJoin?: PresenceCallback,
  onLeave?: PresenceCallback,
): PresenceState;
export function syncDiff(
  state: PresenceState,
  diff: { members?: number; joined?: User[]; left?: User[] },
  onJoin?: PresenceCallback,
  onLeave?: PresenceCallback,
): PresenceState;
export function presenceList(state: PresenceState): Array<User & { connections?: number }>;

// ---- the client ----

export const VERSION: string;
export function newNonce(): string;
export function backoffDelay(
  attempt: number,
  options?: { initialMs?: number; maxMs?: number; random?: () => number },
): number;

export type Transport = 'websocket' | 'sse';

export interface ClientOptions {
  room: string;
  url?: string;
  token?: string;
  name?: string;
  presence?: boolean;
  receipts?: boolean;
  since?: number | 'latest' | null;
  epoch?: string;
  transport?: 'auto' | Transport;
  fallbackAfter?: number;
  backoff?: { initialMs?: number; maxMs?: number };
  maxPending?: number;
  maxMessageBytes?: number;
  WebSocket?: unknown;
  EventSource?: unknown;
  fetch?: typeof globalThis.fetch;
}

export interface ClientEvents {
  connecting: { transport: Transport; again: boolean };
  live: { transport: Transport; id: number; epoch: string | null };
  /** `status`, `body`: a WebSocket that never opened, and what a plain GET of its URL got
   * (`status` null: no answer; 426: the server would have let it in). */
  down: { code: number; reason: string; transport: Transport; status?: number | null; body?: unknown };
  /** `status`, `body`: a handshake the server refused (400, 401, 403), as a plain GET saw it. */
  stopped: { code: number; reason: string; status?: number; body?: unknown };
  message: MessageWithMeta;
  error: unknown;
  sent: { nonce: string; id: number };
  refused: { kind: RequestKind; error: string; nonce?: string; id?: number; body?: Publish; frame: object };
  ratelimited: { kind: RequestKind; ms: number; frame: RateLimited };
  presence: { state: PresenceState; joined: User[]; left: User[]; frame: PresenceSnapshot | PresenceChange };
  typing: UserTyping;
  gap: Gap;
  reset: Reset;
  edited: Edited;
  deleted: Deleted;
  reaction: Reaction;
  reactions: ReactionsNow;
  read: ReadMoved;
  seen: Seen;
  token: TokenRefreshed;
}

export class Emitter<Events = ClientEvents> {
  on<K extends keyof Events>(type: K, listener: (detail: Events[K]) => void): () => void;
  once<K extends keyof Events>(type: K, listener: (detail: Events[K]) => void): () => void;
  off<K extends keyof Events>(type: K, listener: (detail: Events[K]) => void): void;
  emit<K extends keyof Events>(type: K, detail: Events[K]): void;
}

export interface HistoryPage {
  chat_history: Array<MessageWithMeta & { deleted?: true; edited_ts?: number; reactions?: Reactions }>;
  epoch?: string;
  more?: true;
  next?: { before?: number; after?: number };
}

export class LivechatClient extends Emitter<ClientEvents> {
  constructor(options: ClientOptions);
  readonly room: string;
  readonly lastId: number;
  readonly epoch: string | null;
  readonly presence: PresenceState;
  readonly transport: Transport | null;
  readonly live: boolean;
  readonly pending: number;
  connect(): Promise<void>;
  close(): void;
  send(message: unknown, options?: { replyTo?: number; nonce?: string }): string;
  edit(id: number, message: unknown): boolean;
  delete(id: number): boolean;
  react(id: number, emoji: string): boolean;
  unreact(id: number, emoji: string): boolean;
  read(id: number): void;
  typing(): boolean;
  resumeAfter(id: number, epoch?: string | null): void;
  rename(name: string): void;
  refreshToken(token: string): void;
  history(query?: { limit?: number; before?: number; after?: number }): Promise<HistoryPage>;
  http(method: string, path: string, body?: unknown): Promise<any>;
}

export function connect(options: ClientOptions): LivechatClient;
