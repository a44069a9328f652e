"""Which release of the application this code is.

A release pipeline writes it when it builds the release (a version, a commit); the local
zero-downtime scenario (`localdev.zero_downtime`) writes N-1, N and N+1 into its checkouts.
Every answer carries it (`X-App-Release`), so a client can tell which release served it.
"""

from __future__ import annotations

RELEASE = "main"
