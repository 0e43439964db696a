// A real OpenID Connect provider on loopback for the end-to-end suite, built on the
// `oidc-provider` package (8.x: the 9.x line wants Node 22 LTS, the machines have Node 20).
//
// Environment:
//   PORT                      port to listen on, 127.0.0.1 only; the issuer is http://127.0.0.1:$PORT
//   CLIENT_ID, CLIENT_SECRET  the one confidential client (client_secret_basic, authorization_code)
//   REDIRECT_URI              the relying party's callback (several may be given, space-separated)
//   POST_LOGOUT_REDIRECT_URI  optional, where RP-initiated logout may send the browser back to
//
// Behaviour the suite relies on:
//   * PKCE is required, S256 only; the only response_type is `code`.
//   * Scopes openid, email, profile, groups. The ID Token itself carries email, email_verified,
//     name and groups (conformIdTokenClaims: false), not only the UserInfo endpoint.
//   * Sign-in page (GET /interaction/:uid): form#login with input[name=login] (the login name
//     from PEOPLE below), input[name=password] (any password is accepted) and
//     button[type=submit]. An unknown login re-renders the form with p[data-idp=error].
//     "Cancel" (a[data-idp=cancel]) ends the request with error=access_denied at the RP.
//   * There is no consent page: this single first-party client is granted every requested
//     scope automatically (loadExistingGrant), so the browser goes login -> RP callback.
//   * RP-initiated logout (/session/end) confirms itself: the page auto-submits "yes, sign me
//     out" and the browser lands on post_logout_redirect_uri (or a plain "signed out" page).
//   * Keys (RS256 signing key, cookie keys) are generated at start-up and live in memory only,
//     as does every session, grant and code: a restart forgets everything.
//   * Prints `READY <issuer>` on stdout once listening; diagnostics go to stderr. Exits 0 on
//     SIGTERM / SIGINT.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { STATUS_CODES } from 'node:http';

import Provider from 'oidc-provider';

// --------------------------------------------------------------------------- the people

// Keyed by login name. `sub` deliberately differs from the login and the e-mail so that a
// relying party keying users on anything but `sub` shows up in the tests.
const PEOPLE = {
  alice: { sub: 'sub-alice', email: 'alice@example.com', name: 'Alice Archer', groups: ['team-alpha'] },
  bob: { sub: 'sub-bob', email: 'bob@example.com', name: 'Bob Baker', groups: ['team-alpha', 'team-alpha-leads'] },
  carol: { sub: 'sub-carol', email: 'carol@example.com', name: 'Carol Chen', groups: ['team-beta'] },
  dave: { sub: 'sub-dave', email: 'dave@example.com', name: 'Dave Diaz', groups: ['team-beta', 'team-beta-leads'] },
  root: { sub: 'sub-root', email: 'root@example.com', name: 'Root Admin', groups: ['gateway-admins'] },
  mallory: { sub: 'sub-mallory', email: 'mallory@evil.test', name: 'Mallory Mallet', groups: [] },
  fin: { sub: 'sub-fin', email: 'fin@example.com', name: 'Fin Fisher', groups: ['gateway-finance'] },
};
const BY_SUB = new Map(Object.values(PEOPLE).map((p) => [p.sub, p]));

const SCOPES = ['openid', 'email', 'profile', 'groups'];
const CLAIMS = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name'],
  groups: ['groups'],
};

// --------------------------------------------------------------------------- configuration

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`idp: the environment variable ${name} is required`);
    process.exit(2);
  }
  return value;
}

const PORT = Number.parseInt(required('PORT'), 10);
const CLIENT_ID = required('CLIENT_ID');
const CLIENT_SECRET = required('CLIENT_SECRET');
const REDIRECT_URIS = required('REDIRECT_URI').split(/[\s,]+/).filter(Boolean);
const POST_LOGOUT_REDIRECT_URIS = (process.env.POST_LOGOUT_REDIRECT_URI || '').split(/[\s,]+/).filter(Boolean);
const HOST = '127.0.0.1';
const ISSUER = `http://${HOST}:${PORT}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `e2e-${randomBytes(6).toString('hex')}`,
  alg: 'RS256',
  use: 'sig',
};

const esc = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// No external resources at all (the default pages of oidc-provider pull a web font).
function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(title)}</title>
<style>
body{font-family:sans-serif;max-width:22rem;margin:3rem auto;padding:0 1rem}
label{display:block;margin:.6rem 0}input{display:block;width:100%;box-sizing:border-box;padding:.3rem}
button{margin-top:.8rem;padding:.4rem 1rem}.error{color:#a00}pre{white-space:pre-wrap}
</style>
</head>
<body data-idp-issuer="${esc(ISSUER)}">
${body}
</body>
</html>`;
}

function loginPage({ uid, clientId, login, error }) {
  return page('Sign in - e2e IdP', `<h1>Sign in</h1>
<p>to continue to <b data-idp="client">${esc(clientId)}</b></p>
${error ? `<p class="error" role="alert" data-idp="error">${esc(error)}</p>` : ''}
<form id="login" data-idp="login" method="post" action="/interaction/${esc(uid)}" autocomplete="off">
<label>Login <input type="text" name="login" value="${esc(login)}" required autofocus></label>
<label>Password <input type="password" name="password" placeholder="any password"></label>
<button type="submit">Sign in</button>
</form>
<p><a data-idp="cancel" href="/interaction/${esc(uid)}/abort">Cancel</a></p>`);
}

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    client_name: 'ai-gateway (e2e)',
    redirect_uris: REDIRECT_URIS,
    post_logout_redirect_uris: POST_LOGOUT_REDIRECT_URIS,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingKey] },
  responseTypes: ['code'],
  scopes: SCOPES,
  claims: CLAIMS,
  // Put the scope-requested claims into the ID Token as well, not only into UserInfo.
  conformIdTokenClaims: false,
  pkce: { methods: ['S256'], required: () => true },
  cookies: {
    keys: [randomBytes(32).toString('base64url')],
    // The default session cookie is SameSite=None, which Chromium rejects unless it is also
    // Secure - and over http it cannot be (oidc-provider only sets Secure on https requests);
    // the library then falls back to a second `_session.legacy` cookie. Lax (the IdP and the RP
    // are the same site, 127.0.0.1) gives one plain session cookie that works over http.
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Grant: 14 * 24 * 3600,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
  },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = page('Sign out - e2e IdP', `<h1>Signing out</h1>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>
<script>
const f = document.getElementById('op.logoutForm');
const yes = document.createElement('input');
yes.type = 'hidden'; yes.name = 'logout'; yes.value = 'yes';
f.appendChild(yes);
f.submit();
</script>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out - e2e IdP', '<h1 data-idp="signed-out">Signed out</h1>');
      },
    },
  },
  async findAccount(ctx, sub) {
    const person = BY_SUB.get(sub);
    if (!person) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: person.email,
          email_verified: true,
          name: person.name,
          groups: [...person.groups],
        };
      },
    };
  },
  // No consent screen: the one client is first-party, so its grant simply holds every scope.
  async loadExistingGrant(ctx) {
    const { Grant } = ctx.oidc.provider;
    const { accountId } = ctx.oidc.account;
    const clientId = ctx.oidc.client.clientId;
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(clientId);
    let grant = grantId ? await Grant.find(grantId) : undefined;
    if (!grant || grant.accountId !== accountId) {
      grant = new Grant({ clientId, accountId });
    }
    grant.addOIDCScope(SCOPES.join(' '));
    await grant.save();
    return grant;
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error - e2e IdP', `<h1>Error</h1>
${Object.entries(out).map(([k, v]) => `<pre data-idp-error="${esc(k)}"><b>${esc(k)}</b>: ${esc(v)}</pre>`).join('\n')}`);
  },
});

// --------------------------------------------------------------------------- interactions

async function readForm(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function finish(ctx, result) {
  const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  ctx.redirect(to);
  ctx.status = 303;
}

// Grants what a consent prompt asks for, should one ever be raised despite loadExistingGrant.
async function autoConsent(ctx, details) {
  const { prompt, params, session, grantId } = details;
  const grant = (grantId && await provider.Grant.find(grantId))
    || new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  for (const [indicator, scope] of Object.entries(prompt.details.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scope.join(' '));
  }
  await finish(ctx, { consent: { grantId: await grant.save() } });
}

provider.use(async (ctx, next) => {
  const m = /^\/interaction\/([^/]+)(\/abort)?$/.exec(ctx.path);
  if (!m) return next();
  const [, uid, abort] = m;
  ctx.set('Cache-Control', 'no-store');
  try {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
    if (abort) {
      if (ctx.method !== 'GET') ctx.throw(405);
      return await finish(ctx, { error: 'access_denied', error_description: 'End-User aborted interaction' });
    }
    if (details.prompt.name === 'consent') return await autoConsent(ctx, details);
    if (details.prompt.name !== 'login') ctx.throw(501, `prompt ${details.prompt.name} is not implemented`);
    const clientId = details.params.client_id;
    if (ctx.method === 'GET') {
      ctx.type = 'html';
      ctx.body = loginPage({ uid, clientId, login: details.params.login_hint });
      return undefined;
    }
    if (ctx.method !== 'POST') ctx.throw(405);
    const form = await readForm(ctx.req);
    const login = (form.get('login') || '').trim();
    const person = Object.hasOwn(PEOPLE, login) ? PEOPLE[login] : undefined;
    if (!person) {
      console.error(`idp: refused sign-in of unknown login ${JSON.stringify(login)}`);
      ctx.status = 200;
      ctx.type = 'html';
      ctx.body = loginPage({ uid, clientId, login, error: `Unknown login "${login}".` });
      return undefined;
    }
    console.error(`idp: signed in ${login} (${person.sub})`);
    return await finish(ctx, { login: { accountId: person.sub, remember: true } });
  } catch (err) {
    const status = err.status || err.statusCode || 500;
    if (status >= 500) console.error('idp: interaction failed:', err);
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = page('Error - e2e IdP', `<h1>Error</h1>
<pre data-idp-error="error">${esc(err.error || err.name || STATUS_CODES[status])}</pre>
<pre data-idp-error="error_description">${esc(err.error_description || err.message)}</pre>`);
    return undefined;
  }
});

for (const event of [
  'server_error', 'authorization.error', 'grant.error', 'end_session.error',
  'userinfo.error', 'jwks.error', 'discovery.error', 'check_session.error',
]) {
  provider.on(event, (ctx, err) => {
    const detail = err?.error_detail ? ` (${err.error_detail})` : '';
    const what = err?.error ? `${err.error}: ${err.error_description}${detail}` : err;
    console.error(`idp: ${event}`, what);
  });
}

// --------------------------------------------------------------------------- serving

const server = provider.listen(PORT, HOST, () => {
  console.log(`READY ${ISSUER}`);
});
server.on('error', (err) => {
  console.error(`idp: cannot listen on ${HOST}:${PORT}:`, err.message);
  process.exit(1);
});

function shutdown(signal) {
  console.error(`idp: ${signal}, stopping`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
