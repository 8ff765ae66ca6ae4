// The OpenID Provider of envoy-wam's demo and tests: a real oidc-provider (a certified
// OpenID Provider implementation), configured here and nothing more.
//
// Environment:
//   OP_HOST        bind address                     (127.0.0.1)
//   OP_PORT        port                             (9000)
//   OP_ISSUER      issuer identifier                (http://localhost:<OP_PORT>)
//   GATEWAY_URLS   comma-separated gateway origins  (http://localhost:8080); each gets the
//                  redirect URI <origin>/pa/oidc/cb and post-logout URI <origin>/
//   PA_WAM_SECRET  client secret of every client   (demo-secret-change-me-0123456789abcdef)
//   OP_ACCESS_TOKEN_TTL  lifetime (s) of access tokens for the resources below (600)
//   OP_SHORT_TOKEN_TTL   lifetime (s) of access tokens for the *short* resources (3)
//   STS_TOKEN_TTL        lifetime (s) of tokens issued by the token exchange (300)
//   GATEWAY_JWKS_URLS    comma-separated JWKS URLs the STS trusts for gateway-signed subject
//                        tokens (<origin>/pa/authtoken/JWKS for each of GATEWAY_URLS)
//   GATEWAY_TOKEN_ISSUER the `iss` those gateway tokens must carry (envoy-wam)
//
// Clients: pa_wam (client_secret_basic, RS256 ID tokens), pa_wam_post (client_secret_post),
// pa_wam_es (ES256 ID tokens). All use the authorization-code grant with PKCE (required).
// oidc-provider accepts client_secret_basic and client_secret_post alike from a client
// registered with either, so every client takes both; pa_wam_post states it explicitly.
//
// API access (client_credentials grant, resource indicators, RFC 8707): api_client
// (client_secret_basic, scopes orders:read orders:write) asks for a token for one resource:
//   https://api.example.test     JWT access token (RS256, aud = the resource), OP_ACCESS_TOKEN_TTL
//   https://other.example.test   the same, another audience (for wrong-audience tests)
//   https://short.example.test   JWT, OP_SHORT_TOKEN_TTL
//   https://es.example.test      JWT signed with ES256
//   https://opaque.example.test  opaque token, checked by introspection
//   https://opaque-short.example.test  opaque, OP_SHORT_TOKEN_TTL
// Scopes granted are those asked for that the resource knows (orders:read, orders:write).
// Introspection (/token/introspection): pa_wam (the gateway) may introspect any token; a
// client may always introspect its own. Revocation (/token/revocation): by the token's client.
//
// Security Token Service (RFC 8693 token exchange at /token, grant type
// urn:ietf:params:oauth:grant-type:token-exchange) for the client pa_sts. Subject tokens:
//   urn:ietf:params:oauth:token-type:access_token  an access token of this OP: opaque (looked
//       up, must be valid and not revoked) or JWT (signed by this OP's keys, iss, exp)
//   urn:ietf:params:oauth:token-type:jwt  a JWT signed by a gateway (keys from
//       GATEWAY_JWKS_URLS), iss = GATEWAY_TOKEN_ISSUER, exp in the future, aud (when present)
//       this OP's issuer, token endpoint, or pa_sts
// The answer: a JWT signed by this OP (RS256, kid op-rsa-1) with iss, sub = the subject's
// sub, aud = the requested audience(s)/resource(s) (pa_sts when none), scope (requested, or
// the subject's), email/name/groups of a gateway token, act {sub: pa_sts}, client_id, iat,
// exp = now + STS_TOKEN_TTL (or less: an audience that is one of the resources above gets at
// most that resource's lifetime, so audience https://short.example.test gives 3 s), jti; per
// RFC 8693 2.2.1 {access_token, issued_token_type, token_type: "Bearer", expires_in}. Errors
// per 2.2.2: invalid_request, invalid_grant, or invalid_target for an audience under the
// reserved TLD .invalid (e.g. https://refused.invalid: an STS that refuses), all 400.
//
// Login: the built-in development form; any login name works with any password. alice is in
// the groups staff and admins, bob in staff.
//
// GET /__stats answers how often each path was requested, and how often each grant was
// asked for: `grant:<grant_type>` for successful grants, `grant:token-exchange` for every
// token-exchange request that reached the STS (issued or refused) and
// `grant:token-exchange:issued` for those that got a token. POST /__stats/reset clears it.
//
// oidc-provider's warnings and notices about this being a development setup (in-memory
// storage, the development login form, default TTLs, Node.js 20) are left out unless
// OP_VERBOSE=1; any other warning still shows.

import { generateKeyPair, exportJWK, importJWK, createLocalJWKSet, jwtVerify, SignJWT, decodeJwt } from 'jose';
import { randomUUID } from 'node:crypto';

if (!process.env.OP_VERBOSE) {
  const expected =
    /^oidc-provider (WARNING: (Unsupported runtime|a quick start development-only)|NOTICE: default ttl\.)/;
  for (const level of ['warn', 'info']) {
    const print = console[level].bind(console);
    console[level] = (...args) => {
      if (!(typeof args[0] === 'string' && expected.test(args[0]))) print(...args);
    };
  }
}
// Imported after the filter above: oidc-provider warns about the runtime when it loads.
const { default: Provider, errors } = await import('oidc-provider');

const host = process.env.OP_HOST || '127.0.0.1';
const port = Number(process.env.OP_PORT || 9000);
const issuer = process.env.OP_ISSUER || `http://localhost:${port}`;
const gateways = (process.env.GATEWAY_URLS || 'http://localhost:8080')
  .split(',')
  .map((s) => s.trim().replace(/\/$/, ''))
  .filter(Boolean);
const secret = process.env.PA_WAM_SECRET || 'demo-secret-change-me-0123456789abcdef';
const seconds = (name, dflt) => {
  const v = Number(process.env[name] || dflt);
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${name} must be a positive integer`);
  return v;
};
const ACCESS_TTL = seconds('OP_ACCESS_TOKEN_TTL', 600);
const SHORT_TTL = seconds('OP_SHORT_TOKEN_TTL', 3);
const STS_TTL = seconds('STS_TOKEN_TTL', 300);
const gatewayJwksUrls = (process.env.GATEWAY_JWKS_URLS || gateways.map((g) => `${g}/pa/authtoken/JWKS`).join(','))
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const gatewayIssuer = process.env.GATEWAY_TOKEN_ISSUER || 'envoy-wam';

async function signingKey(alg, kid) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
}

const rsaKey = await signingKey('RS256', 'op-rsa-1');
const ecKey = await signingKey('ES256', 'op-ec-1');
const publicJwk = ({ d, p, q, dp, dq, qi, ...pub }) => pub;
const ownKeys = createLocalJWKSet({ keys: [publicJwk(rsaKey), publicJwk(ecKey)] });
const stsSigningKey = await importJWK(rsaKey, 'RS256');

const ORDER_SCOPES = 'orders:read orders:write';
const RESOURCES = {
  'https://api.example.test': { format: 'jwt', ttl: ACCESS_TTL },
  'https://other.example.test': { format: 'jwt', ttl: ACCESS_TTL },
  'https://short.example.test': { format: 'jwt', ttl: SHORT_TTL },
  'https://es.example.test': { format: 'jwt', ttl: ACCESS_TTL, alg: 'ES256' },
  'https://opaque.example.test': { format: 'opaque', ttl: ACCESS_TTL },
  'https://opaque-short.example.test': { format: 'opaque', ttl: SHORT_TTL },
};

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TT_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const TT_JWT = 'urn:ietf:params:oauth:token-type:jwt';

const GROUPS = { alice: ['staff', 'admins'], bob: ['staff'] };
const SCOPE = 'openid profile email groups';

const client = (client_id, extra) => ({
  client_id,
  client_secret: secret,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  redirect_uris: gateways.map((g) => `${g}/pa/oidc/cb`),
  post_logout_redirect_uris: gateways.map((g) => `${g}/`),
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
  ...extra,
});

// A client with no browser flows: no redirect URIs, no response types.
const machine = (client_id, grant_types, extra) => ({
  client_id,
  client_secret: secret,
  grant_types,
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  ...extra,
});

const configuration = {
  clients: [
    client('pa_wam', {}),
    client('pa_wam_post', { token_endpoint_auth_method: 'client_secret_post' }),
    client('pa_wam_es', { id_token_signed_response_alg: 'ES256' }),
    machine('api_client', ['client_credentials'], { scope: ORDER_SCOPES }),
    machine('pa_sts', [TOKEN_EXCHANGE]),
  ],
  jwks: { keys: [rsaKey, ecKey] },
  cookies: { keys: [secret] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups', 'orders:read', 'orders:write'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put the scope's claims in the ID token too: the gateway builds its session from it.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // The gateway (pa_wam) introspects tokens issued to API clients; any client its own.
      allowedPolicy: async (ctx, client, token) => client.clientId === 'pa_wam' || token.clientId === client.clientId,
    },
    revocation: {
      enabled: true,
      async allowedPolicy(ctx, client, token) {
        if (token.clientId !== client.clientId) {
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => undefined,
      useGrantedResource: async () => false,
      async getResourceServerInfo(ctx, resourceIndicator) {
        const rs = RESOURCES[resourceIndicator];
        if (!rs) throw new errors.InvalidTarget();
        return {
          scope: ORDER_SCOPES,
          audience: resourceIndicator,
          accessTokenTTL: rs.ttl,
          accessTokenFormat: rs.format,
          ...(rs.format === 'jwt' ? { jwt: { sign: { alg: rs.alg || 'RS256' } } } : {}),
        };
      },
    },
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          name: id.charAt(0).toUpperCase() + id.slice(1),
          email: `${id}@example.com`,
          email_verified: true,
          groups: GROUPS[id] || [],
        };
      },
    };
  },
  // "Bypass Authorization Approval": the gateway's clients never show a consent screen.
  async loadExistingGrant(ctx) {
    const { Grant } = ctx.oidc.provider;
    const clientId = ctx.oidc.client.clientId;
    const existing = ctx.oidc.session.grantIdFor(clientId);
    if (existing) {
      const grant = await Grant.find(existing);
      if (grant) return grant;
    }
    const grant = new Grant({ clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(SCOPE);
    await grant.save();
    ctx.oidc.session.ensureClientContainer(clientId);
    ctx.oidc.session.grantIdFor(clientId, grant.jti);
    return grant;
  },
};

const provider = new Provider(issuer, configuration);

const stats = {};
const count = (key) => {
  stats[key] = (stats[key] || 0) + 1;
};
provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  if (type !== TOKEN_EXCHANGE) count(`grant:${type}`);
});

// --- the STS: RFC 8693 token exchange ------------------------------------------------------

const list = (v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

// The subject of an access token this OP issued: opaque (looked up) or JWT (signature, iss, exp).
async function accessTokenSubject(token) {
  if (token.split('.').length === 3) {
    try {
      const { payload } = await jwtVerify(token, ownKeys, { issuer, algorithms: ['RS256', 'ES256'], clockTolerance: 0 });
      if (typeof payload.exp !== 'number') throw new Error('no exp');
      return { sub: payload.sub || payload.client_id, scope: payload.scope };
    } catch {
      throw new errors.InvalidGrant('subject_token is not a valid access token of this issuer');
    }
  }
  const found = (await provider.AccessToken.find(token)) || (await provider.ClientCredentials.find(token));
  if (!found?.isValid) throw new errors.InvalidGrant('subject_token is not an active access token');
  if (found.grantId) {
    const grant = await provider.Grant.find(found.grantId);
    if (!grant || grant.isExpired) throw new errors.InvalidGrant('subject_token is not an active access token');
  }
  return { sub: found.accountId || found.clientId, scope: found.scope };
}

// A gateway-signed JWT: any of the gateways' JWKS may hold its key. Fetched on every exchange
// (gateways in tests restart with new keys under the same kid; the gateway caches exchanges).
async function gatewayTokenSubject(token) {
  const audiences = [issuer, `${issuer}/token`, `http://127.0.0.1:${port}/token`, `http://localhost:${port}/token`, 'pa_sts'];
  for (const url of gatewayJwksUrls) {
    let jwks;
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (!r.ok) continue;
      jwks = createLocalJWKSet(await r.json());
    } catch {
      continue;
    }
    try {
      const { payload } = await jwtVerify(token, jwks, {
        issuer: gatewayIssuer,
        algorithms: ['ES256', 'ES384', 'RS256', 'RS384', 'RS512', 'PS256'],
        clockTolerance: 0,
      });
      if (typeof payload.exp !== 'number' || typeof payload.sub !== 'string') continue;
      if (payload.aud !== undefined && !list(payload.aud).some((a) => audiences.includes(a))) continue;
      return { sub: payload.sub, scope: payload.scope, claims: payload };
    } catch {
      continue;
    }
  }
  throw new errors.InvalidGrant('subject_token is not a valid token of a trusted gateway');
}

async function tokenExchange(ctx) {
  count('grant:token-exchange');
  const { params, client } = ctx.oidc;
  const subjectToken = params.subject_token;
  const subjectType = params.subject_token_type;
  if (!subjectToken) throw new errors.InvalidRequest('missing required parameter subject_token');
  if (!subjectType) throw new errors.InvalidRequest('missing required parameter subject_token_type');
  if (params.actor_token || params.actor_token_type) throw new errors.InvalidRequest('actor tokens are not supported');
  const requested = params.requested_token_type || TT_ACCESS_TOKEN;
  if (![TT_ACCESS_TOKEN, TT_JWT].includes(requested)) {
    throw new errors.InvalidRequest('unsupported requested_token_type');
  }
  let subject;
  if (subjectType === TT_ACCESS_TOKEN) subject = await accessTokenSubject(subjectToken);
  else if (subjectType === TT_JWT) subject = await gatewayTokenSubject(subjectToken);
  else throw new errors.InvalidRequest('unsupported subject_token_type');
  if (!subject.sub) throw new errors.InvalidGrant('subject_token has no subject');

  const aud = [...list(params.audience), ...list(params.resource)];
  // A target the STS serves no tokens for (RFC 8693 2.2.2 invalid_target): any host under the
  // reserved TLD .invalid, e.g. https://refused.invalid (tests of an STS that refuses).
  for (const a of aud) {
    let host = '';
    try {
      host = new URL(a).hostname;
    } catch {}
    if (host === 'invalid' || host.endsWith('.invalid')) throw new errors.InvalidTarget('the STS does not serve this audience');
  }
  const scope = params.scope || subject.scope || undefined;
  const extra = {};
  for (const claim of ['email', 'name', 'groups']) {
    if (subject.claims?.[claim] !== undefined) extra[claim] = subject.claims[claim];
  }
  // Never longer than the lifetime of the audience's own tokens (https://short.example.test: 3 s).
  const ttl = Math.min(STS_TTL, ...aud.map((a) => RESOURCES[a]?.ttl ?? STS_TTL));
  const now = Math.floor(Date.now() / 1000);
  const accessToken = await new SignJWT({
    ...extra,
    ...(scope ? { scope } : {}),
    client_id: client.clientId,
    act: { sub: client.clientId },
  })
    .setProtectedHeader({ alg: 'RS256', kid: rsaKey.kid, typ: 'at+jwt' })
    .setIssuer(issuer)
    .setSubject(String(subject.sub))
    .setAudience(aud.length === 0 ? client.clientId : aud.length === 1 ? aud[0] : aud)
    .setIssuedAt(now)
    .setExpirationTime(now + ttl)
    .setJti(randomUUID())
    .sign(stsSigningKey);
  count('grant:token-exchange:issued');
  ctx.body = {
    access_token: accessToken,
    issued_token_type: requested,
    token_type: 'Bearer',
    expires_in: ttl,
    ...(scope ? { scope } : {}),
  };
}

provider.registerGrantType(
  TOKEN_EXCHANGE,
  tokenExchange,
  ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'audience', 'resource', 'scope'],
  ['audience', 'resource'],
);

provider.use(async (ctx, next) => {
  if (ctx.path === '/__stats') {
    ctx.body = stats;
    return;
  }
  if (ctx.path === '/__stats/reset' && ctx.method === 'POST') {
    for (const k of Object.keys(stats)) delete stats[k];
    ctx.body = {};
    return;
  }
  stats[ctx.path] = (stats[ctx.path] || 0) + 1;
  await next();
});

const server = provider.listen(port, host, () => {
  console.log(`OP ready on ${issuer} (listening on ${host}:${port})`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
