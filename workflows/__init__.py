"""Workflows: deterministic code only. Each lives in its own importable module."""

from __future__ import annotations

from workflows.alert import AlertAction
from workflows.canary import Canary
from workflows.create import CreateService
from workflows.decommission import Decommission
from workflows.job import RunJob
from workflows.release import ReleaseVersion
from workflows.rollback import Rollback
from workflows.scale import Scale, SetResources
from workflows.schedule import ScheduledRelease
from workflows.train import ReleaseTrain

ALL: list[type] = [CreateService, ReleaseVersion, Rollback, Decommission, Canary]
ALL += [RunJob, AlertAction]
ALL += [ReleaseTrain, Scale, SetResources, ScheduledRelease]
