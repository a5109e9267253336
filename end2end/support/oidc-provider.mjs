// A real OpenID Connect provider for the browser tests: the npm package `oidc-provider` with its
// development login pages (any login name signs in; the password is ignored), one confidential
// client for Rally, PKCE required, and an RSA key the test holds — so it can also play the
// attacker between the provider and Rally and swap in ID tokens that must be refused.
import { createServer } from 'node:http';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import Provider from 'oidc-provider';

const b64url = (data) => Buffer.from(data).toString('base64url');

/** The account `login` names: `<login>@evil.example` for logins starting with "eve", else
 * `<login>@example.com`; members of "staff", and of "marketing" unless the login starts with "x". */
function account(login) {
  const domain = login.startsWith('eve') ? 'evil.example' : 'example.com';
  const name = login.charAt(0).toUpperCase() + login.slice(1);
  const groups = login.startsWith('x') ? ['staff'] : ['staff', 'marketing'];
  return {
    accountId: login,
    async claims() {
      return { sub: login, name, email: `${login}@${domain}`, email_verified: true, groups };
    },
  };
}

/** RS256-sign `payload` with `key` (a Node KeyObject) under `kid` (RS384 when `alg` says so). */
export function signRsa(payload, key, kid, alg = 'RS256') {
  const input = `${b64url(JSON.stringify({ alg, typ: 'JWT', kid }))}.${b64url(JSON.stringify(payload))}`;
  const hash = alg === 'RS384' ? 'sha384' : 'sha256';
  return `${input}.${sign(hash, Buffer.from(input), key).toString('base64url')}`;
}

/** How the man in the middle rewrites the provider's ID token (`null`: leave it alone). */
const tampering = {
  'bad-signature': (token) => {
    const [header, payload, signature] = token.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url'));
    claims.sub = 'mallory';
    return `${header}.${b64url(JSON.stringify(claims))}.${signature}`;
  },
  expired: (token, keys) => resign(token, keys, (c) => ({ ...c, iat: c.iat - 3600, exp: c.iat - 600 })),
  'wrong-audience': (token, keys) => resign(token, keys, (c) => ({ ...c, aud: 'another-app' })),
  // Also for another app, without saying it was issued to Rally (no `azp`).
  'extra-audience': (token, keys) => resign(token, keys, (c) => ({ ...c, aud: [c.aud, 'another-app'], azp: undefined })),
  // The provider's own key, but an algorithm Rally does not accept.
  rs384: (token, keys) => resign(token, { ...keys, alg: 'RS384' }, (c) => c),
  'wrong-issuer': (token, keys) => resign(token, keys, (c) => ({ ...c, iss: 'http://evil.example' })),
  'wrong-nonce': (token, keys) => resign(token, keys, (c) => ({ ...c, nonce: 'not-this-sign-in' })),
  'unknown-key': (token, keys) => resign(token, { key: keys.stranger, kid: 'stranger' }, (c) => c),
  'alg-none': (token) => {
    const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url'));
    return `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}.`;
  },
};

function resign(token, { key, kid, alg }, change) {
  const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url'));
  return signRsa(change(claims), key, kid, alg);
}

/**
 * Start the provider on a free port of 127.0.0.1. `redirectUri` is Rally's callback.
 * Resolves with { issuer, clientId, clientSecret, tamper(mode), tokenRequests, stop() }.
 */
export async function startProvider({ redirectUri }) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const kid = createHash('sha256').update(privateKey.export({ format: 'jwk' }).n).digest('hex').slice(0, 16);
  const clientId = 'rally';
  const clientSecret = 'a-client-secret-for-the-browser-tests';

  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    findAccount: async (_ctx, id) => account(id),
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    pkce: { required: () => true },
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }] },
    cookies: { keys: ['oidc-provider-test-cookie-key'] },
    features: { devInteractions: { enabled: true } },
  });
  // Quiet: the provider warns about its development defaults on every start.
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider error:', err));

  let mode = null;
  const tokenRequests = [];
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token') {
      tokenRequests.push({ status: ctx.status, error: ctx.body?.error });
      if (mode && ctx.status === 200 && ctx.body?.id_token) {
        ctx.body = { ...ctx.body, id_token: tampering[mode](ctx.body.id_token, { key: privateKey, kid, stranger }) };
      }
    }
  });
  server.on('request', provider.callback());

  return {
    issuer,
    clientId,
    clientSecret,
    tokenRequests,
    /** From now on, rewrite ID tokens this way (`null`: stop). */
    tamper(next) {
      if (next !== null && !(next in tampering)) throw new Error(`no tampering named ${next}`);
      mode = next;
    },
    tamperings: Object.keys(tampering),
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}
