"""Deploy time: a branch, tag, short hash or the remote HEAD → a full commit.

``git ls-remote`` asks only for the refs that can match (``refs/heads/B``, ``refs/tags/B`` and
its peeled ``^{}`` form, so an annotated tag gives its commit, not the tag object). A short hash
matching exactly one ref tip is that commit; otherwise the branches' and tags' commits (no trees,
no blobs: ``--filter=tree:0``) are fetched into a throwaway repository to find it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from conveyor.errors import VersionNotFound
from conveyor.sources.git._auth import AuthSession
from conveyor.sources.git._cmd import OFFLINE, GitFailed, git, raise_for
from conveyor.sources.git._mirror import Mirror

__all__ = ["ls_remote", "ref_candidates", "resolve_ref", "resolve_short"]

_HEX = re.compile(r"[0-9a-fA-F]{7,64}")


def ref_candidates(branch: str) -> list[str]:
    """The refs ``branch`` may name, most specific first as ls-remote patterns."""
    if branch.startswith("refs/"):
        return [branch, f"{branch}^{{}}"]
    return [f"refs/heads/{branch}", f"refs/tags/{branch}", f"refs/tags/{branch}^{{}}"]


def ls_remote(url: str, patterns: list[str], auth: AuthSession) -> dict[str, str]:
    """``{ref: commit}`` for the remote refs matching ``patterns`` (all refs when empty)."""
    try:
        out = git(
            ["ls-remote", "--", url, *patterns], auth=auth.env(), network=True, retry=auth.retry
        ).stdout
    except GitFailed as exc:
        raise raise_for(exc, source=url, action="listing refs of") from None
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if sha and ref:
            refs[ref.strip()] = sha.strip().lower()
    return refs


def resolve_ref(url: str, branch: str | None, auth: AuthSession) -> str:
    """The commit ``branch`` (a branch or tag; None: the remote HEAD) points at."""
    refs = ls_remote(url, ["HEAD"] if branch is None else ref_candidates(branch), auth)
    if branch is None:
        if "HEAD" in refs:
            return refs["HEAD"]
        raise VersionNotFound(
            f"{url} has no default branch (remote HEAD)", source=url, hint="pass branch="
        )
    order = (
        [f"{branch}^{{}}", branch]
        if branch.startswith("refs/")
        else [f"refs/heads/{branch}", f"refs/tags/{branch}^{{}}", f"refs/tags/{branch}"]
    )
    for ref in order:
        if ref in refs:
            return refs[ref]
    if _HEX.fullmatch(branch):  # a commit passed as the branch (Prefect's git_clone has both)
        raise VersionNotFound(
            f"no branch or tag {branch!r} in {url}",
            source=url,
            hint=f"to pin a commit, pass commit_sha={branch!r} (--commit-sha) instead of branch",
        )
    raise VersionNotFound(
        f"no branch or tag {branch!r} in {url}",
        source=url,
        hint=f"check the name against `git ls-remote --heads --tags {url}`",
    )


def resolve_short(url: str, prefix: str, auth: AuthSession) -> str:
    """The one commit whose hash starts with ``prefix`` on a branch or tag of ``url``."""
    tips = {sha for sha in ls_remote(url, [], auth).values() if sha.startswith(prefix)}
    if len(tips) == 1:
        return tips.pop()
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-resolve-"))
    try:
        mirror = Mirror(tmp / "m.git", url, source=url)
        with mirror.opened():
            try:
                git(
                    [
                        "--git-dir",
                        str(mirror.path),
                        "fetch",
                        "--quiet",
                        "--no-tags",
                        "--filter=tree:0",
                        "origin",
                        "+refs/heads/*:refs/heads/*",
                        "+refs/tags/*:refs/tags/*",
                    ],
                    auth=auth.env(),
                    network=True,
                    retry=auth.retry,
                )
            except GitFailed as exc:
                raise raise_for(exc, source=url, action="resolving a commit of") from None
            try:
                out = git(
                    [
                        "--git-dir",
                        str(mirror.path),
                        *OFFLINE,
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        f"{prefix}^{{commit}}",
                    ]
                ).stdout
            except GitFailed:
                raise VersionNotFound(
                    f"no single commit {prefix} on a branch or tag of {url}",
                    source=url,
                    hint="pass the full 40-character commit hash",
                ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out.strip().lower()
