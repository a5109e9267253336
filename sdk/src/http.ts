// The HTTP API client (docs/protocol.md "HTTP API"): typed reads and writes, versions as entity
// tags (ETag / If-None-Match / If-Match), named writes (Idempotency-Key), paging by Link header,
// and API keys. Errors are RallyErrors with the server's code, message and HTTP status.
import { RallyError } from './errors.js';
import type {
  ApiKeySummary,
  CampaignId,
  CampaignSnapshot,
  CampaignState,
  CampaignStatus,
  CampaignSummary,
  ConfigChangeBody,
  CreateApiKey,
  CreateCampaign,
  FeatureChangeBody,
  HistoryPage,
  NewApiKey,
  RevertCampaignBody,
  SessionInfo,
  TextChangeBody,
  UpdateFieldsBody,
  VersionDiff,
  Visibility,
  WhoAmI,
  WriteAck,
} from './generated.js';

export interface RallyHttpOptions {
  /** The server, e.g. `https://rally.example`. */
  baseUrl: string;
  /** A session token, a backend JWT or an API key token (`rk_…`). */
  token?: string;
  /** Default `globalThis.fetch`. */
  fetch?: typeof fetch;
}

export interface ListOptions {
  status?: CampaignStatus;
  visibility?: Visibility;
  /** Page size (1 to 1000). Without it the server answers every campaign at once. */
  limit?: number;
  /** Start after this id. */
  after?: CampaignId;
}

/** `history` filters (each optional). */
export interface HistoryOptions {
  /** Only entries older than this version. */
  before?: number;
  /** 1 to 200 (larger is clamped); default 50. */
  limit?: number;
  /** Only entries that touched this field or one under it: `title`, `config`, `config.ui_content`, … */
  field?: string;
  /** Only entries by this user id. */
  actor?: string;
}

/** A write's preconditions and name. */
export interface WriteHttpOptions {
  /** `If-Match: "<version>"`: the write's base version (a conflict check, not a whole-campaign precondition); `'*'`: no base. */
  ifMatch?: number | '*';
  /** `Idempotency-Key`: the write lands once however often it is sent with the same key, body and If-Match. */
  idempotencyKey?: string;
}

/** A write's answer with its entity tag. */
export interface WriteResult extends WriteAck {
  /** The version of the `ETag` (for a named write sent again: where it landed). */
  etag: number | undefined;
}

/** `GET /api/campaigns/{id}`: the campaign, or "not modified" when `ifNoneMatch` was current. */
export type GetResult =
  | ({ notModified: false; etag: number | undefined } & CampaignSnapshot)
  | { notModified: true; etag: number | undefined };

/** Parse `ETag: "12"` into 12. */
export function parseEtag(header: string | null): number | undefined {
  const match = header?.match(/^"(\d+)"$/);
  return match ? Number(match[1]) : undefined;
}

/** The `rel="next"` target of a Link header, if any. */
export function nextLink(header: string | null): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(',')) {
    const match = part.match(/<([^>]*)>\s*;(.*)$/);
    if (match && /(^|;)\s*rel="?next"?\s*(;|$)/.test(match[2] ?? '')) return match[1];
  }
  return undefined;
}

export class RallyHttp {
  readonly baseUrl: string;
  private readonly token: string | undefined;
  private readonly fetchImpl: typeof fetch;

  constructor(options: RallyHttpOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.token = options.token;
    const f = options.fetch ?? globalThis.fetch;
    if (!f) throw new TypeError('no fetch: pass the `fetch` option');
    this.fetchImpl = f.bind(globalThis);
  }

  /** Sign a person in by display name (`POST /api/session`): `{user, token}`. */
  static async signIn(baseUrl: string, displayName: string, fetchImpl: typeof fetch = globalThis.fetch): Promise<SessionInfo> {
    const http = new RallyHttp({ baseUrl, fetch: fetchImpl });
    return (await http.request('POST', '/api/session', { body: { display_name: displayName } })).json as SessionInfo;
  }

  /** The same client with another credential. */
  withToken(token: string | undefined): RallyHttp {
    return new RallyHttp({ baseUrl: this.baseUrl, token, fetch: this.fetchImpl });
  }

  /** `GET /api/session`: who this credential is. */
  async whoAmI(): Promise<WhoAmI> {
    return (await this.request('GET', '/api/session')).json as WhoAmI;
  }

  // ---------------------------------------------------------------------------------------------
  // Campaigns
  // ---------------------------------------------------------------------------------------------

  /** One page of `GET /api/campaigns` and the path of the next (from the `Link` header). */
  async listPage(options: ListOptions = {}): Promise<{ campaigns: CampaignSummary[]; next: string | undefined }> {
    return this.page(`/api/campaigns${query(options)}`);
  }

  /** Every campaign listed to you, following `Link: rel="next"` page by page. */
  async listCampaigns(options: ListOptions = {}): Promise<CampaignSummary[]> {
    const all: CampaignSummary[] = [];
    for await (const page of this.pages(options)) all.push(...page);
    return all;
  }

  /** The campaigns listed to you, one page at a time. */
  async *pages(options: ListOptions = {}): AsyncGenerator<CampaignSummary[]> {
    let path: string | undefined = `/api/campaigns${query(options)}`;
    while (path) {
      const { campaigns, next }: { campaigns: CampaignSummary[]; next: string | undefined } = await this.page(path);
      yield campaigns;
      path = next;
    }
  }

  /**
   * `GET /api/campaigns/{id}`. With `ifNoneMatch` (a version you hold) the answer may be
   * `{notModified: true}` (304) instead of the campaign.
   */
  async getCampaign(id: CampaignId, options: { ifNoneMatch?: number } = {}): Promise<GetResult> {
    const headers: Record<string, string> = {};
    if (options.ifNoneMatch !== undefined) headers['if-none-match'] = `"${options.ifNoneMatch}"`;
    const response = await this.request('GET', `/api/campaigns/${encodeURIComponent(id)}`, { headers, allow304: true });
    const etag = parseEtag(response.headers.get('etag'));
    if (response.status === 304) return { notModified: true, etag };
    return { notModified: false, etag, ...(response.json as CampaignSnapshot) };
  }

  /** `POST /api/campaigns` (a person's credential): the new campaign and your role. */
  async createCampaign(body: CreateCampaign): Promise<CampaignSnapshot & { etag: number | undefined }> {
    const response = await this.request('POST', '/api/campaigns', { body });
    return { ...(response.json as CampaignSnapshot), etag: parseEtag(response.headers.get('etag')) };
  }

  /** `PATCH /api/campaigns/{id}`: set title, description, status, visibility. */
  updateCampaign(id: CampaignId, body: UpdateFieldsBody, options?: WriteHttpOptions): Promise<WriteResult> {
    return this.write('PATCH', id, '', body, options);
  }

  /** `POST /api/campaigns/{id}/features`. */
  changeFeatures(id: CampaignId, body: FeatureChangeBody, options?: WriteHttpOptions): Promise<WriteResult> {
    return this.write('POST', id, '/features', body, options);
  }

  /** `POST /api/campaigns/{id}/config`. */
  changeConfig(id: CampaignId, body: ConfigChangeBody, options?: WriteHttpOptions): Promise<WriteResult> {
    return this.write('POST', id, '/config', body, options);
  }

  /** `POST /api/campaigns/{id}/text`. */
  editText(id: CampaignId, body: TextChangeBody, options?: WriteHttpOptions): Promise<WriteResult> {
    return this.write('POST', id, '/text', body, options);
  }

  // ---------------------------------------------------------------------------------------------
  // History (docs/protocol.md "History")
  // ---------------------------------------------------------------------------------------------

  /** `GET /api/campaigns/{id}/history`: a page of the change log, newest first. */
  async history(id: CampaignId, options: HistoryOptions = {}): Promise<HistoryPage> {
    const q = new URLSearchParams();
    if (options.before !== undefined) q.set('before', String(options.before));
    if (options.limit !== undefined) q.set('limit', String(options.limit));
    if (options.field) q.set('field', options.field);
    if (options.actor) q.set('actor', options.actor);
    const s = q.toString();
    return (await this.request('GET', `/api/campaigns/${encodeURIComponent(id)}/history${s ? `?${s}` : ''}`)).json as HistoryPage;
  }

  /** `GET /api/campaigns/{id}/versions/{version}`: the campaign as it was at that version. */
  async version(id: CampaignId, version: number): Promise<CampaignState> {
    return (await this.request('GET', `/api/campaigns/${encodeURIComponent(id)}/versions/${version}`)).json as CampaignState;
  }

  /** `GET /api/campaigns/{id}/diff?from=&to=`: the fields that differ between two versions. */
  async diff(id: CampaignId, from: number, to: number): Promise<VersionDiff> {
    return (await this.request('GET', `/api/campaigns/${encodeURIComponent(id)}/diff?from=${from}&to=${to}`)).json as VersionDiff;
  }

  /** `POST /api/campaigns/{id}/revert`: put content back as it was at `to_version`, as a new version. */
  revert(id: CampaignId, body: RevertCampaignBody, options?: WriteHttpOptions): Promise<WriteResult> {
    return this.write('POST', id, '/revert', body, options);
  }

  // ---------------------------------------------------------------------------------------------
  // API keys (a person's credential)
  // ---------------------------------------------------------------------------------------------

  /** `POST /api/keys`: the key and its token (shown this once). */
  async createKey(body: CreateApiKey): Promise<NewApiKey> {
    return (await this.request('POST', '/api/keys', { body })).json as NewApiKey;
  }

  /** `GET /api/keys` (optionally only those naming `campaign`). */
  async listKeys(options: { campaign?: CampaignId } = {}): Promise<ApiKeySummary[]> {
    const q = options.campaign ? `?campaign=${encodeURIComponent(options.campaign)}` : '';
    return (await this.request('GET', `/api/keys${q}`)).json as ApiKeySummary[];
  }

  /** `DELETE /api/keys/{id}`. */
  async revokeKey(id: string): Promise<void> {
    await this.request('DELETE', `/api/keys/${encodeURIComponent(id)}`);
  }

  // ---------------------------------------------------------------------------------------------

  private async page(path: string): Promise<{ campaigns: CampaignSummary[]; next: string | undefined }> {
    const response = await this.request('GET', path);
    const link = nextLink(response.headers.get('link'));
    const next = link === undefined ? undefined : toPath(new URL(link, `${this.baseUrl}/`), this.baseUrl);
    return { campaigns: response.json as CampaignSummary[], next };
  }

  private async write(method: string, id: CampaignId, suffix: string, body: object, options: WriteHttpOptions = {}): Promise<WriteResult> {
    const headers: Record<string, string> = {};
    if (options.ifMatch !== undefined) headers['if-match'] = options.ifMatch === '*' ? '*' : `"${options.ifMatch}"`;
    if (options.idempotencyKey !== undefined) headers['idempotency-key'] = options.idempotencyKey;
    const response = await this.request(method, `/api/campaigns/${encodeURIComponent(id)}${suffix}`, { body, headers });
    return { ...(response.json as WriteAck), etag: parseEtag(response.headers.get('etag')) };
  }

  /** One request: JSON in, JSON out, a RallyError for any answer but 2xx (and 304 when allowed). */
  async request(
    method: string,
    path: string,
    options: { body?: unknown; headers?: Record<string, string>; allow304?: boolean } = {},
  ): Promise<{ status: number; headers: Headers; json: unknown }> {
    const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let body: string | undefined;
    if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.body);
    }
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${path}`, { method, headers, body });
    } catch (error) {
      throw new RallyError('unavailable', `could not reach ${this.baseUrl}: ${(error as Error).message}`);
    }
    if (response.status === 304 && options.allow304) return { status: 304, headers: response.headers, json: undefined };
    const text = await response.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!response.ok) {
      const error = (json as { error?: unknown } | undefined)?.error;
      if (error) throw RallyError.from(error, response.status);
      throw new RallyError(codeFor(response.status), `HTTP ${response.status}${text ? `: ${text.slice(0, 300)}` : ''}`, response.status);
    }
    return { status: response.status, headers: response.headers, json };
  }
}

function query(options: ListOptions): string {
  const q = new URLSearchParams();
  if (options.status) q.set('status', options.status);
  if (options.visibility) q.set('visibility', options.visibility);
  if (options.limit !== undefined) q.set('limit', String(options.limit));
  if (options.after) q.set('after', options.after);
  const s = q.toString();
  return s ? `?${s}` : '';
}

function toPath(url: URL, baseUrl: string): string {
  const base = new URL(`${baseUrl}/`);
  const prefix = base.pathname.replace(/\/$/, '');
  const path = url.pathname.startsWith(prefix) ? url.pathname.slice(prefix.length) : url.pathname;
  return `${path}${url.search}`;
}

function codeFor(status: number): string {
  switch (status) {
    case 400:
      return 'invalid';
    case 401:
      return 'unauthorized';
    case 403:
      return 'forbidden';
    case 404:
      return 'not_found';
    case 409:
      return 'conflict';
    case 413:
      return 'too_large';
    case 429:
      return 'rate_limited';
    case 503:
      return 'unavailable';
    default:
      return 'internal';
  }
}
