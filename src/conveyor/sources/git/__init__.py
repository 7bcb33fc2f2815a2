"""Git repositories as a source: `GitRepository` (alias `GitSource`) and the git credentials.

The plumbing lives in private modules: ``_cmd`` (running git: environment hygiene, stderr
classification, retries), ``_auth`` (credentials into one child's environment), ``_mirror`` (the
bare mirror in the cache's scratch directory), ``_resolve`` (refs → commits), ``_checkout`` (a
commit's tree written and verified without ``.git``), ``_submodules``, ``_validate`` (inputs,
before any git runs) and ``_codecommit`` (SigV4 passwords).
"""

from conveyor.sources.git.credentials import (
    BitBucketCredentials,
    CodeCommitCredentials,
    GitCredentials,
    GitHubCredentials,
    GitLabCredentials,
    SSHCredentials,
    TokenCredentials,
)
from conveyor.sources.git.repository import GitRepository, GitSource

__all__ = [
    "BitBucketCredentials",
    "CodeCommitCredentials",
    "GitCredentials",
    "GitHubCredentials",
    "GitLabCredentials",
    "GitRepository",
    "GitSource",
    "SSHCredentials",
    "TokenCredentials",
]
