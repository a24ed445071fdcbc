#!/usr/bin/env python3
"""Serve a SAML 2.0 identity provider (IdP) on loopback for end-to-end tests.

The IdP is built on pysaml2 and copies the defaults of a Microsoft Entra ID
enterprise application: it signs the Assertion (RSA-SHA256, SHA-256 digest)
and not the Response, its NameID has the emailAddress format and contains
the user principal name (UPN), and its attributes carry the claim URIs that Entra
ID uses. It trusts one service provider (SP), whose entity ID and Assertion
Consumer Service (ACS) URL come from the command line, and it never keeps a
login session, so every AuthnRequest shows the login form.

Endpoints:
  GET  /metadata  the IdP metadata, whose URL is also the IdP entity ID
  GET  /sso       SingleSignOnService, HTTP-Redirect binding
  POST /login     checks the login form and returns the HTTP-POST form
"""

import argparse
import base64
import dataclasses
import errno
import html
import json
import logging
import secrets
import sys
import threading
import uuid
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit
from xml.sax.saxutils import escape, quoteattr

# pysaml2 7.5.5 imports the CFB cipher mode from its old place in
# cryptography, which warns on every start. The IdP never uses CFB.
warnings.filterwarnings("ignore", message="CFB has been moved", module=r"saml2\.cryptography\.symmetric")

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.assertion import Policy
from saml2.authn_context import PASSWORD
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.samlp import STATUS_NO_PASSIVE
from saml2.server import Server
from saml2.time_util import a_while_ago
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

logger = logging.getLogger("pysaml2-idp")

HERE = Path(__file__).resolve().parent

# Exit status when the port given on the command line is already in use, so
# that a caller that picked the port itself can pick another and retry.
EXIT_PORT_IN_USE = 3

# Claim URIs of the attributes in each Assertion.
CLAIM_NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
CLAIM_EMAIL_ADDRESS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
CLAIM_GIVEN_NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname"
CLAIM_SURNAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname"
CLAIM_TENANT_ID = "http://schemas.microsoft.com/identity/claims/tenantid"
CLAIM_OBJECT_ID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
CLAIM_DISPLAY_NAME = "http://schemas.microsoft.com/identity/claims/displayname"
CLAIM_IDENTITY_PROVIDER = "http://schemas.microsoft.com/identity/claims/identityprovider"
CLAIM_AUTHN_METHODS = "http://schemas.microsoft.com/claims/authnmethodsreferences"
AUTHN_METHOD_PASSWORD = "http://schemas.microsoft.com/ws/2008/06/identity/authenticationmethod/password"

# A fixed directory (tenant) ID, so that SP tests can compare it.
TENANT_ID = "5f0c6a52-8d1e-4b7a-9c3e-2a6d8e4f1b90"

# Namespace for the object IDs of users whose JSON entry has no "object_id".
OBJECT_ID_NAMESPACE = uuid.UUID("0d7a2c8e-3b6f-4f51-a9d2-7e1c5b8a4f36")

# Field names of the login form, the same as on Entra ID's sign-in page.
EMAIL_FIELD = "loginfmt"
PASSWORD_FIELD = "passwd"
STATE_FIELD = "state"

# How far NotBefore lies before the issue time, so that an SP whose clock
# runs behind the IdP's still accepts a fresh Assertion.
NOT_BEFORE_SKEW_MINUTES = 5

# Logins that started at /sso and have not finished. The oldest are dropped
# beyond this count, so a long test run cannot grow the table without bound.
MAX_PENDING_LOGINS = 1000

# Request bodies larger than this are rejected. The login form is far smaller.
MAX_BODY_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class User:
    email: str
    password: str
    given_name: str
    surname: str
    object_id: str


@dataclasses.dataclass(frozen=True)
class PendingLogin:
    """An AuthnRequest that waits for the user to log in."""

    request_id: str
    relay_state: str | None
    force_authn: bool


class RequestError(Exception):
    """A request that the IdP rejects with 400 Bad Request and a message."""


class IdentityProvider:
    """The SAML side of the IdP: request parsing, Responses and metadata."""

    def __init__(self, base_url, sp_entity_id, acs_url, key_file, cert_file, users):
        self.entity_id = f"{base_url}/metadata"
        self.sso_url = f"{base_url}/sso"
        self.sp_entity_id = sp_entity_id
        self.acs_url = acs_url
        self.users = users
        self.pending = {}
        # pysaml2's Server keeps caches and identity databases that are not
        # documented as thread-safe, so one lock guards every call into it and
        # the table of pending logins.
        self.lock = threading.Lock()

        config = IdPConfig()
        config.load(
            {
                "entityid": self.entity_id,
                "key_file": str(key_file),
                "cert_file": str(cert_file),
                "metadata": {"inline": [sp_metadata_xml(sp_entity_id, acs_url)]},
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
                "service": {
                    "idp": {
                        "endpoints": {
                            "single_sign_on_service": [(self.sso_url, BINDING_HTTP_REDIRECT)],
                        },
                        "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                        "want_authn_requests_signed": False,
                        "sign_assertion": True,
                        "sign_response": False,
                    },
                },
            }
        )
        self.server = Server(config=config)
        self.policy = SkewTolerantPolicy(mds=self.server.metadata)
        self.metadata_xml = str(entity_descriptor(config))

    def start_login(self, saml_request, relay_state):
        """Parse an AuthnRequest and store it until the user logs in.

        Returns (state, None), where state is the key of the pending login, or
        (None, (xml, relay_state)) with the NoPassive Response for a request
        with IsPassive="true". Raises RequestError for a request that is
        invalid or comes from another SP.
        """
        with self.lock:
            try:
                parsed = self.server.parse_authn_request(saml_request, BINDING_HTTP_REDIRECT)
            except Exception as error:
                raise RequestError(f"invalid SAMLRequest: {error}") from error
            if parsed is None:
                raise RequestError("invalid SAMLRequest: pysaml2 could not parse it")
            request = parsed.message
            xml = parsed.xmlstr
            if isinstance(xml, bytes):
                xml = xml.decode("utf-8", "replace")
            logger.info("AuthnRequest received: %s", xml)

            issuer = request.issuer.text.strip() if request.issuer is not None and request.issuer.text else ""
            if issuer != self.sp_entity_id:
                raise RequestError(f"unknown SP: Issuer {issuer!r} is not {self.sp_entity_id!r}")
            acs_url = request.assertion_consumer_service_url
            if acs_url is not None and acs_url != self.acs_url:
                raise RequestError(
                    f"AssertionConsumerServiceURL {acs_url!r} does not match the registered {self.acs_url!r}"
                )
            binding = request.protocol_binding
            if binding is not None and binding != BINDING_HTTP_POST:
                raise RequestError(f"ProtocolBinding {binding!r} is not supported, only {BINDING_HTTP_POST}")
            if request.name_id_policy is not None and request.name_id_policy.format:
                logger.info(
                    "NameIDPolicy Format %s is ignored, because the NameID format is always %s",
                    request.name_id_policy.format,
                    NAMEID_FORMAT_EMAILADDRESS,
                )

            pending = PendingLogin(
                request_id=request.id,
                relay_state=relay_state,
                force_authn=saml_boolean(request.force_authn),
            )
            if saml_boolean(request.is_passive):
                # The IdP keeps no login sessions, so it can never log a user
                # in without the form.
                return None, self.no_passive_response(pending)

            state = secrets.token_urlsafe(24)
            self.pending[state] = pending
            while len(self.pending) > MAX_PENDING_LOGINS:
                del self.pending[next(iter(self.pending))]
            logger.info(
                "login started: state=%s ID=%s ForceAuthn=%s RelayState=%r",
                state,
                pending.request_id,
                pending.force_authn,
                relay_state,
            )
            return state, None

    def has_pending(self, state):
        with self.lock:
            return state in self.pending

    def find_user(self, email, password):
        """Return the user whose email matches, ignoring case, and whose
        password matches exactly, or None."""
        user = self.users.get(email.strip().lower())
        if user is None or not secrets.compare_digest(user.password.encode(), password.encode()):
            return None
        return user

    def finish_login(self, state, user):
        """Build the signed Response for a pending login and forget the login.

        Returns the Response XML and the RelayState, or raises RequestError
        when the state is unknown or already used.
        """
        with self.lock:
            pending = self.pending.pop(state, None)
            if pending is None:
                raise RequestError("unknown or already used login state, so start again at the SP")
            response = self.server.create_authn_response(
                identity=claims_for(user, self.entity_id),
                in_response_to=pending.request_id,
                destination=self.acs_url,
                sp_entity_id=self.sp_entity_id,
                name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=user.email),
                authn={"class_ref": PASSWORD},
                sign_assertion=True,
                sign_response=False,
                sign_alg=SIG_RSA_SHA256,
                digest_alg=DIGEST_SHA256,
                release_policy=self.policy,
            )
            xml = str(response)
            logger.info("Response sent for %s in response to %s: %s", user.email, pending.request_id, xml)
            return xml, pending.relay_state

    def no_passive_response(self, pending):
        """Build the unsigned error Response for IsPassive="true"."""
        response = self.server.create_error_response(
            pending.request_id,
            self.acs_url,
            (STATUS_NO_PASSIVE, "The IdP has no login session and IsPassive is true."),
            sign=False,
        )
        xml = str(response)
        logger.info("NoPassive Response sent in response to %s: %s", pending.request_id, xml)
        return xml, pending.relay_state


class SkewTolerantPolicy(Policy):
    """pysaml2's release policy with NotBefore moved into the past.

    Policy.conditions in pysaml2 7.5.5 sets NotBefore to the issue time,
    which an SP whose clock runs just behind the IdP's would reject.
    """

    def conditions(self, sp_entity_id):
        conditions = super().conditions(sp_entity_id)
        conditions.not_before = a_while_ago(minutes=NOT_BEFORE_SKEW_MINUTES)
        return conditions


def saml_boolean(value):
    """Read an xs:boolean attribute, which pysaml2 keeps as a string."""
    return value is not None and str(value).strip().lower() in ("true", "1")


def claims_for(user, identity_provider):
    """Return the attributes of the Assertion, by claim URI."""
    return {
        CLAIM_TENANT_ID: TENANT_ID,
        CLAIM_OBJECT_ID: user.object_id,
        CLAIM_DISPLAY_NAME: f"{user.given_name} {user.surname}",
        CLAIM_IDENTITY_PROVIDER: identity_provider,
        CLAIM_AUTHN_METHODS: AUTHN_METHOD_PASSWORD,
        CLAIM_GIVEN_NAME: user.given_name,
        CLAIM_SURNAME: user.surname,
        CLAIM_EMAIL_ADDRESS: user.email,
        CLAIM_NAME: user.email,
    }


def sp_metadata_xml(sp_entity_id, acs_url):
    """Return minimal SP metadata: the entity ID and one HTTP-POST ACS.

    pysaml2 looks the SP up in its metadata store, and this spares the caller
    a metadata file.
    """
    return (
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"'
        f" entityID={quoteattr(sp_entity_id)}>"
        '<md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f"<md:NameIDFormat>{escape(NAMEID_FORMAT_EMAILADDRESS)}</md:NameIDFormat>"
        f'<md:AssertionConsumerService Binding="{BINDING_HTTP_POST}"'
        f' Location={quoteattr(acs_url)} index="0" isDefault="true"/>'
        "</md:SPSSODescriptor>"
        "</md:EntityDescriptor>"
    )


def load_users(path):
    """Read the user table, keyed by lower-case email address.

    The file contains a JSON list of objects with "email", "password",
    "given_name", "surname" and an optional "object_id".
    """
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of users, found {type(entries).__name__}")
    users = {}
    for index, entry in enumerate(entries):
        try:
            email = entry["email"]
            user = User(
                email=email,
                password=entry["password"],
                given_name=entry["given_name"],
                surname=entry["surname"],
                object_id=entry.get("object_id") or str(uuid.uuid5(OBJECT_ID_NAMESPACE, email.lower())),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}: user {index} is invalid: missing or wrong field {error}") from error
        users[email.lower()] = user
    return users


def login_page(state, email, error=None):
    error_html = ""
    if error:
        error_html = f'<p id="error" role="alert">{html.escape(error)}</p>\n'
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in</h1>
{error_html}<form method="post" action="/login">
<input type="hidden" name="{STATE_FIELD}" value="{html.escape(state)}">
<p><label for="{EMAIL_FIELD}">Email</label>
<input type="email" id="{EMAIL_FIELD}" name="{EMAIL_FIELD}" value="{html.escape(email)}" autocomplete="username" required></p>
<p><label for="{PASSWORD_FIELD}">Password</label>
<input type="password" id="{PASSWORD_FIELD}" name="{PASSWORD_FIELD}" autocomplete="current-password" required></p>
<p><button type="submit" id="sign-in">Sign in</button></p>
</form>
</body>
</html>
"""


def post_binding_page(acs_url, saml_response_xml, relay_state):
    """Return the HTTP-POST binding form that carries the Response to the ACS.

    Script submits the form on load. The Continue button stays visible, so the
    form also works with JavaScript turned off.
    """
    encoded = base64.b64encode(saml_response_xml.encode("utf-8")).decode("ascii")
    relay_state_input = ""
    if relay_state is not None:
        relay_state_input = f'<input type="hidden" name="RelayState" value="{html.escape(relay_state)}">\n'
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Signing in</title></head>
<body onload="document.forms[0].submit()">
<form method="post" action="{html.escape(acs_url)}">
<input type="hidden" name="SAMLResponse" value="{encoded}">
{relay_state_input}<p>If this page does not continue by itself, press Continue.</p>
<input type="submit" value="Continue">
</form>
</body>
</html>
"""


def error_page(message):
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign-in error</title></head>
<body>
<h1>Sign-in error</h1>
<p id="error">{html.escape(message)}</p>
</body>
</html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "pysaml2-test-idp"
    # Seconds that a connection may stay idle before the server closes it, so
    # that a browser's unused preconnection does not hold a thread forever.
    timeout = 30

    @property
    def idp(self):
        return self.server.idp

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        if url.path == "/metadata":
            self.send_text(HTTPStatus.OK, "application/samlmetadata+xml", self.idp.metadata_xml)
        elif url.path == "/sso":
            self.single_sign_on(query)
        else:
            self.send_error_page(HTTPStatus.NOT_FOUND, f"no page at {url.path}")

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path != "/login":
            self.send_error_page(HTTPStatus.NOT_FOUND, f"no form handler at {url.path}")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.send_error_page(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"form body of {length} bytes is too large")
            return
        body = self.rfile.read(length).decode("utf-8", "replace")
        form = parse_qs(body, keep_blank_values=True)
        self.log_in(form)

    def single_sign_on(self, query):
        # Record the hints before any check, so that a test can see every hint
        # that reached the IdP, even on a request that the IdP rejects.
        hints = query.get("login_hint", [])
        if hints:
            self.server.record_login_hints(hints)
        saml_request = first(query, "SAMLRequest")
        if saml_request is None:
            self.send_error_page(HTTPStatus.BAD_REQUEST, "SAMLRequest query parameter is missing")
            return
        if first(query, "Signature") is not None:
            logger.info("the signature of the AuthnRequest is not checked")
        try:
            state, passive_result = self.idp.start_login(saml_request, first(query, "RelayState"))
        except RequestError as error:
            logger.error("AuthnRequest rejected: %s", error)
            self.send_error_page(HTTPStatus.BAD_REQUEST, str(error))
            return
        if passive_result is not None:
            xml, relay_state = passive_result
            self.send_html(HTTPStatus.OK, post_binding_page(self.idp.acs_url, xml, relay_state))
            return
        self.send_html(HTTPStatus.OK, login_page(state, hints[-1] if hints else ""))

    def log_in(self, form):
        state = first(form, STATE_FIELD) or ""
        email = first(form, EMAIL_FIELD) or ""
        password = first(form, PASSWORD_FIELD) or ""
        if not self.idp.has_pending(state):
            logger.error("login rejected: unknown or already used state %r", state)
            message = "unknown or already used login state, so start again at the SP"
            self.send_error_page(HTTPStatus.BAD_REQUEST, message)
            return
        user = self.idp.find_user(email, password)
        if user is None:
            logger.info("login failed for %r: wrong email or password", email)
            page = login_page(state, email, error="Your account or password is incorrect.")
            self.send_html(HTTPStatus.OK, page)
            return
        try:
            xml, relay_state = self.idp.finish_login(state, user)
        except RequestError as error:
            logger.error("login rejected: %s", error)
            self.send_error_page(HTTPStatus.BAD_REQUEST, str(error))
            return
        self.send_html(HTTPStatus.OK, post_binding_page(self.idp.acs_url, xml, relay_state))

    def send_html(self, status, page):
        self.send_text(status, "text/html; charset=utf-8", page)

    def send_error_page(self, status, message):
        self.send_html(status, error_page(message))

    def send_text(self, status, content_type, text):
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        logger.info("%s %s", self.address_string(), format % args)


class IdpHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, idp, login_hints_path):
        self.idp = idp
        self.login_hints_path = login_hints_path
        self.login_hints_lock = threading.Lock()
        super().__init__(address, Handler)

    def record_login_hints(self, hints):
        """Append each hint percent-encoded on its own line, so that a hint
        with a line break stays one line. Letters, digits, "_.-~" and "@" stay
        as they are."""
        lines = "".join(quote(hint, safe="@") + "\n" for hint in hints)
        with self.login_hints_lock, open(self.login_hints_path, "a", encoding="utf-8") as file:
            file.write(lines)


def first(values, name):
    found = values.get(name)
    return found[0] if found else None


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description="Serve a SAML 2.0 test IdP on 127.0.0.1.")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 to listen on")
    parser.add_argument("--sp-entity-id", required=True, help="entity ID of the one trusted SP")
    parser.add_argument("--acs-url", required=True, help="ACS URL of that SP, for the HTTP-POST binding")
    parser.add_argument("--users", required=True, type=Path, help="JSON file with the list of users")
    parser.add_argument(
        "--login-hints",
        required=True,
        type=Path,
        help="file to which every login_hint received at /sso is appended, one per line",
    )
    parser.add_argument(
        "--key", type=Path, default=HERE / "idp-pysaml2.key", help="PEM private key that signs Assertions"
    )
    parser.add_argument(
        "--cert", type=Path, default=HERE / "idp-pysaml2.crt", help="PEM certificate of that key"
    )
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    base_url = f"http://127.0.0.1:{arguments.port}"
    idp = IdentityProvider(
        base_url,
        arguments.sp_entity_id,
        arguments.acs_url,
        arguments.key,
        arguments.cert,
        load_users(arguments.users),
    )
    try:
        http_server = IdpHttpServer(("127.0.0.1", arguments.port), idp, arguments.login_hints)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            logger.error("cannot listen on 127.0.0.1:%d: address already in use", arguments.port)
            return EXIT_PORT_IN_USE
        raise
    logger.info("IdP %s listening on %s for SP %s", idp.entity_id, base_url, idp.sp_entity_id)
    try:
        http_server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        http_server.server_close()
        logger.info("IdP on %s stopped", base_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
