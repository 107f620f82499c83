"""NSG evaluation (``network.security.group_allows``) and the emulator's address allocation."""

from __future__ import annotations

import pytest

from localazure.core.context import Context
from localazure.network import addresses
from localazure.network.nsgs import _default_rules
from localazure.network.security import group_allows
from localazure.settings import Settings

NSG_ID = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkSecurityGroups/n"
SPACE = ["10.0.0.0/16"]


def _nsg(*rules):
    user = [
        {
            "name": f"r{i}",
            "properties": {
                "priority": priority,
                "direction": "Inbound",
                "protocol": "Tcp",
                "access": access,
                "sourceAddressPrefix": source,
                "sourceAddressPrefixes": [],
                "destinationPortRange": port,
                "destinationPortRanges": [],
            },
        }
        for i, (priority, access, source, port) in enumerate(rules)
    ]
    return {"properties": {"securityRules": user, "defaultSecurityRules": _default_rules(NSG_ID)}}


@pytest.mark.parametrize(
    ("rules", "source", "allowed"),
    [
        ((), "127.0.0.1", False),  # DenyAllInBound
        (((1000, "Allow", "127.0.0.1", "22"),), "127.0.0.1", True),
        (((1000, "Allow", "127.0.0.0/8", "22"),), "127.0.0.1", True),
        (((1000, "Allow", "203.0.113.0/24", "22"),), "127.0.0.1", False),
        (((1000, "Allow", "*", "22"),), "127.0.0.1", True),
        (((1000, "Allow", "Internet", "20-30"),), "127.0.0.1", True),
        (((1000, "Allow", "*", "443"),), "127.0.0.1", False),
        (((900, "Deny", "*", "22"), (1000, "Allow", "*", "22")), "127.0.0.1", False),
        (((1000, "Allow", "*", "22"), (900, "Deny", "*", "*")), "127.0.0.1", False),
        ((), "10.0.3.4", True),  # AllowVnetInBound
    ],
)
def test_inbound_ssh_follows_priority_and_prefixes(rules, source, allowed):
    assert group_allows(_nsg(*rules), source, 22, SPACE) is allowed


def test_public_addresses_are_loopback_and_stable(tmp_path):
    ctx = Context.create(Settings(state_dir=tmp_path))
    first = addresses.allocate_public(ctx, "/x/pip1")
    second = addresses.allocate_public(ctx, "/x/pip2")
    assert first.startswith("127.150.") and second.startswith("127.150.") and first != second
    assert addresses.allocate_public(ctx, "/X/PIP1") == first
    addresses.release_public(ctx, "/x/pip1")
    assert addresses.allocate_public(ctx, "/x/pip3") == first


def test_private_addresses_skip_the_reserved_ones():
    assert addresses.allocate_private("10.1.0.0/24", set()) == "10.1.0.4"
    assert addresses.allocate_private("10.1.0.0/24", {"10.1.0.4"}) == "10.1.0.5"


def test_public_prefix_must_be_loopback(monkeypatch):
    monkeypatch.setenv(addresses.PUBLIC_PREFIX_ENV, "10.0.0.0/16")
    with pytest.raises(ValueError, match="127.0.0.0/8"):
        addresses.public_prefix(44300)
