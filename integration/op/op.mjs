// The OpenID Provider of envoy-wam's demo and tests: a real oidc-provider (a certified
// OpenID Provider implementation), configured here and nothing more.
//
// Environment:
//   OP_HOST        bind address                     (127.0.0.1)
//   OP_PORT        port                             (9000)
//   OP_ISSUER      issuer identifier                (http://localhost:<OP_PORT>)
//   GATEWAY_URLS   comma-separated gateway origins  (http://localhost:8080); each gets the
//                  redirect URI <origin>/pa/oidc/cb and post-logout URI <origin>/
//   PA_WAM_SECRET  client secret of pa_wam          (demo-secret-change-me-0123456789abcdef)
//
// Clients: pa_wam (client_secret_basic, RS256 ID tokens), pa_wam_post (client_secret_post),
// pa_wam_es (ES256 ID tokens). All use the authorization-code grant with PKCE (required).
// oidc-provider accepts client_secret_basic and client_secret_post alike from a client
// registered with either, so every client takes both; pa_wam_post states it explicitly.
// Login: the built-in development form; any login name works with any password. alice is in
// the groups staff and admins, bob in staff.
//
// GET /__stats answers how often each path was requested; POST /__stats/reset clears it.
//
// oidc-provider's warnings and notices about this being a development setup (in-memory
// storage, the development login form, default TTLs, Node.js 20) are left out unless
// OP_VERBOSE=1; any other warning still shows.

import { generateKeyPair, exportJWK } from 'jose';

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
const { default: Provider } = await import('oidc-provider');

const host = process.env.OP_HOST || '127.0.0.1';
const port = Number(process.env.OP_PORT || 9000);
const issuer = process.env.OP_ISSUER || `http://localhost:${port}`;
const gateways = (process.env.GATEWAY_URLS || 'http://localhost:8080')
  .split(',')
  .map((s) => s.trim().replace(/\/$/, ''))
  .filter(Boolean);
const secret = process.env.PA_WAM_SECRET || 'demo-secret-change-me-0123456789abcdef';

async function signingKey(alg, kid) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
}

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

const configuration = {
  clients: [
    client('pa_wam', {}),
    client('pa_wam_post', { token_endpoint_auth_method: 'client_secret_post' }),
    client('pa_wam_es', { id_token_signed_response_alg: 'ES256' }),
  ],
  jwks: { keys: [await signingKey('RS256', 'op-rsa-1'), await signingKey('ES256', 'op-ec-1')] },
  cookies: { keys: [secret] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
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
    introspection: { enabled: true },
    revocation: { enabled: true },
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
