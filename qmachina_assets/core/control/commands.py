"""`qmachina workspace|member|token ...` commands, for the console script to mount:

    from qmachina_assets.core.control.commands import add_control_parsers
    add_control_parsers(subparsers)

- `workspace create NAME --owner USER [--token-file PATH]`, `workspace list`
- `member add WS USER ROLE`, `member remove WS USER`, `member role WS USER ROLE`, `member list WS`
- `token create WS USER [--label L] [--expires-days N | --no-expiry] [--out PATH]`, `token revoke WS TOKEN_ID`,
  `token list WS [--user USER]`

A new token is shown once: printed, or with `--out` written to a file only its owner can read (0600) and
never printed. Every command takes `--url`/`--lake` (default: `QMACHINA_CONTROL_URL`, else the registry's
database) and `--actor` (default `cli:$USER`, recorded in the audit). Exit status 0, or 1 with the reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from qmachina_assets.core.control.models import ROLES
from qmachina_assets.core.registry.commands import _default_actor


def add_control_parsers(subparsers: Any) -> None:
    def group(name: str, help_text: str) -> Any:
        p = subparsers.add_parser(name, help=help_text)
        return p.add_subparsers(dest=f"{name}_cmd", required=True)

    def cmd(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text)
        c.add_argument("--url", help="control database URL (default: QMACHINA_CONTROL_URL, else the registry's)")
        c.add_argument("--lake", type=Path, help="lake directory (default: QMACHINA_LAKE_DIR or ./lake)")
        c.add_argument("--actor", default=_default_actor(), help="who makes the change (default: cli:$USER)")
        c.add_argument("--json", action="store_true")
        c.set_defaults(func=run)
        return c

    ws = group("workspace", "workspaces: create, list")
    c = cmd(ws, "create", "create a workspace with its first owner (and, with --token-file, an owner token)")
    c.add_argument("name")
    c.add_argument("--owner", required=True, help="user name of the first owner")
    c.add_argument("--token-file", type=Path, help="also create an owner token and write it here (0600)")
    cmd(ws, "list", "workspaces with their members")

    mem = group("member", "workspace members: add, remove, change role, list")
    c = cmd(mem, "add", "add a member with a role")
    c.add_argument("workspace")
    c.add_argument("user")
    c.add_argument("role", choices=ROLES)
    c = cmd(mem, "remove", "remove a member (their tokens are revoked)")
    c.add_argument("workspace")
    c.add_argument("user")
    c = cmd(mem, "role", "change a member's role")
    c.add_argument("workspace")
    c.add_argument("user")
    c.add_argument("role", choices=ROLES)
    c = cmd(mem, "list", "members of a workspace")
    c.add_argument("workspace")

    tok = group("token", "API tokens: create (shown once), revoke, list")
    c = cmd(tok, "create", "create a token for a member")
    c.add_argument("workspace")
    c.add_argument("user")
    c.add_argument("--label", default="")
    exp = c.add_mutually_exclusive_group()
    exp.add_argument("--expires-days", type=float, default=90.0)
    exp.add_argument("--no-expiry", action="store_true")
    c.add_argument("--out", type=Path, help="write the token to this file (0600) instead of printing it")
    c = cmd(tok, "revoke", "revoke a token by its id (qm_...)")
    c.add_argument("workspace")
    c.add_argument("token_id")
    c = cmd(tok, "list", "tokens of a workspace (ids, owners, states; never secrets)")
    c.add_argument("workspace")
    c.add_argument("--user")


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    from qmachina_assets.core.control.errors import ControlError
    from qmachina_assets.core.control.plane import ControlPlane

    try:
        with ControlPlane(url=args.url, lake=args.lake) as cp:
            return _dispatch(cp, args)
    except ControlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _out(obj: Any, as_json: bool, text: str) -> None:
    print(json.dumps(obj, indent=2, default=str) if as_json else text)


def _dispatch(cp: Any, args: argparse.Namespace) -> int:
    group = args.command
    c = getattr(args, f"{group}_cmd")
    j = args.json
    if group == "workspace" and c == "create":
        w = cp.create_workspace(args.name, actor=args.actor, owner=args.owner)
        out: dict[str, Any] = {"workspace": w.model_dump(mode="json"), "owner": args.owner}
        text = f"workspace {w.name} created, owner {args.owner}"
        if args.token_file:
            info, token = cp.create_token(w.name, args.owner, actor=args.actor, label="workspace create")
            write_secret(args.token_file, token)
            out["token"] = {"token_id": info.token_id, "file": str(args.token_file)}
            text += f"; owner token {info.token_id} written to {args.token_file}"
        _out(out, j, text)
    elif group == "workspace":
        rows = [{"name": w.name, "created_at": w.created_at, "members": [m.model_dump(mode="json")
                                                                         for m in cp.members(w.name)]}
                for w in cp.list_workspaces()]
        _out(rows, j, "\n".join(f"{r['name']:<24} {len(r['members'])} member(s): "
                                + ", ".join(f"{m['user']} ({m['role']})" for m in r["members"]) for r in rows)
             or "no workspaces")
    elif group == "member":
        if c == "add":
            m = cp.add_member(args.workspace, args.user, args.role, actor=args.actor)
            _out(m.model_dump(mode="json"), j, f"{m.user} added to {m.workspace} as {m.role}")
        elif c == "role":
            m = cp.set_role(args.workspace, args.user, args.role, actor=args.actor)
            _out(m.model_dump(mode="json"), j, f"{m.user} is now {m.role} in {m.workspace}")
        elif c == "remove":
            n = cp.remove_member(args.workspace, args.user, actor=args.actor)
            _out({"removed": args.user, "tokens_revoked": n}, j,
                 f"{args.user} removed from {args.workspace} ({n} token(s) revoked)")
        else:
            ms = cp.members(args.workspace)
            _out([m.model_dump(mode="json") for m in ms], j,
                 "\n".join(f"{m.user:<24} {m.role:<7} since {m.added_at:%Y-%m-%d} by {m.added_by}" for m in ms))
    elif group == "token":
        if c == "create":
            expires = None if args.no_expiry else dt.timedelta(days=args.expires_days)
            info, token = cp.create_token(args.workspace, args.user, actor=args.actor, label=args.label,
                                          expires_in=expires)
            meta = info.model_dump(mode="json")
            if args.out:
                write_secret(args.out, token)
                _out({**meta, "file": str(args.out)}, j, f"token {info.token_id} for {info.user} written to "
                                                         f"{args.out} (expires {info.expires_at or 'never'})")
            else:
                _out({**meta, "token": token}, j, f"{token}\n(token {info.token_id} for {info.user} in "
                                                  f"{info.workspace}; shown once, expires "
                                                  f"{info.expires_at or 'never'})")
        elif c == "revoke":
            info = cp.revoke_token(args.workspace, args.token_id, actor=args.actor)
            _out(info.model_dump(mode="json"), j, f"token {info.token_id} revoked")
        else:
            ts = cp.tokens(args.workspace, args.user)
            _out([{**t.model_dump(mode="json"), "state": t.state()} for t in ts], j,
                 "\n".join(f"{t.token_id}  {t.user:<16} {t.state():<8} created {t.created_at:%Y-%m-%d} "
                           f"expires {t.expires_at:%Y-%m-%d}" if t.expires_at else
                           f"{t.token_id}  {t.user:<16} {t.state():<8} created {t.created_at:%Y-%m-%d} no expiry"
                           for t in ts) or "no tokens")
    return 0
