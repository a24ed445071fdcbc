"""Runs the scim2-tester compliance checks against a SCIM service provider.

Usage: SCIM_TOKEN=... python3 run.py BASE_URL

BASE_URL is the Tenant URL, such as http://127.0.0.1:8080/scim/v2. The
script prints one JSON object per line for each check: its title, status
(SUCCESS, COMPLIANT, ACCEPTABLE, DEVIATION, ERROR, CRITICAL or SKIPPED),
resource type and reason. It exits with status 0 whatever the checks found,
and with status 2 when it cannot run them.

scim2-tester fills resources with random values: UUIDs for strings and ten
random digits for phone numbers. The broker detains users whose login ID
has more than 21 characters before the "@" and mobile numbers that are not
in E.164 form, and it never lets provisioning change a directory number
(a phone number of type "work"). So that the checks exercise the protocol
instead of those rules, the script gives the discovered User model example
values, which scim2-tester prefers over random ones: short unique userNames,
valid E.164 numbers, and the phone types "mobile" and "other". The broker
keeps one email and one role, each the primary value, so "primary" is
always true in what the checks send.
"""

import collections.abc
import json
import os
import sys

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server


class UniqueUserNames(collections.abc.Sequence):
    """A very long sequence of distinct userNames with 13 characters before
    the "@", built on demand, so that random picks do not collide."""

    def __len__(self) -> int:
        return 10**12

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not 0 <= index < len(self):
            raise IndexError(index)
        return f"t{index:012d}@example.com"


# Numbers that libphonenumber accepts as valid, from Canada, the UK, Germany and Australia.
E164_NUMBERS = ["+16135550123", "+442079460958", "+4930901820", "+61291924567"]


def set_examples(model, field: str, examples) -> None:
    info = model.model_fields.get(field)
    if info is None:
        raise SystemExit(f"the discovered model {model.__name__} has no field {field}")
    info.examples = examples


def item_model(model, field: str):
    """Returns the model of the elements of a multi-valued complex field."""
    annotation = model.model_fields[field].annotation
    for argument in getattr(annotation, "__args__", ()):
        for element in getattr(argument, "__args__", ()):
            if isinstance(element, type):
                return element
    raise SystemExit(f"cannot find the element model of {model.__name__}.{field}")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: SCIM_TOKEN=... python3 run.py BASE_URL", file=sys.stderr)
        return 2
    token = os.environ.get("SCIM_TOKEN")
    if not token:
        print("the environment variable SCIM_TOKEN is not set", file=sys.stderr)
        return 2

    http = httpx2.Client(
        base_url=sys.argv[1],
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    client = SyncSCIMClient(http)
    client.discover()
    user = client.get_resource_model("User")
    if user is None:
        print("the server publishes no User resource type", file=sys.stderr)
        return 2
    set_examples(user, "user_name", UniqueUserNames())
    phone = item_model(user, "phone_numbers")
    set_examples(phone, "value", E164_NUMBERS)
    set_examples(phone, "type", ["mobile", "other"])
    set_examples(item_model(user, "emails"), "primary", [True])
    set_examples(item_model(user, "roles"), "primary", [True])

    for result in check_server(client):
        print(
            json.dumps(
                {
                    "title": result.title,
                    "status": result.status.name,
                    "resource_type": result.resource_type,
                    "reason": result.reason,
                },
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
