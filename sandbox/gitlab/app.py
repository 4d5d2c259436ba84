"""GitLab stand-in: the API v4 subset Kepler drives with python-gitlab.

Namespaces and projects (sandbox/gitlab/projects.py); files, commits, tree and
archives (sandbox/gitlab/repository.py); comparing refs (sandbox/gitlab/compare.py); branches and tags (sandbox/gitlab/refs.py);
hooks and push events (sandbox/gitlab/hooks.py); merge requests, their notes and
Merge Request Hook events (sandbox/gitlab/merge_requests.py). Every route is served through one
`Api.dispatch`, which matches python-gitlab's URL-encoded paths (sandbox/gitlab/api.py).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from sandbox.common import StateStore
from sandbox.gitlab import compare, hooks, merge_requests, projects, refs, repository
from sandbox.gitlab.api import Api
from sandbox.gitlab.store import GitLabStore
from sandbox.world import World


def create_app(world: World) -> Starlette:
    state = world.state_path("gitlab")
    store = GitLabStore(StateStore(state / "state.json" if state else None, {}))
    api = Api(store, world.audits["gitlab"], world.urls["gitlab"], world.settings.gitlab_token,
              [projects.routes, repository.routes, refs.routes, hooks.routes, compare.routes,
               merge_requests.routes])
    world.components["gitlab"] = store
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE"]
    return Starlette(routes=[Route("/api/v4/{rest:path}", api.dispatch, methods=methods)])
