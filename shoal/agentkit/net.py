"""The member container's address on shoal's control network (standard library only: this
runs inside the member container)."""

from __future__ import annotations

import ipaddress
import os
import socket


def control_subnets() -> list[str]:
    """The shared control network's subnets, as the operator gave them in
    SHOAL_CONTROL_SUBNETS (none: unknown); malformed entries are skipped."""
    raw = os.environ.get("SHOAL_CONTROL_SUBNETS", "")
    out = []
    for s in raw.split(","):
        try:
            out.append(str(ipaddress.ip_network(s.strip(), strict=False)))
        except ValueError:
            continue
    return out


def control_address() -> str | None:
    """This container's address on the control network (None: no control subnet given, or
    no interface on it). The kernel picks the source address of a route into the subnet; a
    UDP `connect` only chooses that route and sends nothing."""
    for cidr in control_subnets():
        net = ipaddress.ip_network(cidr)
        if net.version != 4 or net.num_addresses < 4:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((str(net.network_address + 1), 9))
            except OSError:
                continue
            address = probe.getsockname()[0]
        if ipaddress.ip_address(address) in net:
            return str(address)
    return None
