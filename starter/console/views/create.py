"""The create-service page: the seed platform's form (name, team, template, owners,
environments, replicas), validated as the CLI validates (kepler/spec.py ServiceSpec, at
/actions/prepare) and started as the same request, signed with the person's passkey."""

from __future__ import annotations

import typing
from typing import Any

from kepler.spec import ServiceSpec
from starter.console.app import Console, Page
from starter.console.auth import Viewer

TEMPLATES = typing.get_args(ServiceSpec.model_fields["template"].annotation)


async def data(console: Console, viewer: Viewer, params: dict[str, str],
               query: dict[str, str]) -> dict[str, Any]:
    return {"title": "Create service", "templates": TEMPLATES,
            "environments": list(console.platform.environments)}


PAGE = Page("/create", "create.html", data)
