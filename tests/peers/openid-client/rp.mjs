// An OpenID Connect relying party (RP) for end-to-end tests of the broker's
// OAuth 2.0 / OpenID Connect provider, built on the certified npm package
// openid-client and served on 127.0.0.1 only.
//
// Usage: node rp.mjs --port PORT --config FILE
//
// The config file (JSON, described in README.md) names the issuer and one or
// more clients. Each client has its own paths under /NAME/: start, callback,
// logout and signed-out. A page that ends a flow shows its outcome as JSON in
// <pre id="result">, which the browser tests read.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import * as client from 'openid-client';

// Exit status for an invalid command line or config file.
const EXIT_USAGE = 2;
// Exit status when the port is already in use, so that a caller that picked
// the port itself can pick another and retry.
const EXIT_PORT_IN_USE = 3;

const AUTH_METHODS = new Set(['client_secret_basic', 'client_secret_post', 'none']);
// Query parameters of GET /NAME/start that go into the authorization request
// unchanged.
const PASSED_THROUGH_PARAMETERS = ['prompt', 'login_hint', 'max_age'];
const CLIENT_NAME_PATTERN = /^[a-z0-9][a-z0-9-]*$/;

function log(message) {
  process.stderr.write(`${new Date().toISOString()} ${message}\n`);
}

function exitWithUsageError(message) {
  log(`error: ${message}`);
  log('usage: node rp.mjs --port PORT --config FILE');
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

function optionalString(object, field, where) {
  const value = object?.[field];
  if (value === undefined || value === null) {
    return undefined;
  }
  if (typeof value !== 'string' || value === '') {
    throw new Error(`${where}.${field} must be a non-empty string when present`);
  }
  return value;
}

function requireUrl(object, field, where) {
  const value = requireString(object, field, where);
  if (!URL.canParse(value)) {
    throw new Error(`${where}.${field} must be an absolute URL, got ${JSON.stringify(value)}`);
  }
  return value;
}

// Reads one entry of the config's clients list.
function readClient(entry, index) {
  const where = `clients[${index}]`;
  const name = requireString(entry, 'name', where);
  if (!CLIENT_NAME_PATTERN.test(name)) {
    throw new Error(`${where}.name must be lowercase letters, digits and hyphens, got ${JSON.stringify(name)}`);
  }
  const clientSecret = optionalString(entry, 'client_secret', where);
  const authMethod = optionalString(entry, 'token_endpoint_auth_method', where)
    ?? (clientSecret ? 'client_secret_basic' : 'none');
  if (!AUTH_METHODS.has(authMethod)) {
    throw new Error(`${where}.token_endpoint_auth_method must be one of ${[...AUTH_METHODS].join(', ')}`);
  }
  if ((authMethod === 'none') !== (clientSecret === undefined)) {
    throw new Error(`${where}: client_secret is required with client_secret_basic and client_secret_post, `
      + `and not allowed with none (token_endpoint_auth_method is ${authMethod})`);
  }
  const postLogoutRedirectUri = optionalString(entry, 'post_logout_redirect_uri', where);
  if (postLogoutRedirectUri !== undefined && !URL.canParse(postLogoutRedirectUri)) {
    throw new Error(`${where}.post_logout_redirect_uri must be an absolute URL`);
  }
  return {
    name,
    clientId: requireString(entry, 'client_id', where),
    clientSecret,
    authMethod,
    redirectUri: requireUrl(entry, 'redirect_uri', where),
    postLogoutRedirectUri,
    scope: requireString(entry, 'scope', where),
  };
}

// Reads the config file and returns { issuer, clients }, where clients maps
// each client's name to its settings.
function readConfig(path) {
  const config = JSON.parse(fs.readFileSync(path, 'utf8'));
  const issuer = requireUrl(config, 'issuer', 'config');
  if (!Array.isArray(config.clients) || config.clients.length === 0) {
    throw new Error('clients must be a non-empty list');
  }
  const clients = new Map();
  config.clients.forEach((entry, index) => {
    const settings = readClient(entry, index);
    if (clients.has(settings.name)) {
      throw new Error(`clients[${index}].name ${JSON.stringify(settings.name)} is used twice`);
    }
    clients.set(settings.name, settings);
  });
  return { issuer, clients };
}

const { port, configPath } = readCommandLine();
let config;
try {
  config = readConfig(configPath);
} catch (error) {
  exitWithUsageError(`invalid config file ${configPath}: ${error.message}`);
}
const ownOrigin = `http://127.0.0.1:${port}`;

// ---------------------------------------------------------------------------
// openid-client configurations

function clientAuthentication(settings) {
  switch (settings.authMethod) {
    case 'client_secret_basic':
      return client.ClientSecretBasic(settings.clientSecret);
    case 'client_secret_post':
      return client.ClientSecretPost(settings.clientSecret);
    default:
      return client.None();
  }
}

// Successful discoveries by client name. A failed discovery is not cached,
// because the tests may start this RP before the issuer listens.
const configurations = new Map();

// Returns the openid-client Configuration of a client, running discovery at
// the issuer on first use.
async function configurationFor(settings) {
  const cached = configurations.get(settings.name);
  if (cached) {
    return cached;
  }
  const metadata = { id_token_signed_response_alg: 'RS256' };
  if (settings.clientSecret) {
    metadata.client_secret = settings.clientSecret;
  }
  const configuration = await client.discovery(
    new URL(config.issuer),
    settings.clientId,
    metadata,
    clientAuthentication(settings),
    {
      execute: [
        // The issuer is plain HTTP on 127.0.0.1, which openid-client rejects
        // unless this option is set. Every request of this RP stays on the
        // loopback interface, so no token crosses a network.
        client.allowInsecureRequests,
        // openid-client skips the signature check of an ID token from the
        // token endpoint by default, because TLS already proves the issuer.
        // Over plain HTTP only the signature does, so check it.
        client.enableNonRepudiationChecks,
      ],
    },
  );
  configurations.set(settings.name, configuration);
  log(`discovery for ${settings.name}: issuer ${configuration.serverMetadata().issuer}`);
  return configuration;
}

// ---------------------------------------------------------------------------
// Browser sessions

// The cookie carries the port because browsers send cookies for 127.0.0.1 to
// every port, so the broker and other test servers see it too.
const SESSION_COOKIE = `openid_client_rp_${port}`;

// Per browser session (the cookie value), a Map from client name to the
// state of that client: the pending authorization, the current tokens and
// the pending logout.
const sessions = new Map();

function readCookie(req, name) {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) {
      return rest.join('=');
    }
  }
  return undefined;
}

// Returns the client state of this browser for `name`, creating the session
// and its cookie when the browser has none.
function clientSession(req, res, name) {
  let id = readCookie(req, SESSION_COOKIE);
  if (!id || !sessions.has(id)) {
    id = crypto.randomBytes(24).toString('base64url');
    sessions.set(id, new Map());
    res.setHeader('Set-Cookie', `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Lax`);
  }
  const perClient = sessions.get(id);
  if (!perClient.has(name)) {
    perClient.set(name, { pending: null, tokens: null, logoutState: null });
  }
  return perClient.get(name);
}

// ---------------------------------------------------------------------------
// Pages

function escapeHtml(text) {
  return String(text)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;');
}

function sendHtml(res, status, title, body) {
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Cache-Control': 'no-store',
  });
  res.end(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`);
}

// Shows `result` as JSON in <pre id="result">.
function sendResult(res, status, title, result) {
  sendHtml(res, status, title, `<pre id="result">${escapeHtml(JSON.stringify(result, null, 2))}</pre>`);
}

function redirect(res, location) {
  res.writeHead(303, { Location: location, 'Cache-Control': 'no-store' });
  res.end();
}

// Returns the parts of an error that the tests check: the OAuth 2.0 error
// code for errors that carry one, and otherwise openid-client's error code.
function describeError(error) {
  const description = {
    name: error?.name ?? 'Error',
    message: error?.message ?? String(error),
  };
  if (error instanceof client.AuthorizationResponseError) {
    description.kind = 'authorization_response';
    description.error = error.error;
    description.error_description = error.error_description;
  } else if (error instanceof client.ResponseBodyError) {
    description.kind = 'response_body';
    description.error = error.error;
    description.error_description = error.error_description;
    description.status = error.status;
  } else if (error instanceof client.WWWAuthenticateChallengeError) {
    description.kind = 'www_authenticate';
    description.status = error.status;
    description.challenges = error.cause;
  } else {
    description.kind = 'client';
    description.code = error?.code;
    if (error?.cause instanceof Error) {
      description.cause = error.cause.message;
    }
  }
  return description;
}

// ---------------------------------------------------------------------------
// Handlers

// GET /NAME/start: discovery, then the authorization request with PKCE
// (S256), state and nonce.
async function start(req, res, settings, query) {
  const session = clientSession(req, res, settings.name);
  let configuration;
  try {
    configuration = await configurationFor(settings);
  } catch (error) {
    log(`error: discovery for ${settings.name} at ${config.issuer} failed: ${error.message}`);
    sendResult(res, 502, `Discovery failed for ${settings.name}`, {
      client: settings.name, ok: false, error: describeError(error),
    });
    return;
  }

  const codeVerifier = client.randomPKCECodeVerifier();
  const parameters = {
    redirect_uri: settings.redirectUri,
    scope: settings.scope,
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state: client.randomState(),
    nonce: client.randomNonce(),
  };
  for (const name of PASSED_THROUGH_PARAMETERS) {
    const value = query.get(name);
    if (value !== null) {
      parameters[name] = value;
    }
  }
  let maxAge;
  if (parameters.max_age !== undefined) {
    maxAge = Number(parameters.max_age);
    if (!Number.isInteger(maxAge) || maxAge < 0) {
      log(`error: ${settings.name}: invalid max_age ${JSON.stringify(parameters.max_age)}`);
      sendResult(res, 400, 'Invalid request', {
        client: settings.name,
        ok: false,
        error: { kind: 'rp', message: `max_age must be a whole number of seconds, got ${JSON.stringify(parameters.max_age)}` },
      });
      return;
    }
  }

  // A new start replaces an authorization that never came back.
  session.pending = {
    codeVerifier, state: parameters.state, nonce: parameters.nonce, maxAge,
  };
  const authorizationUrl = client.buildAuthorizationUrl(configuration, parameters);
  log(`${settings.name}: authorization request to ${authorizationUrl.origin}${authorizationUrl.pathname}`
    + ` (prompt ${parameters.prompt ?? '-'}, max_age ${parameters.max_age ?? '-'})`);
  redirect(res, authorizationUrl.href);
}

// GET /NAME/callback: the authorization code grant with every check that
// openid-client offers, the userinfo request, and one refresh token grant.
async function callback(req, res, settings) {
  const session = clientSession(req, res, settings.name);
  const pending = session.pending;
  session.pending = null;
  const result = { client: settings.name, ok: false, error: null };
  if (!pending) {
    result.error = { kind: 'rp', message: 'no authorization request of this browser is pending for this client' };
    log(`error: ${settings.name}: callback without a pending authorization request`);
    sendResult(res, 400, `Sign-in failed for ${settings.name}`, result);
    return;
  }

  try {
    const configuration = await configurationFor(settings);
    const tokens = await client.authorizationCodeGrant(
      configuration,
      new URL(req.url, ownOrigin),
      {
        pkceCodeVerifier: pending.codeVerifier,
        expectedState: pending.state,
        expectedNonce: pending.nonce,
        maxAge: pending.maxAge,
        idTokenExpected: true,
      },
    );
    const claims = tokens.claims();
    result.token_response = {
      token_type: tokens.token_type,
      scope: tokens.scope ?? null,
      expires_in: tokens.expires_in ?? null,
      has_refresh_token: typeof tokens.refresh_token === 'string',
    };
    result.claims = claims;
    result.userinfo = await client.fetchUserInfo(configuration, tokens.access_token, claims.sub);

    let current = {
      access_token: tokens.access_token,
      refresh_token: tokens.refresh_token ?? null,
      id_token: tokens.id_token,
    };
    result.refresh = null;
    if (tokens.refresh_token) {
      const refreshed = await client.refreshTokenGrant(configuration, tokens.refresh_token);
      result.refresh = {
        // Rotation: the response carries a new refresh token, different
        // from the one just used.
        rotated: typeof refreshed.refresh_token === 'string'
          && refreshed.refresh_token !== tokens.refresh_token,
        new_access_token: refreshed.access_token !== tokens.access_token,
        claims: refreshed.claims() ?? null,
        userinfo: await client.fetchUserInfo(configuration, refreshed.access_token, claims.sub),
        // The refresh token that this grant used, so that a test can check
        // that the provider no longer accepts it.
        used_refresh_token: tokens.refresh_token,
      };
      current = {
        access_token: refreshed.access_token,
        refresh_token: refreshed.refresh_token ?? tokens.refresh_token,
        id_token: refreshed.id_token ?? tokens.id_token,
      };
    }
    session.tokens = current;
    // The tokens are shown so that a test can replay them at the provider
    // after logout. This RP is a test peer on loopback, not an application.
    result.tokens = current;
    result.ok = true;
    log(`${settings.name}: signed in sub ${claims.sub}, refresh ${result.refresh ? 'done' : 'not issued'}`);
    sendResult(res, 200, `Signed in to ${settings.name}`, result);
  } catch (error) {
    result.error = describeError(error);
    log(`error: ${settings.name}: callback failed: ${error.name}: ${error.message}`
      + `${result.error.error ? ` (${result.error.error})` : ''}`);
    sendResult(res, 400, `Sign-in failed for ${settings.name}`, result);
  }
}

// GET /NAME/logout: RP-initiated logout with id_token_hint, state and, when
// the config has one, post_logout_redirect_uri.
async function logout(req, res, settings) {
  const session = clientSession(req, res, settings.name);
  if (!session.tokens) {
    log(`error: ${settings.name}: logout requested by a browser without an ID token for this client`);
    sendResult(res, 409, `Not signed in to ${settings.name}`, {
      client: settings.name,
      ok: false,
      error: { kind: 'rp', message: 'this browser has no ID token for this client; sign in first' },
    });
    return;
  }
  try {
    const configuration = await configurationFor(settings);
    session.logoutState = client.randomState();
    const parameters = { id_token_hint: session.tokens.id_token, state: session.logoutState };
    if (settings.postLogoutRedirectUri) {
      parameters.post_logout_redirect_uri = settings.postLogoutRedirectUri;
    }
    const endSessionUrl = client.buildEndSessionUrl(configuration, parameters);
    log(`${settings.name}: logout request to ${endSessionUrl.origin}${endSessionUrl.pathname}`);
    redirect(res, endSessionUrl.href);
  } catch (error) {
    log(`error: ${settings.name}: logout failed: ${error.message}`);
    sendResult(res, 500, `Logout failed for ${settings.name}`, {
      client: settings.name, ok: false, error: describeError(error),
    });
  }
}

// GET /NAME/signed-out: the post-logout redirect. The logout counts as
// completed only when the state matches the one that /NAME/logout sent.
function signedOut(req, res, settings, query) {
  const session = clientSession(req, res, settings.name);
  const expected = session.logoutState;
  const received = query.get('state');
  session.logoutState = null;
  const stateMatched = expected !== null && received === expected;
  const result = {
    client: settings.name,
    ok: stateMatched,
    logout: { completed: stateMatched, state_matched: stateMatched, received_state: received },
    error: null,
  };
  if (stateMatched) {
    session.tokens = null;
    log(`${settings.name}: logout completed`);
    sendResult(res, 200, `Signed out of ${settings.name}`, result);
    return;
  }
  result.error = {
    kind: 'rp',
    message: expected === null
      ? 'no logout of this browser is pending for this client'
      : 'the state parameter does not match the one sent with the logout request',
  };
  log(`error: ${settings.name}: post-logout redirect rejected: ${result.error.message}`);
  sendResult(res, 400, `Logout failed for ${settings.name}`, result);
}

const HANDLERS = {
  start,
  callback,
  logout,
  'signed-out': signedOut,
};

async function route(req, res) {
  const url = new URL(req.url, ownOrigin);
  if (req.method === 'GET' && url.pathname === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end('ok\n');
    return;
  }

  const match = /^\/([^/]+)\/([^/]+)$/.exec(url.pathname);
  const settings = match && config.clients.get(match[1]);
  const handler = match && Object.hasOwn(HANDLERS, match[2]) && HANDLERS[match[2]];
  if (!settings || !handler) {
    sendHtml(res, 404, 'Not found', `<p>No page at ${escapeHtml(url.pathname)}.</p>`);
    return;
  }
  if (req.method !== 'GET') {
    sendHtml(res, 405, 'Method not allowed', '');
    return;
  }
  await handler(req, res, settings, url.searchParams);
}

// ---------------------------------------------------------------------------
// HTTP server

const server = http.createServer((req, res) => {
  const started = Date.now();
  res.on('finish', () => {
    // The path only: the callback's query carries the authorization code.
    const { pathname } = new URL(req.url, ownOrigin);
    log(`${req.method} ${pathname} ${res.statusCode} ${Date.now() - started} ms`);
  });
  route(req, res).catch((error) => {
    log(`error: ${req.method} ${new URL(req.url, ownOrigin).pathname} failed: ${error.stack ?? error}`);
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
  log(`OpenID relying party ${ownOrigin} started for issuer ${config.issuer}, `
    + `clients ${[...config.clients.keys()].join(', ')}`);
});
