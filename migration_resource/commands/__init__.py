"""The engine's commands: small functions over one `EngineCore`, like Alembic's command.py.

- `inspect`: status and history (read only);
- `dry_run`: the plan, its SQL and the gate's findings, changing nothing;
- `migrate`: upgrade under the lock, after the gate (and `check_gate` for a deploy that
  must decide before it takes a snapshot);
- `downgrade`: the only way down, confirmed;
- `repair`: settle what blocks runs (edited checksums, failed non-transactional revisions).
"""
