// The OpenID Provider of envoy-wam's demo and tests: a real oidc-provider (a certified
// OpenID Provider implementation), configured here and nothing more.
//
// Environment:
//   OP_HOST        bind address                     (127.0.0.1)
//   OP_PORT        port                             (9000)
//   OP_ISSUER      issuer identifier                (http://localhost:<OP_PORT>)
//   GATEWAY_URLS   comma-separated gateway origins  (http://localhost:8080); each gets the
//                  redirect URI <origin><GATEWAY_CALLBACK_PATH> and the post-logout URIs
//                  <origin><path> for each path of POST_LOGOUT_PATHS
//   GATEWAY_CALLBACK_PATH  the gateway's callback path for this OP's web clients (/pa/oidc/cb;
//                  a gateway's named web session uses /pa/oidc/cb/<name>)
//   POST_LOGOUT_PATHS  comma-separated paths registered as post-logout redirect URIs on every
//                  gateway origin (/)
//   PA_WAM_SECRET  client secret of every client   (demo-secret-change-me-0123456789abcdef)
//   OP_ACCESS_TOKEN_TTL  lifetime (s) of access tokens for the resources below (600)
//   OP_WEB_ACCESS_TOKEN_TTL  lifetime (s) of the access tokens the web clients get at login and
//                        refresh (no resource: opaque, good at userinfo) (600)
//   BACKCHANNEL_GATEWAY  the gateway origin whose <origin><BACKCHANNEL_PATH> every web client
//                        registers as its back-channel logout URI (the first of GATEWAY_URLS;
//                        `none`: no back-channel logout)
//   BACKCHANNEL_PATH     the gateway's back-channel logout path for this OP (/pa/oidc/backchannel;
//                        a named web session's is /pa/oidc/backchannel/<name>)
//   OP_GROUPS            JSON object: login name -> its groups ({"alice": ["staff", "admins"],
//                        "bob": ["staff"]}); anyone else logs in too, in no group
//   OP_COOKIE_PREFIX     prefix of the OP's own cookie names (none: oidc-provider's _session,
//                        _interaction, _interaction_resume). Browsers keep cookies per host, not
//                        per port: a second OP on the same host needs a prefix of its own, or
//                        the two OPs overwrite each other's session cookie.
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
// Sessions of the web clients (what a gateway that validates its sessions at the OP needs):
// - Refresh tokens: every code flow of a web client issues one (issueRefreshToken; no
//   offline_access needed), and every refresh-token grant ROTATES it (rotateRefreshToken:
//   true). oidc-provider's reuse detection stays on: presenting an already-rotated refresh
//   token revokes the whole grant (every refresh and access token of that login). Without
//   offline_access the refresh token also ends with the OP session (logout at the OP).
//   The refresh grant answers a new ID token with the account's current claims.
// - userinfo (/me) with the web client's access token: sub, email, email_verified, name, groups.
// - Back-channel logout 1.0: each web client has ONE backchannel_logout_uri (oidc-provider
//   takes one per client), <BACKCHANNEL_GATEWAY>/pa/oidc/backchannel, with
//   backchannel_logout_session_required, so ID tokens carry `sid` and logout tokens `sid` and
//   `sub` (signed like the client's ID tokens, typ logout+jwt, 2 min). The other gateways of
//   GATEWAY_URLS get no back-channel notice: they learn of a logout only by validation.
//   oidc-provider's guard against requests to special-use addresses is lifted for that one
//   URI only (the gateways listen on loopback).
//   Logout at the OP (RP-initiated, /session/end and its confirm form with logout=yes) notifies
//   every client of the OP session and revokes their grants (so their refresh tokens too).
// - Front-channel logout: not available; oidc-provider 9.x (package-lock.json) has no such
//   feature. Tests call the gateway's front-channel endpoint themselves.
// - Revocation (RFC 7009): a web client may revoke its own refresh and access tokens;
//   revoking a refresh token revokes its grant (oidc-provider's default revokeGrantPolicy).
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
// Login: the built-in development form; any login name works with any password. By default
// alice is in the groups staff and admins, bob in staff, anyone else in none (OP_GROUPS sets
// others; see also /__groups).
//
// A second instance as another OP (a partner's tenant, envoy-wam's `web_sessions`): its own
// OP_PORT and OP_ISSUER, GATEWAY_CALLBACK_PATH=/pa/oidc/cb/<name>,
// BACKCHANNEL_PATH=/pa/oidc/backchannel/<name>, OP_COOKIE_PREFIX, and its own OP_GROUPS. Its
// clients have the same ids (pa_wam, api_client, ...) but its own keys, sessions and tokens.
//
// Test hooks (no authentication: this OP is for tests and the demo only):
// GET /__stats answers how often each path was requested, and how often each grant was
// asked for: `grant:<grant_type>` for successful grants, `grant:token-exchange` for every
// token-exchange request that reached the STS (issued or refused) and
// `grant:token-exchange:issued` for those that got a token; also
// `backchannel:success:<client>` / `backchannel:error:<client>` for each back-channel logout
// notice sent (error: the gateway did not answer 200/204, or could not be reached),
// `revoked:<RefreshToken|AccessToken|ClientCredentials>:<client>` for each token revoked at
// /token/revocation, and `grant:revoked` for each grant revoked (by revocation or logout).
// POST /__stats/reset clears it.
// POST /__users/disable?sub=X  the account X no longer exists for the OP: its refresh grants
//   fail (invalid_grant), userinfo with its tokens fails (401 invalid_token).
// POST /__users/enable?sub=X   undoes that.
// POST /__groups?sub=X&groups=a,b  X's groups from now on (empty `groups=`: none); the next
//   ID token, refresh or userinfo answer carries them.
// GET /__session  (with the OP's session cookie, i.e. the browser's cookies) the OP session:
//   {accountId, uid, clients: {<client_id>: {sid, grantId, grantActive}}}; `sid` is what the
//   client's ID and logout tokens carry, grantActive false once the grant was revoked.
// POST /__sign  JSON {claims, header?} -> {jws}: the claims signed with this OP's own keys, as
//   the OP signs ID and logout tokens (header {alg: RS256, kid: op-rsa-1, typ: logout+jwt}
//   by default; `header` overrides or adds members: alg RS256/RS384/RS512/PS256 use the RSA
//   key, ES256 the EC key; a member set to null is left out). For tests of the logout-token
//   checks with tokens the OP would never send.
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
const WEB_ACCESS_TTL = seconds('OP_WEB_ACCESS_TOKEN_TTL', 600);
const backchannelGateway = (process.env.BACKCHANNEL_GATEWAY || gateways[0] || 'none').trim().replace(/\/$/, '');
const path = (name, dflt) => {
  const v = (process.env[name] || dflt).trim();
  if (!v.startsWith('/')) throw new Error(`${name} must be a path starting with /`);
  return v;
};
const callbackPath = path('GATEWAY_CALLBACK_PATH', '/pa/oidc/cb');
const backchannelPath = path('BACKCHANNEL_PATH', '/pa/oidc/backchannel');
const postLogoutPaths = (process.env.POST_LOGOUT_PATHS || '/')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
if (postLogoutPaths.some((p) => !p.startsWith('/'))) throw new Error('POST_LOGOUT_PATHS must be paths starting with /');
const backchannelUri = backchannelGateway === 'none' ? undefined : new URL(`${backchannelGateway}${backchannelPath}`).href;
const cookiePrefix = (process.env.OP_COOKIE_PREFIX || '').trim();
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

const GROUPS = (() => {
  if (!process.env.OP_GROUPS) return { alice: ['staff', 'admins'], bob: ['staff'] };
  const groups = JSON.parse(process.env.OP_GROUPS);
  const ok =
    groups && typeof groups === 'object' && !Array.isArray(groups) &&
    Object.values(groups).every((g) => Array.isArray(g) && g.every((x) => typeof x === 'string'));
  if (!ok) throw new Error('OP_GROUPS must be a JSON object of login name -> array of group names');
  return groups;
})();
const DISABLED = new Set();
const SCOPE = 'openid profile email groups';

const client = (client_id, extra) => ({
  client_id,
  client_secret: secret,
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: gateways.map((g) => `${g}${callbackPath}`),
  post_logout_redirect_uris: gateways.flatMap((g) => postLogoutPaths.map((p) => `${g}${p}`)),
  ...(backchannelGateway === 'none'
    ? {}
    : { backchannel_logout_uri: backchannelUri, backchannel_logout_session_required: true }),
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
  cookies: {
    keys: [secret],
    ...(cookiePrefix
      ? {
          names: {
            session: `${cookiePrefix}_session`,
            interaction: `${cookiePrefix}_interaction`,
            resume: `${cookiePrefix}_interaction_resume`,
          },
        }
      : {}),
  },
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
  // A refresh token for every code flow of a client allowed the grant (the web clients),
  // without offline_access; rotated on every use.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  // oidc-provider's outgoing requests refuse special-use addresses (an SSRF guard), loopback
  // included; the back-channel logout notices go to gateways on 127.0.0.1, so the guard is
  // lifted for exactly the one URI registered for them.
  fetch: (url, options) => {
    if (backchannelUri !== undefined && String(url) === backchannelUri) delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
  ttl: {
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || WEB_ACCESS_TTL,
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: backchannelGateway !== 'none' },
    userinfo: { enabled: true },
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
        count(`revoked:${token.kind}:${client.clientId}`);
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
    // A disabled account is unknown: oidc-provider then refuses its refresh grants
    // (invalid_grant) and userinfo (invalid_token).
    if (DISABLED.has(id)) return undefined;
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

provider.on('backchannel.success', (ctx, client) => count(`backchannel:success:${client.clientId}`));
provider.on('backchannel.error', (ctx, err, client) => {
  count(`backchannel:error:${client.clientId}`);
  console.log(`back-channel logout to ${client.backchannelLogoutUri} failed: ${err.message}`);
});
provider.on('grant.revoked', () => count('grant:revoked'));

// --- test hooks (see the header) -----------------------------------------------------------

async function readJson(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
  } catch {
    return undefined;
  }
}

// The OP session of the caller's cookies, and for each client its sid and grant.
async function sessionView(ctx) {
  const session = await provider.Session.get(ctx);
  const clients = {};
  for (const [clientId, auth] of Object.entries(session.authorizations || {})) {
    const grant = auth.grantId ? await provider.Grant.find(auth.grantId) : undefined;
    clients[clientId] = { sid: auth.sid, grantId: auth.grantId, grantActive: Boolean(grant && !grant.isExpired) };
  }
  return { accountId: session.accountId, uid: session.uid, clients };
}

async function signForTest(ctx) {
  const body = await readJson(ctx);
  if (!body || typeof body.claims !== 'object' || body.claims === null) {
    ctx.status = 400;
    ctx.body = { error: 'expected JSON {claims, header?}' };
    return;
  }
  const header = { alg: 'RS256', typ: 'logout+jwt', ...(body.header || {}) };
  const ec = String(header.alg).startsWith('ES');
  const { alg: _alg, ...jwk } = ec ? ecKey : rsaKey;
  if (!('kid' in header)) header.kid = jwk.kid;
  for (const k of Object.keys(header)) if (header[k] === null) delete header[k];
  try {
    const key = await importJWK(jwk, header.alg);
    ctx.body = { jws: await new SignJWT(body.claims).setProtectedHeader(header).sign(key) };
  } catch (err) {
    ctx.status = 400;
    ctx.body = { error: err.message };
  }
}

const HOOKS = {
  'GET /__stats': (ctx) => {
    ctx.body = stats;
  },
  'POST /__stats/reset': (ctx) => {
    for (const k of Object.keys(stats)) delete stats[k];
    ctx.body = {};
  },
  'POST /__users/disable': (ctx) => {
    DISABLED.add(String(ctx.query.sub));
    ctx.body = { disabled: [...DISABLED] };
  },
  'POST /__users/enable': (ctx) => {
    DISABLED.delete(String(ctx.query.sub));
    ctx.body = { disabled: [...DISABLED] };
  },
  'POST /__groups': (ctx) => {
    const groups = String(ctx.query.groups ?? '');
    GROUPS[String(ctx.query.sub)] = groups ? groups.split(',') : [];
    ctx.body = { sub: ctx.query.sub, groups: GROUPS[String(ctx.query.sub)] };
  },
  'GET /__session': async (ctx) => {
    ctx.body = await sessionView(ctx);
  },
  'POST /__sign': signForTest,
};

provider.use(async (ctx, next) => {
  const hook = HOOKS[`${ctx.method} ${ctx.path}`] || (ctx.path === '/__stats' ? HOOKS['GET /__stats'] : undefined);
  if (hook) {
    if (ctx.path.startsWith('/__users') || ctx.path === '/__groups') {
      if (typeof ctx.query.sub !== 'string' || !ctx.query.sub) {
        ctx.status = 400;
        ctx.body = { error: 'sub required' };
        return;
      }
    }
    await hook(ctx);
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
