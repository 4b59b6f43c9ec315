// A real OpenID Connect provider (panva/oidc-provider) that the tests start on 127.0.0.1 in
// place of Azure AD (Microsoft Entra ID). tests/oidc.py starts it; every setting comes from the
// environment:
//
//   PORT                      port to listen on (127.0.0.1 only)
//   ISSUER                    e.g. http://127.0.0.1:<PORT>
//   CLIENT_ID, CLIENT_SECRET  the one confidential client (the Jobplane web app)
//   REDIRECT_URIS             comma-separated; loopback http URIs match on any port (RFC 8252)
//   POST_LOGOUT_REDIRECT_URIS comma-separated, optional; same port rule
//   JWKS_FILE                 JSON {"keys": [private JWK, ...]}; the first key signs
//   API_AUDIENCE              the API's resource indicator and the `aud` of its access tokens;
//                             must be an absolute URI (RFC 8707), e.g. api://jobplane
//   API_SCOPES                space-separated scopes of that API, optional
//
// What a relying party sees, like Azure AD's:
// - the authorization code flow with PKCE (S256), scopes `openid profile email`, the client
//   authenticating with client_secret_basic or client_secret_post (both are accepted);
// - grants authorization_code, refresh_token (a refresh token with every code exchange) and
//   client_credentials;
// - access tokens for API_AUDIENCE are RS256 JWTs with aud = API_AUDIENCE, iss = ISSUER; that
//   resource is the default, so the code flow and client_credentials both give one;
// - the ID token carries email, email_verified and name (conformIdTokenClaims: false);
// - the sign-in page is oidc-provider's development one: any login name and any password are
//   accepted; consent is granted without a page, as an admin consent in Azure AD would be.
//
// Prints `ready <issuer>` on stdout once listening; exits with 0 on SIGTERM or SIGINT.
import { readFileSync } from 'node:fs';

import Provider, { interactionPolicy } from 'oidc-provider';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`provider.mjs: ${name} must be set`);
    process.exit(2);
  }
  return value;
}

const list = (value) => (value || '').split(',').map((item) => item.trim()).filter(Boolean);

const port = Number(required('PORT'));
const issuer = required('ISSUER');
const clientId = required('CLIENT_ID');
const clientSecret = required('CLIENT_SECRET');
const redirectUris = list(required('REDIRECT_URIS'));
const postLogoutRedirectUris = list(process.env.POST_LOGOUT_REDIRECT_URIS);
const jwks = JSON.parse(readFileSync(required('JWKS_FILE'), 'utf8'));
const apiAudience = required('API_AUDIENCE');
const apiScopes = (process.env.API_SCOPES || '').trim();

if (!URL.canParse(apiAudience)) {
  console.error(`provider.mjs: API_AUDIENCE must be an absolute URI (a resource indicator), got ${apiAudience}`);
  process.exit(2);
}

// Accounts: whatever login name was typed. An email address stays as it is; anything else
// gets @example.test.
async function findAccount(ctx, id) {
  const email = id.includes('@') ? id : `${id}@example.test`;
  return {
    accountId: id,
    async claims() {
      return { sub: id, email, email_verified: true, name: id };
    },
  };
}

// Consent without a page: every sign-in of the client gets its grant extended to what it asks.
async function loadExistingGrant(ctx) {
  const { client, session, provider } = ctx.oidc;
  const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
  let grant = grantId && await provider.Grant.find(grantId);
  if (!grant || grant.accountId !== session.accountId) { // another user signed in: their own grant
    grant = new provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  }
  grant.addOIDCScope('openid profile email offline_access');
  grant.addOIDCClaims(['sub', 'email', 'email_verified', 'name']);
  if (apiScopes) {
    grant.addResourceScope(apiAudience, apiScopes);
  }
  await grant.save();
  return grant;
}

// oidc-provider always asks native clients for consent; this one is first-party (see below).
const policy = interactionPolicy.base();
policy.get('consent').checks.remove('native_client_prompt');

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    // "native" makes oidc-provider apply RFC 8252's loopback rule: a registered
    // http://127.0.0.1/auth/callback (or localhost, [::1]) matches on any port, so a test can
    // register the URI before it knows which port its app will listen on. Nothing else about the
    // client changes: it stays confidential, and its consent is pre-granted all the same.
    application_type: 'native',
    redirect_uris: redirectUris,
    post_logout_redirect_uris: postLogoutRedirectUris,
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic', // client_secret_post is accepted as well
  }],
  jwks,
  findAccount,
  loadExistingGrant,
  interactions: { policy },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  conformIdTokenClaims: false,
  scopes: ['openid', 'profile', 'email', 'offline_access'],
  pkce: { required: () => true }, // S256 is the only method oidc-provider 9 knows
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => apiAudience,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== apiAudience) {
          throw new Provider.errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope: apiScopes,
          audience: apiAudience,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // Sessions live in memory and die with the process, so fresh keys each start are fine.
  cookies: { keys: [crypto.randomUUID()] },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    ClientCredentials: 3600,
    Grant: 86400,
    IdToken: 3600,
    Interaction: 600,
    RefreshToken: 86400,
    Session: 86400,
  },
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
server.on('error', (error) => {
  console.error(`provider.mjs: ${error.message}`);
  process.exit(1);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
