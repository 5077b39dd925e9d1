"""Container networking: networks and leases (``ipam``), netlink links (``links``, pyroute2),
nftables rules (``nft``), published ports (``ports``) and the bridge driver tying them (``bridge``).

Only ``links`` (and ``bridge`` when it runs) imports pyroute2; see :mod:`..network` for the hooks
the runner and the shim call.
"""
