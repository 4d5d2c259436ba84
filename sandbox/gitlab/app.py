"""The GitLab stand-in's app (its routes are in sandbox/gitlab/projects.py for now)."""

from sandbox.gitlab.projects import create_app

__all__ = ["create_app"]
