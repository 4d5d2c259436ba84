"""CreateService: a repository, a build job and a place to run in every environment.

The runbook: adopt or create the GitLab project from its template (with the
service spec and a Dockerfile); add the push webhook; create the Jenkins job;
in each environment lay down namespace, ServiceAccount, ConfigMap, Deployment
(0 replicas until the first release), Service, HPA/PDB and the Istio routes;
tell the owners. An object in the way that Kepler did not make for this service refuses
the create before anything changes, unless a platform admin asked to adopt it; a namespace
that exists is used, never changed. Undo deletes only what this run created, and puts back
what it adopted: objects that existed (as recorded before it changed them) and a Jenkins
job's config (kept meanwhile in a disabled backup job, dropped once created).
"""

from __future__ import annotations

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import CREATE_SERVICE
    import yaml

    from activities.gitlab import GitLabActivities
    from activities.jenkins import JenkinsActivities
    from activities.kubernetes.volumes import VolumeActivities
    from activities.kubernetes.workloads import DeploymentActivities
    from kepler.jobs import VolumeCheck
    from activities.platform import PlatformActivities
    from kepler import manifests
    from kepler.models import CreateServiceRequest, Operation, ReleaseReport
    from kepler.payloads import (
        AdoptedObject, ApplyObjects, EnsureHook, EnsureJob, EnsureProject, EnvironmentPolicy,
        UndoCreated,
    )
    from workflows.steps.platform import read_policy
    from workflows.base import EVERY_PROMISE, SEALED_AUTHORITY, Done, KeplerWorkflow, StepFailed
    from workflows.common.approval import SIGNED_APPROVALS


def spec_yaml(req: CreateServiceRequest) -> str:
    data = req.spec.model_dump(mode="json", exclude_defaults=True)
    return "# Kepler service spec: releases read it at the released commit.\n" + yaml.safe_dump(
        {"name": req.spec.name, **data}, sort_keys=False)


@workflow.defn(name=CREATE_SERVICE.workflow)
class CreateService(KeplerWorkflow[ReleaseReport]):
    @workflow.run
    async def run(self, req: CreateServiceRequest) -> ReleaseReport:
        self.report = ReleaseReport(service=req.spec.name, env="all", outcome="running")
        return await self.operate(Operation.CREATE, req.spec.name, "all", req.requested_by, "",
                                  lambda: self.runbook(req), req)

    async def runbook(self, req: CreateServiceRequest) -> Done:
        spec = req.spec
        run_id = workflow.info().run_id
        envs = await self.step("read environments", PlatformActivities.environments, None)
        policies = [await read_policy(self, spec.name, env, f"read policy {env}") for env in envs]
        for policy in policies if spec.volumes else []:  # storage is bound, never made
            await self.step(f"{policy.env}: check volumes", VolumeActivities.check_volumes,
                            VolumeCheck(env=policy.env, namespace=policy.namespace,
                                        claims=[v.claim for v in spec.volumes if v.claim],
                                        config_maps=[v.config_map for v in spec.volumes
                                                     if v.config_map]))

        patches.retired(SIGNED_APPROVALS)
        await self.check_ownership(spec.name, policies[0].admins)
        patches.retired(SEALED_AUTHORITY)
        await self.check_foreign_objects(req, policies, run_id)
        undo = UndoCreated(service=spec.name, run_id=run_id)
        self.saga.add("delete the GitLab project if this run created it",
                      lambda: self.step("undo: delete project",
                                        GitLabActivities.delete_project_if_created, undo))
        patches.retired(EVERY_PROMISE)
        self.saga.add("put back the files this run committed if it adopted the project",
                      lambda: self.step("undo: put back files", GitLabActivities.revert_files,
                                        undo))
        project = await self.step("GitLab project", GitLabActivities.ensure_project, EnsureProject(
            service=spec.name, template=spec.template, spec_yaml=spec_yaml(req), run_id=run_id))
        hook = EnsureHook(project_id=project.project_id)
        hook_added: list[bool] = []  # an adopted project may have had it already: keep that
        self.saga.add("remove the GitLab webhook if this run added it",
                      lambda: self._remove_hook(hook, hook_added))
        if await self.step("GitLab webhook", GitLabActivities.ensure_hook, hook) == "added":
            hook_added.append(True)

        adopted_job = False
        if policies[0].builder == "jenkins":  # the docker builder needs no job
            self.saga.add("delete the Jenkins job if this run created it, or put back the one "
                          "it adopted",
                          lambda: self.step("undo: delete job",
                                            JenkinsActivities.delete_job_if_created, undo))
            adopted_job = not await self.step("Jenkins job", JenkinsActivities.ensure_job, EnsureJob(
                service=spec.name, repo_url=project.http_url, run_id=run_id))

        for policy in policies:
            objects = manifests.for_environment(spec, policy.env, policy.namespace)
            apply = ApplyObjects(env=policy.env, manifests=objects, run_id=run_id)
            for before in await self.step(f"{policy.env}: record existing objects",
                                          DeploymentActivities.record_adopted, apply):
                self.saga.add(f"{policy.env}: put back {before.kind} {before.name} as it was",
                              lambda b=before: self.step(
                                  f"undo: put back {b.kind} {b.name}",
                                  DeploymentActivities.restore_adopted, b))
            for obj in objects:
                self._register_delete(policy.env, obj, run_id)
            await self.step(f"{policy.env}: objects and routes", DeploymentActivities.apply_objects,
                            apply)
        if adopted_job:
            await self.step("Jenkins job: drop the backup of its old config",
                            JenkinsActivities.drop_backup, undo)
        return Done("created", f"service {spec.name} is ready in {', '.join(envs)}; "
                    f"owners: {', '.join(spec.owners) or spec.team}")

    async def check_ownership(self, service: str, admins: list[str]) -> None:
        """A service that exists already (its GitLab project) is created over — adopted —
        only by a verified owner of it (its spec's owners) or a platform admin."""
        existing = await self.step("check ownership", GitLabActivities.existing_service, service)
        if existing is None:
            return
        allowed = [*existing.owners, *admins]
        if self.requester is None or self.requester.name not in allowed:
            whose = ", ".join(existing.owners) or f"nobody listed (team {existing.team or '?'})"
            raise StepFailed("check ownership", f"{existing.path} exists and is owned by {whose}: "
                             f"only its owners or a platform admin ({', '.join(admins) or 'none'}) "
                             "may create over it" + ("" if self.requester else
                                                     " (and this request is not signed)"),
                             "Refused", refused=True)

    async def check_foreign_objects(self, req: CreateServiceRequest,
                                    policies: list[EnvironmentPolicy], run_id: str) -> None:
        """Before any change anywhere: an object this create would lay down that exists
        without Kepler's mark of this service refuses it (exit 3, each named), unless a
        verified platform admin's signed request says `adopt`."""
        foreign: list[AdoptedObject] = []
        for policy in policies:
            foreign += await self.step(
                f"{policy.env}: check existing objects", DeploymentActivities.foreign_objects,
                ApplyObjects(env=policy.env, run_id=run_id, manifests=manifests.for_environment(
                    req.spec, policy.env, policy.namespace)))
        if not foreign:
            return
        names = "; ".join(f"{o.kind} {o.namespace}/{o.name} in {o.env}" for o in foreign)
        admins = policies[0].admins
        who = self.requester.name if self.requester else None
        if req.adopt and who in admins:
            self.state.notes.append(f"adopted by {who} (--adopt): {names}")
            return
        step = "check existing objects"
        if req.adopt:
            raise StepFailed(step, f"adopt: only a platform admin ({', '.join(admins) or 'none'}) "
                             f"may take over objects Kepler did not create, and "
                             f"{who or 'an unsigned request'} is not one: {names}", "Refused",
                             refused=True)
        raise StepFailed(step, f"objects Kepler did not create are in the way: {names}. Remove "
                         "them, or a platform admin may take them over (service create "
                         "--adopt)", "Refused", refused=True)

    async def _remove_hook(self, hook: EnsureHook, added: list[bool]) -> None:
        if added:
            await self.step("undo: remove webhook", GitLabActivities.remove_hook, hook)

    def _register_delete(self, env: str, obj: dict, run_id: str) -> None:
        meta = obj["metadata"]
        undo = UndoCreated(service=self.state.service, run_id=run_id, env=env, kind=obj["kind"],
                           namespace=meta.get("namespace", ""), name=meta["name"])
        self.saga.add(f"{env}: delete {obj['kind']} {meta['name']} if this run created it",
                      lambda: self.step(f"undo: delete {obj['kind']} {meta['name']}",
                                        DeploymentActivities.delete_if_created, undo))
