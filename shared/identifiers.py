"""The shapes of the ids that reach the app from outside (flow and tenant ids), in one module that imports nothing:
the HTTP layer checks them at start-up cost zero, and the services that own them use the same patterns."""

from __future__ import annotations

import re

FLOW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}\Z")  # \Z: `$` would accept a trailing newline
