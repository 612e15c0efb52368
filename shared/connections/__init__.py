"""Connections: secrets, the static connections file, dynamic connections, endpoint allowlist, model clients."""
