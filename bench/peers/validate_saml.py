#!/usr/bin/env python3
"""Time SAML response validation in another SP library, for comparison.

Reads a case file that benches/saml_peers.rs writes: the base64 response,
a tampered copy, the IdP certificate and the SP's values. Checks that the
library accepts the response and rejects the tampered copy. Then validates
the same response in a loop on one thread for the given number of seconds,
and prints one JSON object on standard output with validations per second
of wall-clock time and per second of CPU time. CPU time includes the
xmlsec1 processes that pysaml2 starts.

Libraries:
  pysaml2       saml2.client.Saml2Client.parse_authn_request_response, the
                call that SATOSA's SAML backend makes. pysaml2 verifies
                signatures by running the xmlsec1 program.
  python3-saml  onelogin.saml2.response.OneLogin_Saml2_Response.is_valid in
                strict mode, which verifies signatures in process through
                the xmlsec Python binding.
"""

import argparse
import json
import os
import sys
import time
import warnings
from importlib.metadata import version

# pysaml2 7.5.5 imports the CFB cipher mode from its old place in
# cryptography, which warns on import. Nothing here uses CFB.
warnings.filterwarnings("ignore", message="CFB has been moved")

BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"


class Rejected(Exception):
    """The library did not accept a response."""


def pysaml2_validator(case):
    """Return a function that validates a base64 response with pysaml2."""
    from saml2.client import Saml2Client
    from saml2.config import SPConfig

    config = SPConfig()
    config.load(
        {
            "entityid": case["sp_entity_id"],
            "metadata": {"inline": [case["idp_metadata"]]},
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(case["acs_url"], BINDING_HTTP_POST)],
                    },
                    "allow_unsolicited": False,
                    "want_assertions_signed": True,
                    "want_response_signed": False,
                    "name_id_format": [NAMEID_EMAIL],
                },
            },
            "accepted_time_diff": 120,
        }
    )
    client = Saml2Client(config)
    request_id = case["request_id"]

    def validate(encoded):
        try:
            response = client.parse_authn_request_response(
                encoded, BINDING_HTTP_POST, outstanding={request_id: "/"}
            )
        except Exception as error:  # pysaml2 raises many unrelated types.
            raise Rejected(f"{type(error).__name__}: {error}") from error
        if response is None:
            raise Rejected("parse_authn_request_response returned None")
        return response.get_subject().text

    return validate


def python3_saml_validator(case):
    """Return a function that validates a base64 response with python3-saml."""
    from onelogin.saml2.response import OneLogin_Saml2_Response
    from onelogin.saml2.settings import OneLogin_Saml2_Settings
    from urllib.parse import urlsplit

    settings = OneLogin_Saml2_Settings(
        {
            "strict": True,
            "debug": False,
            "sp": {
                "entityId": case["sp_entity_id"],
                "assertionConsumerService": {"url": case["acs_url"], "binding": BINDING_HTTP_POST},
                "NameIDFormat": NAMEID_EMAIL,
            },
            "idp": {
                "entityId": case["idp_entity_id"],
                "singleSignOnService": {"url": case["idp_sso_url"], "binding": BINDING_HTTP_REDIRECT},
                "x509cert": case["certificate_base64"],
            },
            "security": {
                "wantAssertionsSigned": True,
                "wantMessagesSigned": False,
                "rejectDeprecatedAlgorithm": True,
            },
        },
        sp_validation_only=True,
    )
    acs = urlsplit(case["acs_url"])
    # The request as the ACS handler receives it, for the Destination check.
    request_data = {
        "https": "on" if acs.scheme == "https" else "off",
        "http_host": acs.hostname,
        "server_port": str(acs.port or (443 if acs.scheme == "https" else 80)),
        "script_name": acs.path,
        "get_data": {},
        "post_data": {},
    }
    request_id = case["request_id"]

    def validate(encoded):
        response = OneLogin_Saml2_Response(settings, encoded)
        try:
            response.is_valid(request_data, request_id, raise_exceptions=True)
        except Exception as error:  # python3-saml raises ValidationError and others.
            raise Rejected(f"{type(error).__name__}: {error}") from error
        return response.get_nameid()

    return validate


VALIDATORS = {
    "pysaml2": (pysaml2_validator, "pysaml2"),
    "python3-saml": (python3_saml_validator, "python3-saml"),
}


def cpu_seconds():
    """Return the CPU time of this process and its finished child processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=sorted(VALIDATORS), required=True)
    parser.add_argument("--case", required=True, help="JSON case file written by the Rust benchmark")
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement time in seconds")
    arguments = parser.parse_args()

    with open(arguments.case, encoding="utf-8") as file:
        case = json.load(file)
    make_validator, package = VALIDATORS[arguments.library]
    validate = make_validator(case)

    name_id = validate(case["response_base64"])
    if name_id != case["name_id"]:
        sys.exit(f"{arguments.library} accepted the response with NameID {name_id!r}, expected {case['name_id']!r}")
    try:
        validate(case["tampered_base64"])
    except Rejected as error:
        tampered_error = str(error)
    else:
        sys.exit(f"{arguments.library} accepted the tampered response, so its timing would mean nothing")

    encoded = case["response_base64"]
    iterations = 0
    cpu_started = cpu_seconds()
    started = time.perf_counter()
    deadline = started + arguments.seconds
    while True:
        validate(encoded)
        iterations += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - started
    cpu_elapsed = cpu_seconds() - cpu_started

    json.dump(
        {
            "library": arguments.library,
            "version": version(package),
            "iterations": iterations,
            "seconds": elapsed,
            "per_second": iterations / elapsed,
            "cpu_seconds": cpu_elapsed,
            "per_cpu_second": iterations / cpu_elapsed,
            "tampered_rejected_with": tampered_error[:200],
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
