"""Image steps shared by ReleaseVersion and Canary: reuse the commit's image or build it,
then pin it by digest (never deploy a mutable tag)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.docker_build import DockerBuildActivities
    from activities.jenkins import JenkinsActivities
    from activities.registry import RegistryActivities
    from kepler.payloads import BuildRequest, EnvironmentPolicy, ImageQuery
    from workflows.base import LONG_WAIT, KeplerWorkflow, StepFailed


async def ensure_image(wf: KeplerWorkflow, policy: EnvironmentPolicy, service: str, commit: str,
                       label: str = "") -> str:
    """The image for `commit`, by digest: `host/repo@sha256:...`. `label` prefixes the
    step names (a train ensures each member's)."""
    query = ImageQuery(repository=policy.image_repository, reference=commit)
    image = await wf.step(f"{label}find image", RegistryActivities.find_image, query)
    if image:
        wf.skip(f"{label}build", f"image for {commit[:12]} already in the registry")
        return image
    build = BuildRequest(service=service, commit=commit, image=policy.image(commit))
    builder = DockerBuildActivities.build if policy.builder == "docker" else JenkinsActivities.build
    await wf.step(f"{label}build", builder, build, LONG_WAIT)
    image = await wf.step(f"{label}resolve digest", RegistryActivities.find_image, query)
    if not image:
        raise StepFailed(f"{label}resolve digest", f"the build passed but {build.image} is not "
                         "in the registry", "NotFound")
    return image


async def pinned_image(wf: KeplerWorkflow, policy: EnvironmentPolicy, image: str, commit: str,
                       approved: bool) -> str:
    """A digest the request pinned with its commit: only from the environment's own image
    repository, and — unless verified approvals name that exact digest and commit (a train
    member in a gated environment) — only the registry's image of that commit, so no build
    is ever labelled with a commit it was not built from."""
    repository = f"{policy.registry_host}/{policy.image_repository}"
    if not image.startswith(f"{repository}@sha256:"):
        raise StepFailed("find image", f"image: {image} is not in {repository}, "
                         "this environment's image repository", "InvalidInput", bad_input=True)
    if not approved:
        built = await wf.step("find image", RegistryActivities.find_image,
                              ImageQuery(repository=policy.image_repository, reference=commit))
        if built != image:
            raise StepFailed("find image", f"image: {image} is not the image built from commit "
                             f"{commit[:12]} (the registry has {built or 'none'})", "InvalidInput",
                             bad_input=True)
    wf.skip("build", f"pinned to {image}")
    return image
