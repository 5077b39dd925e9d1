"""Outbound NAT and isolation between our bridges, in our own nftables table ``ip nbcontainer``.

pyroute2's nftables module speaks raw expressions only; the ``nft`` binary (one transaction per
call, ~3 ms) is clearer and is what Docker's successors use. The table::

    set bridges    { type ifname }                  every bridge of every nbcontainer root
    set subnets    { type ipv4_addr; flags interval }
    map isolation  { type ifname : verdict }        bridge -> jump iso-<bridge>
    chain forward      iifname vmap @isolation      (filter hook forward)
    chain iso-<bridge> oifname <bridge> accept; oifname @bridges drop
    chain postrouting  ip saddr @subnets oifname != @bridges masquerade   (nat hook postrouting)

The static chains are flushed and rewritten in the same transaction as the first bridge's elements,
so that is idempotent; each bridge only adds and deletes elements and its own chain. With
br_netfilter loaded, traffic inside one bridge passes the forward hook with iif = oif = the bridge,
which ``iso-<bridge>`` accepts first.
"""

from __future__ import annotations

import shutil
import subprocess

TABLE = "ip nbcontainer"
_STATIC = f"""add table {TABLE}
add set {TABLE} bridges {{ type ifname ; }}
add set {TABLE} subnets {{ type ipv4_addr ; flags interval ; }}
add map {TABLE} isolation {{ type ifname : verdict ; }}
add chain {TABLE} forward {{ type filter hook forward priority 0 ; policy accept ; }}
flush chain {TABLE} forward
add rule {TABLE} forward iifname vmap @isolation
add chain {TABLE} postrouting {{ type nat hook postrouting priority 100 ; policy accept ; }}
flush chain {TABLE} postrouting
add rule {TABLE} postrouting ip saddr @subnets oifname != @bridges masquerade
"""


def available() -> bool:
    return shutil.which("nft") is not None


def _nft(script: str) -> None:
    res = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise OSError(0, f"nft: {res.stderr.strip()}")


def add_bridge(bridge: str, subnet: str) -> None:
    chain = f"iso-{bridge}"
    _nft(_STATIC + f"""add element {TABLE} bridges {{ "{bridge}" }}
add element {TABLE} subnets {{ {subnet} }}
add chain {TABLE} {chain}
flush chain {TABLE} {chain}
add rule {TABLE} {chain} oifname "{bridge}" accept
add rule {TABLE} {chain} oifname @bridges drop
add element {TABLE} isolation {{ "{bridge}" : jump {chain} }}
""")


def remove_bridge(bridge: str, subnet: str, *, last: bool) -> None:
    """Drop the bridge's elements and chain; the whole table when no bridge of ours is left."""
    if last:
        _quiet(f"delete table {TABLE}\n")
        return
    cmds = (f'delete element {TABLE} isolation {{ "{bridge}" }}',
            f'delete element {TABLE} bridges {{ "{bridge}" }}',
            f"delete element {TABLE} subnets {{ {subnet} }}",
            f"flush chain {TABLE} iso-{bridge}", f"delete chain {TABLE} iso-{bridge}")
    try:
        _nft("\n".join(cmds) + "\n")
    except OSError:  # something was gone already: one by one, so the rest still goes
        for cmd in cmds:
            _quiet(cmd + "\n")


def _quiet(script: str) -> None:
    """Removal is idempotent: a missing element or table is what we wanted anyway."""
    subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)

