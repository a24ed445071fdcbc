// An OpenID Connect provider (OP) for end-to-end tests of the broker's relying
// party, built on the certified npm package oidc-provider and served on
// 127.0.0.1 only.
//
// Usage: node provider.mjs --port PORT --config FILE
//
// The issuer is http://127.0.0.1:PORT. The config file (JSON, described in
// README.md) names one client, the users and the file that receives every
// login_hint. The login pages are this file's own, so the email field shows the
// login_hint of the authorization request, as on Microsoft Entra ID, and
// consent is granted without a page. The /__test/ endpoints switch the next ID
// token or authorization response into a broken form and rotate the signing
// key.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { interactionPolicy } from 'oidc-provider';

// Exit status for an invalid command line or config file.
const EXIT_USAGE = 2;
// Exit status when the port is already in use, so that a caller that picked
// the port itself can pick another and retry.
const EXIT_PORT_IN_USE = 3;

// Form field names of the login page, the same as on Entra ID's sign-in page
// and on the pysaml2 test IdP.
const EMAIL_FIELD = 'loginfmt';
const PASSWORD_FIELD = 'passwd';
const LOGIN_FAILED_MESSAGE = 'Your account or password is incorrect.';

// The aud claim of an ID token in the wrong-audience mode.
const WRONG_AUDIENCE = 'other-client';
// The iss claim of an ID token in the wrong-issuer mode.
const WRONG_ISSUER = 'http://127.0.0.1:1/wrong-issuer';
// In the expired mode the ID token was issued 15 minutes ago and expired 10
// minutes ago, so a relying party that allows 5 minutes of clock skew still
// rejects it.
const EXPIRED_ISSUED_SECONDS_AGO = 900;
const EXPIRED_EXPIRY_SECONDS_AGO = 600;

// Modes for the next ID token that the token endpoint returns.
const ID_TOKEN_MODES = new Set([
  'wrong-audience',
  'expired',
  'replayed-nonce',
  'wrong-issuer',
  'bad-signature',
]);
// Modes for the next authorization response: the OAuth 2.0 error it carries.
const AUTHORIZATION_MODES = new Set(['access_denied', 'login_required']);

// Maximum size of a request body that this file parses itself.
const MAX_BODY_BYTES = 64 * 1024;

function log(message) {
  process.stderr.write(`${new Date().toISOString()} ${message}\n`);
}

function exitWithUsageError(message) {
  log(`error: ${message}`);
  log('usage: node provider.mjs --port PORT --config FILE');
  process.exit(EXIT_USAGE);
}

// ---------------------------------------------------------------------------
// Command line and config file

function readCommandLine() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: 'string' },
        config: { type: 'string' },
      },
    }));
  } catch (error) {
    exitWithUsageError(error.message);
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    exitWithUsageError(`--port must be a TCP port from 1 to 65535, got ${JSON.stringify(values.port)}`);
  }
  if (!values.config) {
    exitWithUsageError('--config FILE is missing');
  }
  return { port, configPath: values.config };
}

function requireString(object, field, where) {
  const value = object?.[field];
  if (typeof value !== 'string' || value === '') {
    throw new Error(`${where}.${field} must be a non-empty string`);
  }
  return value;
}

// Reads the config file and returns { client, users, loginHintsFile }, where
// users maps each lowercase email address to its user.
function readConfig(path) {
  const config = JSON.parse(fs.readFileSync(path, 'utf8'));

  const client = {
    client_id: requireString(config.client, 'client_id', 'client'),
    client_secret: requireString(config.client, 'client_secret', 'client'),
    redirect_uris: config.client.redirect_uris,
  };
  if (!Array.isArray(client.redirect_uris) || client.redirect_uris.length === 0
    || !client.redirect_uris.every((uri) => typeof uri === 'string' && URL.canParse(uri))) {
    throw new Error('client.redirect_uris must be a non-empty list of absolute URLs');
  }

  if (!Array.isArray(config.users) || config.users.length === 0) {
    throw new Error('users must be a non-empty list');
  }
  const users = new Map();
  config.users.forEach((entry, index) => {
    const where = `users[${index}]`;
    const user = {
      sub: requireString(entry, 'sub', where),
      email: requireString(entry, 'email', where),
      password: requireString(entry, 'password', where),
      given_name: requireString(entry, 'given_name', where),
      family_name: requireString(entry, 'family_name', where),
      preferred_username: requireString(entry, 'preferred_username', where),
      upn: requireString(entry, 'upn', where),
      email_verified: entry.email_verified ?? true,
    };
    if (typeof user.email_verified !== 'boolean') {
      throw new Error(`${where}.email_verified must be true or false`);
    }
    users.set(user.email.toLowerCase(), user);
  });

  return {
    client,
    users,
    loginHintsFile: requireString(config, 'login_hints_file', 'config'),
  };
}

// Milliseconds since the process started, in the startup lines of the log, so
// that a slow start shows which step took the time.
log(`loaded oidc-provider after ${Math.round(performance.now())} ms`);

const { port, configPath } = readCommandLine();
let config;
try {
  config = readConfig(configPath);
} catch (error) {
  exitWithUsageError(`invalid config file ${configPath}: ${error.message}`);
}
const issuer = `http://127.0.0.1:${port}`;

// ---------------------------------------------------------------------------
// Test switches and the signing key

const switches = {
  // One of ID_TOKEN_MODES or null. The next ID token consumes it.
  idToken: null,
  // One of AUTHORIZATION_MODES or null. The next authorization consumes it.
  authorization: null,
};

// The nonce parameters of the authorization requests received so far, oldest
// first, for the replayed-nonce mode.
const authorizationNonces = [];

let keyGeneration = 0;

// Generates an RSA-2048 key pair for RS256 and returns the private JWK, which
// oidc-provider takes, and the Node.js KeyObject, which the test modes sign
// with.
function generateSigningKey() {
  keyGeneration += 1;
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = `rs256-${keyGeneration}-${crypto.randomBytes(4).toString('hex')}`;
  const jwk = {
    ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig',
  };
  return { kid, jwk, privateKey };
}

// ---------------------------------------------------------------------------
// Helpers for HTML, bodies and JWTs

function escapeHtml(text) {
  return String(text)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function sendHtml(res, status, title, body) {
  const page = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Cache-Control': 'no-store',
  });
  res.end(page);
}

function sendJson(res, status, value) {
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Cache-Control': 'no-store',
  });
  res.end(`${JSON.stringify(value)}\n`);
}

// Reads the request body as text, up to MAX_BODY_BYTES.
async function readBody(req) {
  const chunks = [];
  let length = 0;
  for await (const chunk of req) {
    length += chunk.length;
    if (length > MAX_BODY_BYTES) {
      throw new Error(`request body is larger than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function decodeJwtPart(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

// Signs header and payload as a compact JWS with RS256 (RSASSA-PKCS1-v1_5
// with SHA-256).
function signJwt(header, payload, privateKey) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const signingInput = `${encode(header)}.${encode(payload)}`;
  const signature = crypto.sign('sha256', Buffer.from(signingInput), privateKey);
  return `${signingInput}.${signature.toString('base64url')}`;
}

// Returns the nonce of the authorization request received before the one
// whose nonce is `currentNonce`, or undefined when there was none.
function previousNonce(currentNonce) {
  let end = authorizationNonces.lastIndexOf(currentNonce);
  if (end === -1) {
    end = authorizationNonces.length;
  }
  for (let index = end - 1; index >= 0; index -= 1) {
    if (authorizationNonces[index] !== currentNonce) {
      return authorizationNonces[index];
    }
  }
  return undefined;
}

// Returns the ID token `idToken`, signed by oidc-provider, with the change
// that `mode` selects, signed again. Throws when the replayed-nonce mode finds no earlier
// authorization request with a nonce.
function applyIdTokenMode(idToken, mode) {
  const [headerPart, payloadPart] = idToken.split('.');
  const header = decodeJwtPart(headerPart);
  const payload = decodeJwtPart(payloadPart);
  let privateKey = signingKey.privateKey;

  switch (mode) {
    case 'wrong-audience':
      payload.aud = WRONG_AUDIENCE;
      break;
    case 'expired': {
      const now = Math.floor(Date.now() / 1000);
      payload.iat = now - EXPIRED_ISSUED_SECONDS_AGO;
      payload.exp = now - EXPIRED_EXPIRY_SECONDS_AGO;
      break;
    }
    case 'replayed-nonce': {
      const nonce = previousNonce(payload.nonce);
      if (nonce === undefined) {
        throw new Error('the replayed-nonce mode needs an earlier authorization request with a nonce');
      }
      payload.nonce = nonce;
      break;
    }
    case 'wrong-issuer':
      payload.iss = WRONG_ISSUER;
      break;
    case 'bad-signature':
      // A fresh key that the JWKS does not publish, under the published kid.
      ({ privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }));
      break;
    default:
      throw new Error(`unknown ID token mode ${mode}`);
  }
  return signJwt(header, payload, privateKey);
}

// ---------------------------------------------------------------------------
// Storage shared by every oidc-provider instance

// Entries by "Model:id", with their expiry time in milliseconds since the
// epoch (Infinity for none).
const storedEntries = new Map();
// Session ids by session uid.
const sessionIdsByUid = new Map();
// Keys of the tokens and codes issued under each grant id.
const keysByGrantId = new Map();

// An oidc-provider adapter that keeps every model in the maps above. The
// package's own memory adapter gives each instance a store of its own, so
// sessions and codes would not survive rotateSigningKey(). Expired entries are
// dropped when read. Nothing else removes them, which suits a process that
// lives for one test.
class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    storedEntries.set(key, { payload, expiresAt });
    if (this.model === 'Session') {
      sessionIdsByUid.set(payload.uid, id);
    }
    if (payload.grantId) {
      if (!keysByGrantId.has(payload.grantId)) {
        keysByGrantId.set(payload.grantId, new Set());
      }
      keysByGrantId.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    const key = this.key(id);
    const entry = storedEntries.get(key);
    if (entry === undefined) {
      return undefined;
    }
    if (entry.expiresAt <= Date.now()) {
      storedEntries.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    const id = sessionIdsByUid.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  // The device flow, the only user of user codes, is turned off.
  async findByUserCode() {
    return undefined;
  }

  async consume(id) {
    const payload = await this.find(id);
    if (payload) {
      payload.consumed = Math.floor(Date.now() / 1000);
    }
  }

  async destroy(id) {
    storedEntries.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of keysByGrantId.get(grantId) ?? []) {
      storedEntries.delete(key);
    }
    keysByGrantId.delete(grantId);
  }
}

// ---------------------------------------------------------------------------
// The oidc-provider instance

// Cookie names with a prefix of their own, because browsers send cookies for
// 127.0.0.1 to every port, so the broker and other test servers on loopback
// see them too.
const COOKIE_NAMES = {
  session: 'oidc_peer_session',
  interaction: 'oidc_peer_interaction',
  resume: 'oidc_peer_interaction_resume',
};
// Keys for the signature cookies. Sessions live only as long as the process.
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

// Returns a check on the login prompt that requests an interaction once the
// authorization switch is `error`, and consumes the switch. The interaction
// page then ends the authorization with that error. With prompt=none,
// oidc-provider returns the check's error itself.
function forcedErrorCheck(error) {
  return new interactionPolicy.Check(
    `test_${error}`,
    `the ${error} test switch is set`,
    error,
    () => {
      if (switches.authorization !== error) {
        return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      }
      switches.authorization = null;
      log(`authorization mode ${error}: this authorization ends with error=${error}`);
      return interactionPolicy.Check.REQUEST_PROMPT;
    },
  );
}

function interactionPolicyWithSwitches() {
  const policy = interactionPolicy.base();
  const login = policy.get('login');
  // The first check that fires sets the error for prompt=none, so these go
  // before the built-in no_session check.
  for (const error of AUTHORIZATION_MODES) {
    login.checks.unshift(forcedErrorCheck(error));
  }
  return policy;
}

async function findAccount(_ctx, sub) {
  const user = [...config.users.values()].find((candidate) => candidate.sub === sub);
  if (!user) {
    return undefined;
  }
  return {
    accountId: sub,
    // oidc-provider keeps only the claims of the granted scopes.
    async claims() {
      return {
        sub,
        email: user.email,
        email_verified: user.email_verified,
        name: `${user.given_name} ${user.family_name}`,
        given_name: user.given_name,
        family_name: user.family_name,
        preferred_username: user.preferred_username,
        upn: user.upn,
      };
    },
  };
}

// Replaces oidc-provider's default error page, which loads a web font from
// the internet.
async function renderError(ctx, out) {
  ctx.type = 'html';
  const lines = Object.entries(out)
    .map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: ${escapeHtml(value)}</p>`)
    .join('\n');
  ctx.body = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Error</title></head>
<body>
<h1>Error</h1>
${lines}
</body>
</html>
`;
}

// Records the login_hint and nonce of each authorization request before
// oidc-provider checks it. Resumed authorizations (/auth/UID) carry neither.
async function recordAuthorizationRequest(ctx, next) {
  if (ctx.method === 'GET' && ctx.path === '/auth') {
    const hints = [ctx.query.login_hint ?? []].flat();
    for (const hint of hints) {
      fs.appendFileSync(config.loginHintsFile, `${encodeURIComponent(hint)}\n`);
    }
    const nonces = [ctx.query.nonce ?? []].flat();
    authorizationNonces.push(...nonces);
  }
  await next();
}

// Applies the ID token switch to the next successful token response that
// contains an ID token.
async function rewriteIdToken(ctx, next) {
  await next();
  if (ctx.method !== 'POST' || ctx.path !== '/token' || ctx.status !== 200) {
    return;
  }
  const mode = switches.idToken;
  if (mode === null || typeof ctx.body?.id_token !== 'string') {
    return;
  }
  switches.idToken = null;
  try {
    ctx.body = { ...ctx.body, id_token: applyIdTokenMode(ctx.body.id_token, mode) };
    log(`ID token mode ${mode}: changed the ID token of this token response`);
  } catch (error) {
    log(`error: ID token mode ${mode} failed: ${error.message}`);
    ctx.status = 500;
    ctx.body = { error: 'server_error', error_description: `ID token mode ${mode} failed: ${error.message}` };
  }
}

function logProviderError(event) {
  return (ctx, error) => {
    const detail = error.error_detail ?? error.cause?.message;
    log(`${event}: ${ctx.method} ${ctx.path}: ${error.message}`
      + `${error.error_description ? ` (${error.error_description})` : ''}`
      + `${detail ? `; detail: ${detail}` : ''}`);
  };
}

function buildProvider() {
  const provider = new Provider(issuer, {
    adapter: SharedMemoryAdapter,
    clients: [{
      ...config.client,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      // oidc-provider 9 also accepts client_secret_post from a client that
      // registered client_secret_basic, and the reverse.
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    }],
    jwks: { keys: [signingKey.jwk] },
    cookies: { keys: cookieKeys, names: COOKIE_NAMES },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'given_name', 'family_name', 'preferred_username', 'upn'],
    },
    scopes: ['openid', 'email', 'profile'],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    // Put the claims of the granted scopes into the ID token, as Entra ID
    // does, and not only into the userinfo response.
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: { required: () => true },
    findAccount,
    renderError,
    features: { devInteractions: { enabled: false } },
    interactions: {
      policy: interactionPolicyWithSwitches(),
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      Grant: 3600,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
    },
  });
  // No reverse proxy: take the scheme and host from the connection itself.
  provider.proxy = false;

  provider.use(recordAuthorizationRequest);
  provider.use(rewriteIdToken);

  for (const event of [
    'authorization.error', 'grant.error', 'userinfo.error', 'jwks.error',
    'discovery.error', 'end_session.error', 'server_error',
  ]) {
    provider.on(event, logProviderError(event));
  }
  provider.on('grant.success', (ctx) => {
    log(`grant.success: client ${ctx.oidc.client?.clientId}`);
  });
  return provider;
}

let signingKey = generateSigningKey();
log(`generated the signing key after ${Math.round(performance.now())} ms`);
let provider = buildProvider();
let providerHandler = provider.callback();

// Replaces the signing key. oidc-provider reads its keys only when it is
// built, so this builds a new instance. The sessions, grants and codes stay
// valid, because all instances share SharedMemoryAdapter's maps and the cookie
// keys.
function rotateSigningKey() {
  const previousKid = signingKey.kid;
  signingKey = generateSigningKey();
  provider = buildProvider();
  providerHandler = provider.callback();
  log(`rotated the signing key from kid ${previousKid} to kid ${signingKey.kid}`);
  return { kid: signingKey.kid, previous_kid: previousKid };
}

// ---------------------------------------------------------------------------
// Interaction pages: login form and automatic consent

function loginForm(uid, email, error) {
  const errorHtml = error ? `<p id="error" role="alert">${escapeHtml(error)}</p>\n` : '';
  const action = `/interaction/${encodeURIComponent(uid)}`;
  return `${errorHtml}<form method="post" action="${action}/login">
<p><label for="${EMAIL_FIELD}">Email</label>
<input type="email" id="${EMAIL_FIELD}" name="${EMAIL_FIELD}" value="${escapeHtml(email)}" autocomplete="username" required></p>
<p><label for="${PASSWORD_FIELD}">Password</label>
<input type="password" id="${PASSWORD_FIELD}" name="${PASSWORD_FIELD}" autocomplete="current-password" required></p>
<p><button type="submit" id="sign-in">Sign in</button>
<button type="submit" id="cancel" formaction="${action}/abort" formnovalidate>Cancel</button></p>
</form>`;
}

// Grants every scope and claim that the consent prompt lists as missing.
async function grantConsent(details) {
  const { prompt, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) {
    grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  }
  if (missing.missingOIDCClaims) {
    grant.addOIDCClaims(missing.missingOIDCClaims);
  }
  for (const [resource, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(resource, scopes.join(' '));
  }
  return grant.save();
}

async function showInteraction(req, res, details) {
  const { prompt, params, uid } = details;

  if (prompt.name === 'consent') {
    const grantId = await grantConsent(details);
    log(`interaction ${uid}: granted consent for scope "${params.scope}"`);
    await provider.interactionFinished(req, res, { consent: { grantId } });
    return;
  }
  if (prompt.name !== 'login') {
    sendHtml(res, 501, 'Not implemented', `<p>The prompt ${escapeHtml(prompt.name)} is not implemented.</p>`);
    return;
  }

  const forcedError = [...AUTHORIZATION_MODES].find((error) => prompt.reasons.includes(`test_${error}`));
  if (forcedError) {
    await provider.interactionFinished(req, res, {
      error: forcedError,
      error_description: `the ${forcedError} test switch is set`,
    }, { mergeWithLastSubmission: false });
    return;
  }

  sendHtml(res, 200, 'Sign in', loginForm(uid, params.login_hint ?? ''));
}

async function submitLogin(req, res, details) {
  const form = new URLSearchParams(await readBody(req));
  const email = form.get(EMAIL_FIELD) ?? '';
  const password = form.get(PASSWORD_FIELD) ?? '';
  const user = config.users.get(email.toLowerCase());

  // Compare hashes, so the comparison takes the same time for every password.
  const digest = (text) => crypto.createHash('sha256').update(text).digest();
  if (!user || !crypto.timingSafeEqual(digest(password), digest(user.password))) {
    log(`interaction ${details.uid}: login failed for ${JSON.stringify(email)}`);
    sendHtml(res, 200, 'Sign in', loginForm(details.uid, email, LOGIN_FAILED_MESSAGE));
    return;
  }

  log(`interaction ${details.uid}: ${user.email} logged in`);
  await provider.interactionFinished(req, res, {
    login: { accountId: user.sub },
  }, { mergeWithLastSubmission: false });
}

async function handleInteraction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (error) {
    log(`interaction ${uid}: not found: ${error.message}`);
    sendHtml(res, 400, 'Login expired', '<p>The login has expired or its cookie is missing. Start the login again.</p>');
    return;
  }
  if (details.uid !== uid) {
    sendHtml(res, 400, 'Login expired', '<p>This page belongs to another login. Start the login again.</p>');
    return;
  }

  if (req.method === 'GET' && action === '') {
    await showInteraction(req, res, details);
  } else if (req.method === 'POST' && action === '/login' && details.prompt.name === 'login') {
    await submitLogin(req, res, details);
  } else if (req.method === 'POST' && action === '/abort') {
    log(`interaction ${uid}: cancelled by the user`);
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User cancelled the login',
    }, { mergeWithLastSubmission: false });
  } else {
    sendHtml(res, 405, 'Method not allowed', '');
  }
}

// ---------------------------------------------------------------------------
// Test control endpoints

function switchesJson() {
  return { id_token: switches.idToken, authorization: switches.authorization };
}

function isLoopback(address) {
  return address === '::1' || /^(::ffff:)?127\./.test(address ?? '');
}

async function handleTestControl(req, res, path) {
  if (!isLoopback(req.socket.remoteAddress)) {
    sendJson(res, 403, { error: 'the test endpoints accept loopback clients only' });
    return;
  }

  if (path === '/__test/rotate-keys' && req.method === 'POST') {
    sendJson(res, 200, rotateSigningKey());
    return;
  }

  if (path === '/__test/mode' && req.method === 'GET') {
    sendJson(res, 200, switchesJson());
    return;
  }

  if (path === '/__test/mode' && req.method === 'POST') {
    let mode;
    try {
      ({ mode } = JSON.parse(await readBody(req)));
    } catch (error) {
      sendJson(res, 400, { error: `invalid JSON body: ${error.message}` });
      return;
    }
    if (mode === 'normal') {
      switches.idToken = null;
      switches.authorization = null;
    } else if (ID_TOKEN_MODES.has(mode)) {
      switches.idToken = mode;
    } else if (AUTHORIZATION_MODES.has(mode)) {
      switches.authorization = mode;
    } else {
      const known = ['normal', ...ID_TOKEN_MODES, ...AUTHORIZATION_MODES];
      sendJson(res, 400, { error: `unknown mode ${JSON.stringify(mode)}; expected one of ${known.join(', ')}` });
      return;
    }
    log(`test mode set to ${mode}`);
    sendJson(res, 200, switchesJson());
    return;
  }

  sendJson(res, 404, { error: `no test endpoint ${req.method} ${path}` });
}

// ---------------------------------------------------------------------------
// HTTP server

async function route(req, res) {
  const { pathname } = new URL(req.url, issuer);

  if (pathname.startsWith('/__test/')) {
    await handleTestControl(req, res, pathname);
    return;
  }

  const interaction = /^\/interaction\/([^/]+)(\/login|\/abort)?$/.exec(pathname);
  if (interaction) {
    await handleInteraction(req, res, decodeURIComponent(interaction[1]), interaction[2] ?? '');
    return;
  }

  await providerHandler(req, res);
}

const server = http.createServer((req, res) => {
  const started = Date.now();
  res.on('finish', () => {
    // The query is logged too: authorization requests carry no secrets in it.
    log(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - started} ms`);
  });
  route(req, res).catch((error) => {
    log(`error: ${req.method} ${req.url} failed: ${error.stack ?? error}`);
    if (!res.headersSent) {
      sendHtml(res, 500, 'Internal server error', `<p>${escapeHtml(error.message)}</p>`);
    } else {
      res.end();
    }
  });
});

server.on('error', (error) => {
  if (error.code === 'EADDRINUSE') {
    log(`error: 127.0.0.1:${port} is already in use`);
    process.exit(EXIT_PORT_IN_USE);
  }
  log(`error: the HTTP server failed: ${error.stack ?? error}`);
  process.exit(1);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    log(`stopping on ${signal}`);
    server.close();
    process.exit(0);
  });
}

server.listen(port, '127.0.0.1', () => {
  log(`OpenID provider ${issuer} started, client ${config.client.client_id}, `
    + `${config.users.size} users, signing key kid ${signingKey.kid}`);
});
