"""Automatic promotions (kepler/promotion.py): offering a release live in one environment
to the AutoPromotion workflow of the next, and signing the release it then asks for as
the platform's promotions identity."""

from __future__ import annotations

from datetime import datetime, timezone

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError

from activities.errors import non_retryable, retryable
from kepler.clients import operations as operations_client
from kepler.identity import SYSTEM, SigningError, sign
from kepler.models import ReleaseRequest
from kepler.contracts import AUTO_PROMOTION, OFFER
from kepler.promotion import AutoPromotionRequest, auto_workflow_id
from kepler.settings import Platform
from kepler.clients.temporal import LazyClient


class PromotionActivities:
    def __init__(self, platform: Platform, client: Client | None = None) -> None:
        self.platform = platform
        self._temporal = LazyClient(platform.temporal, client)

    @activity.defn(name="promotion.offer")
    async def offer(self, req: AutoPromotionRequest) -> str:
        """Start `promote-<service>@<target>` with this release, or hand it to the one
        waiting (signal-with-start: the newer release supersedes a soaking one)."""
        path = self.platform.promotion.get(req.target)
        if path is None or not path.auto or path.source != req.source:
            raise non_retryable("InvalidInput", f"promotion.{req.target}: no automatic path "
                                f"from {req.source}")
        req = req.model_copy(update={"requested_by": self.platform.auto_promotion.identity})
        client = await self._temporal.get()
        workflow_id = auto_workflow_id(req.service, req.target)
        try:
            await client.start_workflow(
                AUTO_PROMOTION.workflow, req, id=workflow_id, task_queue=self.platform.temporal.task_queue,
                start_signal=OFFER.name, start_signal_args=[req],
                static_summary=operations_client.summary(req),
                search_attributes=operations_client.start_attributes(req))
        except RPCError as e:
            raise retryable(f"offer to {workflow_id}: {e.message}") from None
        return workflow_id

    @activity.defn(name="promotion.sign_request")
    def sign_request(self, req: ReleaseRequest) -> ReleaseRequest:
        """Sign, as the promotions identity, the one kind of request it may make: promote
        exactly this digest along an automatic path. Approvers still decide."""
        config = self.platform.auto_promotion
        path = self.platform.promotion.get(req.env)
        if path is None or not path.auto or req.from_env != path.source:
            raise non_retryable("Unauthorized", f"promotion.{req.env}: no automatic path from "
                                f"{req.from_env}; the promotions identity signs nothing else")
        if req.ref or not (req.image and req.commit) or req.break_glass:
            raise non_retryable("Unauthorized", "the promotions identity signs only a promotion of "
                                "one digest")
        req = req.model_copy(update={"requested_by": config.identity})  # as whom it signs
        if not config.signing_key:
            raise non_retryable("InvalidConfig", "auto_promotion.signing_key is not set")
        # signed at Temporal's time of this attempt (the wall clock, give or take), the clock
        # the workflow that checks its freshness reads
        scheduled = activity.info().current_attempt_scheduled_time if activity.in_activity() else None
        statement = operations_client.request_statement(req, scheduled or datetime.now(timezone.utc))
        try:
            signed = sign(statement, self.platform.identity.path(config.signing_key), SYSTEM)
        except SigningError as e:
            raise non_retryable("InvalidConfig", f"auto_promotion.signing_key: {e}") from None
        return req.model_copy(update={"signed": signed})
